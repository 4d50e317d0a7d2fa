// linear on the CPU: y[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]) for x [M, K] and weight [N, K] (PyTorch's
// layout: one row per output feature), float32 compute. x, weight and bias each float32, float16 or bfloat16
// (the weights widened in registers as they load); y float32 or a 16-bit dtype (rounded once at the end).
//
// Two paths, by the number of rows (row_wise: always the first, in blocks of kLinearGemvRows rows):
//   GEMV (M <= kLinearGemvRows, decode): the weights stream once for all M rows. Tasks are contiguous ranges
//     of output features; each loads a block of R weight rows' vectors once (widened in registers) and applies
//     them to the M rows (R x M accumulators), the K axis in chunks of kLinearChunk columns (x copied with padded
//     rows, its chunk in L1), software prefetch one block ahead in the weight stream.
//   GEMM (more rows): x is packed once per call into row tiles of MR rows ([chunk][tile][kc][MR]); tasks are
//     (row block, feature block) tiles; each packs its features' weights chunk by chunk into float32 panels of
//     NR columns (each weight packed once per row block) and runs the MR x NR register-blocked microkernel
//     over its row tiles, y starting as the bias.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

constexpr int kLinearGemvRows = 8;   // rows up to this take the GEMV path
constexpr int kLinearChunk = 1024;   // GEMV: x columns per chunk (8 rows: 32 KiB, in L1)
constexpr int kLinearKC = 256;       // GEMM: inner-dimension chunk of a packed panel (AVX-512: 32 KiB, in L1)
constexpr int kLinearNC = 256;       // GEMM: features per task (a multiple of every level's NR)
constexpr int kLinearMC = 768;       // GEMM: rows per task (a multiple of every level's MR)

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
  int mr, nr;  // the GEMM microkernel's tile: MR rows x NR columns (floats)
  // y[m * ldy + j] = x_m . w_j + bias[j] for m < M (M <= kLinearGemvRows), j in [j0, j1); x float32 [M, K]
  // with row stride ldx (>= K).
  void (*gemv)(const float* x, int64_t ldx, int M, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y,
               int64_t ldy);
  // x [M, K] float32 packed for the GEMM: row tiles [t0, t1) of MR rows, layout in linear_impl.h pack_x;
  // xp holds M rounded up to MR times K floats.
  void (*pack_x)(const float* x, int64_t M, int K, int64_t t0, int64_t t1, float* xp);
  // y rows of tiles [t0, t1) x features [j0, j1) (at most kLinearNC) = xp . w^T + bias; pack: (kLinearKC + kLinearMC) x
  // kLinearNC floats.
  void (*gemm)(const float* xp, int64_t M, int K, const void* w, DType wdt, int j0, int j1, int64_t t0, int64_t t1,
               const float* bias, float* y, int64_t ldy, float* pack);
  void (*to_f32)(const void* src, DType dt, int64_t off, int n, float* dst);
  void (*from_f32)(const float* src, void* dst, DType dt, int64_t off, int n);
  // A row of x (K values of dt at element offset off) as gemv reads it for weights of wdt (float32, in the
  // column order that level's kernel wants); dst holds K rounded up to 32 floats.
  void (*gemv_x)(const void* src, DType dt, int64_t off, int K, DType wdt, float* dst);
};
const LinearKernels& linear_kernels(SimdLevel l);
namespace avx512 { extern const LinearKernels kLinearKernels; }
namespace avx2 { extern const LinearKernels kLinearKernels; }
namespace portable { extern const LinearKernels kLinearKernels; }

// Runs the call on the pool. Returns false when cancelled (y then partly written).
bool linear_forward(const LinearArgs& a);

}  // namespace sk
