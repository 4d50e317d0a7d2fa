// linear's per-level kernels (see linear.h), written once against Vec and compiled per SIMD level: the GEMV
// of few rows with the weights widened as they load (LoadF32 / LoadF16 / LoadBF16 of convert_impl.h), and the
// GEMM tile that packs weight panels and runs gemm_impl.h's register-blocked microkernel on them.
#pragma once
#include <cstdint>
#include <cstring>

#include "convert_impl.h"
#include "gemm_impl.h"
#include "linear.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

// Weight rows per register block for M rows: R x M accumulators (plus the loads) fit the register file.
template <int M>
constexpr int rows_per_block() {
#if defined(__AVX512F__)
  return M == 1 ? 8 : M == 2 ? 6 : M <= 4 ? 3 : 2;
#else
  return M == 1 ? 4 : M == 2 ? 4 : M <= 4 ? 2 : 1;
#endif
}

constexpr int kPrefetchAhead = 1024;  // bytes

// Output features [j, j + R) of M rows over columns [k0, k0 + kc) of x (row stride K). acc holds the
// features' running vector sums between chunks (R x M vectors); `first` starts them at zero, `last` reduces
// them into y (+ bias).
template <class L, int M, int R>
inline void gemv_block(const float* x, int K, const typename L::T* w, int j, int k0, int kc, bool first, bool last,
                       V_* acc, const float* bias, float* y, int64_t ldy) {
  constexpr int W = Vec::W;
  V_ c[R][M];
  for (int r = 0; r < R; r++)
    for (int m = 0; m < M; m++) c[r][m] = first ? Vec::zero() : acc[r * M + m];
  const typename L::T* wr[R];
  for (int r = 0; r < R; r++) wr[r] = w + static_cast<int64_t>(j + r) * K;
  int k = k0;
  const int kend = k0 + kc;
  for (; k + W <= kend; k += W) {
    // Software prefetch of each weight row 1 KiB ahead (a row is a stream of its own; with R rows in flight
    // the hardware prefetcher alone starts each one late).
    for (int r = 0; r < R; r++) prefetch(wr[r] + k + kPrefetchAhead / sizeof(typename L::T));
    if constexpr (R == 1) {
      // One feature: x straight from L1 into each FMA (a memory operand), so the M accumulators, the weight
      // vector and nothing else hold registers (M = 8 with x preloaded would spill on AVX2's 16).
      const V_ wv = L::load(wr[0] + k);
      for (int m = 0; m < M; m++) c[0][m] = Vec::fma(wv, Vec::load(x + static_cast<int64_t>(m) * K + k), c[0][m]);
    } else {
      V_ xv[M];
      for (int m = 0; m < M; m++) xv[m] = Vec::load(x + static_cast<int64_t>(m) * K + k);
      for (int r = 0; r < R; r++) {
        const V_ wv = L::load(wr[r] + k);
        for (int m = 0; m < M; m++) c[r][m] = Vec::fma(wv, xv[m], c[r][m]);
      }
    }
  }
  if (k < kend) {  // the last chunk's tail (chunks are whole vectors before it)
    const int n = kend - k;
    V_ xv[M];
    for (int m = 0; m < M; m++) xv[m] = Vec::loadp(x + static_cast<int64_t>(m) * K + k, n);
    for (int r = 0; r < R; r++) {
      const V_ wv = L::loadp(wr[r] + k, n);
      for (int m = 0; m < M; m++) c[r][m] = Vec::fma(wv, xv[m], c[r][m]);
    }
  }
  if (!last) {
    for (int r = 0; r < R; r++)
      for (int m = 0; m < M; m++) acc[r * M + m] = c[r][m];
    return;
  }
  for (int r = 0; r < R; r++) {
    const float b = bias ? bias[j + r] : 0.f;
    for (int m = 0; m < M; m++) y[m * ldy + j + r] = Vec::hsum(c[r][m]) + b;
  }
}

template <class L, int M>
void gemv_rows(const float* x, int K, const void* wv, int j0, int j1, const float* bias, float* y, int64_t ldy) {
  constexpr int R = rows_per_block<M>();
  const typename L::T* w = static_cast<const typename L::T*>(wv);
  // Partial sums of the task's features between chunks: at most kBlockRows features of M vectors each.
  constexpr int kBlockRows = 64;
  alignas(64) V_ acc[kBlockRows * M];
  for (int jb = j0; jb < j1; jb += kBlockRows) {
    const int je = j1 - jb < kBlockRows ? j1 : jb + kBlockRows;
    // x columns per chunk: M rows of them fill at most 16 KiB of L1 (M = 1: 4096 columns, so a decode row
    // up to 4096 wide is one chunk and each weight row streams start to end, one prefetch stream each).
    constexpr int kChunk = kLinearChunk * kLinearGemvRows / M / 16 * 16;
    int k0 = 0;
    do {
      const int kc = K - k0 < kChunk ? K - k0 : kChunk;
      const bool first = k0 == 0, last = k0 + kc >= K;
      int j = jb;
      for (; j + R <= je; j += R) gemv_block<L, M, R>(x, K, w, j, k0, kc, first, last, acc + (j - jb) * M, bias, y, ldy);
      for (; j < je; j++) gemv_block<L, M, 1>(x, K, w, j, k0, kc, first, last, acc + (j - jb) * M, bias, y, ldy);
      k0 += kc;
    } while (k0 < K);
  }
}

