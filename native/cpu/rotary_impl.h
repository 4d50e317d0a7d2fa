// The rotary row kernel, written once against Vec and compiled per SIMD level (rotary_<level>.cc).
#pragma once
#include <cstring>

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

#if defined(__AVX2__)
// Vector stores that narrow: the same rounding as store_row (convert_impl.h) lane for lane, so a row written
// here has the bits rotate_row gives it.
struct StoreF32 {
  static void store(float* p, V_ v) { Vec::store(p, v); }
};
struct StoreF16 {
#if defined(__AVX512F__)
  static void store(uint16_t* p, V_ v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#else
  static void store(uint16_t* p, V_ v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
};
struct StoreBF16 {  // float_to_bf16 on W lanes: + 0x7fff + the kept bit's parity, the top half; NaN -> quiet NaN
#if defined(__AVX512F__)
  static void store(uint16_t* p, V_ v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
#else
  static void store(uint16_t* p, V_ v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)))), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
  }
#endif
};

// x's pairs swapped (a, b) -> (b, a), and the fused multiply that subtracts in even lanes and adds in odd ones.
inline V_ swap_pairs(V_ v) {
#if defined(__AVX512F__)
  return _mm512_permute_ps(v, 0xB1);
#else
  return _mm256_permute_ps(v, 0xB1);
#endif
}
inline V_ fmaddsub(V_ a, V_ b, V_ c) {
#if defined(__AVX512F__)
  return _mm512_fmaddsub_ps(a, b, c);
#else
  return _mm256_fmaddsub_ps(a, b, c);
#endif
}

// The rotated part of one halves row of NV vectors a half, loaded and stored in address order (the loop of
// token_rows below goes back and forth between the halves, which ran 10% slower than a copy's order).
template <class L, class S, int NV>
inline void halves_row(const typename L::T* x, typename L::T* y, const float* c, const float* s) {
  constexpr int W = Vec::W, h = NV * W;
  V_ a[NV], b[NV];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a[v] = L::load(x + v * W);
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) b[v] = L::load(x + h + v * W);
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)
    S::store(y + v * W, Vec::fnma(b[v], Vec::load(s + v * W), Vec::mul(a[v], Vec::load(c + v * W))));
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)
    S::store(y + h + v * W, Vec::fma(a[v], Vec::load(s + v * W), Vec::mul(b[v], Vec::load(c + v * W))));
}

// The H head rows of one token in registers, src to dst (the same dtype), no row buffer: each vector loads
// (widening), rotates and stores (narrowing) at once, with the same operations per lane as rotate_row. The
// interleaved pairing reads cos and sin duplicated into both lanes of a plane, built once per token in cs.
template <class L, class S>
void token_rows(const typename L::T* src, typename L::T* dst, int H, int D, int rot, const float* c, const float* s,
                bool interleaved, float* cs) {
  using T = typename L::T;
  constexpr int W = Vec::W;
  const int h = rot / 2;
  if (interleaved) {
    for (int i = 0; i < h; i++) cs[2 * i] = cs[2 * i + 1] = c[i], cs[rot + 2 * i] = cs[rot + 2 * i + 1] = s[i];
  }
  for (int r = 0; r < H; r++) {
    const T* x = src + static_cast<int64_t>(r) * D;
    T* y = dst + static_cast<int64_t>(r) * D;
    if (!interleaved && h <= 8 * W) {
      switch (h / W) {
        case 1: halves_row<L, S, 1>(x, y, c, s); break;
        case 2: halves_row<L, S, 2>(x, y, c, s); break;
        case 3: halves_row<L, S, 3>(x, y, c, s); break;
        case 4: halves_row<L, S, 4>(x, y, c, s); break;
        case 5: halves_row<L, S, 5>(x, y, c, s); break;
        case 6: halves_row<L, S, 6>(x, y, c, s); break;
        case 7: halves_row<L, S, 7>(x, y, c, s); break;
        default: halves_row<L, S, 8>(x, y, c, s); break;
      }
    } else if (!interleaved) {
      for (int i = 0; i < h; i += W) {
        const V_ a = L::load(x + i), b = L::load(x + h + i), cv = Vec::load(c + i), sv = Vec::load(s + i);
        S::store(y + i, Vec::fnma(b, sv, Vec::mul(a, cv)));
        S::store(y + h + i, Vec::fma(a, sv, Vec::mul(b, cv)));
      }
    } else {
      for (int i = 0; i < rot; i += W) {
        const V_ v = L::load(x + i);
        S::store(y + i, fmaddsub(v, Vec::load(cs + i), Vec::mul(swap_pairs(v), Vec::load(cs + rot + i))));
      }
    }
    if (rot < D && y != x) std::memcpy(y + rot, x + rot, static_cast<size_t>(D - rot) * sizeof(T));
  }
}
#endif

// H head rows of D values at element offset off (a token): token_rows where the rotated part is whole vectors
// (rot / 2 a multiple of W, or rot of it interleaved), else rotate_row per row. tmp: 2 * kRotaryMaxDim floats.
void rotate_token(const void* src, void* dst, DType dt, int64_t off, int H, int D, int rot, const float* c, const float* s,
                  bool interleaved, float* tmp) {
#if defined(__AVX2__)
  const bool whole = rot > 0 && (interleaved ? rot % Vec::W == 0 : (rot / 2) % Vec::W == 0);
  if (whole) {
    switch (dt) {
      case DType::f32:
        return token_rows<LoadF32, StoreF32>(static_cast<const float*>(src) + off, static_cast<float*>(dst) + off, H, D, rot,
                                             c, s, interleaved, tmp);
      case DType::f16:
        return token_rows<LoadF16, StoreF16>(static_cast<const uint16_t*>(src) + off, static_cast<uint16_t*>(dst) + off, H,
                                             D, rot, c, s, interleaved, tmp);
      case DType::bf16:
        return token_rows<LoadBF16, StoreBF16>(static_cast<const uint16_t*>(src) + off, static_cast<uint16_t*>(dst) + off,
                                               H, D, rot, c, s, interleaved, tmp);
    }
  }
#endif
  for (int r = 0; r < H; r++) {
    const int64_t o = off + static_cast<int64_t>(r) * D;
    rotate_row(src, dt, o, dst, dt, o, D, rot, c, s, interleaved, tmp);
  }
}

}  // namespace

extern const RotaryKernels kRotaryKernels = {rotate_row, rotate_token};

}  // namespace SK_LEVEL_NS
}  // namespace sk
