// The attention kernels, written once against `Vec` and compiled per SIMD level (attention_<level>.cc).
//
// A unit's score tile is held transposed, S^T = K Q^T: one row per key, one column per (query, query head) of
// the unit. With the queries along the vector lanes,
//   - K and V are read in place (float32), row by row, and only the unit's small Q block is transposed, once;
//     no key tile is ever transposed or copied;
//   - the online softmax is column-wise: running max, rescale factors and sums are vectors over the queries,
//     with no horizontal reductions;
//   - both products, S^T = K Q^T and O += P V (P^T rows broadcast, V rows as vectors), run on one
//     register-blocked microkernel (mm_tile).
// A unit with only a few columns per kv head (decode: one query per head of a group) takes several kv heads
// and gets its scores from dot products along D, so that every lane is busy and each key's K and V rows are
// read whole; the softmax and P V steps are the same.
//
// Per unit: m = -FLT_MAX, l = 0, O = 0; for each key tile [j0, j0 + nk):
//   S^T = K_tile (scale Q)^T                   (scale folded into Q when it is gathered)
//   causal tiles that cross the diagonal: S^T[j][c] = -inf where key j is past column c's last key
//   m' = max(m, max_j S^T[j]);  P = exp(S^T - m');  l = e^(m - m') l + sum_j P;  O = e^(m - m') O + P^T V
// then o = O / l, times sigmoid(gate) when gated, lse = m + log l. The finite sentinel -FLT_MAX for "no
// key yet" keeps e^(m - m') = 1 and exp(-inf - m') = 0 without special cases; a column that saw no key ends
// with l = 0, and gets o = 0, lse = -inf.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstring>

#include "attention.h"
#include "convert_impl.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

namespace {

// ---- vector pieces Vec does not have

#if defined(__AVX512F__)
// NaN-propagating in x: maxps returns its second operand when either is NaN.
inline V_ vmax(V_ lo, V_ x) { return _mm512_max_ps(lo, x); }
inline V_ vdiv(V_ a, V_ b) { return _mm512_div_ps(a, b); }
#elif defined(__AVX2__)
inline V_ vmax(V_ lo, V_ x) { return _mm256_max_ps(lo, x); }
inline V_ vdiv(V_ a, V_ b) { return _mm256_div_ps(a, b); }
#else
inline V_ vmax(V_ lo, V_ x) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = lo.v[i] > x.v[i] ? lo.v[i] : x.v[i];
  return r;
}
inline V_ vdiv(V_ a, V_ b) {
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = a.v[i] / b.v[i];
  return r;
}
#endif

// e^x for x <= 0, as vexp (same reduction and polynomial, <= 1.2 ulp) but with the range fix-ups
// replaced by one clamp: below -87.34 the result is e^-87.34 (1.2e-38, a normal float) instead of 0. Used on
// tiles without masked entries, where x = s - max is finite: a weight of 1e-38 beside the max's weight of 1
// is far below float resolution. Tiles that hold -inf (masked) use vexp, which gives exact zeros.
inline V_ exp_le0(V_ x) { return vexp_core(vmax(Vec::set1(-87.33654f), x)); }

// Tiles are converted to float32 as they are loaded (load_row / store_row, convert_impl.h).

// Asks for the K and V rows of keys [j0, j0 + n) of kv head hk (sequence rows from kbos) ahead of their use.
// One head's slice of a key row is D (Dv) values every Hk*D (Hk*Dv) floats, so each slice may start on
// another 4 KiB page, where the hardware prefetchers stop.
inline void prefetch_keys(const AttentionArgs& a, int64_t kbos, int hk, int64_t j0, int n) {
  const int esz = a.dtype == DType::f32 ? 4 : 2;
  const int64_t kb = static_cast<int64_t>(a.D) * esz, vb = static_cast<int64_t>(a.Dv) * esz;
  for (int j = 0; j < n; j++) {
    const int64_t row = (kbos + j0 + j) * a.Hk + hk;
    const char* k = static_cast<const char*>(a.k) + row * kb;
    const char* v = static_cast<const char*>(a.v) + row * vb;
    for (int64_t b = 0; b < kb; b += 64) prefetch(k + b);
    for (int64_t b = 0; b < vb; b += 64) prefetch(v + b);
  }
}

inline bool cancelled(const AttentionArgs& a) {
  return a.cancel != nullptr && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0;
}

