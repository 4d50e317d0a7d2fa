// N-API glue of the NaLaFormer family: reads the argument object into a NalaArgs (typed arrays in place,
// offsets copied), checks it again (anything may call the addon directly), and runs it now or on a worker.
//   nala(args) / nalaAsync(args) -> undefined / Promise<undefined>; o written into args.o (and the state into
//   args.finalState, which is args.initialState itself for the step). args: { B, T, S, H, Hk, K, V, step,
//   q, k, v, dtype, o, causal, eps, cuSeqlens?, cuSeqlensK?, ropeCos?, ropeSin?, ropeKCos?, ropeKSin?,
//   initialState?, finalState?, cancel?, callerOut? }. Before anything the caller sees is written the job
//   scans q, k, v, the rope tables and the initial state for non-finite values (NON_FINITE naming the array
//   and index). When o and the state are the call's own (discarded on an error), q, k and v are checked by
//   the kernels as they read them instead, and scanned only when one was flagged (for the index): one pass
//   over the inputs' memory, not two.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/nala.h"
#include "cpu/threadpool.h"

namespace sk {
namespace {

constexpr int64_t kMaxHeadDim = 512;

// Offsets of a private copy: 0 first, `end` last, non-decreasing. Returns N.
int64_t check_offsets(const std::vector<int32_t>& c, const char* name, int64_t end, const char* end_name) {
  if (c.size() < 2) throw CodedError("SHAPE_MISMATCH", std::string("expected ") + name + " of at least 2 offsets, got " + std::to_string(c.size()));
  if (c[0] != 0) throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + "[0] = 0, got " + std::to_string(c[0]));
  for (size_t i = 1; i < c.size(); i++)
    if (c[i] < c[i - 1])
      throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " non-decreasing, got " + std::to_string(c[i - 1]) +
                                           " then " + std::to_string(c[i]) + " at index " + std::to_string(i));
  if (c.back() != end)
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " to end at " + end_name + "=" + std::to_string(end) +
                                         ", got " + std::to_string(c.back()));
  return static_cast<int64_t>(c.size()) - 1;
}

// An array to scan for non-finite values before the kernel runs.
struct Scan {
  const char* name;
  const void* p;
  DType dt;
  int64_t n;
};

// Index of the first non-finite element of x (or -1), scanned in parallel blocks.
int64_t first_non_finite(const Scan& x) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (x.n + kBlock - 1) / kBlock;
  std::atomic<int64_t> first{INT64_MAX};
  parallel_for(blocks, [&](int64_t b, int) {
    const int64_t i0 = b * kBlock, i1 = std::min(x.n, i0 + kBlock);
    if (i0 >= first.load(std::memory_order_relaxed)) return;
    // All exponent bits set is Inf or NaN; an integer OR over the block vectorises, then find the element.
    int64_t bad = -1;
    if (x.dt == DType::f32) {
      const uint32_t* p = static_cast<const uint32_t*>(x.p);
      uint32_t any = 0;
      for (int64_t i = i0; i < i1; i++) any |= (p[i] & 0x7f800000u) == 0x7f800000u;
      for (int64_t i = i0; any && i < i1 && bad < 0; i++)
        if ((p[i] & 0x7f800000u) == 0x7f800000u) bad = i;
    } else {
      const uint16_t* p = static_cast<const uint16_t*>(x.p);
      const uint16_t mask = x.dt == DType::f16 ? 0x7c00u : 0x7f80u;
      uint32_t any = 0;
      for (int64_t i = i0; i < i1; i++) any |= (p[i] & mask) == mask;
      for (int64_t i = i0; any && i < i1 && bad < 0; i++)
        if ((p[i] & mask) == mask) bad = i;
    }
    if (bad < 0) return;
    int64_t cur = first.load();
    while (bad < cur && !first.compare_exchange_weak(cur, bad)) {
    }
  });
  const int64_t f = first.load();
  return f == INT64_MAX ? -1 : f;
}

