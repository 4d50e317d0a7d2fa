// N-API glue of RMSNorm (native/cpu/norm.h): reads the argument object (typed arrays in place), checks it
// again, and runs it now or on a worker.
//   rmsNorm(args) / rmsNormAsync(args) -> undefined / Promise<undefined>; y written. args: { rows, H,
//   groupSize, eps, x, dtype, gate?, gateDtype?, weight, wDtype, y, yDtype, cancel?, callerOut? }. y may be x
//   or gate itself (each row is read before it is written), else memory apart from every input.
#include <cmath>
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/norm.h"

namespace sk {
namespace {

struct NormJob {
  NormArgs a;
  bool in_place = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() {
    if (in_place) cancel_before_writing(a.cancel);
    if (!norm_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

NormJob parse(const Napi::Object& o) {
  NormJob job;
  NormArgs& a = job.a;
  const int64_t rows = get_int(o, "rows"), H = get_int(o, "H"), G = get_int(o, "groupSize");
  if (H < 1) throw CodedError("SHAPE_MISMATCH", "expected x with a non-empty last axis (H >= 1)");
  if (G < 1 || H % G != 0) throw CodedError("OUT_OF_RANGE", "expected groupSize dividing H=" + std::to_string(H) + ", got " + std::to_string(G));
  const double eps = get_number(o, "eps", 1e-6);
  if (!(eps >= 0) || !std::isfinite(eps)) throw CodedError("OUT_OF_RANGE", "expected eps finite and >= 0");
  ArrayView x = get_array(o, "x", true), gate = get_array(o, "gate", false), w = get_array(o, "weight", true);
  ArrayView y = get_array(o, "y", true), cancel = get_array(o, "cancel", false);
  a.xdt = parse_dtype(o, "dtype", x, "x");
  if (gate.present) a.gdt = parse_dtype(o, "gateDtype", gate, "gate");
  a.wdt = parse_dtype(o, "wDtype", w, "weight");
  a.ydt = parse_dtype(o, "yDtype", y, "y");
  const int64_t n = checked({rows, H}, "x");
  check_len(x, n, "x", dims({rows, H}));
  if (gate.present) check_len(gate, n, "gate", dims({rows, H}));
  check_len(w, H, "weight", dims({H}));
  check_len(y, n, "y", dims({rows, H}));
  const int64_t yb = n * dtype_bytes(a.ydt), xb = n * dtype_bytes(a.xdt), gb = gate.present ? n * dtype_bytes(a.gdt) : 0;
  if (overlap(y.data, yb, w.data, H * dtype_bytes(a.wdt))) throw CodedError("BAD_ARGUMENT", "expected y in memory apart from weight");
  // y may be x (or gate) itself, same dtype and start: each row is read whole before it is written.
  const bool y_is_x = y.data == x.data && a.ydt == a.xdt, y_is_g = gate.present && y.data == gate.data && a.ydt == a.gdt;
  if (!y_is_x && overlap(y.data, yb, x.data, xb)) throw CodedError("BAD_ARGUMENT", "expected y to be x itself or memory apart from it, got a partial overlap");
  if (!y_is_g && overlap(y.data, yb, gate.data, gb)) throw CodedError("BAD_ARGUMENT", "expected y to be gate itself or memory apart from it, got a partial overlap");
  a.rows = rows, a.H = H, a.group = G, a.eps = static_cast<float>(eps);
  a.x = x.data, a.gate = gate.present ? gate.data : nullptr, a.w = w.data, a.y = y.data;
  a.cancel = cancel_flag(cancel);
  job.in_place = y_is_x || y_is_g || get_bool(o, "callerOut");
  job.pinned = pin({&x, &gate, &w, &y, &cancel});
  return job;
}

}  // namespace

void register_norm(Napi::Env env, Napi::Object exports) {
  export_op<NormJob, parse>(env, exports, "rmsNorm", "rmsNormAsync");
}

}  // namespace sk
