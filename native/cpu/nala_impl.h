// The NaLaFormer kernels (nala.h), written once against `Vec` and compiled per SIMD level (nala_<level>.cc).
//
// Feature maps: phik is a cube of each half. phiq needs x^p with p = 3 (0.5 + tanh |q|) per row, so per
// element exp(p log x): log by exponent and mantissa (m in [sqrt(1/2), sqrt(2)), 2 atanh((m-1)/(m+1)) to
// s^9: < 1e-9 truncation) in a loop the compiler vectorises, then the vectorised exp of vec.h. x = |q_d| / |q|
// is in [0, 1]; |q| is taken after dividing by max |q_d|, so no square overflows (a q row of 1e30s is fine)
// or underflows. x below FLT_MIN clamps to FLT_MIN, whose p-th power (p >= 1.5) is exp(< -130) = 0 in vexp.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "convert_impl.h"
#include "gemm_impl.h"
#include "nala.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

namespace {

constexpr int kChunk = kNalaChunk;

inline bool cancelled(const NalaArgs& a) { return a.cancel != nullptr && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0; }

inline float dot(const float* x, const float* y, int n) {
  constexpr int W = Vec::W;
  V_ a0 = Vec::zero(), a1 = Vec::zero();
  int i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    a0 = Vec::fma(Vec::load(x + i), Vec::load(y + i), a0);
    a1 = Vec::fma(Vec::load(x + i + W), Vec::load(y + i + W), a1);
  }
  for (; i < n; i += W) {
    const int w = n - i < W ? n - i : W;
    a0 = Vec::fma(Vec::loadp(x + i, w), Vec::loadp(y + i, w), a0);
  }
  return Vec::hsum(Vec::add(a0, a1));
}

// x = 2^e * (1 + s) / (1 - s) with s = (m - 1) / (m + 1), m in [sqrt(1/2), sqrt(2)): exponent and mantissa
// from the bits (x a positive normal float), per level.
#if defined(__AVX512F__)
inline void log_parts(V_ x, V_& s, V_& e) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512 ef = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(127)));
  __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffff)), _mm512_set1_epi32(0x3f800000)));
  const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
  e = _mm512_mask_add_ps(ef, big, ef, _mm512_set1_ps(1.f));
  s = _mm512_div_ps(_mm512_sub_ps(m, _mm512_set1_ps(1.f)), _mm512_add_ps(m, _mm512_set1_ps(1.f)));
}
inline V_ vmax(V_ a, V_ b) { return _mm512_max_ps(a, b); }
#elif defined(__AVX2__)
inline void log_parts(V_ x, V_& s, V_& e) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256 ef = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(0x3f800000)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
  e = _mm256_add_ps(ef, _mm256_and_ps(big, _mm256_set1_ps(1.f)));
  s = _mm256_div_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.f)), _mm256_add_ps(m, _mm256_set1_ps(1.f)));
}
inline V_ vmax(V_ a, V_ b) { return _mm256_max_ps(a, b); }
#else
inline void log_parts(V_ x, V_& s, V_& e) {
  for (int i = 0; i < Vec::W; i++) {
    uint32_t u;
    std::memcpy(&u, &x.v[i], 4);
    const uint32_t mu = (u & 0x7fffffu) | 0x3f800000u;
    float m;
    std::memcpy(&m, &mu, 4);
    const bool big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e.v[i] = static_cast<float>(static_cast<int>(u >> 23) - 127) + (big ? 1.f : 0.f);
    s.v[i] = (m - 1.f) / (m + 1.f);
  }
}
inline V_ vmax(V_ a, V_ b) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
  return r;
}
#endif

