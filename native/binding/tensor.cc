// N-API glue of the dtype conversion behind the tensor helpers:
//
//   castArray({ src, srcDtype, dst, dstDtype })       -> undefined (dst written)
//   castArrayAsync(same)                              -> Promise<undefined>
//
// dtypes 'float32' (Float32Array), 'float16' | 'bfloat16' (Uint16Array of raw bits); src and dst of the same
// length, apart in memory, or the very same memory when both dtypes are 2 bytes wide (in place).
#include <cstdint>
#include <string>

#include "common.h"
#include "cpu/tensor.h"

namespace sk {
namespace {

struct CastJob {
  const void* src = nullptr;
  void* dst = nullptr;
  DType sdt = DType::f32, ddt = DType::f32;
  int64_t n = 0;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() { cast_array(src, sdt, dst, ddt, n); }
};

DType dtype_of(const Napi::Object& o, const char* key, const ArrayView& a, const char* name) {
  Napi::Value v = o.Get(key);
  const std::string dt = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  DType d;
  napi_typedarray_type want;
  if (dt == "float32") d = DType::f32, want = napi_float32_array;
  else if (dt == "float16") d = DType::f16, want = napi_uint16_array;
  else if (dt == "bfloat16") d = DType::bf16, want = napi_uint16_array;
  else throw CodedError("BAD_DTYPE", std::string("expected ") + key + " float32, float16 or bfloat16, got '" + dt + "'");
  if (a.type != want)
    throw CodedError("BAD_DTYPE", std::string("expected ") + name + " data " +
                                      (want == napi_float32_array ? "Float32Array" : "Uint16Array") + " for dtype " + dt);
  return d;
}

CastJob parse(const Napi::Object& o) {
  CastJob job;
  ArrayView src = get_array(o, "src", true), dst = get_array(o, "dst", true);
  job.sdt = dtype_of(o, "srcDtype", src, "src");
  job.ddt = dtype_of(o, "dstDtype", dst, "dst");
  if (src.length != dst.length)
    throw CodedError("SHAPE_MISMATCH", "expected dst of " + std::to_string(src.length) + " elements, got " + std::to_string(dst.length));
  job.n = src.length;
  const int64_t sb = job.n * dtype_bytes(job.sdt), db = job.n * dtype_bytes(job.ddt);
  const bool same = src.data == dst.data && sb == db;
  if (job.n > 0 && !same && overlap(src.data, sb, dst.data, db))
    throw CodedError("BAD_ARGUMENT", "expected dst apart from src (or src itself for 2-byte dtypes), got an overlap");
  job.src = src.data, job.dst = dst.data;
  job.pinned = pin({&src, &dst});
  return job;
}

}  // namespace

void register_tensor(Napi::Env env, Napi::Object exports) {
  export_op<CastJob, parse>(env, exports, "castArray", "castArrayAsync");
}

}  // namespace sk