float value_at(const Scan& x, int64_t i) {
  const uint16_t* h = static_cast<const uint16_t*>(x.p);
  switch (x.dt) {
    case DType::f16: return half_to_float(h[i]);
    case DType::bf16: return bf16_to_float(h[i]);
    default: return static_cast<const float*>(x.p)[i];
  }
}

struct NalaJob {
  NalaArgs a;
  std::vector<int32_t> cu_q, cu_k;  // private copies of the offsets
  std::vector<Scan> scans;
  bool in_place = false;
  bool caller_out = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  void check(size_t from, size_t to) const {
    for (size_t s = from; s < to && s < scans.size(); s++) {
      const Scan& x = scans[s];
      const int64_t i = first_non_finite(x);
      if (i >= 0)
        throw CodedError("NON_FINITE", std::string("expected finite ") + x.name + ", got " + std::to_string(value_at(x, i)) +
                                           " at index " + std::to_string(i));
    }
  }
  void run() {
    // scans[0..3) are q, k, v.
    const bool defer = !in_place && !caller_out;
    check(defer ? 3 : 0, scans.size());
    int32_t flagged = 0;
    if (defer) a.nonfinite = &flagged;
    // An in-place state, or the caller's o, must end all old or all new.
    if (in_place || caller_out) cancel_before_writing(a.cancel);
    if (!caller_out) advise_huge_pages(a.o, static_cast<int64_t>(a.B) * a.T * a.H * a.V * dtype_bytes(a.dtype));
    const bool done = nala_run(a);
    if (__atomic_load_n(&flagged, __ATOMIC_RELAXED) != 0) check(0, 3);
    if (!done) throw CodedError("ABORTED", "aborted");
  }
};

