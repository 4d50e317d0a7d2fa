// The NaLaFormer kernels (nala.h), written once against `Vec` and compiled per SIMD level (nala_<level>.cc).
//
// Feature maps: phik is a cube of each half. phiq needs x^p with p = 3 (0.5 + tanh |q|) per row, so per
// element exp(p ln x), x = |q_d| / |q|: ln by exponent and mantissa (m in [sqrt(1/2), sqrt(2)), 2 atanh((m-1)/
// (m+1)) to s^9: < 1e-9 truncation), then the vectorised exp of vec.h. A row whose |q|^2 lies in [1e-30, 1e30]
// (any sane row) takes ln x = ln |q_d| - ln |q| in one pass; any other is divided by max |q_d| first, so no
// square overflows (a q row of 1e30s is fine) or underflows. x below FLT_MIN clamps to FLT_MIN, whose p-th
// power (p >= 1.5) is 0 or ~2e-38.
#pragma once
#include <cfloat>
#include <algorithm>
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
constexpr int kBlockRows = 2 * kMR;  // GEMM rows between two steps of the prefetch (Ahead)

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
  // 1 / (m + 1) by the 14-bit reciprocal and one Newton step (~1e-8 relative), not a division.
  const __m512 d = _mm512_add_ps(m, _mm512_set1_ps(1.f));
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
  s = _mm512_mul_ps(_mm512_sub_ps(m, _mm512_set1_ps(1.f)), r);
}
inline V_ vmax(V_ a, V_ b) { return _mm512_max_ps(a, b); }
inline V_ vabs(V_ a) { return _mm512_abs_ps(a); }
// x > 0 ? y : 0 and x < 0 ? y : 0.
inline V_ vpos(V_ x, V_ y) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), y); }
inline V_ vneg(V_ x, V_ y) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), y); }
#elif defined(__AVX2__)
inline void log_parts(V_ x, V_& s, V_& e) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256 ef = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(0x3f800000)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
  e = _mm256_add_ps(ef, _mm256_and_ps(big, _mm256_set1_ps(1.f)));
  // 1 / (m + 1) by the 12-bit reciprocal and one Newton step (~1e-7 relative), not a division.
  const __m256 d = _mm256_add_ps(m, _mm256_set1_ps(1.f));
  __m256 r = _mm256_rcp_ps(d);
  r = _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
  s = _mm256_mul_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.f)), r);
}
inline V_ vmax(V_ a, V_ b) { return _mm256_max_ps(a, b); }
inline V_ vabs(V_ a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
inline V_ vpos(V_ x, V_ y) { return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ), y); }
inline V_ vneg(V_ x, V_ y) { return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ), y); }
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
inline V_ vabs(V_ a) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = std::fabs(a.v[i]);
  return r;
}
inline V_ vpos(V_ x, V_ y) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = x.v[i] > 0.f ? y.v[i] : 0.f;
  return r;
}
inline V_ vneg(V_ x, V_ y) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = x.v[i] < 0.f ? y.v[i] : 0.f;
  return r;
}
#endif

// ln x for positive normal x: e ln2 + 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), ln2 in two parts so that
// e ln2 is exact to float rounding.
inline V_ vlog(V_ x) {
  V_ s, e;
  log_parts(x, s, e);
  const V_ s2 = Vec::mul(s, s);
  V_ poly = Vec::fma(s2, Vec::set1(1.f / 9), Vec::set1(1.f / 7));
  poly = Vec::fma(poly, s2, Vec::set1(1.f / 5));
  poly = Vec::fma(poly, s2, Vec::set1(1.f / 3));
  poly = Vec::fma(poly, s2, Vec::set1(1.f));
  const V_ two_s = Vec::add(s, s);
  const V_ lo = Vec::fma(e, Vec::set1(1.428606765330187045e-06f), Vec::mul(two_s, poly));
  return Vec::fma(e, Vec::set1(0.693145751953125f), lo);
}

