// The softmax kernels, written once against `Vec` and compiled per SIMD level (softmax_<level>.cc).
//
// Extended exp (Dukhan & Ablavatski 2020) with a small table: e^x = p * 2^k, where
//   n = round(x log2e * K)          by one FMA: x log2e + 1.5 * 2^23 / K, whose rounding is to 1/K, so its
//                                   low bits hold n (K = 16 at avx512, 8 below)
//   k = floor(n / K), j = n mod K   (the low bits of n), and r = x - n ln2 / K in [-0.0226, 0.0226] at
//                                   K = 16 ([-0.0445, 0.0445] at K = 8): Cody-Waite, ln2 in two parts and
//                                   FMA, so r is exact to float rounding for every n this code meets
//   p = 2^(j/K) e^r                 a table lookup (one permute) times a degree-3 polynomial fitted for
//                                   relative error (max 1.1e-7 = 0.95 ulp of p, as evaluated in float32)
// That is 4 multiplier-pipe operations for e^r where a table-free degree-6 polynomial takes 8: the kernels
// are bound by those pipes. x is clamped below at -65536 (n stays exact, r small), which is ~20000 below any
// row maximum the driver computes unshifted (softmax.h): a clamped element still adds exactly 0. NaN
// survives the clamp (operand order); x above the clamp range only reaches pass 1, where it shows as an
// exponent past 2^16 and the driver recomputes the row on x - max.
//
// Two-pass, pass 1 keeps one running (mantissa, exponent) pair per lane (ExpAcc). Four vectors at a time:
// when one brings a larger exponent (a branch taken a few dozen times per row: lane maxima settle fast),
// the running mantissa is rescaled by 2^(old - new); each term is scaled by 2^(k - lane exponent), and the
// four are added as a small tree. Sums go through two float levels per lane and then double (kInnerIters),
// so a long row is summed with the float error of ~10 additions, not len / W.
//
// At AVX2, where that exp costs about as much as the whole three-pass, rows that fit a per-thread scratch
// (softmax.cc) keep pass 1's terms: each is stored as p 2^(k - e), e its lane's exponent at the end of its
// block of kInner elements (recorded after the terms; terms stored earlier in a block are rescaled when e
// grows, a rare event), and pass 2 is then y = term 2^(e - n) / m, a multiply instead of an exp. Same sum,
// same order; the memory traffic stays one read of x and one write of y. At AVX-512 this measured no
// faster than computing exp again, so there the second pass recomputes as the paper does.
//
// Large outputs of the two-pass are written with non-temporal stores when the driver asks (softmax.cc).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "softmax.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

