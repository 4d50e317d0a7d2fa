// N-API glue of softmax: reads the argument object (typed arrays in place), checks it again (anything may
// call the addon directly), and runs it now or on a worker.
//
//   softmax({ x, out, dtype, rows, cols, algorithm, strict, cancel? })       -> undefined (out written)
//   softmaxAsync(same)                                                       -> Promise<undefined>
//
// x and out: [rows, cols] of dtype ('float32': Float32Array, 'float16' | 'bfloat16': Uint16Array of raw
// bits); out may be x itself (the same memory), not a partial overlap of it. algorithm 'two-pass' |
// 'three-pass'. cancel: an Int32Array(1) the caller sets to abort (ignored once an in-place call starts).
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/softmax.h"

namespace sk {
namespace {

struct SoftmaxJob {
  SoftmaxArgs a;
  bool in_place = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;  // the arrays' memory, alive until the job ends
  void run() {
    if (in_place) cancel_before_writing(a.cancel);  // in place, x must end all old or all new
    if (!in_place) advise_huge_pages(a.y, a.rows * a.cols * (a.dtype == DType::f32 ? 4 : 2));
    const SoftmaxStatus s = softmax_run(a);
    switch (s.code) {
      case SoftmaxStatus::ok: return;
      case SoftmaxStatus::cancelled: throw CodedError("ABORTED", "aborted");
      case SoftmaxStatus::non_finite:
        throw CodedError("NON_FINITE", "expected x without NaN or +Inf (strict), got one in row " + std::to_string(s.row));
      case SoftmaxStatus::all_neg_inf:
        throw CodedError("OUT_OF_RANGE", "expected x with a finite entry in every row (strict), got row " +
                                             std::to_string(s.row) + " of all -Inf");
    }
  }
};

std::string get_string(const Napi::Object& o, const char* key, const char* dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return dflt;
  if (!v.IsString()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + key + " to be a string");
  return v.As<Napi::String>().Utf8Value();
}

SoftmaxJob parse(const Napi::Object& o) {
  SoftmaxJob job;
  SoftmaxArgs& a = job.a;
  const int64_t rows = get_int(o, "rows"), cols = get_int(o, "cols");
  if (cols < 1) throw CodedError("SHAPE_MISMATCH", "expected x with a non-empty last axis (cols >= 1), got cols=0");
  int64_t n = 0;
  if (__builtin_mul_overflow(rows, cols, &n) || n > kMaxElements)
    throw CodedError("TOO_LARGE", "expected x of at most 2^31 - 1 elements, got rows=" + std::to_string(rows) +
                                      ", cols=" + std::to_string(cols));
  ArrayView x = get_array(o, "x", true), out = get_array(o, "out", true), cancel = get_array(o, "cancel", false);

  const std::string dt = get_string(o, "dtype", "float32");
  napi_typedarray_type want;
  if (dt == "float32") a.dtype = DType::f32, want = napi_float32_array;
  else if (dt == "float16") a.dtype = DType::f16, want = napi_uint16_array;
  else if (dt == "bfloat16") a.dtype = DType::bf16, want = napi_uint16_array;
  else throw CodedError("BAD_DTYPE", "expected dtype float32, float16 or bfloat16, got " + dt);
  const char* storage = want == napi_float32_array ? "Float32Array" : "Uint16Array";
  if (x.type != want) throw CodedError("BAD_DTYPE", std::string("expected x data ") + storage + " for dtype " + dt);
  if (out.type != want) throw CodedError("BAD_DTYPE", std::string("expected out data ") + storage + " for dtype " + dt);
  const std::string shape = "[" + std::to_string(rows) + "," + std::to_string(cols) + "] (" + std::to_string(n) + " elements)";
  if (x.length != n) throw CodedError("SHAPE_MISMATCH", "expected x of shape " + shape + ", got " + std::to_string(x.length));
  if (out.length != n) throw CodedError("SHAPE_MISMATCH", "expected out of shape " + shape + ", got " + std::to_string(out.length));

  // out is x itself (in place), or memory apart from it: a partial overlap would read elements already
  // overwritten. Compared by address, so views of one SharedArrayBuffer are caught too.
  const int64_t es = a.dtype == DType::f32 ? 4 : 2;
  const uintptr_t xb = reinterpret_cast<uintptr_t>(x.data), ob = reinterpret_cast<uintptr_t>(out.data);
  const uintptr_t bytes = static_cast<uintptr_t>(n * es);
  job.in_place = n > 0 && xb == ob;
  if (n > 0 && !job.in_place && xb < ob + bytes && ob < xb + bytes)
    throw CodedError("BAD_ARGUMENT", "expected out to be x itself or memory apart from it, got a partial overlap");

  const std::string alg = get_string(o, "algorithm", "two-pass");
  if (alg != "two-pass" && alg != "three-pass")
    throw CodedError("BAD_ARGUMENT", "expected algorithm 'two-pass' or 'three-pass', got '" + alg + "'");
  a.three_pass = alg == "three-pass";
  Napi::Value strict = o.Get("strict");
  if (!strict.IsUndefined() && !strict.IsBoolean()) throw CodedError("BAD_ARGUMENT", "expected strict to be a boolean");
  a.strict = get_bool(o, "strict");
  a.cancel = cancel_flag(cancel);
  a.x = x.data, a.y = out.data, a.rows = rows, a.cols = cols;
  job.pinned = pin({&x, &out, &cancel});
  return job;
}

}  // namespace

void register_softmax(Napi::Env env, Napi::Object exports) {
  export_op<SoftmaxJob, parse>(env, exports, "softmax", "softmaxAsync");
}

}  // namespace sk