constexpr int W = Vec::W;
inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
inline int64_t round_up64(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Where sequence n's queries and keys start on the flattened B*T and B*S axes, and how many there are.
struct Seq {
  int64_t qbos, kbos;
  int T, S;
};

inline Seq seq_of(const AttentionArgs& a, int n) {
  if (a.cu_q) return {a.cu_q[n], a.cu_k[n], a.cu_q[n + 1] - a.cu_q[n], a.cu_k[n + 1] - a.cu_k[n]};
  return {static_cast<int64_t>(n) * a.T, static_cast<int64_t>(n) * a.S, a.T, a.S};
}

// Asks for the gate values of a unit's columns (see finish for the layout).
inline void prefetch_gate(const AttentionArgs& a, const AttnPlan& p, const AttnUnit& u, const Seq& sq) {
  const int esz = a.gate_dtype == DType::f32 ? 4 : 2, cols = u.nh * u.nq;
  const int64_t row_bytes = a.gate_kind == GateKind::elementwise ? static_cast<int64_t>(a.Dv) * esz : esz;
  for (int ct = 0; ct < u.nkv * cols; ct++) {
    const int g = ct / cols, c = ct % cols;
    const int64_t orow = (sq.qbos + u.i0 + c / u.nh) * a.Hq + (u.hk + g) * p.group + u.hoff + c % u.nh;
    const char* z = static_cast<const char*>(a.gate) + orow * row_bytes;
    for (int64_t b = 0; b < row_bytes; b += 64) prefetch(z + b);
  }
}

// The per-thread workspace, carved into 64-byte aligned pieces. A unit's columns are those of its kv heads one
// after the other: column ct belongs to kv head hk + ct / cols, and within it to query ct % cols / nh and
// query head (ct % cols) % nh of the slice.
struct Work {
  int ncols, npad, dvp;
  float* q;      // Q^T, D x npad (score GEMM), or Q rows, ncols x D (dot products); scaled
  float* st;     // S^T then P^T of the current tile, bc x npad
  float* o;      // accumulator, ncols rows of dvp
  float* m;      // running max, npad
  float* l;      // running sum, npad
  float* alpha;  // rescale factors of the current tile, npad
  int32_t* lim;  // causal: the last key each column sees (sequence position), npad
  float* kbuf;   // a converted K tile (float16/bfloat16 inputs), bc x kv*D
  float* vbuf;   // a converted V tile, bc x kv*Dv
  float* row;    // one row of conversions, 2 * max(D, dvp)
};

inline Work carve(const AttentionArgs& a, const AttnPlan& p, float* ws, int64_t* total) {
  Work w{};
  w.ncols = p.kv * p.cols;
  w.npad = round_up(w.ncols, W);
  w.dvp = round_up(a.Dv, W);
  int64_t off = 0;
  auto take = [&](int64_t n) {
    float* r = ws ? ws + off : nullptr;
    off += round_up64(n, 16);
    return r;
  };
  const int64_t qt = static_cast<int64_t>(a.D) * w.npad, qr = static_cast<int64_t>(w.ncols) * a.D;
  w.q = take(qt > qr ? qt : qr);
  w.st = take(static_cast<int64_t>(p.bc) * w.npad);
  w.o = take(static_cast<int64_t>(w.ncols) * w.dvp);
  w.m = take(w.npad);
  w.l = take(w.npad);
  w.alpha = take(w.npad);
  w.lim = reinterpret_cast<int32_t*>(take(w.npad));
  const bool convert = a.dtype != DType::f32;
  w.kbuf = take(convert ? static_cast<int64_t>(p.bc) * p.kv * a.D : 0);
  w.vbuf = take(convert ? static_cast<int64_t>(p.bc) * p.kv * a.Dv : 0);
  w.row = take(2 * static_cast<int64_t>(a.D > w.dvp ? a.D : w.dvp));
  if (total) *total = off;
  return w;
}

int64_t workspace_floats(const AttentionArgs& a, const AttnPlan& p) {
  int64_t total = 0;
  carve(a, p, nullptr, &total);
  return total;
}

// One partial state in the scratch: m and l (npad each), then the accumulator rows (kv * cols x Dv).
int64_t partial_floats(const AttentionArgs& a, const AttnPlan& p) {
  const int64_t ncols = static_cast<int64_t>(p.kv) * p.cols;
  return 2 * round_up64(ncols, W) + ncols * a.Dv;
}

// Columns with at most this many queries x heads use dot products along D for their scores (their lanes
// would mostly idle in S^T = K Q^T).
constexpr int kDotMaxCols = W / 2;

// ---- the two products of a tile, on one register-blocked microkernel: C[rows x cols] (=, +=, or row-scaled
// +=) sum_p A(i, p) B[p][col], with A(i, p) = A[i * ars + p * aps] broadcast and B rows loaded as vectors.
//   scores  S^T = K Q^T:  A = K (ars = ldk, aps = 1),   B = Q^T (D x npad)
//   output  O  += P V:    A = P^T (ars = 1, aps = npad), B = V (nk x Dv)
// A tile of MR rows x NV vectors stays in registers while p streams (gemm_impl.h's kernel has A row-major
// only, and 8 x 2 vectors: 6 x 4 loads fewer values per FMA).

enum MmMode { kMmSet = 0, kMmAdd = 1, kMmScale = 2 };

#if defined(__AVX512F__)
constexpr int kMmMR = 6, kMmNV = 4;  // 24 accumulators of 32 zmm
#elif defined(__AVX2__)
constexpr int kMmMR = 6, kMmNV = 2;  // 12 of 16 ymm
#else
constexpr int kMmMR = 4, kMmNV = 2;
#endif

template <int MR, int NV, bool kFull, int kMode>
inline void mm_tile(int np, const float* A, int64_t ars, int64_t aps, const float* B, int64_t ldb, float* C, int64_t ldc,
                    const float* alpha, int ncols) {
  V_ c[MR][NV];
  auto width = [&](int v) { return ncols - v * W < W ? ncols - v * W : W; };
  for (int i = 0; i < MR; i++) {
    const V_ s = kMode == kMmScale ? Vec::set1(alpha[i]) : Vec::zero();
    for (int v = 0; v < NV; v++) {
      if (kMode == kMmSet) c[i][v] = Vec::zero();
      else {
        const V_ x = kFull ? Vec::load(C + i * ldc + v * W) : Vec::loadp(C + i * ldc + v * W, width(v));
        c[i][v] = kMode == kMmScale ? Vec::mul(s, x) : x;
      }
    }
  }
  const float* a[MR];
  for (int i = 0; i < MR; i++) a[i] = A + i * ars;
  for (int p = 0; p < np; p++) {
    V_ b[NV];
    const float* bp = B + p * ldb;
    for (int v = 0; v < NV; v++) b[v] = kFull ? Vec::load(bp + v * W) : Vec::loadp(bp + v * W, width(v));
    for (int i = 0; i < MR; i++) {
      const V_ x = Vec::set1(a[i][p * aps]);
      for (int v = 0; v < NV; v++) c[i][v] = Vec::fma(x, b[v], c[i][v]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) {
      if (kFull) Vec::store(C + i * ldc + v * W, c[i][v]);
      else Vec::storep(C + i * ldc + v * W, c[i][v], width(v));
    }
}

template <int NV, bool kFull, int kMode>
inline void mm_rows(int rows, int np, const float* A, int64_t ars, int64_t aps, const float* B, int64_t ldb, float* C,
                    int64_t ldc, const float* alpha, int ncols) {
  int i = 0;
  for (; i + kMmMR <= rows; i += kMmMR)
    mm_tile<kMmMR, NV, kFull, kMode>(np, A + i * ars, ars, aps, B, ldb, C + i * ldc, ldc, alpha + i, ncols);
  A += i * ars, C += i * ldc, alpha += i;
  switch (rows - i) {
    case 0: break;
#if defined(__AVX512F__) || defined(__AVX2__)
    case 5: mm_tile<5, NV, kFull, kMode>(np, A, ars, aps, B, ldb, C, ldc, alpha, ncols); break;
    case 4: mm_tile<4, NV, kFull, kMode>(np, A, ars, aps, B, ldb, C, ldc, alpha, ncols); break;
#endif
    case 3: mm_tile<3, NV, kFull, kMode>(np, A, ars, aps, B, ldb, C, ldc, alpha, ncols); break;
    case 2: mm_tile<2, NV, kFull, kMode>(np, A, ars, aps, B, ldb, C, ldc, alpha, ncols); break;
    default: mm_tile<1, NV, kFull, kMode>(np, A, ars, aps, B, ldb, C, ldc, alpha, ncols); break;
  }
}

// Column blocks of kMmNV vectors, then single vectors, then a partial one; each over all rows, so a block of
// B (np x kMmNV*W) stays in L1 while the rows go by.
template <int kMode>
inline void mm(int rows, int cols, int np, const float* A, int64_t ars, int64_t aps, const float* B, int64_t ldb,
               float* C, int64_t ldc, const float* alpha) {
  int c0 = 0;
  for (; c0 + kMmNV * W <= cols; c0 += kMmNV * W)
    mm_rows<kMmNV, true, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, kMmNV * W);
  for (; c0 + W <= cols; c0 += W) mm_rows<1, true, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, W);
  if (c0 < cols) mm_rows<1, false, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, cols - c0);
}

