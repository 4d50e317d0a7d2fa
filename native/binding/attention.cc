// N-API glue of the attention family: reads the argument object into an AttentionArgs (typed arrays in place),
// checks it again (anything may call the addon directly), and runs it now or on a worker.
//   attention(args) / attentionAsync(args) -> undefined / Promise<undefined>; outputs written into args.o
//   (and args.lse). args: { B, T, S, Hq, Hk, D, Dv, q, k, v, dtype, o, lse?, gate?, gateDtype, gateKind,
//   causal, scale, cuSeqlens?, cuSeqlensK?, cancel?, callerOut? }. callerOut: o is the caller's buffer (the
//   `out` option), so it must end all old or all new: cancel is read once, before the first write.
#include <cmath>
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/attention.h"

namespace sk {
namespace {

constexpr int64_t kMaxHeadDim = 1024;

// N + 1 offsets: Int32Array, 0 first, `end` last, non-decreasing. Returns N.
int64_t check_offsets(const ArrayView& cu, const char* name, int64_t end, const char* end_name) {
  if (cu.type != napi_int32_array) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be an Int32Array");
  if (cu.length < 2)
    throw CodedError("SHAPE_MISMATCH", std::string("expected ") + name + " of at least 2 offsets, got " + std::to_string(cu.length));
  const int32_t* c = static_cast<const int32_t*>(cu.data);
  if (c[0] != 0) throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + "[0] = 0, got " + std::to_string(c[0]));
  for (int64_t i = 1; i < cu.length; i++)
    if (c[i] < c[i - 1])
      throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " non-decreasing, got " + std::to_string(c[i - 1]) +
                                           " then " + std::to_string(c[i]) + " at index " + std::to_string(i));
  if (c[cu.length - 1] != end)
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " to end at " + end_name + "=" + std::to_string(end) +
                                         ", got " + std::to_string(c[cu.length - 1]));
  return cu.length - 1;
}

struct AttentionJob {
  AttentionArgs a;
  bool caller_out = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  void run() {
    if (caller_out) cancel_before_writing(a.cancel);  // the caller's o must end all old or all new
    else advise_huge_pages(a.o, static_cast<int64_t>(a.B) * a.T * a.Hq * a.Dv * dtype_bytes(a.dtype));
    if (!attention_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

AttentionJob parse(const Napi::Object& o) {
  AttentionJob job;
  AttentionArgs& a = job.a;
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
  ArrayView out = get_array(o, "o", true), lse = get_array(o, "lse", false), gate = get_array(o, "gate", false);
  ArrayView cu = get_array(o, "cuSeqlens", false), cuk = get_array(o, "cuSeqlensK", false);
  ArrayView cancel = get_array(o, "cancel", false);

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

  const std::string gk = o.Get("gateKind").IsString() ? o.Get("gateKind").As<Napi::String>().Utf8Value() : "none";
  if (gk == "none") a.gate_kind = GateKind::none;
  else if (gk == "elementwise") a.gate_kind = GateKind::elementwise;
  else if (gk == "headwise") a.gate_kind = GateKind::headwise;
  else throw CodedError("BAD_ARGUMENT", "expected gateKind none, elementwise or headwise, got " + gk);
  if (a.gate_kind != GateKind::none) {
    if (!gate.present) throw CodedError("BAD_ARGUMENT", "expected gate with gateKind " + gk);
    a.gate_dtype = parse_dtype(o, "gateDtype", gate, "gate");
    if (a.gate_kind == GateKind::elementwise) check_len(gate, checked({B, T, Hq, Dv}, "gate"), "gate", dims({B, T, Hq, Dv}));
    else check_len(gate, checked({B, T, Hq}, "gate"), "gate", dims({B, T, Hq}));
    a.gate = gate.data;
  } else if (gate.present) {
    throw CodedError("BAD_ARGUMENT", "expected gateKind elementwise or headwise with a gate, got none");
  }

  a.N = static_cast<int>(B);
  if (cu.present) {
    if (B != 1) throw CodedError("SHAPE_MISMATCH", "expected B = 1 with cuSeqlens, got B=" + std::to_string(B));
    const int64_t n = check_offsets(cu, "cuSeqlens", T, "T");
    a.cu_q = static_cast<const int32_t*>(cu.data);
    if (cuk.present) {
      if (check_offsets(cuk, "cuSeqlensK", S, "S") != n)
        throw CodedError("SHAPE_MISMATCH", "expected cuSeqlensK of " + std::to_string(n + 1) + " offsets (as cuSeqlens), got " +
                                               std::to_string(cuk.length));
      a.cu_k = static_cast<const int32_t*>(cuk.data);
    } else {
      if (S != T)
        throw CodedError("SHAPE_MISMATCH", "expected S = T when cuSeqlens is given without cuSeqlensK, got S=" + std::to_string(S) +
                                               ", T=" + std::to_string(T));
      a.cu_k = a.cu_q;
    }
    a.N = static_cast<int>(n);
  } else if (cuk.present) {
    throw CodedError("BAD_ARGUMENT", "expected cuSeqlensK only together with cuSeqlens");
  }

  a.causal = get_bool(o, "causal");
  a.no_split = get_bool(o, "noSplit");
  a.scale = static_cast<float>(get_number(o, "scale", 1.0 / std::sqrt(static_cast<double>(D))));
  if (!std::isfinite(a.scale)) throw CodedError("NON_FINITE", "expected a finite scale");
  a.q = q.data, a.k = k.data, a.v = v.data, a.o = out.data;

  // The outputs are written while the inputs are still read (by other threads too): no overlap is safe.
  const int64_t es = dtype_bytes(a.dtype);
  const int64_t o_bytes = no * es, lse_bytes = lse.present ? nlse * 4 : 0;
  const int64_t gate_bytes = a.gate ? gate.length * dtype_bytes(a.gate_dtype) : 0;
  const struct { const char* name; const void* p; int64_t bytes; } inputs[] = {
      {"q", q.data, nq * es}, {"k", k.data, nk * es}, {"v", v.data, nv * es}, {"gate", a.gate, gate_bytes},
      {"cuSeqlens", a.cu_q, cu.present ? cu.length * 4 : 0}, {"cuSeqlensK", cuk.present ? cuk.data : nullptr, cuk.present ? cuk.length * 4 : 0},
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
  job.pinned = pin({&q, &k, &v, &out, &lse, &gate, &cu, &cuk, &cancel});
  return job;
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  export_op<AttentionJob, parse>(env, exports, "attention", "attentionAsync");
}

}  // namespace sk