namespace {

constexpr int W = Vec::W;
constexpr int G = 4 * W;        // elements per iteration (four vectors)
// Sums are accumulated per lane in two float levels and then double: 8 iterations into an inner
// accumulator, 4 of those into the lane's sum, which folds into the double-precision total every 32
// iterations. A lane holding a row's dominant term then sees ~10 roundings at its magnitude, not 32
// (a row of one large term and many small ones is where the float sum's error shows).
constexpr int kInnerIters = 8;
constexpr int kBlockIters = 32;
constexpr int64_t kInner = static_cast<int64_t>(G) * kInnerIters;
constexpr int64_t kBlock = static_cast<int64_t>(G) * kBlockIters;

constexpr float kLog2e = 0x1.715476p+0f;
constexpr float kLn2Hi = 0x1.62E430p-1f;    // float(ln 2)
constexpr float kLn2Lo = -0x1.05C610p-29f;  // ln 2 - kLn2Hi
constexpr float kClamp = 65536.0f;
constexpr float kInf = __builtin_inff();
// 2^(j/16), j = 0..15, rounded to float (K = 8 takes every other entry).
alignas(64) constexpr float kExp2Frac[16] = {
    0x1.000000p+0f, 0x1.0b5586p+0f, 0x1.172b84p+0f, 0x1.2387a6p+0f, 0x1.306fe0p+0f, 0x1.3dea64p+0f,
    0x1.4bfdaep+0f, 0x1.5ab07ep+0f, 0x1.6a09e6p+0f, 0x1.7a1148p+0f, 0x1.8ace54p+0f, 0x1.9c4918p+0f,
    0x1.ae89fap+0f, 0x1.c199bep+0f, 0x1.d5818ep+0f, 0x1.ea4afap+0f};

#if defined(__AVX512F__)
constexpr int kTabLog = 4;
// e^r ~ 1 + r + c2 r^2 + c3 r^3 on |r| <= 0.0226 (fit error 1.9e-9).
constexpr float kC2 = 0x1.00024ep-1f, kC3 = 0x1.5555a0p-3f;
#else
constexpr int kTabLog = 3;
// ... on |r| <= 0.0445 (fit error 2.9e-8).
constexpr float kC2 = 0x1.0008eap-1f, kC3 = 0x1.555662p-3f;
#endif
constexpr int kTab = 1 << kTabLog;
constexpr float kMagic = 0x1.8p23f / kTab;  // its ulp is 1/K

// ---- primitives of this level ----
#if defined(__AVX512F__)
// max returns the second operand when either is NaN (as the instructions do at every level here).
inline V_ vmax(V_ a, V_ b) { return _mm512_max_ps(a, b); }
inline float hmax(V_ a) { return _mm512_reduce_max_ps(a); }
inline void stream(float* p, V_ v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
inline void stream_fence() { _mm_sfence(); }
struct NanFlag {
  __mmask16 k = 0;
  void add(V_ x) { k = static_cast<__mmask16>(k | _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)); }
  bool any() const { return k != 0; }
};
// 2^(j/K) times a scale s, for lookups by the low bits of t.
struct Table {
  V_ t;
  explicit Table(float s) : t(Vec::mul(_mm512_load_ps(kExp2Frac), Vec::set1(s))) {}
  V_ at(V_ bits) const { return _mm512_permutexvar_ps(_mm512_castps_si512(bits), t); }
};
#elif defined(__AVX2__)
inline V_ vmax(V_ a, V_ b) { return _mm256_max_ps(a, b); }
inline float hmax(V_ a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
inline void stream(float* p, V_ v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
inline void stream_fence() { _mm_sfence(); }
struct NanFlag {
  __m256 k = _mm256_setzero_ps();
  void add(V_ x) { k = _mm256_or_ps(k, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
  bool any() const { return _mm256_movemask_ps(k) != 0; }
};
struct Table {
  V_ t;
  explicit Table(float s)
      : t(Vec::mul(_mm256_setr_ps(kExp2Frac[0], kExp2Frac[2], kExp2Frac[4], kExp2Frac[6], kExp2Frac[8], kExp2Frac[10],
                                  kExp2Frac[12], kExp2Frac[14]),
                   Vec::set1(s))) {}
  V_ at(V_ bits) const { return _mm256_permutevar8x32_ps(t, _mm256_castps_si256(bits)); }
};
#else
inline V_ vmax(V_ a, V_ b) { V_ r; for (int i = 0; i < W; i++) r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i]; return r; }
inline float hmax(V_ a) { float m = a.v[0]; for (int i = 1; i < W; i++) m = a.v[i] > m ? a.v[i] : m; return m; }
inline void stream(float* p, V_ v) { Vec::store(p, v); }
inline void stream_fence() {}
struct NanFlag {
  bool k = false;
  void add(const V_& x) { for (int i = 0; i < W; i++) k |= x.v[i] != x.v[i]; }
  bool any() const { return k; }
};
struct Table {
  float t[kTab];
  explicit Table(float s) { for (int j = 0; j < kTab; j++) t[j] = kExp2Frac[2 * j] * s; }
};
// 2^max(d, -127) for integer-valued d <= 127, 2^-127 mapped to 0: (d + 127) lands in the low mantissa
// bits of d + 1.5 * 2^23 + 127 and a shift by 23 moves it into the exponent field.
inline float pow2_1(float d) {
  const float e = (d > -127.f ? d : -127.f) + 0x1.8000FEp23f;
  uint32_t u;
  std::memcpy(&u, &e, 4);
  u <<= 23;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
#endif

// ---- e^x = p * 2^k, and the scaled terms built from it ----
#if defined(__AVX512F__) || defined(__AVX2__)
// Returns p (times the table's scale); t holds n and j in its low bits, nf = n / K (exactly).
// kClampX false skips the clamp, for a caller that checks the exponents itself (ExpAcc::add_keep).
template <bool kClampX = true>
inline V_ split(V_ x, const Table& tab, V_& t, V_& nf) {
  const V_ xc = kClampX ? vmax(Vec::set1(-kClamp), x) : x;
  t = Vec::fma(xc, Vec::set1(kLog2e), Vec::set1(kMagic));
  nf = Vec::sub(t, Vec::set1(kMagic));
  V_ r = Vec::fnma(nf, Vec::set1(kLn2Hi), xc);
  r = Vec::fnma(nf, Vec::set1(kLn2Lo), r);
  const V_ T = tab.at(t);
  const V_ u = Vec::fma(Vec::fma(Vec::set1(kC3), r, Vec::set1(kC2)), r, Vec::set1(1.f));
  return Vec::fma(Vec::mul(T, r), u, T);  // T (1 + r u) = T e^r
}
#endif

#if defined(__AVX512F__)
// Exponents are floats: nf itself, since vscalefps scales by 2^floor(its argument) and handles any
// exponent (-inf gives 0) with gradual underflow.
//
// The terms of the three-pass and the outputs: e^x scale 2^-n for four vectors at a time.
struct Terms {
  Table tab;
  V_ ref;
  Terms(double scale, double n) : tab(static_cast<float>(scale)), ref(Vec::set1(static_cast<float>(n))) {}
  void operator()(V_* v) const {
    for (int j = 0; j < 4; j++) {
      V_ t, nf;
      const V_ p = split(v[j], tab, t, nf);
      v[j] = _mm512_scalef_ps(p, Vec::sub(nf, ref));
    }
  }
};
struct ExpAcc {
  V_ am = Vec::zero(), a1 = Vec::zero(), ae = Vec::set1(-kInf);  // ae integer-valued
  void add(const Table& tab, V_ x0, V_ x1, V_ x2, V_ x3) {
    V_ t, n0, n1, n2, n3;
    const V_ p0 = split(x0, tab, t, n0), p1 = split(x1, tab, t, n1), p2 = split(x2, tab, t, n2), p3 = split(x3, tab, t, n3);
    const V_ g = _mm512_roundscale_ps(vmax(vmax(n0, n1), vmax(n2, n3)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    if (_mm512_cmp_ps_mask(g, ae, _CMP_GT_OQ) != 0) {
      const V_ e = vmax(ae, g), d = Vec::sub(ae, e);
      am = _mm512_scalef_ps(am, d);
      a1 = _mm512_scalef_ps(a1, d);
      ae = e;
    }
    // A NaN exponent (x NaN) is never "greater": its term is NaN and the sum says so.
    const V_ s = Vec::add(Vec::add(_mm512_scalef_ps(p0, Vec::sub(n0, ae)), _mm512_scalef_ps(p1, Vec::sub(n1, ae))),
                          Vec::add(_mm512_scalef_ps(p2, Vec::sub(n2, ae)), _mm512_scalef_ps(p3, Vec::sub(n3, ae))));
    a1 = Vec::add(a1, s);
  }
  void flush() { am = Vec::add(am, a1), a1 = Vec::zero(); }
  void fold(ExtSum& total) {
    const float eb = hmax(ae);
    if (eb != -kInf) ext_add(total, Vec::hsum(_mm512_scalef_ps(am, Vec::sub(ae, Vec::set1(eb)))), eb);
    am = Vec::zero();
  }
};
#elif defined(__AVX2__)
// No vscalefps: exponents are integers. t's bits are bits(kMagic) + n, so bits(t) >> 3 = kBias + k, with
// k = floor(n / 8); those biased exponents are positive, monotone in k, and larger than every real one for
// NaN (either sign) and +Inf. 2^d is built in the exponent field.
constexpr int32_t kBias = 0x49C00000 >> kTabLog;  // bits(kMagic) >> 3
static_assert(0x1.8p20f == kMagic, "kBias assumes K = 8");
inline __m256i biased_k(V_ t) { return _mm256_srli_epi32(_mm256_castps_si256(t), kTabLog); }
// 2^max(d, -127) for integer d <= 0, 2^-127 mapped to 0.
inline V_ pow2i(__m256i d) {
  const __m256i e = _mm256_add_epi32(_mm256_max_epi32(d, _mm256_set1_epi32(-127)), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
// The terms of the three-pass and the outputs: e^x scale 2^-n for four vectors at a time, with gradual
// underflow. p 2^d is an integer add to p's exponent field when the result stays a normal float for every
// lane (d >= lim: the usual case); otherwise (terms under ~2^-126, rare and in runs) 2^d is applied as two
// normal factors by multiplication.
struct Terms {
  Table tab;
  __m256i ref, lim;
  Terms(double scale, double n)
      : tab(static_cast<float>(scale)), ref(_mm256_set1_epi32(kBias + static_cast<int32_t>(n))),
        // p >= 0.95 scale (0.957 at K = 8, times the table's rounding), so its exponent is >= e below.
        lim(_mm256_set1_epi32(-126 - std::ilogb(0.95 * static_cast<float>(scale)))) {}
  void operator()(V_* v) const {
    V_ p[4];
    __m256i d[4];
    for (int j = 0; j < 4; j++) {
      V_ t, nf;
      p[j] = split(v[j], tab, t, nf);
      d[j] = _mm256_sub_epi32(biased_k(t), ref);
    }
    const __m256i dmin = _mm256_min_epi32(_mm256_min_epi32(d[0], d[1]), _mm256_min_epi32(d[2], d[3]));
    if (__builtin_expect(_mm256_movemask_epi8(_mm256_cmpgt_epi32(lim, dmin)) == 0, 1)) {
      for (int j = 0; j < 4; j++)
        v[j] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p[j]), _mm256_slli_epi32(d[j], 23)));
      return;
    }
    for (int j = 0; j < 4; j++) {
      const __m256i d1 = _mm256_max_epi32(d[j], _mm256_set1_epi32(-126));
      v[j] = Vec::mul(Vec::mul(p[j], pow2i(d1)), pow2i(_mm256_sub_epi32(d[j], d1)));
    }
  }
};
struct ExpAcc {
  __m256 am = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256i ae = _mm256_set1_epi32(kBias - (1 << 24));  // "exponent -2^24": rescaling by it gives 0
  void add(const Table& tab, V_ x0, V_ x1, V_ x2, V_ x3) {
    V_ t0, t1, t2, t3, nf;
    const V_ p0 = split(x0, tab, t0, nf), p1 = split(x1, tab, t1, nf), p2 = split(x2, tab, t2, nf), p3 = split(x3, tab, t3, nf);
    const __m256i k0 = biased_k(t0), k1 = biased_k(t1), k2 = biased_k(t2), k3 = biased_k(t3);
    const __m256i e = _mm256_max_epi32(ae, _mm256_max_epi32(_mm256_max_epi32(k0, k1), _mm256_max_epi32(k2, k3)));
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(e, ae)) != -1) {
      const V_ f = pow2i(_mm256_sub_epi32(ae, e));
      am = Vec::mul(am, f);
      a1 = Vec::mul(a1, f);
      ae = e;
    }
    // p 2^d as an integer add to p's exponent field, d clamped at -126: p is in [0.95, 1.92], so a term
    // under 2^-126 of the lane's largest then adds at most 2^-125 of it instead of ~0.
    const __m256i lo = _mm256_set1_epi32(-126);
    auto scaled = [&](__m256i k, V_ p) {
      const __m256i d = _mm256_max_epi32(_mm256_sub_epi32(k, ae), lo);
      return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(d, 23)));
    };
    a1 = Vec::add(a1, Vec::add(Vec::add(scaled(k0, p0), scaled(k1, p1)), Vec::add(scaled(k2, p2), scaled(k3, p3))));
  }
  // add() that also stores the four scaled terms at `out`; [blk, out) holds the terms stored since the
  // last save(), rescaled here whenever the lane exponents grow, so that all of them stay relative to
  // the exponents save() records. Stored terms keep gradual underflow (unlike the sum's clamp above).
  // With v = ae - k, a term is p 2^-v, an integer subtract from p's exponent field, and one unsigned
  // range check v in [0, 125] covers the rare events: a larger exponent (v < 0), a term under 2^-125 of
  // its lane's largest (v > 125; p >= 0.95 must stay a normal float), and x below the clamp, skipped
  // here: x under ~-363000 (or -inf, or NaN) puts t outside [2^20, 2^21) and k ~2^17 or more away from
  // any exponent a real term has; between that and -65536, t, k and p are still exact (and the term
  // then negligible unless the row is recomputed on x - max anyway). The slow path clamps.
  void add_keep(const Table& tab, V_ x0, V_ x1, V_ x2, V_ x3, float* out, float* blk) {
    V_ t0, t1, t2, t3, nf;
    V_ p[4] = {split<false>(x0, tab, t0, nf), split<false>(x1, tab, t1, nf), split<false>(x2, tab, t2, nf),
               split<false>(x3, tab, t3, nf)};
    const __m256i v[4] = {_mm256_sub_epi32(ae, biased_k(t0)), _mm256_sub_epi32(ae, biased_k(t1)),
                          _mm256_sub_epi32(ae, biased_k(t2)), _mm256_sub_epi32(ae, biased_k(t3))};
    const __m256i vm = _mm256_max_epu32(_mm256_max_epu32(v[0], v[1]), _mm256_max_epu32(v[2], v[3]));
    const __m256i lim = _mm256_set1_epi32(125);
    if (__builtin_expect(_mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_max_epu32(vm, lim), lim)) == -1, 1)) {
      for (int j = 0; j < 4; j++)
        p[j] = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_castps_si256(p[j]), _mm256_slli_epi32(v[j], 23)));
    } else {
      keep_slow(tab, x0, x1, x2, x3, p, out, blk);
    }
    for (int j = 0; j < 4; j++) _mm256_store_ps(out + j * W, p[j]);
    a1 = Vec::add(a1, Vec::add(Vec::add(p[0], p[1]), Vec::add(p[2], p[3])));
  }
  // The rare case of add_keep: the terms again from clamped x, the lane exponents grown (rescaling the
  // sums and [blk, out)), and each term scaled by two factors (gradual underflow).
  void keep_slow(const Table& tab, V_ x0, V_ x1, V_ x2, V_ x3, V_* p, float* out, float* blk) {
    V_ t[4], nf;
    p[0] = split(x0, tab, t[0], nf), p[1] = split(x1, tab, t[1], nf), p[2] = split(x2, tab, t[2], nf), p[3] = split(x3, tab, t[3], nf);
    __m256i k[4];
    for (int j = 0; j < 4; j++) k[j] = biased_k(t[j]);
    const __m256i e = _mm256_max_epi32(ae, _mm256_max_epi32(_mm256_max_epi32(k[0], k[1]), _mm256_max_epi32(k[2], k[3])));
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(e, ae)) != -1) {
      const __m256i d = _mm256_sub_epi32(ae, e);
      const V_ f = pow2i(d);
      am = Vec::mul(am, f);
      a1 = Vec::mul(a1, f);
      const __m256i d1 = _mm256_max_epi32(d, _mm256_set1_epi32(-126));
      const V_ f1 = pow2i(d1), f2 = pow2i(_mm256_sub_epi32(d, d1));
      for (float* q = blk; q < out; q += W) _mm256_store_ps(q, Vec::mul(Vec::mul(_mm256_load_ps(q), f1), f2));
      ae = e;
    }
    for (int j = 0; j < 4; j++) {
      const __m256i d = _mm256_sub_epi32(k[j], ae), d1 = _mm256_max_epi32(d, _mm256_set1_epi32(-126));
      p[j] = Vec::mul(Vec::mul(p[j], pow2i(d1)), pow2i(_mm256_sub_epi32(d, d1)));
    }
  }
  void save(float* e) const { _mm256_store_si256(reinterpret_cast<__m256i*>(e), ae); }
  void flush() { am = Vec::add(am, a1), a1 = _mm256_setzero_ps(); }
  void fold(ExtSum& total) {
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(ae), _mm256_extracti128_si256(ae, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    const int32_t eb = _mm_cvtsi128_si32(m);
    const float s = Vec::hsum(Vec::mul(am, pow2i(_mm256_sub_epi32(ae, _mm256_set1_epi32(eb)))));
    // NaN and +Inf in x, and x past 2^18, show as exponents far beyond 2^16: the driver recomputes the row.
    ext_add(total, s, static_cast<double>(static_cast<int64_t>(eb) - kBias));
    am = _mm256_setzero_ps();
  }
};
// Pass 2 from kept terms: y = term 2^(e - n) / m for the lane exponents e that save() recorded, with
// n the sum's exponent and inv = 1/m (m normalised to [0.5, 1), so e - n <= 0). One multiply by
// 2^(e - n) / m while that factor is a normal float; else two, the second by a power of two.
struct KeptScale {
  V_ inv;
  __m256i ref;
  KeptScale(float inv_m, double n_sum) : inv(Vec::set1(inv_m)), ref(_mm256_set1_epi32(kBias + static_cast<int32_t>(n_sum))) {}
  struct Block {
    V_ f1, f2;
    bool two;
    V_ operator()(V_ t) const { return two ? Vec::mul(Vec::mul(t, f1), f2) : Vec::mul(t, f1); }
  };
  Block block(const float* e) const {
    const __m256i d = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(e)), ref);
    const __m256i d1 = _mm256_max_epi32(d, _mm256_set1_epi32(-125));
    const bool two = _mm256_movemask_epi8(_mm256_cmpeq_epi32(d, d1)) != -1;
    return {Vec::mul(pow2i(d1), inv), pow2i(_mm256_sub_epi32(d, d1)), two};
  }
};
// Lanes h.. of a followed by lanes ..h-1 of b (h < W): both rotated by h, then blended.
struct Shift {
  __m256i rot;
  V_ from_b;
  explicit Shift(int h)
      : rot(_mm256_and_si256(_mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(h)), _mm256_set1_epi32(7))),
        from_b(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(7 - h)))) {}
  V_ operator()(V_ a, V_ b) const {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(a, rot), _mm256_permutevar8x32_ps(b, rot), from_b);
  }
};
#else
// Plain C++: the reduction in double (no FMA at this level), exponents as integer-valued floats.
inline V_ split(V_ x, const Table& tab, V_& k) {
  V_ p;
  for (int i = 0; i < W; i++) {
    const float xi = x.v[i];
    const double xc = xi < -kClamp ? -kClamp : xi;
    if (!(xc <= 4194304.0)) {  // NaN, +Inf, or beyond the exact range: a NaN term (the driver then recomputes)
      p.v[i] = __builtin_nanf("");
      k.v[i] = 0.f;
      continue;
    }
    // Rounding by 1.5 * 2^52 (to nearest even) stays vectorisable without SSE4.1.
    const double n = (xc * (1.4426950408889634 * kTab) + 6755399441055744.0) - 6755399441055744.0;
    const int64_t ni = static_cast<int64_t>(n);
    const double r = xc - n * (0.6931471805599453 / kTab);
    p.v[i] = static_cast<float>(tab.t[ni & (kTab - 1)] * (1.0 + r * (1.0 + r * (kC2 + r * kC3))));
    k.v[i] = static_cast<float>((ni - (ni & (kTab - 1))) / kTab);
  }
  return p;
}
inline V_ scale_acc(V_ p, V_ d) { V_ r; for (int i = 0; i < W; i++) r.v[i] = p.v[i] * pow2_1(d.v[i]); return r; }
// The terms of the three-pass and the outputs: e^x scale 2^-n for four vectors at a time.
struct Terms {
  Table tab;
  float ref;
  Terms(double scale, double n) : tab(static_cast<float>(scale)), ref(static_cast<float>(n)) {}
  void operator()(V_* v) const {
    for (int j = 0; j < 4; j++) {
      V_ k;
      const V_ p = split(v[j], tab, k);
      for (int i = 0; i < W; i++) {  // gradual underflow: 2^d as two normal factors
        const float d = k.v[i] - ref, d1 = d > -126.f ? d : -126.f;
        v[j].v[i] = p.v[i] * pow2_1(d1) * pow2_1(d - d1);
      }
    }
  }
};
struct ExpAcc {
  V_ am = Vec::zero(), a1 = Vec::zero(), ae = Vec::set1(-kInf);
  void add(const Table& tab, V_ x0, V_ x1, V_ x2, V_ x3) {
    V_ k[4], p[4];
    const V_ xs[4] = {x0, x1, x2, x3};
    for (int j = 0; j < 4; j++) p[j] = split(xs[j], tab, k[j]);
    const V_ g = vmax(vmax(k[0], k[1]), vmax(k[2], k[3]));
    bool grow = false;
    for (int i = 0; i < W; i++) grow |= g.v[i] > ae.v[i];
    if (grow) {
      const V_ e = vmax(ae, g), d = Vec::sub(ae, e);
      am = scale_acc(am, d);
      a1 = scale_acc(a1, d);
      ae = e;
    }
    V_ s[4];
    for (int j = 0; j < 4; j++) s[j] = scale_acc(p[j], Vec::sub(k[j], ae));
    a1 = Vec::add(a1, Vec::add(Vec::add(s[0], s[1]), Vec::add(s[2], s[3])));
  }
  void flush() { am = Vec::add(am, a1), a1 = Vec::zero(); }
  void fold(ExtSum& total) {
    const float eb = hmax(ae);
    if (eb != -kInf) ext_add(total, Vec::hsum(scale_acc(am, Vec::sub(ae, Vec::set1(eb)))), eb);
    am = Vec::zero();
  }
};
#endif