// x[i] <- x[i]^p for x in [0, 1] (exactly 0 stays 0: it clamps to FLT_MIN, whose power underflows).
inline void pow_row(float* x, int n, float p) {
  constexpr int W = Vec::W;
  const V_ vp = Vec::set1(p), tiny = Vec::set1(FLT_MIN);
  for (int i = 0; i < n; i += W) {
    const int w = n - i < W ? n - i : W;
    Vec::storep(x + i, vexp(Vec::mul(vp, vlog(vmax(Vec::loadp(x + i, w), tiny)))), w);
  }
}

// phiq of one raw q row (K) into out (2K).
void phi_q_row(const float* q, int K, float* out) {
  constexpr int W = Vec::W;
  // |q|^2 directly when it is far from overflow and underflow (every row of sane inputs): then
  // (|q_d| / |q|)^p = exp(p (ln |q_d| - ln |q|)) in one pass, each element's sign choosing its half.
  {
    V_ acc = Vec::zero();
    for (int d = 0; d < K; d += W) {
      const V_ x = Vec::loadp(q + d, K - d < W ? K - d : W);
      acc = Vec::fma(x, x, acc);
    }
    const float ss = Vec::hsum(acc);
    if (ss >= 1e-30f && ss <= 1e30f) {
      const float norm = std::sqrt(ss);
      const float p = 3.f * (1.5f - 2.f / (std::exp(2.f * norm) + 1.f));  // tanh as below
      const V_ vp = Vec::set1(p), ln_n = Vec::set1(0.5f * std::log(ss)), tiny = Vec::set1(FLT_MIN);
      for (int d = 0; d < K; d += W) {
        const int w = K - d < W ? K - d : W;
        const V_ x = Vec::loadp(q + d, w);
        // A zero q_d has neither sign: both halves 0. A subnormal one clamps to FLT_MIN; the exponent clamps
        // to -87 (a power under 2e-38 reads as 2e-38, where it would flush to 0: no difference that shows),
        // so the range fix-ups of vexp are not needed (x is finite here).
        const V_ t = Vec::mul(vp, Vec::sub(vlog(vmax(vabs(x), tiny)), ln_n));
        const V_ y = vexp_core(vmax(t, Vec::set1(-87.f)));
        Vec::storep(out + d, vpos(x, y), w);
        Vec::storep(out + K + d, vneg(x, y), w);
      }
      return;
    }
  }
  // Otherwise by max |q_d| (a scalar max loop does not vectorise: its NaN semantics; q is finite here, or
  // the call fails: the driver's scan or the kernels' flag).
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
      __m512 r[16];
      for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + static_cast<size_t>(r0 + i) * lds + c0);
      transpose16(r);  // vec.h
      for (int k = 0; k < 16; k++) _mm512_storeu_ps(dst + static_cast<size_t>(c0 + k) * ldd + r0, r[k]);
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

// The next chunk's rows of a group of heads, asked for into L2 a few lines at a time between the GEMM row
// blocks of this chunk: spread over the chunk's compute, their memory traffic overlaps it (a burst at the
// chunk start stalls on the fill buffers; the hardware prefetchers alone run only a little ahead). Rows of
// token t of a span: `run` elements from (tok0 + t) * stride + col.
struct Ahead {
  struct Span {
    const char* p;        // the first token's run
    int64_t bytes, step;  // run bytes, bytes from one token's run to the next
    int ntok;
  };
  Span sp[3];
  int ns = 0, cur = 0, t = 0;
  int64_t off = 0, lines = 0;
  void add(const void* base, DType dt, int64_t tok0, int ntok, int64_t stride, int64_t col, int64_t run) {
    const int64_t es = dtype_bytes(dt);
    sp[ns++] = {static_cast<const char*>(base) + (tok0 * stride + col) * es, run * es, stride * es, ntok};
    lines += ntok * ((run * es + 63) / 64);
  }
  // Lines per call for `calls` calls to cover them all.
  int per(int calls) const { return static_cast<int>(lines / (calls > 0 ? calls : 1)) + 1; }
  void step(int n) {
    for (; n > 0 && cur < ns; n--) {
      const Span& s = sp[cur];
      prefetch_l2(s.p + t * s.step + off);
      if ((off += 64) >= s.bytes) {
        off = 0;
        if (++t == s.ntok) t = 0, cur++;
      }
    }
  }
};