template <class L>
void gemv_dispatch(const float* x, int M, int K, const void* w, int j0, int j1, const float* bias, float* y, int64_t ldy) {
  switch (M) {
    case 1: return gemv_rows<L, 1>(x, K, w, j0, j1, bias, y, ldy);
    case 2: return gemv_rows<L, 2>(x, K, w, j0, j1, bias, y, ldy);
    case 3: return gemv_rows<L, 3>(x, K, w, j0, j1, bias, y, ldy);
    case 4: return gemv_rows<L, 4>(x, K, w, j0, j1, bias, y, ldy);
    case 5: return gemv_rows<L, 5>(x, K, w, j0, j1, bias, y, ldy);
    case 6: return gemv_rows<L, 6>(x, K, w, j0, j1, bias, y, ldy);
    case 7: return gemv_rows<L, 7>(x, K, w, j0, j1, bias, y, ldy);
    case 8: return gemv_rows<L, 8>(x, K, w, j0, j1, bias, y, ldy);
    default: return;
  }
}

void gemv(const float* x, int M, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y, int64_t ldy) {
  if (K == 0) {  // no columns: the bias (or zeros)
    for (int m = 0; m < M; m++)
      for (int j = j0; j < j1; j++) y[m * ldy + j] = bias ? bias[j] : 0.f;
    return;
  }
  switch (wdt) {
    case DType::f32: return gemv_dispatch<LoadF32>(x, M, K, w, j0, j1, bias, y, ldy);
    case DType::f16: return gemv_dispatch<LoadF16>(x, M, K, w, j0, j1, bias, y, ldy);
    case DType::bf16: return gemv_dispatch<LoadBF16>(x, M, K, w, j0, j1, bias, y, ldy);
  }
}

constexpr int kNR = kNV * Vec::W;

// Rows of x (row stride K) times weight features [j0, j1) (at most kLinearPanels * kNR of them), into y rows
// (stride ldy): y starts as the bias, then each chunk of kLinearKC columns of the features is widened and
// packed into panels (panel p: kc rows of kNR floats, feature j0 + p * kNR + c in column c) and the
// microkernel adds x[:, chunk] . panel into y.
void gemm_tile_rows(const float* x, int rows, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y,
                    int64_t ldy, float* pack, float* apack) {
  for (int r = 0; r < rows; r++) {
    float* yr = y + r * ldy;
    for (int j = j0; j < j1; j++) yr[j] = bias ? bias[j] : 0.f;
  }
  alignas(64) float row[kLinearKC];
  const int ncols = j1 - j0, npanels = (ncols + kNR - 1) / kNR;
  for (int k0 = 0; k0 < K; k0 += kLinearKC) {
    const int kc = K - k0 < kLinearKC ? K - k0 : kLinearKC;
    for (int c = 0; c < ncols; c++) {
      load_row(w, wdt, static_cast<int64_t>(j0 + c) * K + k0, kc, row);
      float* dst = pack + static_cast<int64_t>(c / kNR) * kc * kNR + c % kNR;
      for (int kk = 0; kk < kc; kk++) dst[kk * kNR] = row[kk];
    }
    // The rows' chunk copied contiguously (row stride kc): rows K floats apart (16 KiB at K = 4096) would all
    // fall in the same L1 set, and the microkernel reads MR of them at once.
    for (int r = 0; r < rows; r++)
      std::memcpy(apack + static_cast<int64_t>(r) * kc, x + static_cast<int64_t>(r) * K + k0, static_cast<size_t>(kc) * sizeof(float));
    for (int p = 0; p < npanels; p++) {
      const int pw = ncols - p * kNR < kNR ? ncols - p * kNR : kNR;
      gemm(rows, pw, kc, apack, kc, pack + static_cast<int64_t>(p) * kc * kNR, kNR, y + j0 + p * kNR,
           static_cast<int>(ldy), kAccumulate);
    }
  }
}

void to_f32(const void* src, DType dt, int64_t off, int n, float* dst) { load_row(src, dt, off, n, dst); }
void from_f32(const float* src, void* dst, DType dt, int64_t off, int n) { store_row(dst, dt, off, n, src); }

}  // namespace

extern const LinearKernels kLinearKernels = {kNR, gemv, gemm_tile_rows, to_f32, from_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