// Issues the prefetches of a Prefetch range, a few lines per loop iteration.
struct Prefetcher {
  const char* p;
  const char* end;
  int lines;  // per iteration
  Prefetcher(Prefetch pf, int64_t iters)
      : p(static_cast<const char*>(pf.p)), end(p + (pf.p ? pf.bytes : 0)),
        lines(pf.p && iters > 0 ? static_cast<int>((pf.bytes / 64 + iters - 1) / iters) : 0) {}
  void step() {
    for (int k = 0; k < lines && p < end; k++, p += 64) __builtin_prefetch(p, 0, 2);
  }
};

// ---- loads and stores per dtype (float16/bfloat16 converted as they move) ----
struct F32 { using T = float; };
struct F16 { using T = uint16_t; };
struct BF16 { using T = uint16_t; };

template <class D> V_ load(const typename D::T* p);
template <class D> void store(typename D::T* p, V_ v);
template <class D> float get1(const typename D::T* p);
template <class D> void put1(typename D::T* p, float v);

template <> inline V_ load<F32>(const float* p) { return Vec::load(p); }
template <> inline void store<F32>(float* p, V_ v) { Vec::store(p, v); }
template <> inline float get1<F32>(const float* p) { return *p; }
template <> inline void put1<F32>(float* p, float v) { *p = v; }
template <> inline float get1<F16>(const uint16_t* p) { return half_to_float(*p); }
template <> inline void put1<F16>(uint16_t* p, float v) { *p = float_to_half(v); }
template <> inline float get1<BF16>(const uint16_t* p) { return bf16_to_float(*p); }
template <> inline void put1<BF16>(uint16_t* p, float v) { *p = float_to_bf16(v); }