// ---- scores by dot products along D (few columns): S^T[j][c] = k_j . q_c

// Sums of each of four vectors, into s[0..4).
inline void hsum4(V_ a0, V_ a1, V_ a2, V_ a3, float* s) {
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
  auto fold = [](V_ x) { return _mm256_add_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))); };
  const __m256 b0 = fold(a0), b1 = fold(a1), b2 = fold(a2), b3 = fold(a3);
#else
  const __m256 b0 = a0, b1 = a1, b2 = a2, b3 = a3;
#endif
  // hadd pairs adjacent lanes within each 128-bit half; two rounds leave [x0 x1 x2 x3] partial sums per half.
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(b0, b1), _mm256_hadd_ps(b2, b3));
  _mm_storeu_ps(s, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
#else
  s[0] = Vec::hsum(a0), s[1] = Vec::hsum(a1), s[2] = Vec::hsum(a2), s[3] = Vec::hsum(a3);
#endif
}

// Four columns (q rows at q0, q0 + D, ...) against one key: s[0..4).
inline void dot4(int D, const float* k, const float* q0, float* s) {
  V_ a0 = Vec::zero(), a1 = Vec::zero(), a2 = Vec::zero(), a3 = Vec::zero();
  int d = 0;
  for (; d + W <= D; d += W) {
    const V_ x = Vec::load(k + d);
    a0 = Vec::fma(x, Vec::load(q0 + d), a0);
    a1 = Vec::fma(x, Vec::load(q0 + D + d), a1);
    a2 = Vec::fma(x, Vec::load(q0 + 2 * D + d), a2);
    a3 = Vec::fma(x, Vec::load(q0 + 3 * D + d), a3);
  }
  if (d < D) {
    const int w = D - d;
    const V_ x = Vec::loadp(k + d, w);
    a0 = Vec::fma(x, Vec::loadp(q0 + d, w), a0);
    a1 = Vec::fma(x, Vec::loadp(q0 + D + d, w), a1);
    a2 = Vec::fma(x, Vec::loadp(q0 + 2 * D + d, w), a2);
    a3 = Vec::fma(x, Vec::loadp(q0 + 3 * D + d, w), a3);
  }
  hsum4(a0, a1, a2, a3, s);
}

