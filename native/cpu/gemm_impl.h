// Small register-blocked GEMM for the matrices inside a chunk (C x K by K x V, C = 64, K, V <= 256), all
// row-major and hot in L1/L2, so no packing: a tile of MR rows x NV vectors of C stays in registers while
// the inner dimension streams, one broadcast of A and NV loads of B feeding MR*NV FMAs.
// Included by each level's TU after vec.h.
#pragma once
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

#if defined(__AVX512F__)
constexpr int kMR = 8, kNV = 2;   // 16 accumulators of 32 zmm
#elif defined(__AVX2__)
constexpr int kMR = 6, kNV = 2;   // 12 accumulators of 16 ymm
#else
constexpr int kMR = 4, kNV = 2;
#endif

enum GemmFlags : int {
  kAccumulate = 1,  // C += A B (else C = A B)
  kALower = 2,      // A is lower triangular incl. diagonal (M == Kd): skip the zero part of each row block
  kCLower = 4,      // only the lower triangle incl. diagonal of C is wanted (M == N): skip tiles above it
};

// One MR x NV*W tile; `ncols` valid columns (partial loads/stores on the last vector when < NV*W).
// kTA: A is given transposed (element (i, p) at A[p * lda + i]), so the MR broadcasts of a step are adjacent.
template <int MR, int NV, bool kFull, bool kTA = false>
inline void gemm_tile(int kd_end, const float* A, int lda, const float* B, int ldb, float* C, int ldc, bool acc,
                      int ncols) {
  constexpr int W = Vec::W;
  V_ c[MR][NV];
  auto width = [&](int v) { return ncols - v * W < W ? ncols - v * W : W; };
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) {
      if (!acc) c[i][v] = Vec::zero();
      else if (kFull) c[i][v] = Vec::load(C + i * ldc + v * W);
      else c[i][v] = width(v) > 0 ? Vec::loadp(C + i * ldc + v * W, width(v)) : Vec::zero();
    }
  for (int p = 0; p < kd_end; p++) {
    V_ b[NV];
    for (int v = 0; v < NV; v++) {
      if (kFull) b[v] = Vec::load(B + p * ldb + v * W);
      else b[v] = width(v) > 0 ? Vec::loadp(B + p * ldb + v * W, width(v)) : Vec::zero();
    }
    for (int i = 0; i < MR; i++) {
      V_ a = Vec::set1(kTA ? A[p * lda + i] : A[i * lda + p]);
      for (int v = 0; v < NV; v++) c[i][v] = Vec::fma(a, b[v], c[i][v]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) {
      if (kFull) Vec::store(C + i * ldc + v * W, c[i][v]);
      else if (width(v) > 0) Vec::storep(C + i * ldc + v * W, c[i][v], width(v));
    }
}

template <int MR, bool kTA = false>
inline void gemm_rows(int N, int kd_end, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                      bool acc, int n_end) {
  constexpr int NW = kNV * Vec::W;
  (void)N;
  int j = 0;
  for (; j + NW <= n_end; j += NW) gemm_tile<MR, kNV, true, kTA>(kd_end, A, lda, B + j, ldb, C + j, ldc, acc, NW);
  if (j < n_end) gemm_tile<MR, kNV, false, kTA>(kd_end, A, lda, B + j, ldb, C + j, ldc, acc, n_end - j);
}

// C[M x N] (=|+=) A[M x Kd] B[Kd x N]; leading dimensions in floats.
inline void gemm(int M, int N, int Kd, const float* A, int lda, const float* B, int ldb, float* C, int ldc, int flags) {
  const bool acc = flags & kAccumulate;
  int i = 0;
  for (; i < M; i += kMR) {
    const int rows = M - i < kMR ? M - i : kMR;
    const int kd_end = (flags & kALower) ? (i + rows < Kd ? i + rows : Kd) : Kd;
    const int n_end = (flags & kCLower) ? (i + rows < N ? i + rows : N) : N;
    const float* a = A + static_cast<long>(i) * lda;
    float* c = C + static_cast<long>(i) * ldc;
    if (kd_end == 0 && !acc) {  // an all-zero block of A: C rows are zero
      for (int r = 0; r < rows; r++)
        for (int j = 0; j < n_end; j++) c[r * ldc + j] = 0.f;
      continue;
    }
    switch (rows) {
      case kMR: gemm_rows<kMR>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
#if defined(__AVX512F__)
      case 7: gemm_rows<7>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
      case 6: gemm_rows<6>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
      case 5: gemm_rows<5>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
#elif defined(__AVX2__)
      case 5: gemm_rows<5>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
      case 4: gemm_rows<4>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
#endif
      case 3: gemm_rows<3>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
      case 2: gemm_rows<2>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
      default: gemm_rows<1>(N, kd_end, a, lda, B, ldb, c, ldc, acc, n_end); break;
    }
  }
}

// C[M x N] (=|+=) At^T B with At [Kd x M] (the A of gemm stored transposed, e.g. rows of keys whose
// outer products are summed): no transposed copy needed. Flags: kAccumulate only.
inline void gemm_tn(int M, int N, int Kd, const float* At, int lda, const float* B, int ldb, float* C, int ldc, int flags) {
  const bool acc = flags & kAccumulate;
  int i = 0;
  for (; i + kMR <= M; i += kMR) gemm_rows<kMR, true>(N, Kd, At + i, lda, B, ldb, C + static_cast<long>(i) * ldc, ldc, acc, N);
  if (i < M) {
    const float* a = At + i;
    float* c = C + static_cast<long>(i) * ldc;
    switch (M - i) {
#if defined(__AVX512F__)
      case 7: gemm_rows<7, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
      case 6: gemm_rows<6, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
      case 5: gemm_rows<5, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
#elif defined(__AVX2__)
      case 5: gemm_rows<5, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
      case 4: gemm_rows<4, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
#endif
      case 3: gemm_rows<3, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
      case 2: gemm_rows<2, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
      default: gemm_rows<1, true>(N, Kd, a, lda, B, ldb, c, ldc, acc, N); break;
    }
  }
}

}  // namespace SK_LEVEL_NS
}  // namespace sk
