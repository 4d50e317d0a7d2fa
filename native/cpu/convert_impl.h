// Row loads and stores with dtype conversion, per SIMD level (included after vec.h): float32 rows are
// copied with vector moves, float16 through F16C, bfloat16 by shifting into the top half of a float32.
#pragma once
#include <cstdint>
#include <cstring>

#include "dtype.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

inline void load_row(const void* base, DType dt, int64_t off, int n, float* dst) {
  switch (dt) {
    case DType::f32: {
      const float* p = static_cast<const float*>(base) + off;
      int i = 0;
      for (; i + Vec::W <= n; i += Vec::W) Vec::store(dst + i, Vec::load(p + i));
      for (; i < n; i++) dst[i] = p[i];
      break;
    }
    case DType::f16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + off;
      int i = 0;
#if defined(__F16C__)
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
#endif
      for (; i < n; i++) dst[i] = half_to_float(p[i]);
      break;
    }
    case DType::bf16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + off;
      int i = 0;
#if defined(__AVX2__)
      for (; i + 8 <= n; i += 8) {  // bf16 is the top half of a float32
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
#endif
      for (; i < n; i++) dst[i] = bf16_to_float(p[i]);
      break;
    }
  }
}

inline float load_one(const void* base, DType dt, int64_t off) {
  float x = 0.f;
  load_row(base, dt, off, 1, &x);
  return x;
}

inline void store_row(void* base, DType dt, int64_t off, int n, const float* src) {
  switch (dt) {
    case DType::f32: std::memcpy(static_cast<float*>(base) + off, src, n * sizeof(float)); break;
    case DType::f16: {
      uint16_t* p = static_cast<uint16_t*>(base) + off;
      int i = 0;
#if defined(__F16C__)
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
      for (; i < n; i++) p[i] = float_to_half(src[i]);
      break;
    }
    case DType::bf16: {
      uint16_t* p = static_cast<uint16_t*>(base) + off;
      int i = 0;
#if defined(__AVX2__)
      // float_to_bf16 on 8 lanes: add 0x7fff plus the kept bit's parity, keep the top half; NaN -> quiet NaN.
      const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
      const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
      for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        const __m256i rounded =
            _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one))), 16);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet), nan);
        const __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), _mm_packus_epi32(lo, hi));
      }
#endif
      for (; i < n; i++) p[i] = float_to_bf16(src[i]);
      break;
    }
  }
}

// ---- vector loads that convert: W elements (or the first n, the rest 0) of a row in place into float32
// lanes, for kernels that read float16/bfloat16 operands where they are instead of converting whole rows
// into a buffer first (the attention decode). Each has T, the element type, load(p) and loadp(p, n).

struct LoadF32 {
  using T = float;
  static V_ load(const float* p) { return Vec::load(p); }
  static V_ loadp(const float* p, int n) { return Vec::loadp(p, n); }
};

// float16 and bfloat16 differ only in how W elements widen to float32 (Widen::widen) and, on the portable
// level, how one does (to_float); a partial load goes through a zero-padded copy where there is no masked
// 16-bit load (AVX2).
template <class Widen, float (*to_float)(uint16_t)>
struct Load16 {
  using T = uint16_t;
#if defined(__AVX512F__)
  static V_ load(const uint16_t* p) { return Widen::widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static V_ loadp(const uint16_t* p, int n) { return Widen::widen(_mm256_maskz_loadu_epi16(Vec::mask(n), p)); }
#elif defined(__AVX2__)
  static V_ load(const uint16_t* p) { return Widen::widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V_ loadp(const uint16_t* p, int n) {
    alignas(16) uint16_t t[8] = {};
    std::memcpy(t, p, static_cast<size_t>(n) * 2);
    return load(t);
  }
#else
  static V_ load(const uint16_t* p) { return loadp(p, Vec::W); }
  static V_ loadp(const uint16_t* p, int n) {
    float t[Vec::W] = {};
    for (int i = 0; i < n; i++) t[i] = to_float(p[i]);
    return Vec::load(t);
  }
#endif
};

struct WidenF16 {  // F16C (the AVX2 and AVX-512 levels are built with it)
#if defined(__AVX512F__)
  static V_ widen(__m256i h) { return _mm512_cvtph_ps(h); }
#elif defined(__AVX2__)
  static V_ widen(__m128i h) { return _mm256_cvtph_ps(h); }
#endif
};

struct WidenBF16 {  // bfloat16 is the top half of a float32
#if defined(__AVX512F__)
  // Each value's 16 bits into the top half of its lane, the bottom half zeroed: one word permute (vpermw with a
  // zeroing mask) where the zero-extend and the shift are two operations.
  static V_ widen(__m256i h) {
    const __m512i idx = _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0, 7, 0, 6, 0, 5, 0, 4, 0, 3, 0, 2, 0,
                                         1, 0, 0, 0);
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, idx, _mm512_castsi256_si512(h)));
  }
#elif defined(__AVX2__)
  static V_ widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
#endif
};

using LoadF16 = Load16<WidenF16, half_to_float>;
using LoadBF16 = Load16<WidenBF16, bf16_to_float>;

}  // namespace SK_LEVEL_NS
}  // namespace sk
