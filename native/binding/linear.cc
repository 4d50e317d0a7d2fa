// N-API glue of linear: reads the argument object into a LinearArgs (typed arrays in place), checks it again
// (anything may call the addon directly), and runs it now or on a worker.
//   linear(args) / linearAsync(args) -> undefined / Promise<undefined>; y written into args.out.
//   args: { M, K, N, x, xDtype, weight, weightDtype, bias?, biasDtype?, out, outDtype, cancel?, callerOut?, rowWise? }:
//   x [M, K], weight [N, K], bias [N], out [M, N]; dtypes 'float32' (Float32Array) | 'float16' | 'bfloat16'
//   (Uint16Array of raw bits). callerOut: out is the caller's buffer, so it must end all old or all new: cancel
//   is read once, before the first write.
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/linear.h"

namespace sk {
namespace {

struct LinearJob {
  LinearArgs a;
  bool caller_out = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  void run() {
    if (caller_out) cancel_before_writing(a.cancel);  // the caller's out must end all old or all new
    else advise_huge_pages(a.y, a.M * a.N * dtype_bytes(a.ydt));
    if (!linear_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

LinearJob parse(const Napi::Object& o) {
  LinearJob job;
  LinearArgs& a = job.a;
  const int64_t M = get_int(o, "M"), K = get_int(o, "K"), N = get_int(o, "N");
  const int64_t nx = checked({M, K}, "x"), nw = checked({N, K}, "weight"), ny = checked({M, N}, "out");
  ArrayView x = get_array(o, "x", true), w = get_array(o, "weight", true), bias = get_array(o, "bias", false);
  ArrayView out = get_array(o, "out", true), cancel = get_array(o, "cancel", false);
  a.xdt = parse_dtype(o, "xDtype", x, "x");
  a.wdt = parse_dtype(o, "weightDtype", w, "weight");
  if (bias.present) a.bdt = parse_dtype(o, "biasDtype", bias, "bias");
  a.ydt = parse_dtype(o, "outDtype", out, "out");
  check_len(x, nx, "x", dims({M, K}));
  check_len(w, nw, "weight", dims({N, K}));
  if (bias.present) check_len(bias, N, "bias", dims({N}));
  check_len(out, ny, "out", dims({M, N}));
  // out is written while the inputs are still read (by other threads too): no overlap is safe.
  const int64_t y_bytes = ny * dtype_bytes(a.ydt);
  struct In {
    const void* p;
    int64_t bytes;
    const char* name;
  };
  for (const In& in : {In{x.data, nx * dtype_bytes(a.xdt), "x"}, In{w.data, nw * dtype_bytes(a.wdt), "weight"},
                       In{bias.data, bias.present ? N * dtype_bytes(a.bdt) : 0, "bias"}})
    if (overlap(out.data, y_bytes, in.p, in.bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected out in memory apart from the inputs, got a view overlapping ") + in.name);
  a.M = M, a.K = static_cast<int>(K), a.N = static_cast<int>(N);
  a.x = x.data, a.w = w.data, a.bias = bias.present ? bias.data : nullptr, a.y = out.data;
  a.cancel = cancel_flag(cancel);
  job.caller_out = get_bool(o, "callerOut");
  a.row_wise = get_bool(o, "rowWise");
  job.pinned = pin({&x, &w, &bias, &out, &cancel});
  return job;
}

}  // namespace

void register_linear(Napi::Env env, Napi::Object exports) {
  export_op<LinearJob, parse>(env, exports, "linear", "linearAsync");
}

}  // namespace sk