#if defined(__AVX512F__)
template <> inline V_ load<F16>(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
template <> inline void store<F16>(uint16_t* p, V_ v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
template <> inline V_ load<BF16>(const uint16_t* p) {  // bf16 is the top half of a float32
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
template <> inline void store<BF16>(uint16_t* p, V_ v) {  // round to nearest even; NaN stays a quiet NaN
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}
#elif defined(__AVX2__)
template <> inline V_ load<F16>(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <> inline void store<F16>(uint16_t* p, V_ v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
template <> inline V_ load<BF16>(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
template <> inline void store<BF16>(uint16_t* p, V_ v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, qnan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  // Values fit 16 bits, so the unsigned-saturating pack is exact; it packs within 128-bit lanes, the
  // permute puts both halves in the low 128 bits.
  const __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(pk));
}
#else
template <> inline V_ load<F16>(const uint16_t* p) { V_ r; for (int i = 0; i < W; i++) r.v[i] = half_to_float(p[i]); return r; }
template <> inline void store<F16>(uint16_t* p, V_ v) { for (int i = 0; i < W; i++) p[i] = float_to_half(v.v[i]); }
template <> inline V_ load<BF16>(const uint16_t* p) { V_ r; for (int i = 0; i < W; i++) r.v[i] = bf16_to_float(p[i]); return r; }
template <> inline void store<BF16>(uint16_t* p, V_ v) { for (int i = 0; i < W; i++) p[i] = float_to_bf16(v.v[i]); }
#endif

// Calls f(D{}) with D the tag of dtype dt.
template <class F>
inline auto with_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::f16: return f(F16{});
    case DType::bf16: return f(BF16{});
    default: return f(F32{});
  }
}

// The last (len - i) < G elements of x as floats, padded with `pad`.
template <class D>
inline void load_rest(const typename D::T* x, int64_t i, int64_t len, float pad, float* buf) {
  for (int j = 0; j < G; j++) buf[j] = i + j < len ? get1<D>(x + i + j) : pad;
}


// ---- max (three-pass pass 1, checks) ----
template <class D>
void max_t(const typename D::T* x, int64_t len, float* mx, bool* nan, Prefetch pf) {
  V_ a0 = Vec::set1(-kInf), a1 = a0, a2 = a0, a3 = a0;
  NanFlag f;
  Prefetcher pre(pf, len / G);
  int64_t i = 0;
  for (; i + G <= len; i += G) {
    pre.step();
    const V_ x0 = load<D>(x + i), x1 = load<D>(x + i + W), x2 = load<D>(x + i + 2 * W), x3 = load<D>(x + i + 3 * W);
    f.add(x0), f.add(x1), f.add(x2), f.add(x3);
    // x second: a NaN x leaves the running max as it was (the flag records it).
    a0 = vmax(x0, a0), a1 = vmax(x1, a1), a2 = vmax(x2, a2), a3 = vmax(x3, a3);
  }
  float m = hmax(vmax(vmax(a0, a1), vmax(a2, a3)));
  bool n = f.any();
  for (; i < len; i++) {
    const float v = get1<D>(x + i);
    if (v != v) n = true;
    else if (v > m) m = v;
  }
  *mx = m;
  *nan = n;
}

// ---- two-pass, pass 1 ----
template <class D, bool kShift>
ExtSum sum_exp_t(const typename D::T* x, int64_t len, float shift, Prefetch pf) {
  const V_ vs = Vec::set1(shift);
  const Table tab(1.f);
  ExtSum total{0.0, -static_cast<double>(kInf)};
  ExpAcc acc;
  auto step = [&](V_ x0, V_ x1, V_ x2, V_ x3) {
    if (kShift) x0 = Vec::sub(x0, vs), x1 = Vec::sub(x1, vs), x2 = Vec::sub(x2, vs), x3 = Vec::sub(x3, vs);
    acc.add(tab, x0, x1, x2, x3);
  };
  Prefetcher pre(pf, len / G);
  int64_t i = 0;
  while (i + G <= len) {
    const int64_t end = i + kBlock < len ? i + kBlock : len;
    while (i + G <= end) {
      const int64_t inner = i + kInner < end ? i + kInner : end;
      for (; i + G <= inner; i += G) {
        pre.step();
        step(load<D>(x + i), load<D>(x + i + W), load<D>(x + i + 2 * W), load<D>(x + i + 3 * W));
      }
      acc.flush();
    }
    acc.fold(total);
  }
  if (i < len) {
    alignas(64) float buf[G];
    load_rest<D>(x, i, len, -kInf, buf);  // -inf pads clamp to -65536: they add 0 to a row with any real term
    step(Vec::load(buf), Vec::load(buf + W), Vec::load(buf + 2 * W), Vec::load(buf + 3 * W));
    acc.flush();
    acc.fold(total);
  }
  return total;
}

// ---- two-pass, pass 2: y = e^(x - shift) / (m 2^n) ----
template <class D, bool kShift, bool kStream>
void write_exp_t(const typename D::T* x, typename D::T* y, int64_t len, float shift, ExtSum s, Prefetch pf) {
  const V_ vs = Vec::set1(shift);
  const Terms terms(1.0 / s.m, s.n);  // 1/m folded into the table
  auto four = [&](V_* v) {
    if (kShift)
      for (int j = 0; j < 4; j++) v[j] = Vec::sub(v[j], vs);
    terms(v);
  };
  auto rest = [&](int64_t i, int64_t end) {  // end - i <= G elements through a float buffer
    alignas(64) float buf[G];
    load_rest<D>(x, i, end, 0.f, buf);
    V_ v[4];
    for (int j = 0; j < 4; j++) v[j] = Vec::load(buf + j * W);
    four(v);
    for (int j = 0; j < 4; j++) Vec::store(buf + j * W, v[j]);
    for (int64_t j = 0; j < end - i; j++) put1<D>(y + i + j, buf[j]);
  };
  int64_t i = 0;
  if (kStream) {
    // Non-temporal stores need vector-aligned addresses (y itself is float-aligned, write_exp_k checks):
    // the first few elements go through the buffer.
    const int64_t mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(y) % (W * sizeof(float)));
    i = mis == 0 ? 0 : (static_cast<int64_t>(W * sizeof(float)) - mis) / static_cast<int64_t>(sizeof(float));
    if (i > len) i = len;
    if (i > 0) rest(0, i);
  }
  Prefetcher pre(pf, len / G);
  for (; i + G <= len; i += G) {
    pre.step();
    V_ v[4] = {load<D>(x + i), load<D>(x + i + W), load<D>(x + i + 2 * W), load<D>(x + i + 3 * W)};
    four(v);
    if (kStream) {
      float* o = reinterpret_cast<float*>(y + i);
      stream(o, v[0]), stream(o + W, v[1]), stream(o + 2 * W, v[2]), stream(o + 3 * W, v[3]);
    } else {
      store<D>(y + i, v[0]), store<D>(y + i + W, v[1]), store<D>(y + i + 2 * W, v[2]), store<D>(y + i + 3 * W, v[3]);
    }
  }
  while (i < len) {
    const int64_t end = i + G < len ? i + G : len;
    rest(i, end);
    i = end;
  }
  if (kStream) stream_fence();
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// ---- two-pass with kept terms (rows that fit the scratch; softmax.cc) ----
// Writes the elements [e0, min(e0 + W, len)) of y from v.
template <class D>
inline void put_part(typename D::T* y, int64_t e0, int64_t len, V_ v) {
  alignas(64) float buf[W];
  Vec::store(buf, v);
  for (int64_t j = 0; j < W && e0 + j < len; j++) put1<D>(y + e0 + j, buf[j]);
}

// Pass 2 from the kept terms, by blocks of kInner elements: a multiply per element instead of an exp.
// The terms are in the row's own lane order (the sum's order must not depend on where y is); when
// streaming to a y that is not vector-aligned, each aligned output vector is taken from two scaled
// neighbours (h lanes apart).
template <class D, bool kStream>
struct KeptWriter {
  static constexpr int64_t kPerBlock = kInner / W;
  const float* keep;
  typename D::T* y;
  int64_t len, nv;
  const float* exps;
  KeptScale ks;
  int h;  // elements before y's first vector-aligned address (streaming only; y is float-aligned then)
  Shift sh;
  static KeptScale scale_of(ExtSum s) {
    int e2;
    const double f = std::frexp(s.m, &e2);  // s = f 2^(n + e2), f in [0.5, 1)
    return KeptScale(static_cast<float>(1.0 / f), s.n + e2);
  }
  KeptWriter(const float* keep_, typename D::T* y_, int64_t len_, ExtSum s)
      : keep(keep_), y(y_), len(len_), nv((len_ + W - 1) / W), exps(keep_ + (len_ + kInner - 1) / kInner * kInner),
        ks(scale_of(s)), h(kStream ? static_cast<int>((W - reinterpret_cast<uintptr_t>(y_) / sizeof(float) % W) % W) : 0),
        sh(h) {}
  // Blocks [b0, b1); the call that reaches the row's end also writes its last elements and fences.
  void blocks(int64_t b0, int64_t b1, Prefetcher* pre = nullptr) {
    int64_t q = b0 * kPerBlock;
    V_ prev = Vec::zero();
    if (h != 0 && q > 0 && q < nv) prev = ks.block(exps + (b0 - 1) * W)(Vec::load(keep + (q - 1) * W));
    for (int64_t b = b0; b < b1 && q < nv; b++) {
      const auto sc = ks.block(exps + b * W);
      const int64_t qend = q + kPerBlock < nv ? q + kPerBlock : nv;
      for (; q < qend; q++) {
        if (pre != nullptr && (q & 3) == 0) pre->step();
        const V_ cur = sc(Vec::load(keep + q * W));
        if (h == 0) {
          if (q * W + W <= len) {
            if (kStream) stream(reinterpret_cast<float*>(y + q * W), cur);
            else store<D>(y + q * W, cur);
          } else {
            put_part<D>(y, q * W, len, cur);
          }
        } else if (q == 0) {
          put_part<D>(y, 0, len < h ? len : h, cur);
        } else {
          const int64_t e0 = (q - 1) * W + h;
          const V_ o = sh(prev, cur);
          if (e0 + W <= len) stream(reinterpret_cast<float*>(y + e0), o);
          else put_part<D>(y, e0, len, o);
        }
        prev = cur;
      }
    }
    if (q == nv && q > b0 * kPerBlock) {
      if (h != 0 && (nv - 1) * W + h < len) put_part<D>(y, (nv - 1) * W + h, len, sh(prev, Vec::zero()));
      if (kStream) stream_fence();
    }
  }
};

struct NoDrain {
  void operator()(int64_t) const {}
};

// Pass 1 as sum_exp_t (no shift), storing each term e^x 2^-e (e its lane's exponent at the end of its
// block of kInner elements) in `keep`, and the exponents after the terms. After each block it calls
// drain(b): the previous row's pass 2, one block at a time, so that its stores to memory go out while
// this row computes.
template <class D, class Drain>
ExtSum sum_exp_keep_t(const typename D::T* x, int64_t len, float* keep, Prefetch pf, const Drain& drain) {
  const Table tab(1.f);
  ExtSum total{0.0, -static_cast<double>(kInf)};
  ExpAcc acc;
  const int64_t blocks = (len + kInner - 1) / kInner;
  float* exps = keep + blocks * kInner;
  Prefetcher pre(pf, len / G);
  int64_t i = 0;
  for (int64_t b = 0; b < blocks; b++) {
    float* blk = keep + i;
    const int64_t end = i + kInner < len ? i + kInner : len;
    for (; i + G <= end; i += G) {
      pre.step();
      acc.add_keep(tab, load<D>(x + i), load<D>(x + i + W), load<D>(x + i + 2 * W), load<D>(x + i + 3 * W), keep + i, blk);
    }
    if (i < end) {  // the row's last, partial group: -inf pads add 0 and keep 0
      alignas(64) float buf[G];
      load_rest<D>(x, i, len, -kInf, buf);
      acc.add_keep(tab, Vec::load(buf), Vec::load(buf + W), Vec::load(buf + 2 * W), Vec::load(buf + 3 * W), keep + i, blk);
      i = end;
    }
    acc.flush();
    acc.save(exps + b * W);
    if ((b + 1) % (kBlockIters / kInnerIters) == 0 || b + 1 == blocks) acc.fold(total);
    drain(b);
  }
  return total;
}
#endif

// ---- three-pass, pass 2: sum of e^(x - shift) 2^-nref, optionally stored (float32 y) ----
template <class D, bool kShift, bool kStore>
double sum_rel_t(const typename D::T* x, float* y, int64_t len, float shift, float nref, Prefetch pf) {
  const V_ vs = Vec::set1(shift);
  const Terms terms(1.0, nref);
  auto four = [&](V_* v) {
    if (kShift)
      for (int j = 0; j < 4; j++) v[j] = Vec::sub(v[j], vs);
    terms(v);
  };
  double total = 0;
  Prefetcher pre(pf, len / G);
  int64_t i = 0;
  while (i + G <= len) {
    const int64_t end = i + kBlock < len ? i + kBlock : len;
    V_ acc = Vec::zero();
    while (i + G <= end) {
      const int64_t inner = i + kInner < end ? i + kInner : end;
      V_ a1 = Vec::zero();
      for (; i + G <= inner; i += G) {
        pre.step();
        V_ e[4] = {load<D>(x + i), load<D>(x + i + W), load<D>(x + i + 2 * W), load<D>(x + i + 3 * W)};
        four(e);
        if (kStore) Vec::store(y + i, e[0]), Vec::store(y + i + W, e[1]), Vec::store(y + i + 2 * W, e[2]), Vec::store(y + i + 3 * W, e[3]);
        a1 = Vec::add(a1, Vec::add(Vec::add(e[0], e[1]), Vec::add(e[2], e[3])));
      }
      acc = Vec::add(acc, a1);
    }
    total += Vec::hsum(acc);
  }
  if (i < len) {
    alignas(64) float buf[G];
    load_rest<D>(x, i, len, -kInf, buf);
    V_ e[4];
    for (int j = 0; j < 4; j++) e[j] = Vec::load(buf + j * W);
    four(e);
    for (int j = 0; j < 4; j++) Vec::store(buf + j * W, e[j]);
    const V_ acc = Vec::add(Vec::add(e[0], e[1]), Vec::add(e[2], e[3]));
    if (kStore)
      for (int64_t j = 0; j < len - i; j++) y[i + j] = buf[j];
    total += Vec::hsum(acc);
  }
  return total;
}

// ---- three-pass, pass 3 (float32): y *= s ----
void scale_k(float* y, int64_t len, float s, Prefetch pf) {
  const V_ vs = Vec::set1(s);
  Prefetcher pre(pf, len / G);
  int64_t i = 0;
  for (; i + G <= len; i += G) {
    pre.step();
    const V_ y0 = Vec::mul(Vec::load(y + i), vs), y1 = Vec::mul(Vec::load(y + i + W), vs);
    const V_ y2 = Vec::mul(Vec::load(y + i + 2 * W), vs), y3 = Vec::mul(Vec::load(y + i + 3 * W), vs);
    Vec::store(y + i, y0), Vec::store(y + i + W, y1), Vec::store(y + i + 2 * W, y2), Vec::store(y + i + 3 * W, y3);
  }
  for (; i < len; i++) y[i] *= s;
}

// ---- entry points of the kernel table: dtype and shift dispatch ----
template <class D> const typename D::T* in(const void* p) { return static_cast<const typename D::T*>(p); }
template <class D> typename D::T* out(void* p) { return static_cast<typename D::T*>(p); }

void max_k(const void* x, DType dt, int64_t len, float* mx, bool* nan, Prefetch pf) {
  with_dtype(dt, [&](auto d) { max_t<decltype(d)>(in<decltype(d)>(x), len, mx, nan, pf); });
}

ExtSum sum_exp_k(const void* x, DType dt, int64_t len, float shift, Prefetch pf) {
  return with_dtype(dt, [&](auto d) {
    using D = decltype(d);
    return shift != 0.f ? sum_exp_t<D, true>(in<D>(x), len, shift, pf) : sum_exp_t<D, false>(in<D>(x), len, 0.f, pf);
  });
}

void write_exp_k(const void* x, void* y, DType dt, int64_t len, float shift, ExtSum s, bool stream_out, Prefetch pf) {
  if (dt == DType::f32 && stream_out && reinterpret_cast<uintptr_t>(y) % sizeof(float) == 0) {
    if (shift != 0.f) write_exp_t<F32, true, true>(in<F32>(x), out<F32>(y), len, shift, s, pf);
    else write_exp_t<F32, false, true>(in<F32>(x), out<F32>(y), len, 0.f, s, pf);
    return;
  }
  with_dtype(dt, [&](auto d) {
    using D = decltype(d);
    if (shift != 0.f) write_exp_t<D, true, false>(in<D>(x), out<D>(y), len, shift, s, pf);
    else write_exp_t<D, false, false>(in<D>(x), out<D>(y), len, 0.f, s, pf);
  });
}

double sum_rel_k(const void* x, float* y, DType dt, int64_t len, float shift, float nref, Prefetch pf) {
  return with_dtype(dt, [&](auto d) {
    using D = decltype(d);
    if (y != nullptr)
      return shift != 0.f ? sum_rel_t<D, true, true>(in<D>(x), y, len, shift, nref, pf) : sum_rel_t<D, false, true>(in<D>(x), y, len, 0.f, nref, pf);
    return shift != 0.f ? sum_rel_t<D, true, false>(in<D>(x), y, len, shift, nref, pf) : sum_rel_t<D, false, false>(in<D>(x), y, len, 0.f, nref, pf);
  });
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// Scratch layout: the terms, padded to whole blocks of kInner, then one vector of lane exponents per block.
int64_t keep_floats_k(int64_t len) { return (len + kInner - 1) / kInner * (kInner + W); }

// Calls f(writer) with the KeptWriter for row `k` (streamed when asked and y is float-aligned).
template <class D, class F>
void with_writer(const KeptRow& k, int64_t len, F&& f) {
  if (std::is_same<D, F32>::value && k.stream && reinterpret_cast<uintptr_t>(k.y) % sizeof(float) == 0) {
    KeptWriter<F32, true> w(k.keep, static_cast<float*>(k.y), len, k.s);
    f(w);
  } else {
    KeptWriter<D, false> w(k.keep, static_cast<typename D::T*>(k.y), len, k.s);
    f(w);
  }
}

ExtSum sum_exp_keep_k(const void* x, DType dt, int64_t len, float* keep, Prefetch pf, const KeptRow* prev) {
  return with_dtype(dt, [&](auto d) {
    using D = decltype(d);
    if (prev == nullptr) return sum_exp_keep_t<D>(in<D>(x), len, keep, pf, NoDrain{});
    ExtSum s;
    with_writer<D>(*prev, len, [&](auto& w) { s = sum_exp_keep_t<D>(in<D>(x), len, keep, pf, [&](int64_t b) { w.blocks(b, b + 1); }); });
    return s;
  });
}

void write_kept_k(const KeptRow& k, DType dt, int64_t len, Prefetch pf) {
  with_dtype(dt, [&](auto d) {
    with_writer<decltype(d)>(k, len, [&](auto& w) {
      Prefetcher pre(pf, (len + G - 1) / G);
      w.blocks(0, (len + kInner - 1) / kInner, &pre);
    });
  });
}
#endif

}  // namespace

#if defined(__AVX2__) && !defined(__AVX512F__)
extern const SoftmaxKernels kSoftmaxKernels = {max_k, sum_exp_k, write_exp_k, sum_rel_k, scale_k, keep_floats_k, sum_exp_keep_k, write_kept_k};
#else  // AVX-512 (exp is cheap there: the L2 round trip measured no faster) and the plain level recompute
extern const SoftmaxKernels kSoftmaxKernels = {max_k, sum_exp_k, write_exp_k, sum_rel_k, scale_k, nullptr, nullptr, nullptr};
#endif

}  // namespace SK_LEVEL_NS
}  // namespace sk