// x[i] <- x[i]^p for x in [0, 1] (exactly 0 stays 0: it clamps to FLT_MIN, whose power underflows):
// exp(p log x), log x = e ln2 + 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), ln2 in two parts so that e ln2 is
// exact to float rounding.
inline void pow_row(float* x, int n, float p) {
  constexpr int W = Vec::W;
  const V_ vp = Vec::set1(p), tiny = Vec::set1(FLT_MIN);
  for (int i = 0; i < n; i += W) {
    const int w = n - i < W ? n - i : W;
    V_ s, e;
    log_parts(vmax(Vec::loadp(x + i, w), tiny), s, e);
    const V_ s2 = Vec::mul(s, s);
    V_ poly = Vec::fma(s2, Vec::set1(1.f / 9), Vec::set1(1.f / 7));
    poly = Vec::fma(poly, s2, Vec::set1(1.f / 5));
    poly = Vec::fma(poly, s2, Vec::set1(1.f / 3));
    poly = Vec::fma(poly, s2, Vec::set1(1.f));
    const V_ two_s = Vec::add(s, s);
    const V_ lo = Vec::fma(e, Vec::set1(1.428606765330187045e-06f), Vec::mul(two_s, poly));
    const V_ l = Vec::fma(e, Vec::set1(0.693145751953125f), lo);
    Vec::storep(x + i, vexp(Vec::mul(vp, l)), w);
  }
}

// phiq of one raw q row (K) into out (2K).
void phi_q_row(const float* q, int K, float* out) {
  // max |q_d| by vectors (a scalar max loop does not vectorise: its NaN semantics; q is finite here, the
  // driver checks it first).
  constexpr int W = Vec::W;
  V_ m = Vec::zero();
  for (int d = 0; d < K; d += W) {
    const V_ x = Vec::loadp(q + d, K - d < W ? K - d : W);
    m = vmax(m, vmax(x, Vec::sub(Vec::zero(), x)));
  }
  alignas(64) float lanes[W];
  Vec::store(lanes, m);
  float mx = 0.f;
  for (int i = 0; i < W; i++) mx = lanes[i] > mx ? lanes[i] : mx;
  if (mx == 0.f) {
    std::memset(out, 0, 2 * K * sizeof(float));
    return;
  }
  // |q| = mx * |q / mx|, with q / mx in [-1, 1]. A subnormal mx is scaled up first (1 / mx would overflow).
  const float pre = mx < 1e-30f ? 1e30f : 1.f;
  const float inv = 1.f / (mx * pre);
  for (int d = 0; d < K; d++) out[d] = q[d] * pre * inv;
  const float rs = std::sqrt(dot(out, out, K));
  const float norm = mx * rs;  // may round to +Inf for rows near FLT_MAX: tanh is 1 there anyway
  // tanh(n) = 1 - 2 / (e^2n + 1) (n >= 0; e^2n = +Inf gives 1): one expf, where tanhf goes through expm1f
  // at several times its cost. Absolute error ~1e-7 in p, which is what matters for x^p.
  const float p = 3.f * (1.5f - 2.f / (std::exp(2.f * norm) + 1.f));
  // One of relu(x_d), relu(-x_d) is zero: raise |x_d| to p once (K powers, not 2K), then split by sign.
  const float c = 1.f / rs;
  float* mag = out + K;
  for (int d = 0; d < K; d++) mag[d] = std::fabs(out[d] * c);
  pow_row(mag, K, p);
  for (int d = 0; d < K; d++) {
    const float y = mag[d];
    const bool pos = out[d] > 0.f;
    out[d] = pos ? y : 0.f;
    mag[d] = pos ? 0.f : y;
  }
}

// phik of one k row (K) into out (2K): relu(x)^3 = max(x^3, 0) (the cube keeps the sign).
void phi_k_row(const float* k, int K, float* out) {
  constexpr int W = Vec::W;
  for (int d = 0; d < K; d += W) {
    const int w = K - d < W ? K - d : W;
    const V_ x = Vec::loadp(k + d, w);
    const V_ c = Vec::mul(Vec::mul(x, x), x);
    Vec::storep(out + d, vmax(c, Vec::zero()), w);
    Vec::storep(out + K + d, vmax(Vec::sub(Vec::zero(), c), Vec::zero()), w);
  }
}