// One column against one key.
inline float dot1(int D, const float* k, const float* q) {
  V_ a0 = Vec::zero();
  for (int d = 0; d < D; d += W) {
    const int w = D - d < W ? D - d : W;
    a0 = Vec::fma(Vec::loadp(k + d, w), Vec::loadp(q + d, w), a0);
  }
  return Vec::hsum(a0);
}

// Columns [0, nkv * cols) of S^T, kv head by kv head: k_j of head g is K + j * ldk + g * D, the rows of its
// columns' queries Q + (g * cols + c) * D; four columns share the loads of k_j and one reduction. One key at a
// time, all its kv heads in order: a unit's K is then read front to back, which the hardware prefetchers
// follow (several keys at once, each on its own 4 KiB page when Hk * D = 1024, decode at 0.6x the speed).
// Meanwhile it asks for the keys' V rows (vpre: the first key's, vrow bytes each, vld bytes apart; null:
// none), which P V reads one kv head's slice at a time, so that each row's page is already streaming in.
inline void scores_dot(int nk, int nkv, int cols, int npad, int D, const float* K, int ldk, const float* Q, float* ST,
                       const char* vpre, int64_t vrow, int64_t vld) {
  for (int j = 0; j < nk; j++) {
    if (vpre)  // the start of each 4 KiB page of the row: the hardware prefetchers follow on from there
      for (int64_t b = 0; b < vrow; b += 4096) prefetch(vpre + j * vld + b);
    for (int g = 0; g < nkv; g++) {
      const float* kj = K + static_cast<int64_t>(j) * ldk + static_cast<int64_t>(g) * D;
      const float* Qg = Q + static_cast<int64_t>(g) * cols * D;
      float* s = ST + static_cast<int64_t>(j) * npad + g * cols;
      int c = 0;
      for (; c + 4 <= cols; c += 4) dot4(D, kj, Qg + static_cast<int64_t>(c) * D, s + c);
      for (; c < cols; c++) s[c] = dot1(D, kj, Qg + static_cast<int64_t>(c) * D);
    }
  }
}

