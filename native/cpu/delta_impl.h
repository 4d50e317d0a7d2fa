// The delta-rule kernels, written once against `Vec` and compiled per SIMD level (delta_<level>.cc).
//
// Chunkwise form (DESIGN.md 6.1), per chunk of C tokens with S the state at the chunk start, rearranged so
// that W never has to be formed: U - W S = Tm diag(beta) (V - diag(P) K S), hence
//   V' = (I + A)^{-1} diag(beta) (V - diag(P) K S)        one forward substitution over the rows of V'
//   O  = diag(P) (sQ) S + [(sQ K^T) (.) D] V'               D_ij = decay from token j to i (i >= j)
//   S <- P_C S + (diag(R) K)^T V'                            R_i = decay from token i to the chunk end
// with A_ij = beta_i D_ij k_i.k_j (i > j), P_i = decay from the chunk start through token i.
// Decays are kept as products (not exp of differences) for signed decay, so signs and zeros stay exact.
//
// Recurrent form: one pass over the state per token. While row r of S is updated for token t it is also
// dotted with k_{t+1} and q_{t+1}, so the next token's S^T k and S^T q come for free; the state is walked in
// column blocks that stay in L1 across a block of tokens (columns of S evolve independently).
#pragma once
#include <cmath>
#include <cstring>
#include <vector>

#include "convert_impl.h"
#include "delta.h"
#include "gemm_impl.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