// rho: each K-half of u (2K) rotated by one rope row (x cos + rotate_every_two(x) sin), into r.
inline void rotate(const float* u, const float* cs, const float* sn, int K, float* r) {
  for (int half = 0; half < 2; half++) {
    const float* x = u + half * K;
    float* y = r + half * K;
    for (int m = 0; m + 1 < K; m += 2) {
      const float a = x[m], b = x[m + 1];
      y[m] = a * cs[m] - b * sn[m];
      y[m + 1] = b * cs[m + 1] + a * sn[m + 1];
    }
  }
}

// dst (cols x rows, ldd) = src (rows x cols, lds)^T: by 16 x 16 (AVX-512) or 8 x 8 (AVX2) register blocks,
// the edges element by element.
inline void transpose(const float* src, int rows, int cols, int lds, float* dst, int ldd) {
  int r0 = 0;
#if defined(__AVX512F__)
  for (; r0 + 16 <= rows; r0 += 16) {
    int c0 = 0;
    for (; c0 + 16 <= cols; c0 += 16) {
      __m512 r[16], t[16];
      for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + static_cast<size_t>(r0 + i) * lds + c0);
      // Pairs of rows interleaved, then quads, within each 128-bit lane: u[4g + k] lane L = rows 4g..4g+3 of
      // column 4L + k; then the 4 x 4 transpose of the lanes of u[k], u[4 + k], u[8 + k], u[12 + k].
      for (int i = 0; i < 16; i += 2) t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
      for (int g = 0; g < 16; g += 4) {
        r[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        r[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
        r[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        r[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
      }
      for (int k = 0; k < 4; k++) {
        const __m512 v0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44), v1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
        const __m512 w0 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44), w1 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
        _mm512_storeu_ps(dst + static_cast<size_t>(c0 + k) * ldd + r0, _mm512_shuffle_f32x4(v0, w0, 0x88));
        _mm512_storeu_ps(dst + static_cast<size_t>(c0 + 4 + k) * ldd + r0, _mm512_shuffle_f32x4(v0, w0, 0xDD));
        _mm512_storeu_ps(dst + static_cast<size_t>(c0 + 8 + k) * ldd + r0, _mm512_shuffle_f32x4(v1, w1, 0x88));
        _mm512_storeu_ps(dst + static_cast<size_t>(c0 + 12 + k) * ldd + r0, _mm512_shuffle_f32x4(v1, w1, 0xDD));
      }
    }
    for (; c0 < cols; c0++)
      for (int i = 0; i < 16; i++) dst[static_cast<size_t>(c0) * ldd + r0 + i] = src[static_cast<size_t>(r0 + i) * lds + c0];
  }
#elif defined(__AVX2__)
  for (; r0 + 8 <= rows; r0 += 8) {
    int c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) {
      __m256 r[8], t[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + static_cast<size_t>(r0 + i) * lds + c0);
      // As the AVX-512 blocks: pairs, quads within 128-bit lanes, then the two lanes swapped across.
      for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      for (int g = 0; g < 8; g += 4) {
        r[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        r[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        r[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        r[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
      }
      for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(dst + static_cast<size_t>(c0 + k) * ldd + r0, _mm256_permute2f128_ps(r[k], r[4 + k], 0x20));
        _mm256_storeu_ps(dst + static_cast<size_t>(c0 + 4 + k) * ldd + r0, _mm256_permute2f128_ps(r[k], r[4 + k], 0x31));
      }
    }
    for (; c0 < cols; c0++)
      for (int i = 0; i < 8; i++) dst[static_cast<size_t>(c0) * ldd + r0 + i] = src[static_cast<size_t>(r0 + i) * lds + c0];
  }
#endif
  for (; r0 < rows; r0++)
    for (int c = 0; c < cols; c++) dst[static_cast<size_t>(c) * ldd + r0] = src[static_cast<size_t>(r0) * lds + c];
}

// A row of q, k or v as float32: the tensor's own memory when it is float32, else converted into tmp.
inline const float* row_f32(const void* base, DType dt, int64_t off, int n, float* tmp) {
  if (dt == DType::f32) return static_cast<const float*>(base) + off;
  load_row(base, dt, off, n, tmp);
  return tmp;
}

inline void add_row(float* z, const float* x, int n) {
  constexpr int W = Vec::W;
  for (int e = 0; e < n; e += W) {
    const int w = n - e < W ? n - e : W;
    Vec::storep(z + e, Vec::add(Vec::loadp(z + e, w), Vec::loadp(x + e, w)), w);
  }
}

// Views into the caller's workspace (nala_work_floats(K, V, hg, hq) floats, from the driver: no allocation
// here, and no std::vector code instantiated under this TU's target flags, which the linker could pick for
// every level). Index i: the unit's i-th kv head (kf..zs) or query head (qu..den).
struct Scratch {
  size_t C = kChunk, K2, V, kvs, qs;
  float *kv0, *q0, *a, *raw, *raw2;
  Scratch(float* w, int K, int Vd, int hg, int hq) : K2(2 * static_cast<size_t>(K)), V(Vd) {
    kvs = static_cast<size_t>(nala_kv_head_floats(K, Vd)), qs = static_cast<size_t>(nala_q_head_floats(K, Vd));
    kv0 = w, q0 = kv0 + hg * kvs, a = q0 + hq * qs, raw = a + C * C, raw2 = raw + (K > Vd ? K : Vd);
  }
  float* kf(int i) const { return kv0 + i * kvs; }     // C x 2K: phik rows
  float* kr(int i) const { return kf(i) + C * K2; }    // C x 2K: rho phik (rope)
  float* krt(int i) const { return kr(i) + C * K2; }   // 2K x C: (rho phik)^T (causal)
  float* zc(int i) const { return krt(i) + K2 * C; }   // C x 2K: z + sum_{j' <= j} phik_j' (causal, rope)
  float* vc(int i) const { return zc(i) + C * K2; }    // C x V
  float* zs(int i) const { return vc(i) + C * V; }     // 2K: sum of the phik rows gathered
  float* qu(int i) const { return q0 + i * qs; }       // C x 2K: phiq rows
  float* qr(int i) const { return qu(i) + C * K2; }    // C x 2K: rho phiq (rope)
  float* ob(int i) const { return qr(i) + C * K2; }    // C x V: O rows
  float* den(int i) const { return ob(i) + C * V; }    // C
};

// Keys [j0, j0 + n) of kv heads [hk0, hk1), token by token (each token's rows of the heads are adjacent):
// phik rows into kf, rotated into kr (rope), V rows into vc, phik summed into zs. With zbase (causal, rope):
// zc row j = z + zs after key j, z of kv head hk0 + i at zbase + i * zstride.
inline void gather_keys(const NalaArgs& a, const NalaSeq& s, int hk0, int hk1, int64_t j0, int n, const Scratch& w,
                        const float* zbase, int64_t zstride) {
  const int K = a.K, K2 = 2 * K, V = a.V;
  const bool rope = a.cos_k != nullptr;
  for (int j = 0; j < n; j++) {
    const int64_t tok = s.kbos + j0 + j;
    for (int hk = hk0; hk < hk1; hk++) {
      const int i = hk - hk0;
      const int64_t row = tok * a.Hk + hk;
      float* u = w.kf(i) + static_cast<size_t>(j) * K2;
      phi_k_row(row_f32(a.k, a.dtype, row * K, K, w.raw), K, u);
      if (rope) {
        const int64_t rr = s.krope + j0 + j;
        rotate(u, a.cos_k + rr * K, a.sin_k + rr * K, K, w.kr(i) + static_cast<size_t>(j) * K2);
      }
      add_row(w.zs(i), u, K2);
      if (zbase) {
        float* zr = w.zc(i) + static_cast<size_t>(j) * K2;
        std::memcpy(zr, zbase + i * zstride, K2 * sizeof(float));
        add_row(zr, w.zs(i), K2);
      }
      load_row(a.v, a.dtype, row * V, V, w.vc(i) + static_cast<size_t>(j) * V);
    }
  }
}

// Queries [i0, i0 + n) of heads [h0, h1), token by token: phiq rows into qu, rotated into qr (rope).
inline void gather_queries(const NalaArgs& a, const NalaSeq& s, int h0, int h1, int64_t i0, int n, const Scratch& w) {
  const int K = a.K, K2 = 2 * K;
  const bool rope = a.cos_q != nullptr;
  for (int r = 0; r < n; r++) {
    const int64_t tok = s.qbos + i0 + r;
    for (int h = h0; h < h1; h++) {
      float* u = w.qu(h - h0) + static_cast<size_t>(r) * K2;
      phi_q_row(row_f32(a.q, a.dtype, (tok * a.H + h) * K, K, w.raw), K, u);
      if (rope) {
        const int64_t rr = s.qrope + i0 + r;
        rotate(u, a.cos_q + rr * K, a.sin_q + rr * K, K, w.qr(h - h0) + static_cast<size_t>(r) * K2);
      }
    }
  }
}

// o rows [i0, i0 + n) of heads [h0, h1), token by token: O row divided by its denominator (0 where den is 0:
// no key seen).
inline void store_rows(const NalaArgs& a, const NalaSeq& s, int h0, int h1, int64_t i0, int n, const Scratch& w) {
  constexpr int W = Vec::W;
  const int V = a.V;
  for (int r = 0; r < n; r++) {
    const int64_t tok = s.qbos + i0 + r;
    for (int h = h0; h < h1; h++) {
      float* oi = w.ob(h - h0) + static_cast<size_t>(r) * V;
      const float d = w.den(h - h0)[r];
      const V_ inv = Vec::set1(d > 0.f ? 1.f / d : 0.f);
      const int64_t off = (tok * a.H + h) * V;
      float* dst = a.dtype == DType::f32 ? static_cast<float*>(a.o) + off : oi;
      for (int c = 0; c < V; c += W) {
        const int wd = V - c < W ? V - c : W;
        Vec::storep(dst + c, Vec::mul(Vec::loadp(oi + c, wd), inv), wd);
      }
      if (a.dtype != DType::f32) store_row(a.o, a.dtype, off, V, oi);
    }
  }
}

bool causal(const NalaArgs& a, const NalaSeq& s, int hk0, int hk1, float* state, float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V, G = a.H / a.Hk;
  const int hg = hk1 - hk0, h0 = hk0 * G, h1 = hk1 * G;
  const int64_t L = nala_state_len(K, V), KVn = static_cast<int64_t>(K2) * V;
  const bool rope = a.cos_q != nullptr;
  Scratch w(work, K, V, hg, h1 - h0);
  int64_t count = static_cast<int64_t>(std::llround(state[KVn + K2]));
  for (int64_t t0 = 0; t0 < s.qlen; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = s.qlen - t0 < kChunk ? static_cast<int>(s.qlen - t0) : kChunk;
    for (int i = 0; i < hg; i++) std::memset(w.zs(i), 0, K2 * sizeof(float));
    gather_keys(a, s, hk0, hk1, t0, n, w, rope ? state + KVn : nullptr, L);
    for (int i = 0; i < hg; i++) transpose(rope ? w.kr(i) : w.kf(i), n, K2, K2, w.krt(i), kChunk);
    gather_queries(a, s, h0, h1, t0, n, w);
    for (int h = h0; h < h1; h++) {
      const int i = h / G - hk0, hi = h - h0;
      const float* KV = state + i * L;
      const float* z = KV + KVn;
      const float* qr = rope ? w.qr(hi) : w.qu(hi);
      float* ob = w.ob(hi);
      float* den = w.den(hi);
      // A = Qr Kr^T, lower triangle (the upper part of the diagonal tiles zeroed: A V reads it).
      gemm(n, n, K2, qr, K2, w.krt(i), kChunk, w.a, kChunk, kCLower);
      for (int r = 0; r < n; r++)
        for (int j = r + 1; j < n; j++) w.a[static_cast<size_t>(r) * kChunk + j] = 0.f;
      gemm(n, V, K2, qr, K2, KV, V, ob, V, 0);
      gemm(n, V, n, w.a, kChunk, w.vc(i), V, ob, V, kAccumulate | kALower);
      for (int r = 0; r < n; r++) {
        const float* qu = w.qu(hi) + static_cast<size_t>(r) * K2;
        // Without rope A is the unrotated phiq . phik, so its row sum is the chunk's part of the denominator.
        const float part = rope ? dot(qu, w.zc(i) + static_cast<size_t>(r) * K2, K2)
                                : dot(qu, z, K2) + [&] {
                                    constexpr int W = Vec::W;
                                    const float* ar = w.a + static_cast<size_t>(r) * kChunk;
                                    V_ acc = Vec::zero();
                                    for (int j = 0; j <= r; j += W) acc = Vec::add(acc, Vec::loadp(ar + j, r + 1 - j < W ? r + 1 - j : W));
                                    return Vec::hsum(acc);
                                  }();
        den[r] = part + static_cast<float>(count + r + 1) * a.eps;
      }
    }
    store_rows(a, s, h0, h1, t0, n, w);
    for (int i = 0; i < hg; i++) {
      float* KV = state + i * L;
      gemm(K2, V, n, w.krt(i), kChunk, w.vc(i), V, KV, V, kAccumulate);
      add_row(KV + KVn, w.zs(i), K2);
    }
    count += n;
  }
  for (int i = 0; i < hg; i++) state[i * L + KVn + K2] = static_cast<float>(count);
  return true;
}

bool kv_pass(const NalaArgs& a, const NalaSeq& s, int hk0, int hk1, int64_t j0, int64_t j1, float* kvz, int64_t stride,
             float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V, hg = hk1 - hk0;
  const bool rope = a.cos_k != nullptr;
  Scratch w(work, K, V, hg, 0);
  for (int i = 0; i < hg; i++) {
    std::memset(kvz + i * stride, 0, (static_cast<size_t>(K2) * V + K2) * sizeof(float));
    std::memset(w.zs(i), 0, K2 * sizeof(float));
  }
  for (int64_t t0 = j0; t0 < j1; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = j1 - t0 < kChunk ? static_cast<int>(j1 - t0) : kChunk;
    gather_keys(a, s, hk0, hk1, t0, n, w, nullptr, 0);
    // KV += Kr^T V from the rows as they are.
    for (int i = 0; i < hg; i++) gemm_tn(K2, V, n, rope ? w.kr(i) : w.kf(i), K2, w.vc(i), V, kvz + i * stride, V, kAccumulate);
  }
  for (int i = 0; i < hg; i++) std::memcpy(kvz + i * stride + static_cast<int64_t>(K2) * V, w.zs(i), K2 * sizeof(float));
  return true;
}

bool q_pass(const NalaArgs& a, const NalaSeq& s, int h0, int h1, int64_t i0, int64_t i1, const float* kvz, int64_t stride,
            float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V, G = a.H / a.Hk;
  const bool rope = a.cos_q != nullptr;
  Scratch w(work, K, V, 0, h1 - h0);
  const float extra = static_cast<float>(s.klen) * a.eps;
  for (int64_t t0 = i0; t0 < i1; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = i1 - t0 < kChunk ? static_cast<int>(i1 - t0) : kChunk;
    gather_queries(a, s, h0, h1, t0, n, w);
    for (int h = h0; h < h1; h++) {
      const int hi = h - h0;
      const float* KV = kvz + (h / G - h0 / G) * stride;
      const float* z = KV + static_cast<int64_t>(K2) * V;
      gemm(n, V, K2, rope ? w.qr(hi) : w.qu(hi), K2, KV, V, w.ob(hi), V, 0);
      float* den = w.den(hi);
      for (int r = 0; r < n; r++) den[r] = s.klen == 0 ? 0.f : dot(w.qu(hi) + static_cast<size_t>(r) * K2, z, K2) + extra;
    }
    store_rows(a, s, h0, h1, t0, n, w);
  }
  return true;
}

}  // namespace

extern const NalaKernels kNalaKernels = {causal, kv_pass, q_pass, phi_q_row, phi_k_row};

}  // namespace SK_LEVEL_NS
}  // namespace sk