// ---- P V key by key, for units of several kv heads (decode): O[g cols + c] += P^T[j][g cols + c] V[j][g].
// Each key's V row (the unit's kv heads, contiguous) is read once, front to back, between computations, so
// the hardware prefetchers stream V while this computes. O stays in L1 (ncols rows of dvp) and takes a load
// and a store per FMA. Measured on the decode T=1, S=32768, Hq=32, Hk=8, D=128 (256 MiB of K and V) against
// the microkernel over chunks of 16 keys, one kv head's slice of each row at a time: 1.16x on 2 threads and
// 1.2x on one at AVX-512, 1.19x at AVX2; from cache (S=2048) 0.85x at AVX-512 and 1.0x at AVX2. Two keys
// at a time (half the O traffic) was as fast from cache but only 1.08x out of it: two rows read in turn.
inline void pv_keys(int nk, int nkv, int cols, int npad, int Dv, int dvp, const float* P, const float* V, int ldv, float* O) {
  for (int j = 0; j < nk; j++) {
    const float* pj = P + static_cast<int64_t>(j) * npad;
    const float* vj = V + static_cast<int64_t>(j) * ldv;
    for (int g = 0; g < nkv; g++) {
      const float* v = vj + static_cast<int64_t>(g) * Dv;
      float* Og = O + static_cast<int64_t>(g) * cols * dvp;
      const float* pg = pj + g * cols;
      int d = 0;
      for (; d + 4 * W <= Dv; d += 4 * W) {
        const V_ v0 = Vec::load(v + d), v1 = Vec::load(v + d + W), v2 = Vec::load(v + d + 2 * W), v3 = Vec::load(v + d + 3 * W);
        for (int c = 0; c < cols; c++) {
          const V_ pc = Vec::set1(pg[c]);
          float* o = Og + static_cast<int64_t>(c) * dvp + d;
          Vec::store(o, Vec::fma(pc, v0, Vec::load(o)));
          Vec::store(o + W, Vec::fma(pc, v1, Vec::load(o + W)));
          Vec::store(o + 2 * W, Vec::fma(pc, v2, Vec::load(o + 2 * W)));
          Vec::store(o + 3 * W, Vec::fma(pc, v3, Vec::load(o + 3 * W)));
        }
      }
      for (; d < Dv; d += W) {  // O's rows are padded to dvp, a multiple of W; V's last vector is partial
        const int n = Dv - d < W ? Dv - d : W;
        const V_ x = Vec::loadp(v + d, n);
        for (int c = 0; c < cols; c++) {
          float* o = Og + static_cast<int64_t>(c) * dvp + d;
          Vec::store(o, Vec::fma(Vec::set1(pg[c]), x, Vec::load(o)));
        }
      }
    }
  }
}

// O[c] *= alpha[c] for rows c < n of length len (a multiple of W).
inline void scale_rows(int n, int len, const float* alpha, float* O) {
  for (int c = 0; c < n; c++) {
    const V_ s = Vec::set1(alpha[c]);
    float* o = O + static_cast<int64_t>(c) * len;
    for (int d = 0; d < len; d += W) Vec::store(o + d, Vec::mul(s, Vec::load(o + d)));
  }
}

// ---- the online softmax over one tile of S^T (nk rows, npad columns), in place: S^T becomes P^T.
// Returns whether any rescale factor differs from 1 (if none, O needs no rescale).
template <bool kMasked>
inline bool softmax_tile(int nk, int cols, int npad, float* ST, float* m, float* l, float* alpha) {
  bool rescale = false;
  for (int c = 0; c < npad; c += W) {
    const V_ m_old = Vec::load(m + c);
    V_ mx = m_old;
    for (int j = 0; j < nk; j++) mx = vmax(mx, Vec::load(ST + static_cast<int64_t>(j) * npad + c));
    V_ sum = Vec::zero();
    for (int j = 0; j < nk; j++) {
      float* s = ST + static_cast<int64_t>(j) * npad + c;
      const V_ x = Vec::sub(Vec::load(s), mx);
      const V_ e = kMasked ? vexp(x) : exp_le0(x);
      Vec::store(s, e);
      sum = Vec::add(sum, e);
    }
    const V_ al = exp_le0(Vec::sub(m_old, mx));
    Vec::store(alpha + c, al);
    Vec::store(l + c, Vec::fma(al, Vec::load(l + c), sum));
    Vec::store(m + c, mx);
    for (int i = 0; i < W && c + i < cols; i++) rescale |= alpha[c + i] != 1.f;
  }
  return rescale;
}

