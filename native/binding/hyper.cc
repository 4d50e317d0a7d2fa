// N-API glue of HyperAttention: reads the argument object into a HyperArgs (typed arrays in place), checks it
// again (anything may call the addon directly), plans the call to refuse sizes before anything is written,
// and runs it now or on a worker.
//   hyperAttention(args) / hyperAttentionAsync(args) -> undefined / Promise<undefined>; outputs written into
//   args.o (and args.lse). args: { B, T, S, Hq, Hk, D, Dv, q, k, v, dtype, o, lse?, causal, scale, lshBits,
//   blockSize, sampleSize, minSeqLen, seed, cancel?, callerOut? }. callerOut: o is the caller's buffer (the
//   `out` option), so it must end all old or all new: cancel is read once, before the first write.
//   hyperRandom({ seed, D, lshBits, R?, b, hk, q0, n, samples? }) -> undefined: the generator's R [D, lshBits]
//   and the first samples.length draws in [0, n) of the sample stream (b, hk, q0), for the tests.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/hyper.h"

namespace sk {
namespace {

constexpr int64_t kMaxHeadDim = 1024;
constexpr int kMaxLshBits = 16;
constexpr int64_t kMaxLeaves = int64_t{1} << 20;

int64_t get_range(const Napi::Object& o, const char* name, int64_t lo, int64_t hi) {
  const int64_t x = get_int(o, name);
  if (x < lo || x > hi)
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                         "], got " + std::to_string(x));
  return x;
}

uint64_t get_seed(const Napi::Object& o) {
  const double s = get_number(o, "seed", 0.0);
  if (!(s >= 0 && s <= 9007199254740991.0) || s != std::floor(s))
    throw CodedError("OUT_OF_RANGE", "expected seed an integer in [0, 2^53), got " + std::to_string(s));
  return static_cast<uint64_t>(s);
}

struct HyperJob {
  HyperArgs a;
  bool caller_out = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  void run() {
    if (caller_out) cancel_before_writing(a.cancel);  // the caller's o must end all old or all new
    else advise_huge_pages(a.o, static_cast<int64_t>(a.B) * a.T * a.Hq * a.Dv * dtype_bytes(a.dtype));
    if (!hyper_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

HyperJob parse(const Napi::Object& o) {
  HyperJob job;
  HyperArgs& a = job.a;
  const int64_t B = get_int(o, "B"), T = get_int(o, "T"), S = get_int(o, "S"), Hq = get_int(o, "Hq"),
                Hk = get_int(o, "Hk"), D = get_int(o, "D"), Dv = get_int(o, "Dv");
  if (Hq < 1 || Hk < 1 || D < 1 || Dv < 1)
    throw CodedError("SHAPE_MISMATCH", "expected Hq, Hk, D, Dv >= 1, got " + dims({Hq, Hk, D, Dv}));
  if (Hq % Hk != 0)
    throw CodedError("SHAPE_MISMATCH", "expected Hq a multiple of Hk (grouped heads), got Hq=" + std::to_string(Hq) + ", Hk=" + std::to_string(Hk));
  if (D > kMaxHeadDim || Dv > kMaxHeadDim) throw CodedError("TOO_LARGE", "expected D, Dv <= 1024, got " + dims({D, Dv}));
  const int64_t nq = checked({B, T, Hq, D}, "q"), nk = checked({B, S, Hk, D}, "k"), nv = checked({B, S, Hk, Dv}, "v");
  const int64_t no = checked({B, T, Hq, Dv}, "o"), nlse = checked({B, Hq, T}, "lse");
  a.B = static_cast<int>(B), a.T = static_cast<int>(T), a.S = static_cast<int>(S), a.Hq = static_cast<int>(Hq);
  a.Hk = static_cast<int>(Hk), a.D = static_cast<int>(D), a.Dv = static_cast<int>(Dv);

  ArrayView q = get_array(o, "q", true), k = get_array(o, "k", true), v = get_array(o, "v", true);
  ArrayView out = get_array(o, "o", true), lse = get_array(o, "lse", false), cancel = get_array(o, "cancel", false);
  a.dtype = parse_qkvo_dtype(o, q, k, v, out);
  check_len(q, nq, "q", dims({B, T, Hq, D}));
  check_len(k, nk, "k", dims({B, S, Hk, D}));
  check_len(v, nv, "v", dims({B, S, Hk, Dv}));
  check_len(out, no, "o", dims({B, T, Hq, Dv}));
  if (lse.present) {
    if (lse.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected lse to be a Float32Array");
    check_len(lse, nlse, "lse", dims({B, Hq, T}));
    a.lse = static_cast<float*>(lse.data);
  }

  a.causal = get_bool(o, "causal");
  if (a.causal && S != T)
    throw CodedError("SHAPE_MISMATCH", "expected S = T when causal, got T=" + std::to_string(T) + ", S=" + std::to_string(S));
  a.scale = static_cast<float>(get_number(o, "scale", 1.0 / std::sqrt(static_cast<double>(D))));
  if (!std::isfinite(a.scale)) throw CodedError("NON_FINITE", "expected a finite scale");
  a.lsh_bits = static_cast<int>(get_range(o, "lshBits", 0, kMaxLshBits));
  a.block_size = static_cast<int>(get_range(o, "blockSize", 1, 2147483647));
  a.sample_size = static_cast<int>(get_range(o, "sampleSize", 0, 2147483647));
  a.min_seq_len = static_cast<int>(get_int(o, "minSeqLen"));
  a.seed = get_seed(o);
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data;

  // Causal: every leaf of the recursion is longer than (minSeqLen + 1) / 2, so this bounds the plan's leaves
  // and problems before it enumerates them.
  if (a.causal && T > a.min_seq_len && T / std::max<int64_t>(1, (a.min_seq_len + int64_t{1}) / 2) > kMaxLeaves)
    throw CodedError("TOO_LARGE", "expected minSeqLen large enough for at most 2^20 leaves of the causal recursion, got minSeqLen=" +
                                      std::to_string(a.min_seq_len) + " for T=" + std::to_string(T));

  // The gathered buffers of the plan, refused past the element cap (and the packed offsets past int32)
  // before anything is allocated or written.
  const HyperPlan plan = hyper_plan(a);
  const int64_t width = std::max(D, Dv), group = Hq / Hk;
  const struct { const char* name; int64_t rows, per; } bufs[] = {
      {"gathered queries", plan.qrows, group * width}, {"gathered keys", plan.krows, width},
      {"sampled keys", plan.srows, width}, {"packed sequences", plan.seqs + 1, 1},
  };
  for (const auto& b : bufs) {
    int64_t n;
    if (__builtin_mul_overflow(b.rows, b.per, &n) || n > kMaxElements || b.rows > kMaxElements)
      throw CodedError("TOO_LARGE", std::string("expected the ") + b.name + " of HyperAttention to fit 2^31 - 1 elements, got " +
                                        std::to_string(b.rows) + " rows of " + std::to_string(b.per));
  }

  // The outputs are written while the inputs are still read (by other threads too): no overlap is safe.
  const int64_t es = dtype_bytes(a.dtype);
  const int64_t o_bytes = no * es, lse_bytes = lse.present ? nlse * 4 : 0;
  const struct { const char* name; const void* p; int64_t bytes; } inputs[] = {
      {"q", q.data, nq * es}, {"k", k.data, nk * es}, {"v", v.data, nv * es},
  };
  for (const auto& in : inputs) {
    if (overlap(a.o, o_bytes, in.p, in.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected o in memory apart from the inputs, got a view overlapping ") + in.name);
    if (overlap(a.lse, lse_bytes, in.p, in.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected lse in memory apart from the inputs, got a view overlapping ") + in.name);
  }
  if (overlap(a.o, o_bytes, a.lse, lse_bytes)) throw CodedError("BAD_ARGUMENT", "expected o and lse in memory apart, got overlapping views");

  a.cancel = cancel_flag(cancel);
  job.caller_out = get_bool(o, "callerOut");
  job.pinned = pin({&q, &k, &v, &out, &lse, &cancel});
  return job;
}

Napi::Value HyperRandom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("BAD_ARGUMENT", "expected an argument object");
    const Napi::Object o = info[0].As<Napi::Object>();
    const uint64_t seed = get_seed(o);
    ArrayView R = get_array(o, "R", false), samples = get_array(o, "samples", false);
    if (R.present) {
      const int64_t D = get_range(o, "D", 1, kMaxHeadDim), bits = get_range(o, "lshBits", 0, kMaxLshBits);
      if (R.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected R to be a Float32Array");
      check_len(R, D * bits, "R", dims({D, bits}));
      hyper_projections(seed, static_cast<int>(D), static_cast<int>(bits), static_cast<float*>(R.data));
    }
    if (samples.present) {
      if (samples.type != napi_int32_array) throw CodedError("BAD_DTYPE", "expected samples to be an Int32Array");
      const int64_t n = get_range(o, "n", 1, 2147483647);
      const uint64_t stream = hyper_sample_stream(seed, get_int(o, "b"), get_int(o, "hk"), get_int(o, "q0"));
      int32_t* s = static_cast<int32_t*>(samples.data);
      for (int64_t j = 0; j < samples.length; j++) s[j] = hyper_sample(stream, j, static_cast<int32_t>(n));
    }
    return env.Undefined();
  });
}

}  // namespace

void register_hyper(Napi::Env env, Napi::Object exports) {
  export_op<HyperJob, parse>(env, exports, "hyperAttention", "hyperAttentionAsync");
  exports.Set("hyperRandom", Napi::Function::New(env, HyperRandom));
}

}  // namespace sk
