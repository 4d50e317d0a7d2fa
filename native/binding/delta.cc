// N-API glue of the delta family: reads the argument object into a DeltaArgs (typed arrays in place),
// checks it again (anything may call the addon directly), and runs it now or on a worker.
//   deltaRule(args) / deltaRuleAsync(args) -> undefined / Promise<undefined>; o written into args.o (and the
//   state into args.finalState, which may be args.initialState itself: an in-place decode step). callerOut:
//   o is the caller's buffer (the `out` option), so it must end all old or all new: cancel is read once,
//   before the first write.
#include <cmath>
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/delta.h"

namespace sk {
namespace {

float value_at(const void* p, DType dt, int64_t i) {
  const uint16_t* h = static_cast<const uint16_t*>(p);
  switch (dt) {
    case DType::f16: return half_to_float(h[i]);
    case DType::bf16: return bf16_to_float(h[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// The value checks of DESIGN.md 6.1, so that no bad value reaches a kernel.
void check_values(const void* p, DType dt, int64_t n, const char* name, double lo, double hi) {
  for (int64_t i = 0; i < n; i++) {
    const float x = value_at(p, dt, i);
    if (!std::isfinite(x))
      throw CodedError("NON_FINITE", std::string("expected finite ") + name + ", got " + std::to_string(x) + " at index " + std::to_string(i));
    if (x < lo || x > hi)
      throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " in [" + std::to_string(lo) + ", " +
                                           std::to_string(hi) + "], got " + std::to_string(x) + " at index " + std::to_string(i));
  }
}

struct DeltaJob {
  DeltaArgs a;
  bool in_place = false;
  bool caller_out = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  // Private copies of the pool's metadata (the caller's arrays may change while the job runs).
  std::vector<int32_t> indices, cu_copy;
  std::vector<uint8_t> has_initial;
  std::vector<int64_t> snap_base;
  std::vector<float> a_log, dt_bias;
  bool snaps_given = false;
  // beta (eta) and g (decay), checked when the job runs rather than at the parse: in a chain they may be
  // written by an earlier op of the same job.
  struct ValueCheck {
    const void* p = nullptr;
    DType dt = DType::f32;
    int64_t n = 0;
    const char* name = "";
    double lo = 0, hi = 0;
  };
  ValueCheck checks[2];
  void run() {
    for (const ValueCheck& c : checks)
      if (c.p) check_values(c.p, c.dt, c.n, c.name, c.lo, c.hi);
    // An in-place state (the pool included), or the caller's o, must end all old or all new.
    if (in_place || caller_out || a.pooled || snaps_given) cancel_before_writing(a.cancel);
    if (!caller_out) advise_huge_pages(a.o, static_cast<int64_t>(a.B) * a.T * a.HV * a.V * dtype_bytes(a.qkv_dtype));
    if (!in_place && a.final_state) advise_huge_pages(a.final_state, static_cast<int64_t>(a.N) * a.HV * a.K * a.V * 4);
    if (!delta_prefill(a)) throw CodedError("ABORTED", "aborted");
  }
};

DeltaJob parse(const Napi::Object& o) {
  DeltaJob job;
  DeltaArgs& a = job.a;
  const int64_t B = get_int(o, "B"), T = get_int(o, "T"), H = get_int(o, "H"), HV = get_int(o, "HV"),
                K = get_int(o, "K"), V = get_int(o, "V");
  if (H < 1 || HV < 1 || K < 1 || V < 1)
    throw CodedError("SHAPE_MISMATCH", "expected H, HV, K, V >= 1, got " + dims({H, HV, K, V}));
  checked({B, T, H, K}, "q");
  checked({B, T, HV, V}, "v");
  if (HV % H != 0)
    throw CodedError("SHAPE_MISMATCH", "expected HV a multiple of H, got HV=" + std::to_string(HV) + ", H=" + std::to_string(H));
  if (K > 1024 || V > 1024) throw CodedError("TOO_LARGE", "expected K, V <= 1024, got " + dims({K, V}));
  a.B = static_cast<int>(B), a.T = static_cast<int>(T), a.H = static_cast<int>(H), a.HV = static_cast<int>(HV);
  a.K = static_cast<int>(K), a.V = static_cast<int>(V);

  ArrayView q = get_array(o, "q", true), k = get_array(o, "k", true), v = get_array(o, "v", true);
  ArrayView beta = get_array(o, "beta", true), g = get_array(o, "g", false);
  ArrayView s0 = get_array(o, "initialState", false), out = get_array(o, "o", true);
  ArrayView sf = get_array(o, "finalState", false), cu = get_array(o, "cuSeqlens", false);
  ArrayView cancel = get_array(o, "cancel", false);

  a.qkv_dtype = parse_qkvo_dtype(o, q, k, v, out);
  a.beta_dtype = parse_dtype(o, "betaDtype", beta, "beta");
  a.g_dtype = parse_dtype(o, "gDtype", g, "g");
  check_len(q, B * T * H * K, "q", dims({B, T, H, K}));
  check_len(k, B * T * H * K, "k", dims({B, T, H, K}));
  check_len(v, B * T * HV * V, "v", dims({B, T, HV, V}));
  check_len(beta, B * T * HV, "beta", dims({B, T, HV}));
  check_len(out, B * T * HV * V, "o", dims({B, T, HV, V}));

  int64_t N = B;
  if (cu.present) {
    if (cu.type != napi_int32_array) throw CodedError("BAD_DTYPE", "expected cuSeqlens to be an Int32Array");
    if (B != 1) throw CodedError("SHAPE_MISMATCH", "expected B = 1 with cuSeqlens, got B=" + std::to_string(B));
    if (cu.length < 2) throw CodedError("SHAPE_MISMATCH", "expected cuSeqlens of at least 2 offsets, got " + std::to_string(cu.length));
    const int32_t* c = static_cast<const int32_t*>(cu.data);
    if (c[0] != 0) throw CodedError("OUT_OF_RANGE", "expected cuSeqlens[0] = 0, got " + std::to_string(c[0]));
    for (int64_t i = 1; i < cu.length; i++)
      if (c[i] < c[i - 1])
        throw CodedError("OUT_OF_RANGE", "expected cuSeqlens non-decreasing, got " + std::to_string(c[i - 1]) + " then " +
                                             std::to_string(c[i]) + " at index " + std::to_string(i));
    if (c[cu.length - 1] != T)
      throw CodedError("OUT_OF_RANGE", "expected cuSeqlens to end at T=" + std::to_string(T) + ", got " + std::to_string(c[cu.length - 1]));
    N = cu.length - 1;
    a.cu_seqlens = c;
  }
  a.N = static_cast<int>(N);
  checked({N, HV, K, V}, "state");
  const std::string state_shape = dims({N, HV, K, V});
  if (s0.present) {
    if (s0.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected initialState to be a Float32Array");
    check_len(s0, N * HV * K * V, "initialState", state_shape);
    a.initial_state = static_cast<const float*>(s0.data);
  }
  if (sf.present) {
    if (sf.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected finalState to be a Float32Array");
    check_len(sf, N * HV * K * V, "finalState", state_shape);
    a.final_state = static_cast<float*>(sf.data);
  }
  job.in_place = a.final_state != nullptr && static_cast<const void*>(a.final_state) == static_cast<const void*>(a.initial_state);

  a.kaczmarz = get_bool(o, "kaczmarz");
  a.eps = static_cast<float>(get_number(o, "eps", 1e-6));
  if (!(a.eps > 0) || !std::isfinite(a.eps)) throw CodedError("OUT_OF_RANGE", "expected eps > 0 and finite");
  // In-kernel gating: beta (eta) may hold logits, g the raw projection; then they need only be finite.
  a.beta_sigmoid = get_bool(o, "betaSigmoid");
  a.beta_scale = static_cast<float>(get_number(o, "betaScale", 1.0));
  if (!(a.beta_scale >= 0 && a.beta_scale <= 2)) throw CodedError("OUT_OF_RANGE", "expected betaScale in [0, 2]");
  if (a.beta_scale != 1.f && !a.beta_sigmoid) throw CodedError("BAD_ARGUMENT", "expected betaScale only with betaSigmoid");
  ArrayView alog = get_array(o, "aLog", false), dtb = get_array(o, "dtBias", false);
  for (auto* x : {&alog, &dtb}) {
    if (!x->present) continue;
    const char* name = x == &alog ? "aLog" : "dtBias";
    if (x->type != napi_float32_array) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be a Float32Array");
    check_len(*x, HV, name, dims({HV}));
    const float* p = static_cast<const float*>(x->data);
    (x == &alog ? job.a_log : job.dt_bias).assign(p, p + HV);
    check_values(p, DType::f32, HV, name, -INFINITY, INFINITY);
  }
  if (dtb.present && !alog.present) throw CodedError("BAD_ARGUMENT", "expected dtBias only with aLog");
  if (alog.present) a.a_log = job.a_log.data();
  if (dtb.present) a.dt_bias = job.dt_bias.data();
  job.checks[0] = {beta.data, a.beta_dtype, beta.length, a.kaczmarz ? "eta" : "beta", a.beta_sigmoid ? -INFINITY : 0.0, a.beta_sigmoid ? INFINITY : 2.0};
  std::string dk = o.Get("decayKind").IsString() ? o.Get("decayKind").As<Napi::String>().Utf8Value() : "none";
  if (dk == "log") a.decay_kind = DecayKind::log;
  else if (dk == "sign") a.decay_kind = DecayKind::sign;
  else if (dk == "none") a.decay_kind = DecayKind::none;
  else throw CodedError("BAD_ARGUMENT", "expected decayKind none, log or sign, got " + dk);
  if (a.decay_kind != DecayKind::none) {
    if (!g.present) throw CodedError("BAD_ARGUMENT", "expected g (or decay) with decayKind " + dk);
    check_len(g, B * T * HV, a.decay_kind == DecayKind::log ? "g" : "decay", dims({B, T, HV}));
    if (a.decay_kind == DecayKind::log) job.checks[1] = {g.data, a.g_dtype, g.length, "g", -INFINITY, a.a_log ? INFINITY : 0.0};
    else job.checks[1] = {g.data, a.g_dtype, g.length, "decay", -1.0, 1.0};
    a.g = g.data;
  }
  if (a.a_log && a.decay_kind != DecayKind::log) throw CodedError("BAD_ARGUMENT", "expected aLog only with g (decayKind log)");
  a.beta = beta.data;
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data;
  a.qk_l2norm = get_bool(o, "qkL2Norm");
  a.scale = static_cast<float>(get_number(o, "scale", 1.0 / std::sqrt(static_cast<double>(K))));
  if (!std::isfinite(a.scale)) throw CodedError("NON_FINITE", "expected a finite scale");
  a.chunk_size = static_cast<int>(get_number(o, "chunkSize", 64));
  if (a.chunk_size < 1 || a.chunk_size > 256)
    throw CodedError("OUT_OF_RANGE", "expected chunkSize in [1, 256], got " + std::to_string(a.chunk_size));
  std::string alg = o.Get("algorithm").IsString() ? o.Get("algorithm").As<Napi::String>().Utf8Value() : "chunk";
  if (alg != "chunk" && alg != "recurrent") throw CodedError("BAD_ARGUMENT", "expected algorithm chunk or recurrent, got " + alg);
  a.use_chunk = alg == "chunk";

  // The state pool: [slots, HV, K, V] read and written in place at the slots of stateIndices.
  ArrayView pool = get_array(o, "pool", false), idx = get_array(o, "stateIndices", false);
  ArrayView hinit = get_array(o, "hasInitialState", false), snaps = get_array(o, "snaps", false);
  int64_t pool_bytes = 0, snap_bytes = 0;
  a.update_state = !(o.Get("updateState").IsBoolean() && !o.Get("updateState").As<Napi::Boolean>().Value());
  if (pool.present) {
    if (s0.present || sf.present) throw CodedError("BAD_ARGUMENT", "expected pool or initialState/finalState, not both");
    const int64_t slots = get_int(o, "slots");
    checked({slots, HV, K, V}, "pool");
    a.pool_dtype = parse_dtype(o, "poolDtype", pool, "pool");
    if (a.pool_dtype == DType::f16) throw CodedError("BAD_DTYPE", "expected pool dtype float32 or bfloat16, got float16");
    check_len(pool, slots * HV * K * V, "pool", dims({slots, HV, K, V}));
    a.pool = pool.data;
    a.pooled = true;
    a.slots = static_cast<int>(slots);
    pool_bytes = slots * HV * K * V * dtype_bytes(a.pool_dtype);
    if (idx.present) {
      job.indices = copy_int32(idx, "stateIndices");
      if (static_cast<int64_t>(job.indices.size()) != N)
        throw CodedError("SHAPE_MISMATCH", "expected stateIndices of " + std::to_string(N) + " slots, got " + std::to_string(job.indices.size()));
      std::vector<int> owner(static_cast<size_t>(slots), -1);
      for (int64_t n = 0; n < N; n++) {
        const int32_t sl = job.indices[n];
        if (sl < -1 || sl >= slots)
          throw CodedError("OUT_OF_RANGE", "expected stateIndices in [-1, " + std::to_string(slots) + "), got " + std::to_string(sl) +
                                               " at index " + std::to_string(n));
        if (sl < 0) continue;
        if (a.update_state && owner[sl] >= 0)
          throw CodedError("BAD_ARGUMENT", "expected stateIndices distinct among live sequences, got slot " + std::to_string(sl) +
                                               " at indices " + std::to_string(owner[sl]) + " and " + std::to_string(n));
        owner[sl] = static_cast<int>(n);
      }
      a.state_indices = job.indices.data();
    } else if (slots < N) {
      throw CodedError("SHAPE_MISMATCH", "expected a pool of at least N=" + std::to_string(N) + " slots without stateIndices, got " + std::to_string(slots));
    }
    if (hinit.present) {
      if (hinit.type != napi_uint8_array) throw CodedError("BAD_DTYPE", "expected hasInitialState to be a Uint8Array");
      check_len(hinit, N, "hasInitialState", dims({N}));
      const uint8_t* p = static_cast<const uint8_t*>(hinit.data);
      job.has_initial.assign(p, p + N);
      a.has_initial = job.has_initial.data();
    }
  } else if (idx.present || hinit.present || !a.update_state) {
    throw CodedError("BAD_ARGUMENT", "expected stateIndices, hasInitialState and updateState only with pool");
  }
  if (a.cu_seqlens) {  // the kernels read a private copy too
    job.cu_copy.assign(a.cu_seqlens, a.cu_seqlens + N + 1);
    a.cu_seqlens = job.cu_copy.data();
  }
  // Snapshots (checkpoints, intermediate states): floor(len_n / snapEvery) rows per sequence, in order.
  if (snaps.present) {
    a.snap_every = static_cast<int>(get_int(o, "snapEvery"));
    if (a.snap_every < 1) throw CodedError("OUT_OF_RANGE", "expected snapEvery >= 1");
    if (a.use_chunk && a.snap_every % a.chunk_size != 0)
      throw CodedError("BAD_ARGUMENT", "expected snapEvery a multiple of chunkSize=" + std::to_string(a.chunk_size) + ", got " + std::to_string(a.snap_every));
    a.snap_dtype = parse_dtype(o, "snapDtype", snaps, "snaps");
    if (a.snap_dtype == DType::f16) throw CodedError("BAD_DTYPE", "expected snaps dtype float32 or bfloat16, got float16");
    job.snap_base.resize(static_cast<size_t>(N));
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
      job.snap_base[n] = count;
      count += (a.cu_seqlens ? a.cu_seqlens[n + 1] - a.cu_seqlens[n] : T) / a.snap_every;
    }
    check_len(snaps, checked({count, HV, K, V}, "snaps"), "snaps", dims({count, HV, K, V}));
    a.snaps = snaps.data;
    job.snaps_given = true;
    a.snap_base = job.snap_base.data();
    snap_bytes = count * HV * K * V * dtype_bytes(a.snap_dtype);
  }

  // o is written while the inputs and the state are still read (by other threads too): no overlap is safe.
  const int64_t es = dtype_bytes(a.qkv_dtype), state_bytes = N * HV * K * V * 4;
  const struct { const char* name; const void* p; int64_t bytes; } others[] = {
      {"q", q.data, B * T * H * K * es}, {"k", k.data, B * T * H * K * es}, {"v", v.data, B * T * HV * V * es},
      {a.kaczmarz ? "eta" : "beta", beta.data, beta.length * dtype_bytes(a.beta_dtype)},
      {a.decay_kind == DecayKind::sign ? "decay" : "g", a.g, a.g ? g.length * dtype_bytes(a.g_dtype) : 0},
      {"initialState", a.initial_state, a.initial_state ? state_bytes : 0},
      {"finalState", a.final_state, a.final_state ? state_bytes : 0},
      {"cuSeqlens", cu.data, cu.present ? cu.length * 4 : 0},
      {"pool", a.pool, pool_bytes},
      {"snaps", a.snaps, snap_bytes},
  };
  for (const auto& x : others)
    if (overlap(a.o, B * T * HV * V * es, x.p, x.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected o in memory apart from the inputs and the state, got a view overlapping ") + x.name);

  // The final state is written while the inputs are read: apart from every input, and from the initial
  // state unless it is that very state (the in-place step). A partial overlap would read half-updated rows.
  if (a.final_state) {
    if (!job.in_place && overlap(a.final_state, state_bytes, a.initial_state, a.initial_state ? state_bytes : 0))
      throw CodedError("BAD_ARGUMENT", "expected finalState to be initialState itself or memory apart from it, got a partial overlap");
    for (const auto& x : others) {
      if (x.name == std::string("finalState") || x.name == std::string("initialState")) continue;
      if (overlap(a.final_state, state_bytes, x.p, x.bytes))
        throw CodedError("BAD_ARGUMENT", std::string("expected finalState in memory apart from the inputs, got a view overlapping ") + x.name);
    }
  }

  // The pool and the snapshots are written while the inputs are read: apart from every input and each other.
  for (const auto& w : {others[8], others[9]}) {
    if (!w.p) continue;
    for (const auto& x : others) {
      if (x.p == w.p || (x.name == std::string("pool") && w.name == std::string("snaps"))) continue;
      if (overlap(w.p, w.bytes, x.p, x.bytes))
        throw CodedError("BAD_ARGUMENT", std::string("expected ") + w.name + " in memory apart from the inputs, got a view overlapping " + x.name);
    }
  }
  if (overlap(a.pool, pool_bytes, a.snaps, snap_bytes))
    throw CodedError("BAD_ARGUMENT", "expected snaps in memory apart from the pool, got a view overlapping pool");

  a.cancel = cancel_flag(cancel);
  job.caller_out = get_bool(o, "callerOut");
  job.pinned = pin({&q, &k, &v, &beta, &g, &s0, &out, &sf, &cu, &cancel, &pool, &snaps});
  return job;
}

}  // namespace

void register_delta(Napi::Env env, Napi::Object exports) {
  export_op<DeltaJob, parse>(env, exports, "deltaRule", "deltaRuleAsync");
}

}  // namespace sk