// ---- the epilogue: o = O / l (times sigmoid(gate)), stored in the output dtype, and lse.

inline void sigmoid_row(float* z, int n) {
  const V_ one = Vec::set1(1.f);
  int i = 0;
  for (; i + W <= n; i += W) {
    const V_ x = Vec::load(z + i);
    Vec::store(z + i, vdiv(one, Vec::add(one, vexp(Vec::sub(Vec::zero(), x)))));
  }
  if (i < n) {
    const V_ x = Vec::loadp(z + i, n - i);
    Vec::storep(z + i, vdiv(one, Vec::add(one, vexp(Vec::sub(Vec::zero(), x)))), n - i);
  }
}

// Writes the outputs of a unit's columns from m, l (npad) and O (ncols rows of ldo).
inline void finish(const AttentionArgs& a, const AttnPlan& p, const AttnUnit& u, const Work& w, const float* m,
                   const float* l, const float* O, int ldo) {
  const Seq sq = seq_of(a, u.n);
  const int Dv = a.Dv, cols = u.nh * u.nq, ncols = u.nkv * cols;
  float* row = w.row;
  float* z = w.row + w.dvp;
  for (int ct = 0; ct < ncols; ct++) {
    const int g = ct / cols, c = ct % cols;
    const int i = c / u.nh, h = (u.hk + g) * p.group + u.hoff + c % u.nh;
    const int64_t tok = sq.qbos + u.i0 + i;  // on the flattened B*T axis
    const int64_t orow = tok * a.Hq + h;
    // l = 0: the column saw no key (causal with S < T); o = 0 and lse = -inf, by definition.
    const float inv = l[ct] == 0.f ? 0.f : 1.f / l[ct];
    const float* oc = O + static_cast<int64_t>(ct) * ldo;
    if (a.gate_kind == GateKind::elementwise) {
      load_row(a.gate, a.gate_dtype, orow * Dv, Dv, z);
      sigmoid_row(z, Dv);
      const V_ s = Vec::set1(inv);
      int d = 0;
      for (; d + W <= Dv; d += W) Vec::store(row + d, Vec::mul(Vec::mul(s, Vec::load(oc + d)), Vec::load(z + d)));
      for (; d < Dv; d++) row[d] = inv * oc[d] * z[d];
    } else {
      float f = inv;
      if (a.gate_kind == GateKind::headwise) {
        load_row(a.gate, a.gate_dtype, orow, 1, z);
        f *= 1.f / (1.f + std::exp(-z[0]));
      }
      const V_ s = Vec::set1(f);
      int d = 0;
      for (; d + W <= Dv; d += W) Vec::store(row + d, Vec::mul(s, Vec::load(oc + d)));
      for (; d < Dv; d++) row[d] = f * oc[d];
    }
    store_row(a.o, a.dtype, orow * Dv, Dv, row);
    if (a.lse) {
      const int64_t b = a.cu_q ? 0 : u.n, t = a.cu_q ? tok : u.i0 + i;
      a.lse[(b * a.Hq + h) * a.T + t] = l[ct] == 0.f ? -INFINITY : m[ct] + std::log(l[ct]);
    }
  }
}

// ---- one unit