// acc + x * 0 over a row: stays 0 while x is finite, NaN from the first Inf or NaN (a.nonfinite's check).
inline V_ finite_acc(const float* x, int n, V_ acc) {
  constexpr int W = Vec::W;
  for (int e = 0; e < n; e += W) acc = Vec::fma(Vec::loadp(x + e, n - e < W ? n - e : W), Vec::zero(), acc);
  return acc;
}
inline void flag_nonfinite(const NalaArgs& a, V_ acc) {
  if (a.nonfinite && !(Vec::hsum(acc) == 0.f)) __atomic_store_n(a.nonfinite, 1, __ATOMIC_RELAXED);
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
  const bool rope = a.cos_k != nullptr, check = a.nonfinite != nullptr;
  V_ chk = Vec::zero();
  for (int j = 0; j < n; j++) {
    const int64_t tok = s.kbos + j0 + j;
    for (int hk = hk0; hk < hk1; hk++) {
      const int i = hk - hk0;
      const int64_t row = tok * a.Hk + hk;
      float* u = w.kf(i) + static_cast<size_t>(j) * K2;
      const float* kx = row_f32(a.k, a.dtype, row * K, K, w.raw);
      if (check) chk = finite_acc(kx, K, chk);
      phi_k_row(kx, K, u);
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
      float* vr = w.vc(i) + static_cast<size_t>(j) * V;
      load_row(a.v, a.dtype, row * V, V, vr);
      if (check) chk = finite_acc(vr, V, chk);
    }
  }
  flag_nonfinite(a, chk);
}

