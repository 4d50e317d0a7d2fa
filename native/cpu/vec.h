// The vector type of the level this translation unit is compiled for. A kernel written once against `Vec`
// becomes the avx512, avx2 or portable variant depending on the TU's target flags; each TU wraps it in its
// own namespace (SK_LEVEL_NS), so the three copies never collide.
#pragma once
#include <cmath>
#include <cstring>
#include <initializer_list>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sk {
namespace SK_LEVEL_NS {

// A prefetch the optimiser keeps: GCC 12's dead-code elimination deletes loops made of nothing but
// __builtin_prefetch (they compiled to no instruction at all), so on x86 it is an asm statement.
inline void prefetch(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

// The same into L2 only (prefetcht1): for the next tile of a stream, asked for while the current one is
// computed, without pushing the current tile's rows out of L1.
inline void prefetch_l2(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

#if defined(__AVX512F__)
struct Vec {
  using T = __m512;
  static constexpr int W = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static T loadp(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void storep(float* p, T v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T fnma(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static float hsum(T a) { return _mm512_reduce_add_ps(a); }
  // Pieces of exp() below: round to nearest, p * 2^n by an add to the exponent bits (n >= -127, p in
  // [0.7, 1.5)), and the range fix-ups (under -87.34: 0, as expf flushes; over 88.72: +Inf; NaN stays).
  // scale2n's max takes n second, so a NaN n stays NaN (max returns its second operand then), converts to
  // 0x80000000 and adds 0 to p's bits: a NaN p stays NaN (clamping NaN to -127 made e^NaN = 3).
  static T round(T x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T scale2n(T p, T n) {
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(_mm512_max_ps(set1(-127.f), n)), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
  }
  static T fix_range(T x, T y) {
    y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, set1(-87.33654f), _CMP_LT_OQ), y, zero());
    y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, set1(88.72283f), _CMP_GT_OQ), y, set1(__builtin_inff()));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
  }
};
#elif defined(__AVX2__)
struct Vec {
  using T = __m256;
  static constexpr int W = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static __m256i mask(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
  }
  static T loadp(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void storep(float* p, T v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T fnma(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static float hsum(T a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static T round(T x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T scale2n(T p, T n) {
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(_mm256_max_ps(set1(-127.f), n)), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  }
  static T fix_range(T x, T y) {
    y = _mm256_blendv_ps(y, zero(), _mm256_cmp_ps(x, set1(-87.33654f), _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, set1(__builtin_inff()), _mm256_cmp_ps(x, set1(88.72283f), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
};
#else
// Plain C++ the compiler may vectorise (SSE2 on x86-64, NEON elsewhere).
struct Vec {
  static constexpr int W = 8;
  struct T {
    float v[W];
  };
  static T zero() { T r; for (int i = 0; i < W; i++) r.v[i] = 0.f; return r; }
  static T set1(float x) { T r; for (int i = 0; i < W; i++) r.v[i] = x; return r; }
  static T load(const float* p) { T r; std::memcpy(r.v, p, sizeof(r.v)); return r; }
  static void store(float* p, T a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static T loadp(const float* p, int n) { T r = zero(); for (int i = 0; i < n; i++) r.v[i] = p[i]; return r; }
  static void storep(float* p, T a, int n) { for (int i = 0; i < n; i++) p[i] = a.v[i]; }
  static T fma(T a, T b, T c) { T r; for (int i = 0; i < W; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
  static T fnma(T a, T b, T c) { T r; for (int i = 0; i < W; i++) r.v[i] = c.v[i] - a.v[i] * b.v[i]; return r; }
  static T mul(T a, T b) { T r; for (int i = 0; i < W; i++) r.v[i] = a.v[i] * b.v[i]; return r; }
  static T add(T a, T b) { T r; for (int i = 0; i < W; i++) r.v[i] = a.v[i] + b.v[i]; return r; }
  static T sub(T a, T b) { T r; for (int i = 0; i < W; i++) r.v[i] = a.v[i] - b.v[i]; return r; }
  static float hsum(T a) { float s = 0.f; for (int i = 0; i < W; i++) s += a.v[i]; return s; }
  static T round(T a) { T r; for (int i = 0; i < W; i++) r.v[i] = std::nearbyint(a.v[i]); return r; }
  static T scale2n(T p, T n) {
    T r;
    for (int i = 0; i < W; i++) r.v[i] = n.v[i] != n.v[i] ? p.v[i] : std::ldexp(p.v[i], static_cast<int>(n.v[i] < -127.f ? -127.f : n.v[i]));
    return r;
  }
  static T fix_range(T x, T y) {
    for (int i = 0; i < W; i++) {
      if (x.v[i] < -87.33654f) y.v[i] = 0.f;
      if (x.v[i] > 88.72283f) y.v[i] = __builtin_inff();
      if (x.v[i] != x.v[i]) y.v[i] = x.v[i];
    }
    return y;
  }
};
#endif

using V_ = Vec::T;

// e^x, the same at every level: n = round(x log2 e), r = x - n ln2 (ln2 in two parts, so r is exact to
// float rounding), e^r by its Taylor polynomial to degree 7 (|r| <= ln2/2: truncation < 1e-8 relative),
// then 2^n added to the exponent bits. vexp_core skips the range fix-ups: callers that know x is finite and
// above -87.34 (e.g. clamped) save them; vexp handles every input.
inline V_ vexp_core(V_ x) {
  const V_ n = Vec::round(Vec::mul(x, Vec::set1(1.44269504088896341f)));
  V_ r = Vec::fnma(n, Vec::set1(0.693145751953125f), x);
  r = Vec::fnma(n, Vec::set1(1.428606765330187045e-06f), r);
  V_ p = Vec::set1(1.f / 5040);
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = Vec::fma(p, r, Vec::set1(c));
  return Vec::scale2n(p, n);
}

inline V_ vexp(V_ x) { return Vec::fix_range(x, vexp_core(x)); }

#if defined(__AVX512F__)
// r[i] = row i of a 16 x 16 block of floats; afterwards r[k] = its column k (the linear GEMM's weight
// packing, NaLaFormer's transposed key chunks).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; i++) {  // per 128-bit lane: rows 2i, 2i+1 interleaved (columns 0-1, then 2-3)
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {  // r[4i + j], lane b: rows 4i..4i+3 of column 4b + j
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  __m512 c[16];
  for (int j = 0; j < 4; j++) {  // gather lane b of the four row groups: column 4b + j
    const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    const __m512 u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    c[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    c[8 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
    c[4 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    c[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
  }
  for (int k = 0; k < 16; k++) r[k] = c[k];
}
#endif

}  // namespace SK_LEVEL_NS
}  // namespace sk
