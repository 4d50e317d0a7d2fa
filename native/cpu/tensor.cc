// Driver of the dtype conversion: the kernels of the current SIMD level, on the calling thread for small
// arrays (waking the pool costs more than converting them) and in pieces of kPiece elements over the pool
// otherwise.
#include "tensor.h"

#include <cstring>

#include "threadpool.h"

namespace sk {
namespace {

constexpr int64_t kSerial = int64_t(1) << 18;  // ~100 us of conversion on one core
constexpr int64_t kPiece = int64_t(1) << 16;   // a multiple of every vector width and of the kernel's block

const TensorKernels& kernels() {
  switch (simd_level()) {
    case SimdLevel::avx512: return avx512::kTensorKernels;
    case SimdLevel::avx2: return avx2::kTensorKernels;
    default: return portable::kTensorKernels;
  }
}

}  // namespace

void cast_array(const void* src, DType sdt, void* dst, DType ddt, int64_t n) {
  if (n <= 0) return;
  if (sdt == ddt) {
    if (src != dst) std::memcpy(dst, src, static_cast<size_t>(n) * dtype_bytes(sdt));
    return;
  }
  const TensorKernels& k = kernels();
  if (n <= kSerial) return k.cast(src, sdt, dst, ddt, n);
  const int es = dtype_bytes(sdt), ed = dtype_bytes(ddt);
  parallel_for((n + kPiece - 1) / kPiece, [&](int64_t i, int) {
    const int64_t off = i * kPiece, m = n - off < kPiece ? n - off : kPiece;
    k.cast(static_cast<const char*>(src) + off * es, sdt, static_cast<char*>(dst) + off * ed, ddt, m);
  });
}

}  // namespace sk