// Queries [i0, i0 + n) of heads [h0, h1), token by token: phiq rows into qu, rotated into qr (rope).
inline void gather_queries(const NalaArgs& a, const NalaSeq& s, int h0, int h1, int64_t i0, int n, const Scratch& w) {
  const int K = a.K, K2 = 2 * K;
  const bool rope = a.cos_q != nullptr, check = a.nonfinite != nullptr;
  V_ chk = Vec::zero();
  for (int r = 0; r < n; r++) {
    const int64_t tok = s.qbos + i0 + r;
    for (int h = h0; h < h1; h++) {
      float* u = w.qu(h - h0) + static_cast<size_t>(r) * K2;
      const float* qx = row_f32(a.q, a.dtype, (tok * a.H + h) * K, K, w.raw);
      if (check) chk = finite_acc(qx, K, chk);
      phi_q_row(qx, K, u);
      if (rope) {
        const int64_t rr = s.qrope + i0 + r;
        rotate(u, a.cos_q + rr * K, a.sin_q + rr * K, K, w.qr(h - h0) + static_cast<size_t>(r) * K2);
      }
    }
  }
  flag_nonfinite(a, chk);
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
    Ahead ahead;
    if (t0 + n < s.qlen) {
      const int nn = s.qlen - t0 - n < kChunk ? static_cast<int>(s.qlen - t0 - n) : kChunk;
      ahead.add(a.k, a.dtype, s.kbos + t0 + n, nn, static_cast<int64_t>(a.Hk) * K, static_cast<int64_t>(hk0) * K, static_cast<int64_t>(hg) * K);
      ahead.add(a.v, a.dtype, s.kbos + t0 + n, nn, static_cast<int64_t>(a.Hk) * V, static_cast<int64_t>(hk0) * V, static_cast<int64_t>(hg) * V);
      ahead.add(a.q, a.dtype, s.qbos + t0 + n, nn, static_cast<int64_t>(a.H) * K, static_cast<int64_t>(h0) * K, static_cast<int64_t>(h1 - h0) * K);
    }
    // Spread over the row blocks of O = Qr KV (per query head) and of KV += Kr^T V (per kv head).
    const int per = ahead.per((h1 - h0) * ((n + kBlockRows - 1) / kBlockRows) + hg * ((K2 + kBlockRows - 1) / kBlockRows));
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
      // A V (kALower) reads row r up to the end of its block of kMR rows: only that part above the diagonal
      // needs zeros.
      for (int r = 0; r < n; r++) {
        const int end = std::min(n, (r / kMR + 1) * kMR);
        for (int j = r + 1; j < end; j++) w.a[static_cast<size_t>(r) * kChunk + j] = 0.f;
      }
      for (int r0 = 0; r0 < n; r0 += kBlockRows) {
        const int m = n - r0 < kBlockRows ? n - r0 : kBlockRows;
        gemm(m, V, K2, qr + static_cast<size_t>(r0) * K2, K2, KV, V, ob + static_cast<size_t>(r0) * V, V, 0);
        ahead.step(per);
      }
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
      for (int m0 = 0; m0 < K2; m0 += kBlockRows) {
        const int m = K2 - m0 < kBlockRows ? K2 - m0 : kBlockRows;
        gemm(m, V, n, w.krt(i) + static_cast<size_t>(m0) * kChunk, kChunk, w.vc(i), V, KV + static_cast<int64_t>(m0) * V, V, kAccumulate);
        ahead.step(per);
      }
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
    Ahead ahead;
    if (t0 + n < j1) {
      const int nn = j1 - t0 - n < kChunk ? static_cast<int>(j1 - t0 - n) : kChunk;
      ahead.add(a.k, a.dtype, s.kbos + t0 + n, nn, static_cast<int64_t>(a.Hk) * K, static_cast<int64_t>(hk0) * K, static_cast<int64_t>(hg) * K);
      ahead.add(a.v, a.dtype, s.kbos + t0 + n, nn, static_cast<int64_t>(a.Hk) * V, static_cast<int64_t>(hk0) * V, static_cast<int64_t>(hg) * V);
    }
    gather_keys(a, s, hk0, hk1, t0, n, w, nullptr, 0);
    // KV += Kr^T V from the rows as they are, by blocks of rows with the next chunk's rows asked for between.
    const int per = ahead.per(hg * ((K2 + kBlockRows - 1) / kBlockRows));
    for (int i = 0; i < hg; i++) {
      const float* kt = rope ? w.kr(i) : w.kf(i);
      for (int m0 = 0; m0 < K2; m0 += kBlockRows) {
        const int m = K2 - m0 < kBlockRows ? K2 - m0 : kBlockRows;
        gemm_tn(m, V, n, kt + m0, K2, w.vc(i), V, kvz + i * stride + static_cast<int64_t>(m0) * V, V, kAccumulate);
        ahead.step(per);
      }
    }
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
    Ahead ahead;
    if (t0 + n < i1) {
      const int nn = i1 - t0 - n < kChunk ? static_cast<int>(i1 - t0 - n) : kChunk;
      ahead.add(a.q, a.dtype, s.qbos + t0 + n, nn, static_cast<int64_t>(a.H) * K, static_cast<int64_t>(h0) * K, static_cast<int64_t>(h1 - h0) * K);
    }
    gather_queries(a, s, h0, h1, t0, n, w);
    const int per = ahead.per((h1 - h0) * ((n + kBlockRows - 1) / kBlockRows));
    for (int h = h0; h < h1; h++) {
      const int hi = h - h0;
      const float* KV = kvz + (h / G - h0 / G) * stride;
      const float* z = KV + static_cast<int64_t>(K2) * V;
      const float* qr = rope ? w.qr(hi) : w.qu(hi);
      for (int r0 = 0; r0 < n; r0 += kBlockRows) {
        const int m = n - r0 < kBlockRows ? n - r0 : kBlockRows;
        gemm(m, V, K2, qr + static_cast<size_t>(r0) * K2, K2, KV, V, w.ob(hi) + static_cast<size_t>(r0) * V, V, 0);
        ahead.step(per);
      }
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
