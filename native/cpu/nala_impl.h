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

constexpr int kChunk = 64;
constexpr int kNear = 8;  // rows ahead fetched into L1 (from L2, where the far prefetch put them)

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

// phik of one k row (K) into out (2K).
void phi_k_row(const float* k, int K, float* out) {
  for (int d = 0; d < K; d++) {
    const float x = k[d];
    const float c = x * x * x;
    out[d] = x > 0.f ? c : 0.f;
    out[K + d] = x < 0.f ? -c : 0.f;
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

// Views into the caller's workspace (nala_work_floats(K, V) floats, from the driver: no allocation here, and
// no std::vector code instantiated under this TU's target flags, which the linker could pick for every level).
struct Scratch {
  float *raw, *qu, *qr, *krt, *zc, *vc, *a, *o, *ku, *kr;
  Scratch(float* w, int K, int V) {
    const size_t C = kChunk, K2 = 2 * static_cast<size_t>(K);
    raw = w, qu = raw + K2, qr = qu + C * K2, krt = qr + C * K2, zc = krt + K2 * C, vc = zc + C * K2;
    a = vc + C * V, o = a + C * C, ku = o + C * V, kr = ku + K2;
  }
};

// The rows of a head are a head-stride apart ([B,T,H,K]): the loads stall on memory unless the next chunk's
// rows are fetched ahead, one row per row gathered now.
inline void prefetch_row(const void* base, DType dt, int64_t off, int n) {
  const char* p = static_cast<const char*>(base) + off * dtype_bytes(dt);
  const int64_t bytes = static_cast<int64_t>(n) * dtype_bytes(dt);
  for (int64_t b = 0; b < bytes; b += 64) prefetch_l2(p + b);
}
inline void prefetch_row_l1(const void* base, DType dt, int64_t off, int n) {
  const char* p = static_cast<const char*>(base) + off * dtype_bytes(dt);
  const int64_t bytes = static_cast<int64_t>(n) * dtype_bytes(dt);
  for (int64_t b = 0; b < bytes; b += 64) prefetch(p + b);
}

// Keys [j0, j0 + n) of head hk: Kr^T (2K x C, column j = rho_j phik_j), V rows (n x V), and the unrotated
// phik summed into zc rows: zc row i = z + sum_{j <= i} phik_j when prefix, else only z += sum (zc = z).
inline void gather_keys(const NalaArgs& a, const NalaSeq& s, int hk, int64_t j0, int n, Scratch& w, float* z, bool prefix) {
  const int K = a.K, K2 = 2 * K, V = a.V;
  const bool rope = a.cos_k != nullptr;
  for (int j = 0; j < n; j++) {
    const int64_t tok = s.kbos + j0 + j;
    if (j0 + j + 2 * kChunk < s.klen) {
      prefetch_row(a.k, a.dtype, ((tok + 2 * kChunk) * a.Hk + hk) * K, K);
      prefetch_row(a.v, a.dtype, ((tok + 2 * kChunk) * a.Hk + hk) * V, V);
    }
    if (j0 + j + kNear < s.klen) {
      prefetch_row_l1(a.k, a.dtype, ((tok + kNear) * a.Hk + hk) * K, K);
      prefetch_row_l1(a.v, a.dtype, ((tok + kNear) * a.Hk + hk) * V, V);
    }
    load_row(a.k, a.dtype, (tok * a.Hk + hk) * K, K, w.raw);
    phi_k_row(w.raw, K, w.ku);
    const float* r = w.ku;
    if (rope) {
      const int64_t row = s.krope + j0 + j;
      rotate(w.ku, a.cos_k + row * K, a.sin_k + row * K, K, w.kr);
      r = w.kr;
    }
    for (int e = 0; e < K2; e++) w.krt[static_cast<size_t>(e) * kChunk + j] = r[e];
    for (int e = 0; e < K2; e++) z[e] += w.ku[e];
    if (prefix) std::memcpy(w.zc + static_cast<size_t>(j) * K2, z, K2 * sizeof(float));
    load_row(a.v, a.dtype, (tok * a.Hk + hk) * V, V, w.vc + static_cast<size_t>(j) * V);
  }
}

// Queries [i0, i0 + n) of head h: phiq rows into qu, rotated into qr (qr = qu without rope).
inline const float* gather_queries(const NalaArgs& a, const NalaSeq& s, int h, int64_t i0, int n, Scratch& w) {
  const int K = a.K, K2 = 2 * K;
  const bool rope = a.cos_q != nullptr;
  for (int i = 0; i < n; i++) {
    const int64_t tok = s.qbos + i0 + i;
    if (i0 + i + 2 * kChunk < s.qlen) prefetch_row(a.q, a.dtype, ((tok + 2 * kChunk) * a.H + h) * K, K);
    if (i0 + i + kNear < s.qlen) prefetch_row_l1(a.q, a.dtype, ((tok + kNear) * a.H + h) * K, K);
    load_row(a.q, a.dtype, (tok * a.H + h) * K, K, w.raw);
    float* u = w.qu + static_cast<size_t>(i) * K2;
    phi_q_row(w.raw, K, u);
    if (rope) {
      const int64_t row = s.qrope + i0 + i;
      rotate(u, a.cos_q + row * K, a.sin_q + row * K, K, w.qr + static_cast<size_t>(i) * K2);
    }
  }
  return rope ? w.qr : w.qu;
}

// o rows [i0, i0 + n) of head h: O row i divided by its denominator (0 where den is 0: no key seen).
inline void store_rows(const NalaArgs& a, const NalaSeq& s, int h, int64_t i0, int n, Scratch& w, const float* den) {
  const int V = a.V;
  for (int i = 0; i < n; i++) {
    float* oi = w.o + static_cast<size_t>(i) * V;
    const float inv = den[i] > 0.f ? 1.f / den[i] : 0.f;
    for (int c = 0; c < V; c++) oi[c] *= inv;
    store_row(a.o, a.dtype, ((s.qbos + i0 + i) * a.H + h) * V, V, oi);
  }
}

bool causal(const NalaArgs& a, const NalaSeq& s, int hk, float* state, float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V, G = a.H / a.Hk;
  Scratch w(work, K, V);
  float* KV = state;
  float* z = state + static_cast<int64_t>(K2) * V;
  float* cnt = z + K2;
  int64_t count = static_cast<int64_t>(std::llround(*cnt));
  float den[kChunk];
  for (int64_t t0 = 0; t0 < s.qlen; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = s.qlen - t0 < kChunk ? static_cast<int>(s.qlen - t0) : kChunk;
    gather_keys(a, s, hk, t0, n, w, z, true);
    for (int g = 0; g < G; g++) {
      const int h = hk * G + g;
      const float* qr = gather_queries(a, s, h, t0, n, w);
      // A = Qr Kr^T, lower triangle (the upper part of the diagonal tiles zeroed: A V reads it).
      gemm(n, n, K2, qr, K2, w.krt, kChunk, w.a, kChunk, kCLower);
      for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) w.a[static_cast<size_t>(i) * kChunk + j] = 0.f;
      gemm(n, V, K2, qr, K2, KV, V, w.o, V, 0);
      gemm(n, V, n, w.a, kChunk, w.vc, V, w.o, V, kAccumulate | kALower);
      for (int i = 0; i < n; i++) {
        den[i] = dot(w.qu + static_cast<size_t>(i) * K2, w.zc + static_cast<size_t>(i) * K2, K2) +
                 static_cast<float>(count + i + 1) * a.eps;
      }
      store_rows(a, s, h, t0, n, w, den);
    }
    gemm(K2, V, n, w.krt, kChunk, w.vc, V, KV, V, kAccumulate);
    count += n;
  }
  *cnt = static_cast<float>(count);
  return true;
}

bool kv_pass(const NalaArgs& a, const NalaSeq& s, int hk, int64_t j0, int64_t j1, float* kvz, float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V;
  Scratch w(work, K, V);
  std::memset(kvz, 0, (static_cast<size_t>(K2) * V + K2) * sizeof(float));
  float* z = kvz + static_cast<int64_t>(K2) * V;
  for (int64_t t0 = j0; t0 < j1; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = j1 - t0 < kChunk ? static_cast<int>(j1 - t0) : kChunk;
    gather_keys(a, s, hk, t0, n, w, z, false);
    gemm(K2, V, n, w.krt, kChunk, w.vc, V, kvz, V, kAccumulate);
  }
  return true;
}

bool q_pass(const NalaArgs& a, const NalaSeq& s, int h, int64_t i0, int64_t i1, const float* kvz, float* work) {
  const int K = a.K, K2 = 2 * K, V = a.V;
  Scratch w(work, K, V);
  const float* z = kvz + static_cast<int64_t>(K2) * V;
  const float extra = static_cast<float>(s.klen) * a.eps;
  float den[kChunk];
  for (int64_t t0 = i0; t0 < i1; t0 += kChunk) {
    if (cancelled(a)) return false;
    const int n = i1 - t0 < kChunk ? static_cast<int>(i1 - t0) : kChunk;
    const float* qr = gather_queries(a, s, h, t0, n, w);
    gemm(n, V, K2, qr, K2, kvz, V, w.o, V, 0);
    for (int i = 0; i < n; i++)
      den[i] = s.klen == 0 ? 0.f : dot(w.qu + static_cast<size_t>(i) * K2, z, K2) + extra;
    store_rows(a, s, h, t0, n, w, den);
  }
  return true;
}

}  // namespace

extern const NalaKernels kNalaKernels = {causal, kv_pass, q_pass, phi_q_row, phi_k_row};

}  // namespace SK_LEVEL_NS
}  // namespace sk
