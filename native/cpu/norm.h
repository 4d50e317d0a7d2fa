// RMSNorm and gated RMSNorm (fla's FusedRMSNormGated; issue 14 part 4) over the last axis of x [rows, H]:
//   y = x / sqrt(mean_g(x^2) + eps) * w            (rmsNorm)
//   y = x / sqrt(mean_g(x^2) + eps) * w * silu(gate)  (rmsNormGated, gate [rows, H])
// mean_g over each group of `group` consecutive channels (group divides H; group = H: the whole row).
// x, gate, w, y each float32, float16 or bfloat16 (compute in float32; y may be x or gate itself: each row
// is read whole before it is written).
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

struct NormArgs {
  int64_t rows = 0, H = 0, group = 0;
  const void* x = nullptr;
  DType xdt = DType::f32;
  const void* gate = nullptr;  // or null
  DType gdt = DType::f32;
  const void* w = nullptr;  // [H]
  DType wdt = DType::f32;
  void* y = nullptr;
  DType ydt = DType::f32;
  float eps = 1e-6f;
  const int32_t* cancel = nullptr;
};

struct NormKernels {
  // Rows [r0, r1); w32: the weight as float32; scratch: 2 * H floats.
  void (*rows)(const NormArgs& a, const float* w32, int64_t r0, int64_t r1, float* scratch);
  void (*to_f32)(const void* src, DType dt, int64_t off, int n, float* dst);
};
const NormKernels& norm_kernels(SimdLevel l);
namespace avx512 { extern const NormKernels kNormKernels; }
namespace avx2 { extern const NormKernels kNormKernels; }
namespace portable { extern const NormKernels kNormKernels; }

// Returns false when cancelled (y partly written: the binding drops the flag when y is the caller's).
bool norm_forward(const NormArgs& a);

}  // namespace sk
