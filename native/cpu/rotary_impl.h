// The rotary row kernel, written once against Vec and compiled per SIMD level (rotary_<level>.cc).
#pragma once
#include "convert_impl.h"
#include "rotary.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

void rotate_row(const void* src, DType sdt, int64_t soff, void* dst, DType ddt, int64_t doff, int D, int rot,
                const float* c, const float* s, bool interleaved, float* x) {
  constexpr int W = Vec::W;
  load_row(src, sdt, soff, D, x);
  const int h = rot / 2;
  if (h > 0 && !interleaved) {
    // Plane i: x[i], x[i + h]; each lane reads both before writing either, so the row rotates in place.
    int i = 0;
    for (; i + W <= h; i += W) {
      const V_ a = Vec::load(x + i), b = Vec::load(x + h + i), cv = Vec::load(c + i), sv = Vec::load(s + i);
      Vec::store(x + i, Vec::fnma(b, sv, Vec::mul(a, cv)));
      Vec::store(x + h + i, Vec::fma(a, sv, Vec::mul(b, cv)));
    }
    for (; i < h; i++) {
      const float a = x[i], b = x[h + i];
      x[i] = a * c[i] - b * s[i];
      x[h + i] = b * c[i] + a * s[i];
    }
  } else if (h > 0) {
    // Plane i: x[2i], x[2i + 1]. A vector holds W/2 planes: with cos and sin each duplicated into both lanes of
    // their plane and x's lanes swapped pairwise, fmaddsub gives a cos - b sin in the even lanes and
    // b cos + a sin in the odd ones. (The compiler's loop, which this replaces, shuffled element by element:
    // measured as the bench row "interleaved".)
    int i = 0;
#if defined(__AVX512F__)
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (; i + W / 2 <= h; i += W / 2) {
      const __m512 v = _mm512_loadu_ps(x + 2 * i);
      const __m512 cv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c + i)));
      const __m512 sv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s + i)));
      _mm512_storeu_ps(x + 2 * i, _mm512_fmaddsub_ps(v, cv, _mm512_mul_ps(_mm512_permute_ps(v, 0xB1), sv)));
    }
#elif defined(__AVX2__)
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    for (; i + W / 2 <= h; i += W / 2) {
      const __m256 v = _mm256_loadu_ps(x + 2 * i);
      const __m256 cv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c + i)), dup);
      const __m256 sv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + i)), dup);
      _mm256_storeu_ps(x + 2 * i, _mm256_fmaddsub_ps(v, cv, _mm256_mul_ps(_mm256_permute_ps(v, 0xB1), sv)));
    }
#endif
    for (; i < h; i++) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = b * c[i] + a * s[i];
    }
  }
  store_row(dst, ddt, doff, D, x);
}

}  // namespace

extern const RotaryKernels kRotaryKernels = {rotate_row};

}  // namespace SK_LEVEL_NS
}  // namespace sk
