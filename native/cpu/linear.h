// linear on the CPU: y[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]) for x [M, K] and weight [N, K] (PyTorch's
// layout: one row per output feature), float32 compute. x, weight and bias each float32, float16 or bfloat16
// (the weights widened in registers as they load); y float32 or a 16-bit dtype (rounded once at the end).
//
// Two paths, by the number of rows (row_wise: always the first, in blocks of kLinearGemvRows rows):
//   GEMV (M <= kLinearGemvRows, decode): the weights stream once for all M rows. Tasks are contiguous ranges
//     of output features; each loads a block of R weight rows' vectors once (widened in registers) and applies
//     them to the M rows (R x M accumulators), the K axis in chunks of kLinearChunk columns (x copied with padded
//     rows, its chunk in L1), software prefetch one block ahead in the weight stream.
//   GEMM (more rows): tasks are (row block, column block) tiles; each packs its weight columns chunk by chunk
//     into float32 panels of the microkernel's width (gemm_impl.h: MR rows x NR columns in registers) and runs
//     the microkernel over its rows, accumulating into y (which starts as the bias).
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

constexpr int kLinearGemvRows = 8;   // rows up to this take the GEMV path
constexpr int kLinearChunk = 512;    // GEMV: x columns per chunk (8 rows: 16 KiB, in L1)
constexpr int kLinearKC = 256;       // GEMM: inner-dimension chunk of a packed panel
constexpr int kLinearMC = 192;       // GEMM: rows per task (a multiple of every level's MR)
constexpr int kLinearPanels = 4;     // GEMM: panels (of NR columns) per task

struct LinearArgs {
  int64_t M = 0;
  int K = 0, N = 0;
  const void* x = nullptr;     // [M, K]
  DType xdt = DType::f32;
  const void* w = nullptr;     // [N, K]
  DType wdt = DType::f32;
  const void* bias = nullptr;  // [N] or null
  DType bdt = DType::f32;
  void* y = nullptr;           // [M, N]
  DType ydt = DType::f32;
  // batchInvariant: every row on the GEMV path (blocks of kLinearGemvRows rows), so a row's bits do not
  // depend on how many rows the call has (the GEMM sums in another order).
  bool row_wise = false;
  const int32_t* cancel = nullptr;
};

struct LinearKernels {
  int panel;  // NR: the microkernel's column width (floats)
  // y[m * ldy + j] = x_m . w_j + bias[j] for m < M (M <= kLinearGemvRows), j in [j0, j1); x float32 [M, K]
  // with row stride ldx (>= K).
  void (*gemv)(const float* x, int64_t ldx, int M, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y,
               int64_t ldy);
  // The same for `rows` (<= kLinearMC) rows of x through packed panels; pack: kLinearKC * kLinearPanels * panel
  // floats, apack: kLinearMC * kLinearKC floats (the rows' chunk, contiguous).
  void (*gemm)(const float* x, int rows, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y,
               int64_t ldy, float* pack, float* apack);
  void (*to_f32)(const void* src, DType dt, int64_t off, int n, float* dst);
  void (*from_f32)(const float* src, void* dst, DType dt, int64_t off, int n);
};
const LinearKernels& linear_kernels(SimdLevel l);
namespace avx512 { extern const LinearKernels kLinearKernels; }
namespace avx2 { extern const LinearKernels kLinearKernels; }
namespace portable { extern const LinearKernels kLinearKernels; }

// Runs the call on the pool. Returns false when cancelled (y then partly written).
bool linear_forward(const LinearArgs& a);

}  // namespace sk