NalaJob parse(const Napi::Object& o) {
  NalaJob job;
  NalaArgs& a = job.a;
  const int64_t B = get_int(o, "B"), T = get_int(o, "T"), S = get_int(o, "S"), H = get_int(o, "H"), Hk = get_int(o, "Hk"),
                K = get_int(o, "K"), V = get_int(o, "V");
  a.step = get_bool(o, "step");
  a.causal = a.step || get_bool(o, "causal");
  if (H < 1 || Hk < 1 || K < 1 || V < 1) throw CodedError("SHAPE_MISMATCH", "expected H, Hk, K, V >= 1, got " + dims({H, Hk, K, V}));
  if (H % Hk != 0)
    throw CodedError("SHAPE_MISMATCH", "expected H a multiple of Hk (grouped heads), got H=" + std::to_string(H) + ", Hk=" + std::to_string(Hk));
  if (K > kMaxHeadDim || V > kMaxHeadDim) throw CodedError("TOO_LARGE", "expected K, V <= 512, got " + dims({K, V}));
  if (a.step && (T != 1 || S != 1)) throw CodedError("SHAPE_MISMATCH", "expected T = S = 1 for a step, got " + dims({T, S}));
  if (a.causal && S != T) throw CodedError("SHAPE_MISMATCH", "expected S = T when causal, got S=" + std::to_string(S) + ", T=" + std::to_string(T));
  const int64_t nq = checked({B, T, H, K}, "q"), nk = checked({B, S, Hk, K}, "k"), nv = checked({B, S, Hk, V}, "v");
  const int64_t no = checked({B, T, H, V}, "o");
  a.B = static_cast<int>(B), a.T = static_cast<int>(T), a.S = static_cast<int>(S), a.H = static_cast<int>(H);
  a.Hk = static_cast<int>(Hk), a.K = static_cast<int>(K), a.V = static_cast<int>(V);

  ArrayView q = get_array(o, "q", true), k = get_array(o, "k", true), v = get_array(o, "v", true);
  ArrayView out = get_array(o, "o", true), cu = get_array(o, "cuSeqlens", false), cuk = get_array(o, "cuSeqlensK", false);
  ArrayView rc = get_array(o, "ropeCos", false), rs = get_array(o, "ropeSin", false);
  ArrayView rkc = get_array(o, "ropeKCos", false), rks = get_array(o, "ropeKSin", false);
  ArrayView s0 = get_array(o, "initialState", false), sf = get_array(o, "finalState", false);
  ArrayView cancel = get_array(o, "cancel", false);

  a.dtype = parse_qkvo_dtype(o, q, k, v, out);
  check_len(q, nq, "q", dims({B, T, H, K}));
  check_len(k, nk, "k", dims({B, S, Hk, K}));
  check_len(v, nv, "v", dims({B, S, Hk, V}));
  check_len(out, no, "o", dims({B, T, H, V}));

  a.N = static_cast<int>(B);
  if (cu.present) {
    if (a.step) throw CodedError("BAD_ARGUMENT", "expected no cuSeqlens for a step");
    if (B != 1) throw CodedError("SHAPE_MISMATCH", "expected B = 1 with cuSeqlens, got B=" + std::to_string(B));
    job.cu_q = copy_int32(cu, "cuSeqlens");
    const int64_t n = check_offsets(job.cu_q, "cuSeqlens", T, "T");
    if (cuk.present) {
      if (a.causal) throw CodedError("BAD_ARGUMENT", "expected no cuSeqlensK when causal");
      job.cu_k = copy_int32(cuk, "cuSeqlensK");
      if (check_offsets(job.cu_k, "cuSeqlensK", S, "S") != n)
        throw CodedError("SHAPE_MISMATCH", "expected cuSeqlensK of " + std::to_string(n + 1) + " offsets (as cuSeqlens), got " +
                                               std::to_string(cuk.length));
    } else if (S != T) {
      throw CodedError("SHAPE_MISMATCH", "expected S = T when cuSeqlens is given without cuSeqlensK, got S=" + std::to_string(S));
    }
    a.N = static_cast<int>(n);
  } else if (cuk.present) {
    throw CodedError("BAD_ARGUMENT", "expected cuSeqlensK only together with cuSeqlens");
  }
  a.cu_q = job.cu_q.empty() ? nullptr : job.cu_q.data();
  a.cu_k = job.cu_k.empty() ? nullptr : job.cu_k.data();

  // Rope tables: q's [T, K] (a step's [N, K]); keys' [S, K] when given, else q's (then S = T).
  auto table = [&](const ArrayView& x, const char* name, int64_t rows) -> const float* {
    if (!x.present) return nullptr;
    if (x.type != napi_float32_array) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be a Float32Array");
    check_len(x, checked({rows, K}, name), name, dims({rows, K}));
    return static_cast<const float*>(x.data);
  };
  if (rc.present != rs.present) throw CodedError("BAD_ARGUMENT", "expected ropeCos and ropeSin together");
  if (rkc.present != rks.present) throw CodedError("BAD_ARGUMENT", "expected ropeKCos and ropeKSin together");
  if (rc.present && K % 2 != 0) throw CodedError("SHAPE_MISMATCH", "expected K even with rope, got K=" + std::to_string(K));
  const int64_t qrows = a.step ? B : T;
  a.cos_q = table(rc, "rope.cos", qrows), a.sin_q = table(rs, "rope.sin", qrows);
  if (rkc.present) {
    if (!rc.present || a.causal) throw CodedError("BAD_ARGUMENT", "expected ropeK only with rope and not causal");
    a.cos_k = table(rkc, "ropeK.cos", S), a.sin_k = table(rks, "ropeK.sin", S);
  } else if (rc.present) {
    if (S != T && !a.step) throw CodedError("BAD_ARGUMENT", "expected ropeK tables [S, K] for the keys when S != T");
    a.cos_k = a.cos_q, a.sin_k = a.sin_q;
  }

  const int64_t L = nala_state_len(a.K, a.V);
  const int64_t ns = checked({a.N, Hk, L}, "state");
  auto state = [&](const ArrayView& x, const char* name) -> float* {
    if (!x.present) return nullptr;
    if (!a.causal) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " only when causal");
    if (x.type != napi_float32_array) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be a Float32Array");
    check_len(x, ns, name, dims({a.N, Hk, L}));
    return static_cast<float*>(x.data);
  };
  a.initial_state = state(s0, a.step ? "state" : "initialState");
  a.final_state = state(sf, a.step ? "state" : "finalState");
  if (a.step && (!a.initial_state || a.final_state != a.initial_state))
    throw CodedError("BAD_ARGUMENT", "expected a step's finalState to be its initialState (in place)");
  job.in_place = a.final_state != nullptr && a.final_state == a.initial_state;

  a.eps = static_cast<float>(get_number(o, "eps", 1e-6));
  if (!(a.eps > 0) || !std::isfinite(a.eps)) throw CodedError("OUT_OF_RANGE", "expected eps > 0 and finite");
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data;

  // o is written while the inputs and the state are still read (by other threads too): no overlap is safe;
  // a fresh finalState likewise.
  const int64_t es = dtype_bytes(a.dtype), o_bytes = no * es, st_bytes = ns * 4, rope_q = qrows * K * 4, rope_k = S * K * 4;
  const struct { const char* name; const void* p; int64_t bytes; } inputs[] = {
      {"q", q.data, nq * es}, {"k", k.data, nk * es}, {"v", v.data, nv * es},
      {"rope.cos", rc.data, rc.present ? rope_q : 0}, {"rope.sin", rs.data, rs.present ? rope_q : 0},
      {"ropeK.cos", rkc.data, rkc.present ? rope_k : 0}, {"ropeK.sin", rks.data, rks.present ? rope_k : 0},
      {a.step ? "state" : "initialState", a.initial_state, a.initial_state ? st_bytes : 0},
      {"cuSeqlens", cu.data, cu.present ? cu.length * 4 : 0}, {"cuSeqlensK", cuk.data, cuk.present ? cuk.length * 4 : 0},
  };
  for (const auto& in : inputs) {
    if (overlap(a.o, o_bytes, in.p, in.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected o in memory apart from the inputs, got a view overlapping ") + in.name);
    if (!job.in_place && overlap(a.final_state, a.final_state ? st_bytes : 0, in.p, in.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected finalState in memory apart from the inputs, got a view overlapping ") + in.name);
  }
  if (overlap(a.o, o_bytes, a.final_state, a.final_state ? st_bytes : 0))
    throw CodedError("BAD_ARGUMENT", "expected o and the state in memory apart, got overlapping views");

  job.scans = {{"q", q.data, a.dtype, nq}, {"k", k.data, a.dtype, nk}, {"v", v.data, a.dtype, nv}};
  if (rc.present) job.scans.push_back({"rope.cos", rc.data, DType::f32, qrows * K}), job.scans.push_back({"rope.sin", rs.data, DType::f32, qrows * K});
  if (rkc.present) job.scans.push_back({"ropeK.cos", rkc.data, DType::f32, S * K}), job.scans.push_back({"ropeK.sin", rks.data, DType::f32, S * K});
  if (a.initial_state) job.scans.push_back({a.step ? "state" : "initialState", a.initial_state, DType::f32, ns});

  a.cancel = cancel_flag(cancel);
  job.caller_out = get_bool(o, "callerOut");
  job.pinned = pin({&q, &k, &v, &out, &cu, &cuk, &rc, &rs, &rkc, &rks, &s0, &sf, &cancel});
  return job;
}

}  // namespace

void register_nala(Napi::Env env, Napi::Object exports) {
  export_op<NalaJob, parse>(env, exports, "nala", "nalaAsync");
}

}  // namespace sk
