// Whole-array dtype conversion behind tensor.to(dtype), toFloat32, toFloat16 and toBFloat16: float32,
// float16 and bfloat16 in any direction, rounding to nearest even, NaN kept (quiet), split over the pool
// for large arrays.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

struct TensorKernels {
  // dst[i] = src[i] converted, i in [0, n); src and dst are apart or the same memory of one element width.
  void (*cast)(const void* src, DType sdt, void* dst, DType ddt, int64_t n);
};

namespace avx512 { extern const TensorKernels kTensorKernels; }
namespace avx2 { extern const TensorKernels kTensorKernels; }
namespace portable { extern const TensorKernels kTensorKernels; }

// Converts n elements at the current SIMD level; large arrays in pieces over the thread pool.
void cast_array(const void* src, DType sdt, void* dst, DType ddt, int64_t n);

}  // namespace sk