bool run_unit(const AttentionArgs& a, const AttnPlan& p, const AttnUnit& u, float* ws, float* scratch) {
  const Work w = carve(a, p, ws, nullptr);
  const Seq sq = seq_of(a, u.n);
  const int D = a.D, Dv = a.Dv, nh = u.nh, cols = nh * u.nq, npad = w.npad, dvp = w.dvp;
  const int ncols = u.nkv * cols;  // columns of kv head g: [g * cols, (g + 1) * cols)
  const bool dot = ncols <= kDotMaxCols || u.nkv > 1;
  const bool f32 = a.dtype == DType::f32;

  // Q of the unit's columns, scaled: transposed (D x npad, zero padding columns) or as rows (dot products).
  if (!dot) std::memset(w.q, 0, static_cast<size_t>(D) * npad * sizeof(float));
  for (int ct = 0; ct < ncols; ct++) {
    const int g = ct / cols, c = ct % cols;
    const int64_t tok = sq.qbos + u.i0 + c / nh;
    const int h = (u.hk + g) * p.group + u.hoff + c % nh;
    float* dst = dot ? w.q + static_cast<int64_t>(ct) * D : w.row;
    load_row(a.q, a.dtype, (tok * a.Hq + h) * D, D, dst);
    for (int d = 0; d < D; d++) dst[d] *= a.scale;
    if (!dot)
      for (int d = 0; d < D; d++) w.q[static_cast<int64_t>(d) * npad + ct] = dst[d];
  }
  const int32_t off = sq.S - sq.T;  // causal: bottom-right aligned
  int32_t lim_min = INT32_MAX;
  for (int ct = 0; ct < npad; ct++) {
    w.m[ct] = -FLT_MAX;
    w.l[ct] = 0.f;
    w.lim[ct] = ct < ncols ? u.i0 + (ct % cols) / nh + off : INT32_MAX;
    if (ct < ncols && w.lim[ct] < lim_min) lim_min = w.lim[ct];
  }
  if (dot)  // the dot products fill columns [0, ncols) of S^T; the padding lanes only need to be finite
    for (int j = 0; j < p.bc; j++)
      for (int ct = ncols; ct < npad; ct++) w.st[static_cast<int64_t>(j) * npad + ct] = 0.f;

  // K and V rows of a tile: in place (float32; the unit's kv heads are adjacent in a key's row), or converted
  // into the workspace.
  const int64_t ldk_in = static_cast<int64_t>(a.Hk) * D, ldv_in = static_cast<int64_t>(a.Hk) * Dv;
  bool first = true;
  for (int64_t j0 = u.j0; j0 < u.j1; j0 += p.bc) {
    if (cancelled(a)) return false;
    const int nk = static_cast<int>(u.j1 - j0 < p.bc ? u.j1 - j0 : p.bc);
    const int next = static_cast<int>(u.j1 - j0 - nk < p.bc ? u.j1 - j0 - nk : p.bc);
    // Single-kv-head units read one head's slice of each key row, a new 4 KiB page per row when Hk*D is
    // 1024 floats: ask for the next tile early. Units of several kv heads read whole rows, contiguous, which
    // the hardware prefetchers follow by themselves (measured: software prefetch gains nothing there).
    if (u.nkv == 1 && a.Hk > 1 && next > 0) prefetch_keys(a, sq.kbos, u.hk, j0 + nk, next);
    // The gate rows of the epilogue (one per column, Hq*Dv apart): asked for during the last tile, so they
    // are in cache when it ends (measured on the T = 4096 prefill: the elementwise gate costs ~2.5% with
    // this, ~4% without).
    if (next == 0 && a.gate_kind != GateKind::none && u.slot < 0) prefetch_gate(a, p, u, sq);
    const int64_t krow = (sq.kbos + j0) * a.Hk + u.hk;  // first key row of the tile, in rows of D (or Dv)
    const float* K;
    const float* V;
    int ldk, ldv;
    if (f32) {
      K = static_cast<const float*>(a.k) + krow * D, ldk = static_cast<int>(ldk_in);
      V = static_cast<const float*>(a.v) + krow * Dv, ldv = static_cast<int>(ldv_in);
    } else {
      const int kw = u.nkv * D, vw = u.nkv * Dv;
      for (int j = 0; j < nk; j++) {
        load_row(a.k, a.dtype, (krow + static_cast<int64_t>(j) * a.Hk) * D, kw, w.kbuf + static_cast<int64_t>(j) * kw);
        load_row(a.v, a.dtype, (krow + static_cast<int64_t>(j) * a.Hk) * Dv, vw, w.vbuf + static_cast<int64_t>(j) * vw);
      }
      K = w.kbuf, ldk = kw, V = w.vbuf, ldv = vw;
    }
    if (dot) {
      // Units of several kv heads: P V reads the V rows kv head by kv head, one slice of each row at a time,
      // which the hardware prefetchers do not follow across rows (measured on a decode: 1.2x with this).
      const bool vpf = f32 && u.nkv > 1;
      scores_dot(nk, u.nkv, cols, npad, D, K, ldk, w.q, w.st, vpf ? reinterpret_cast<const char*>(V) : nullptr,
                 static_cast<int64_t>(u.nkv) * Dv * 4, static_cast<int64_t>(ldv) * 4);
    } else {
      mm<kMmSet>(nk, npad, D, K, ldk, 1, w.q, npad, w.st, npad, w.alpha);
    }

    // A tile holding a key past some column's last visible key: mask those entries with -inf.
    const bool masked = a.causal && j0 + nk - 1 > lim_min;
    if (masked) {
      for (int ct = 0; ct < ncols; ct++) {
        const int64_t from = w.lim[ct] + int64_t{1} > j0 ? w.lim[ct] + int64_t{1} : j0;
        for (int64_t j = from; j < j0 + nk; j++) w.st[(j - j0) * npad + ct] = -INFINITY;
      }
    }
    const bool rescale = masked ? softmax_tile<true>(nk, ncols, npad, w.st, w.m, w.l, w.alpha)
                                : softmax_tile<false>(nk, ncols, npad, w.st, w.m, w.l, w.alpha);
    if (u.nkv > 1) {  // several kv heads: key by key (pv_keys), O first set or rescaled as a whole
      if (first) std::memset(w.o, 0, static_cast<size_t>(ncols) * dvp * sizeof(float));
      else if (rescale) scale_rows(ncols, dvp, w.alpha, w.o);
      pv_keys(nk, u.nkv, cols, npad, Dv, dvp, w.st, V, ldv, w.o);
    } else {  // one kv head: the microkernel over the whole tile, O set, rescaled or accumulated on the way
      if (first) mm<kMmSet>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha);
      else if (rescale) mm<kMmScale>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha);
      else mm<kMmAdd>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha);
    }
    first = false;
  }
  if (first)  // no keys at all: O = 0
    for (int ct = 0; ct < ncols; ct++) std::memset(w.o + static_cast<int64_t>(ct) * dvp, 0, static_cast<size_t>(Dv) * sizeof(float));

  if (u.slot < 0) {
    finish(a, p, u, w, w.m, w.l, w.o, dvp);
    return true;
  }
  float* part = scratch + u.slot * partial_floats(a, p);
  std::memcpy(part, w.m, static_cast<size_t>(npad) * sizeof(float));
  std::memcpy(part + npad, w.l, static_cast<size_t>(npad) * sizeof(float));
  for (int ct = 0; ct < ncols; ct++)
    std::memcpy(part + 2 * npad + static_cast<int64_t>(ct) * Dv, w.o + static_cast<int64_t>(ct) * dvp, static_cast<size_t>(Dv) * sizeof(float));
  return true;
}