namespace {

constexpr float kL2NormEps = 1e-6f;

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

inline void scale_row(float* x, int n, float s) {
  for (int i = 0; i < n; i++) x[i] *= s;
}

// Loads tokens [t0, t0 + n) of one head: q (normalised, scaled), k (normalised), v, beta, and the raw
// decay value (g or a). Rows land at q + i*K etc.
// Loads tokens [t0, t0 + n) of q/k head h: q normalised and scaled, k normalised, and |k|^2 after
// normalisation (KLA's beta needs it). Rows land at q + i*K, k + i*K.
inline void gather_qk(const DeltaUnit& u, int h, int64_t t0, int n, float* q, float* k, float* kn2) {
  const DeltaArgs& a = *u.a;
  const int K = a.K;
  for (int i = 0; i < n; i++) {
    const int64_t tok = u.bos + t0 + i;
    float* qi = q + static_cast<int64_t>(i) * K;
    float* ki = k + static_cast<int64_t>(i) * K;
    load_row(a.q, a.qkv_dtype, (tok * a.H + h) * K, K, qi);
    load_row(a.k, a.qkv_dtype, (tok * a.H + h) * K, K, ki);
    float qs = a.scale;
    if (a.qk_l2norm) {
      qs /= std::sqrt(dot(qi, qi, K) + kL2NormEps);
      scale_row(ki, K, 1.f / std::sqrt(dot(ki, ki, K) + kL2NormEps));
    }
    scale_row(qi, K, qs);
    kn2[i] = a.kaczmarz ? dot(ki, ki, K) : 0.f;
  }
}

// Loads tokens [t0, t0 + n) of v-head hv: v rows, beta (KLA: eta / (|k|^2 + eps)), raw decay (g or a).
inline void gather_v(const DeltaUnit& u, int hv, int64_t t0, int n, const float* kn2, float* v, float* beta,
                     float* dec) {
  const DeltaArgs& a = *u.a;
  for (int i = 0; i < n; i++) {
    const int64_t tok = u.bos + t0 + i;
    load_row(a.v, a.qkv_dtype, (tok * a.HV + hv) * a.V, a.V, v + static_cast<int64_t>(i) * a.V);
    float b = load_one(a.beta, a.beta_dtype, tok * a.HV + hv);
    if (a.beta_sigmoid) b = a.beta_scale / (1.f + std::exp(-b));
    beta[i] = a.kaczmarz ? b / (kn2[i] + a.eps) : b;
    float g = a.decay_kind == DecayKind::none ? 0.f : load_one(a.g, a.g_dtype, tok * a.HV + hv);
    if (a.a_log) {  // g = -exp(aLog) softplus(g + dtBias), softplus(x) = max(x, 0) + log1p(exp(-|x|))
      const float x = g + (a.dt_bias ? a.dt_bias[hv] : 0.f);
      g = -std::exp(a.a_log[hv]) * ((x > 0.f ? x : 0.f) + std::log1p(std::exp(-std::fabs(x))));
    }
    dec[i] = g;
  }
}

inline void store_outputs(const DeltaUnit& u, int hv, int64_t t0, int n, const float* o) {
  const DeltaArgs& a = *u.a;
  for (int i = 0; i < n; i++) {
    const int64_t tok = u.bos + t0 + i;
    store_row(a.o, a.qkv_dtype, (tok * a.HV + hv) * a.V, a.V, o + static_cast<int64_t>(i) * a.V);
  }
}

inline bool cancelled(const DeltaArgs& a) {
  return a.cancel != nullptr && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0;
}

// ---------------------------------------------------------------- chunkwise

// Decays of one chunk: P_i (start..i), R_i (i+1..end), D_ij (j+1..i, lower incl. diagonal, ld C); returns P
// of the whole chunk. All are products of the per-token factors a = exp(g) (or the signed decay itself), not
// exp of differences of a running sum of g: a float sum absorbs small g after a large one, and overflows for
// g near -FLT_MAX, while products only round and underflow to exact zeros. Row i of D is row i-1 times a_i.
inline float chunk_decays(DecayKind kind, float* dec, int n, int C, float* P, float* R, float* D) {
  constexpr int W = Vec::W;
  if (kind == DecayKind::none) {
    for (int i = 0; i < n; i++) {
      P[i] = R[i] = 1.f;
      for (int j = 0; j <= i; j++) D[i * C + j] = 1.f;
    }
    return 1.f;
  }
  if (kind == DecayKind::log) {
    for (int i = 0; i < n; i += W) {
      const int w = n - i < W ? n - i : W;
      Vec::storep(dec + i, vexp(Vec::loadp(dec + i, w)), w);
    }
  }
  float p = 1.f;
  for (int i = 0; i < n; i++) P[i] = (p *= dec[i]);
  float r = 1.f;
  for (int i = n - 1; i >= 0; i--) {
    R[i] = r;
    r *= dec[i];
  }
  D[0] = 1.f;
  for (int i = 1; i < n; i++) {
    const V_ ai = Vec::set1(dec[i]);
    const float* prev = D + (i - 1) * C;
    float* row = D + i * C;
    for (int j = 0; j < i; j += W) {
      const int w = i - j < W ? i - j : W;
      Vec::storep(row + j, Vec::mul(ai, Vec::loadp(prev + j, w)), w);
    }
    row[i] = 1.f;
  }
  return P[n - 1];
}

// Tm = (I + A)^{-1} for A strictly lower (ld C), by forward substitution on rows:
// Tm_i = e_i - sum_{j<i} A_ij Tm_j, where row j of Tm is zero past column j. C^3/6 FMAs, vectorised along
// the row in blocks of kInvCols held in registers (Tm's leading dimension is padded to a multiple of it, so
// every block is full width); V' = Tm Y then runs on the GEMM microkernel instead of a row-by-row solve.
constexpr int kInvNB = 4, kInvCols = kInvNB * Vec::W;
inline int inv_ld(int C) { return (C + kInvCols - 1) / kInvCols * kInvCols; }

inline void invert_unit_lower(const float* A, int C, int n, float* Tm) {
  constexpr int W = Vec::W;
  const int ld = inv_ld(C);
  for (int c0 = 0; c0 < n; c0 += kInvCols) {
    for (int i = 0; i < n; i++) {
      V_ acc[kInvNB];
      for (int v = 0; v < kInvNB; v++) acc[v] = Vec::zero();
      for (int j = c0; j < i; j++) {  // rows j < c0 are zero in this column block
        const V_ aij = Vec::set1(-A[i * C + j]);
        const float* tj = Tm + j * ld + c0;
        for (int v = 0; v < kInvNB; v++) acc[v] = Vec::fma(aij, Vec::load(tj + v * W), acc[v]);
      }
      float* ti = Tm + i * ld + c0;
      for (int v = 0; v < kInvNB; v++) Vec::store(ti + v * W, acc[v]);
      if (i >= c0 && i < c0 + kInvCols) ti[i - c0] = 1.f;
    }
  }
}

bool chunk_unit(const DeltaUnit& u) {
  const DeltaArgs& a = *u.a;
  const int K = a.K, V = a.V, C = a.chunk_size, group = a.HV / a.H;
  std::vector<float> buf(static_cast<size_t>(3 * C * K + 2 * K * C + 2 * C * V + 2 * C * V + 5 * C * C +
                                             C * inv_ld(C) + 6 * C));
  float* QKZ = buf.data();          // rows: Q, K (per q/k head), P.Q (per v head); n x K each, contiguous
  float* KT = QKZ + 3 * C * K;      // K^T, K x C
  float* KRT = KT + K * C;          // (diag(R) K)^T, K x C
  float* Vb = KRT + K * C;          // V, then Y
  float* Vp = Vb + C * V;           // V' = Tm Y
  float* XS = Vp + C * V;           // rows: K S, then O
  float* QK0 = XS + 2 * C * V;      // sQ K^T, lower incl. diagonal (per q/k head)
  float* KK = QK0 + C * C;          // K K^T, lower (per q/k head)
  float* QK = KK + C * C;           // sQ K^T masked by D (per v head)
  float* D = QK + C * C;
  float* A = D + C * C;
  float* Tm = A + C * C;            // (I + A)^{-1}
  float* P = Tm + C * inv_ld(C);
  float* R = P + C;
  float* beta = R + C;
  float* dec = beta + C;
  float* kn2 = dec + C;

  for (int64_t c0 = 0; c0 < u.len; c0 += C) {
    if (cancelled(a)) return false;
    const int n = static_cast<int>(u.len - c0 < C ? u.len - c0 : C);
    float* Q = QKZ;
    float* Kc = QKZ + n * K;
    float* Z = QKZ + 2 * n * K;
    int cur_h = -1;
    for (int j = 0; j < u.nh; j++) {
      const int hv = u.hv0 + j, h = hv / group;
      float* S = u.S[j];
      if (h != cur_h) {  // the v heads of one q/k head share Q, K and their products
        cur_h = h;
        gather_qk(u, h, c0, n, Q, Kc, kn2);
        for (int d = 0; d < K; d++)
          for (int i = 0; i < n; i++) KT[d * C + i] = Kc[i * K + d];
        gemm(n, n, K, Q, K, KT, C, QK0, C, kCLower);
        gemm(n, n, K, Kc, K, KT, C, KK, C, kCLower);
      }
      gather_v(u, hv, c0, n, kn2, Vb, beta, dec);
      const float Pc = chunk_decays(a.decay_kind, dec, n, C, P, R, D);
      for (int i = 0; i < n; i++)
        for (int d = 0; d < K; d++) Z[i * K + d] = P[i] * Q[i * K + d];
      for (int d = 0; d < K; d++)
        for (int i = 0; i < n; i++) KRT[d * C + i] = KT[d * C + i] * R[i];
      // [K; P.Q] S in one GEMM: rows 0..n are K S, rows n..2n the inter-chunk part of O.
      gemm(2 * n, V, K, Kc, K, S, V, XS, V, 0);
      for (int i = 0; i < n; i++) {
        for (int jj = 0; jj < i; jj++) A[i * C + jj] = beta[i] * D[i * C + jj] * KK[i * C + jj];
        for (int jj = 0; jj <= i; jj++) QK[i * C + jj] = QK0[i * C + jj] * D[i * C + jj];
        for (int jj = i + 1; jj < n; jj++) QK[i * C + jj] = 0.f;  // the GEMM below reads inside its row block
      }
      // Y_i = beta_i (v_i - P_i (K S)_i), then V' = (I + A)^{-1} Y.
      for (int i = 0; i < n; i++) {
        const float* ks = XS + static_cast<int64_t>(i) * V;
        float* y = Vb + static_cast<int64_t>(i) * V;
        for (int c = 0; c < V; c++) y[c] = beta[i] * (y[c] - P[i] * ks[c]);
      }
      invert_unit_lower(A, C, n, Tm);
      gemm(n, V, n, Tm, inv_ld(C), Vb, V, Vp, V, kALower);
      float* O = XS + static_cast<int64_t>(n) * V;
      gemm(n, V, n, QK, C, Vp, V, O, V, kAccumulate | kALower);
      store_outputs(u, hv, c0, n, O);
      if (Pc != 1.f) {
        const V_ p = Vec::set1(Pc);
        int64_t e = 0;
        const int64_t KV = static_cast<int64_t>(K) * V;
        for (; e + Vec::W <= KV; e += Vec::W) Vec::store(S + e, Vec::mul(p, Vec::load(S + e)));
        for (; e < KV; e++) S[e] *= Pc;
      }
      gemm(K, V, n, KRT, C, Vp, V, S, V, kAccumulate);
    }
  }
  return true;
}

// ---------------------------------------------------------------- recurrent

#if defined(__AVX512F__)
constexpr int kRecMaxNV = 8;  // a whole 128-wide row: 24 live vectors of 32 zmm, rows read in order
#else
constexpr int kRecMaxNV = 4;  // 12 live vectors of 16 ymm
#endif

// Runs tokens [0, n) of a token block over state columns [c0, c0 + cols), NV vectors wide.
template <int NV, bool kFull>
inline void recurrent_columns(const float* q, const float* k, const float* v, const float* beta, const float* at,
                              const float* qk, int n, int K, int V, float* S, int c0, int cols, float* o) {
  constexpr int W = Vec::W;
  auto wid = [&](int j) { return kFull ? W : (cols - j * W < W ? (cols - j * W > 0 ? cols - j * W : 0) : W); };
  auto ld = [&](const float* p, int j) { return kFull ? Vec::load(p) : Vec::loadp(p, wid(j)); };
  auto st = [&](float* p, V_ x, int j) {
    if (kFull) Vec::store(p, x);
    else if (wid(j) > 0) Vec::storep(p, x, wid(j));
  };
  V_ kS[NV], qS[NV], u[NV];
  for (int j = 0; j < NV; j++) kS[j] = qS[j] = Vec::zero();
  for (int r = 0; r < K; r++) {
    const V_ kr = Vec::set1(k[r]), qr = Vec::set1(q[r]);
    const float* s = S + static_cast<int64_t>(r) * V + c0;
    for (int j = 0; j < NV; j++) {
      const V_ x = ld(s + j * W, j);
      kS[j] = Vec::fma(kr, x, kS[j]);
      qS[j] = Vec::fma(qr, x, qS[j]);
    }
  }
  for (int t = 0; t < n; t++) {
    const V_ a = Vec::set1(at[t]), b = Vec::set1(beta[t]), c = Vec::set1(qk[t]);
    const float* vt = v + static_cast<int64_t>(t) * V + c0;
    float* ot = o + static_cast<int64_t>(t) * V + c0;
    for (int j = 0; j < NV; j++) {
      // u = beta (v - a S^T k); o = a S^T q + (k.q) u, with S the state before token t.
      u[j] = Vec::mul(b, Vec::fnma(a, kS[j], ld(vt + j * W, j)));
      st(ot + j * W, Vec::fma(c, u[j], Vec::mul(a, qS[j])), j);
    }
    const float* kt = k + static_cast<int64_t>(t) * K;
    // Each pass walks the rows the other way from the one before, so it starts on the rows the last pass
    // left in L1 (a 128 x 128 state is 64 KiB, more than L1 holds).
    const bool down = t % 2 == 0;
    if (t + 1 < n) {
      const float* k1 = kt + K;
      const float* q1 = q + static_cast<int64_t>(t + 1) * K;
      for (int j = 0; j < NV; j++) kS[j] = qS[j] = Vec::zero();
      for (int rr = 0; rr < K; rr++) {
        const int r = down ? K - 1 - rr : rr;
        const V_ kr = Vec::set1(kt[r]), k1r = Vec::set1(k1[r]), q1r = Vec::set1(q1[r]);
        float* s = S + static_cast<int64_t>(r) * V + c0;
        for (int j = 0; j < NV; j++) {
          const V_ x = Vec::fma(kr, u[j], Vec::mul(a, ld(s + j * W, j)));
          st(s + j * W, x, j);
          kS[j] = Vec::fma(k1r, x, kS[j]);
          qS[j] = Vec::fma(q1r, x, qS[j]);
        }
      }
    } else {
      for (int rr = 0; rr < K; rr++) {
        const int r = down ? K - 1 - rr : rr;
        const V_ kr = Vec::set1(kt[r]);
        float* s = S + static_cast<int64_t>(r) * V + c0;
        for (int j = 0; j < NV; j++) st(s + j * W, Vec::fma(kr, u[j], Vec::mul(a, ld(s + j * W, j))), j);
      }
    }
  }
}

bool recurrent_unit(const DeltaUnit& u) {
  const DeltaArgs& a = *u.a;
  const int K = a.K, V = a.V, group = a.HV / a.H;
  const int TB = u.len < 64 ? static_cast<int>(u.len) : 64;
  if (TB == 0) return true;
  std::vector<float> buf(static_cast<size_t>(2 * TB * K + 2 * TB * V + 5 * TB));
  float* q = buf.data();
  float* k = q + TB * K;
  float* v = k + TB * K;
  float* o = v + TB * V;
  float* beta = o + TB * V;
  float* at = beta + TB;
  float* qk = at + TB;
  float* dec = qk + TB;
  float* kn2 = dec + TB;
  constexpr int W = Vec::W;
  for (int64_t t0 = 0; t0 < u.len; t0 += TB) {
    if (cancelled(a)) return false;
    const int n = static_cast<int>(u.len - t0 < TB ? u.len - t0 : TB);
    int cur_h = -1;
    for (int j = 0; j < u.nh; j++) {
      const int hv = u.hv0 + j, h = hv / group;
      if (h != cur_h) {
        cur_h = h;
        gather_qk(u, h, t0, n, q, k, kn2);
        for (int i = 0; i < n; i++) qk[i] = dot(k + static_cast<int64_t>(i) * K, q + static_cast<int64_t>(i) * K, K);
      }
      gather_v(u, hv, t0, n, kn2, v, beta, dec);
      for (int i = 0; i < n; i++)
        at[i] = a.decay_kind == DecayKind::log ? std::exp(dec[i]) : a.decay_kind == DecayKind::sign ? dec[i] : 1.f;
      // Column blocks as wide as the registers allow, then narrower ones for the rest of V.
      float* S = u.S[j];
      int c0 = 0;
      for (; c0 + kRecMaxNV * W <= V; c0 += kRecMaxNV * W)
        recurrent_columns<kRecMaxNV, true>(q, k, v, beta, at, qk, n, K, V, S, c0, kRecMaxNV * W, o);
      if (kRecMaxNV > 4)
        for (; c0 + 4 * W <= V; c0 += 4 * W) recurrent_columns<4, true>(q, k, v, beta, at, qk, n, K, V, S, c0, 4 * W, o);
      for (; c0 + 2 * W <= V; c0 += 2 * W) recurrent_columns<2, true>(q, k, v, beta, at, qk, n, K, V, S, c0, 2 * W, o);
      for (; c0 + W <= V; c0 += W) recurrent_columns<1, true>(q, k, v, beta, at, qk, n, K, V, S, c0, W, o);
      if (c0 < V) recurrent_columns<1, false>(q, k, v, beta, at, qk, n, K, V, S, c0, V - c0, o);
      store_outputs(u, hv, t0, n, o);
    }
  }
  return true;
}

void load_state(const void* src, DType dt, int64_t off, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; i += 1 << 20) load_row(src, dt, off + i, static_cast<int>(n - i < (1 << 20) ? n - i : 1 << 20), dst + i);
}
void store_state(void* dst, DType dt, int64_t off, int64_t n, const float* src) {
  for (int64_t i = 0; i < n; i += 1 << 20) store_row(dst, dt, off + i, static_cast<int>(n - i < (1 << 20) ? n - i : 1 << 20), src + i);
}

}  // namespace

extern const DeltaKernels kDeltaKernels = {chunk_unit, recurrent_unit, load_state, store_state};

}  // namespace SK_LEVEL_NS
}  // namespace sk
