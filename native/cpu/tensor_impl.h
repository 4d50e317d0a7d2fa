// Per-level body of the dtype conversion (included once per SIMD level with SK_LEVEL_NS set): each block of
// elements widens into a float32 buffer on the stack and narrows into the destination, with the row loads
// and stores of convert_impl.h (F16C for float16, integer rounding for bfloat16).
#include <cstdint>
#include <cstring>

#include "tensor.h"
#include "vec.h"
#include "convert_impl.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

void cast(const void* src, DType sdt, void* dst, DType ddt, int64_t n) {
  constexpr int kBlock = 1024;  // 4 KiB of float32: stays in L1 between the widen and the narrow
  alignas(64) float buf[kBlock];
  for (int64_t off = 0; off < n; off += kBlock) {
    const int m = static_cast<int>(n - off < kBlock ? n - off : kBlock);
    if (ddt == DType::f32) {
      load_row(src, sdt, off, m, static_cast<float*>(dst) + off);
    } else if (sdt == DType::f32) {
      store_row(dst, ddt, off, m, static_cast<const float*>(src) + off);
    } else {
      load_row(src, sdt, off, m, buf);
      store_row(dst, ddt, off, m, buf);
    }
  }
}

}  // namespace

extern const TensorKernels kTensorKernels = {cast};

}  // namespace SK_LEVEL_NS
}  // namespace sk