// Merges pieces [u.slot, u.slot + u.pieces) by their log-sum-exps: with M = max m_s,
// l = sum_s e^(m_s - M) l_s and O = sum_s e^(m_s - M) O_s; then the epilogue as for a whole unit.
void merge_unit(const AttentionArgs& a, const AttnPlan& p, const AttnUnit& u, float* ws, const float* scratch) {
  const Work w = carve(a, p, ws, nullptr);
  const int npad = w.npad, dvp = w.dvp, Dv = a.Dv;
  const int ncols = u.nkv * u.nh * u.nq;
  const int64_t pf = partial_floats(a, p);
  for (int ct = 0; ct < ncols; ct++) {
    float M = -FLT_MAX;
    for (int s = 0; s < u.pieces; s++) M = std::fmax(M, scratch[(u.slot + s) * pf + ct]);
    float L = 0.f;
    float* oc = w.o + static_cast<int64_t>(ct) * dvp;
    for (int d = 0; d < Dv; d++) oc[d] = 0.f;
    for (int s = 0; s < u.pieces; s++) {
      const float* part = scratch + (u.slot + s) * pf;
      const float f = std::exp(part[ct] - M);
      if (f == 0.f) continue;  // a piece that saw no key of this column (NaN goes on, to the output)
      L += f * part[npad + ct];
      const float* po = part + 2 * npad + static_cast<int64_t>(ct) * Dv;
      const V_ fv = Vec::set1(f);
      int d = 0;
      for (; d + W <= Dv; d += W) Vec::store(oc + d, Vec::fma(fv, Vec::load(po + d), Vec::load(oc + d)));
      for (; d < Dv; d++) oc[d] += f * po[d];
    }
    w.m[ct] = M;
    w.l[ct] = L;
  }
  finish(a, p, u, w, w.m, w.l, w.o, dvp);
}

}  // namespace

extern const AttentionKernels kAttentionKernels = {workspace_floats, partial_floats, run_unit, merge_unit};

}  // namespace SK_LEVEL_NS
}  // namespace sk
