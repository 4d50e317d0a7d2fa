// HyperAttention's per-level pieces, written once and compiled per SIMD level (hyper_<level>.cc): the LSH
// hash of rows (x . R for lshBits columns of R, a D x lshBits product per row) and the float16/bfloat16
// conversions of the inputs and the output.
//
// The hash must give the same bits on every level (and in the float64 reference): each x . R[:, r] is a sum of
// products of two float32 values, exact in double, added in d order starting from 0. An FMA of such a product
// rounds once, exactly as the add of the (exact) product does, so the vector form here (lanes over r, four
// rows at a time) and the scalar one give the same sums bit for bit.
#pragma once
#include <cstdint>

#include "convert_impl.h"
#include "hyper.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

#if defined(__AVX512F__)
struct VD {
  using T = __m512d;
  static constexpr int W = 8;
  static T zero() { return _mm512_setzero_pd(); }
  static T set1(double x) { return _mm512_set1_pd(x); }
  static T load(const double* p) { return _mm512_loadu_pd(p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_pd(a, b, c); }
  static uint32_t positive(T x) { return _mm512_cmp_pd_mask(x, zero(), _CMP_GT_OQ); }
};
#elif defined(__AVX2__)
struct VD {
  using T = __m256d;
  static constexpr int W = 4;
  static T zero() { return _mm256_setzero_pd(); }
  static T set1(double x) { return _mm256_set1_pd(x); }
  static T load(const double* p) { return _mm256_loadu_pd(p); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_pd(a, b, c); }
  static uint32_t positive(T x) { return static_cast<uint32_t>(_mm256_movemask_pd(_mm256_cmp_pd(x, zero(), _CMP_GT_OQ))); }
};
#else
struct VD {
  struct T {
    double v[2];
  };
  static constexpr int W = 2;
  static T zero() { return {{0.0, 0.0}}; }
  static T set1(double x) { return {{x, x}}; }
  static T load(const double* p) { return {{p[0], p[1]}}; }
  static T fma(T a, T b, T c) {  // the product is exact, so a separate add rounds the same as a fused one
    return {{a.v[0] * b.v[0] + c.v[0], a.v[1] * b.v[1] + c.v[1]}};
  }
  static uint32_t positive(T x) { return (x.v[0] > 0.0 ? 1u : 0u) | (x.v[1] > 0.0 ? 2u : 0u); }
};
#endif

// Rows [r0, r1) of x (D floats each): rank[row] = Gray rank of the bucket. Rp: R as doubles, D rows of
// NV * VD::W (columns past lshBits are zero and their bits masked off).
template <int NV, int ROWS>
void hash_block(const float* x, int64_t r0, int64_t r1, int D, int bits, const double* Rp, uint16_t* rank) {
  const int ld = NV * VD::W;
  const uint32_t keep = bits >= 32 ? ~0u : (1u << bits) - 1u;
  int64_t row = r0;
  auto finish = [&](int64_t r, const typename VD::T* acc) {
    uint32_t bin = 0;
    for (int v = 0; v < NV; v++) bin |= VD::positive(acc[v]) << (v * VD::W);
    rank[r] = static_cast<uint16_t>(hyper_gray_rank(bin & keep));
  };
  for (; row + ROWS <= r1; row += ROWS) {
    typename VD::T acc[ROWS][NV];
    for (int i = 0; i < ROWS; i++)
      for (int v = 0; v < NV; v++) acc[i][v] = VD::zero();
    const float* xr = x + row * D;
    for (int d = 0; d < D; d++) {
      typename VD::T rv[NV];
      for (int v = 0; v < NV; v++) rv[v] = VD::load(Rp + static_cast<int64_t>(d) * ld + v * VD::W);
      for (int i = 0; i < ROWS; i++) {
        const typename VD::T xd = VD::set1(static_cast<double>(xr[static_cast<int64_t>(i) * D + d]));
        for (int v = 0; v < NV; v++) acc[i][v] = VD::fma(xd, rv[v], acc[i][v]);
      }
    }
    for (int i = 0; i < ROWS; i++) finish(row + i, acc[i]);
  }
  for (; row < r1; row++) {
    typename VD::T acc[NV];
    for (int v = 0; v < NV; v++) acc[v] = VD::zero();
    const float* xr = x + row * D;
    for (int d = 0; d < D; d++) {
      const typename VD::T xd = VD::set1(static_cast<double>(xr[d]));
      for (int v = 0; v < NV; v++) acc[v] = VD::fma(xd, VD::load(Rp + static_cast<int64_t>(d) * ld + v * VD::W), acc[v]);
    }
    finish(row, acc);
  }
}

int hash_width(int bits) { return (bits + VD::W - 1) / VD::W * VD::W; }

void hash_rows(const float* x, int64_t r0, int64_t r1, int D, int bits, const double* Rp, uint16_t* rank) {
  switch ((bits + VD::W - 1) / VD::W) {
    case 0:
      for (int64_t r = r0; r < r1; r++) rank[r] = 0;
      break;
    case 1: hash_block<1, 4>(x, r0, r1, D, bits, Rp, rank); break;
    case 2: hash_block<2, 4>(x, r0, r1, D, bits, Rp, rank); break;
#if !defined(__AVX512F__)
    case 3: hash_block<3, 2>(x, r0, r1, D, bits, Rp, rank); break;
    case 4: hash_block<4, 2>(x, r0, r1, D, bits, Rp, rank); break;
#endif
#if !defined(__AVX512F__) && !defined(__AVX2__)
    case 5: hash_block<5, 2>(x, r0, r1, D, bits, Rp, rank); break;
    case 6: hash_block<6, 2>(x, r0, r1, D, bits, Rp, rank); break;
    case 7: hash_block<7, 2>(x, r0, r1, D, bits, Rp, rank); break;
    case 8: hash_block<8, 2>(x, r0, r1, D, bits, Rp, rank); break;
#endif
    default: break;  // lshBits <= 16 (checked by the binding)
  }
}

void to_f32(const void* src, DType dt, int64_t i0, int64_t i1, float* dst) {
  load_row(src, dt, i0, static_cast<int>(i1 - i0), dst + i0);
}

void from_f32(const float* src, DType dt, int64_t i0, int64_t i1, void* dst) {
  store_row(dst, dt, i0, static_cast<int>(i1 - i0), src + i0);
}

}  // namespace

extern const HyperKernels kHyperKernels = {hash_width, hash_rows, to_f32, from_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
