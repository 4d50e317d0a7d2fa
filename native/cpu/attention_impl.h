// The attention kernels, written once against `Vec` and compiled per SIMD level (attention_<level>.cc).
//
// A unit's score tile is held transposed, S^T = K Q^T: one row per key, one column per (query, query head) of
// the unit. With the queries along the vector lanes,
//   - K is read in place (float32), row by row, and only the unit's small Q block is transposed, once; no key
//     tile is ever transposed. A unit of one kv head copies its V tile into the workspace at a stride that
//     keeps P V's column blocks out of one L1 set (run_unit's fetch); units of several kv heads read V in place;
//   - the online softmax is column-wise: running max, rescale factors and sums are vectors over the queries,
//     with no horizontal reductions;
//   - both products, S^T = K Q^T and O += P V (P^T rows broadcast, V rows as vectors), run on one
//     register-blocked microkernel (mm_tile).
// A unit with only a few columns per kv head (decode: one query per head of a group) takes several kv heads
// and gets its scores from dot products along D, so that every lane is busy and each key's K and V rows are
// read whole; the softmax and P V steps are the same. Such a unit reads its keys as two runs far apart in
// memory, one key of each at a time (see run_unit): each step then shares the q loads and the visits of O
// between two keys while K and V are still read front to back.
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
// At AVX-512 and AVX2 the rounding is the 1.5 * 2^23 shift (one FMA and a subtraction, where mul + round took
// three uops at AVX-512) and 2^n comes from the shifted sum's low bits (AVX2) or scalef (AVX-512), one uop where
// max + cvt + shift + add took four; the softmax shares Intel's two AVX-512 FMA ports with the products (~6%
// fewer uops per score).
inline V_ exp_le0(V_ x) {
#if defined(__AVX512F__) || defined(__AVX2__)
  x = vmax(Vec::set1(-87.33654f), x);
  const V_ shift = Vec::set1(12582912.f);                        // 1.5 * 2^23: t's last bit has weight 1
  const V_ t = Vec::fma(x, Vec::set1(1.44269504088896341f), shift);  // round(x log2 e) + shift, rounded once
  const V_ n = Vec::sub(t, shift);                                  // in [-126, 0]
  V_ r = Vec::fnma(n, Vec::set1(0.693145751953125f), x);
  r = Vec::fnma(n, Vec::set1(1.428606765330187045e-06f), r);
  V_ p = Vec::set1(1.f / 5040);
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = Vec::fma(p, r, Vec::set1(c));
#if defined(__AVX512F__)
  return _mm512_scalef_ps(p, n);
#else
  // t's bits are those of the shift plus n; shifted left by 23 only n's remain, in the exponent field.
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(t), 23)));
#endif
#else
  return vexp_core(vmax(Vec::set1(-87.33654f), x));
#endif
}

// Tiles are converted to float32 as they are loaded (load_row / store_row, convert_impl.h).

// Asks for the K and V rows of keys [j0, j0 + n) of kv head hk of sequence sn (rows from kbos, or paged: see
// key_row) ahead of their use.
// One head's slice of a key row is D (Dv) values every Hk*D (Hk*Dv) floats, so each slice may start on
// another 4 KiB page, where the hardware prefetchers stop.
inline void prefetch_keys(const AttentionArgs& a, int sn, int64_t kbos, int hk, int64_t j0, int n) {
  const int esz = kv_dtype_of(a) == DType::f32 ? 4 : 2;
  const int64_t kb = static_cast<int64_t>(a.D) * esz, vb = static_cast<int64_t>(a.Dv) * esz;
  for (int j = 0; j < n; j++) {
    const int64_t row = key_row(a, sn, kbos, j0 + j) * a.Hk + hk;
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
  if (a.cu_q) return {a.cu_q[n], a.cu_k[n], a.cu_q[n + 1] - a.cu_q[n], seq_keys(a, n)};
  return {static_cast<int64_t>(n) * a.T, static_cast<int64_t>(n) * a.S, a.T, keys_of(a, n)};
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
  float* kbuf;   // a converted K tile of one kv head (float16/bfloat16 inputs), bc x D
  float* vbuf;   // a copied V tile of one kv head, bc x vtile_ld(Dv)
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
  const bool convert = kv_dtype_of(a) != DType::f32;
  w.kbuf = take(convert ? static_cast<int64_t>(p.bc) * a.D : 0);
  w.vbuf = take(static_cast<int64_t>(p.bc) * vtile_ld(a.Dv));
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

struct Prefetcher;
template <int MR, int NV, bool kFull, int kMode>
inline void mm_tile(int np, const float* A, int64_t ars, int64_t aps, const float* B, int64_t ldb, float* C, int64_t ldc,
                    const float* alpha, int ncols, Prefetcher* pf = nullptr);

// Lines asked for into L2 a few at a time: the next key tile (64 rows of K and of V, ~1100 lines) asked for
// in one burst stalled on the misses in flight (measured at AVX-512: the burst took ~5% of a causal
// prefill). Each full microkernel tile takes `per` lines and spreads them over its p loop, one every few
// iterations (mm_tile); a burst of `per` lines before each tile still stalled on Intel (Sapphire Rapids, causal
// T=4096 H=8 D=128, one thread: the prefetcht1 took ~4.5% of the call; in the loop the call is 0.92-0.95x).
// What is left after a product goes at once (step).
struct Prefetcher {
  const char* p = nullptr;
  const char* end = nullptr;
  int per = 0;  // lines per microkernel tile
  void step() {
    for (int i = 0; i < per && p < end; i++, p += 64) prefetch_l2(p);
  }
};

template <int MR, int NV, bool kFull, int kMode>
inline void mm_tile(int np, const float* A, int64_t ars, int64_t aps, const float* B, int64_t ldb, float* C, int64_t ldc,
                    const float* alpha, int ncols, Prefetcher* pf) {
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
  // pf->per lines of pf (see Prefetcher), one every `stride` iterations. __builtin_prefetch, not prefetch_l2:
  // GCC kept the accumulators in memory around the asm statement (a store of each per iteration).
  const char* pp = nullptr;
  const char* pe = nullptr;
  int stride = 1 << 30, cnt = 1 << 30;
  if (pf && pf->per > 0 && pf->p < pf->end) {
    pp = pf->p;
    pe = pf->p + static_cast<int64_t>(pf->per) * 64;
    if (pe > pf->end) pe = pf->end;
    if (pe - pp > static_cast<int64_t>(np) * 64) pe = pp + static_cast<int64_t>(np) * 64;  // at most one per p; the rest later
    pf->p = pe;
    const int nl = static_cast<int>((pe - pp) / 64);
    stride = np / (nl > 0 ? nl : 1);
    if (stride < 1) stride = 1;
    cnt = stride;
  }
  for (int p = 0; p < np; p++) {
    if (--cnt == 0) {
      cnt = stride;
      if (pp < pe) __builtin_prefetch(pp, 0, 2), pp += 64;
    }
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
                    int64_t ldc, const float* alpha, int ncols, Prefetcher* pf) {
  int i = 0;
  for (; i + kMmMR <= rows; i += kMmMR) {
    mm_tile<kMmMR, NV, kFull, kMode>(np, A + i * ars, ars, aps, B, ldb, C + i * ldc, ldc, alpha + i, ncols, pf);
  }
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
               float* C, int64_t ldc, const float* alpha, Prefetcher* pf = nullptr) {
  int c0 = 0;
  for (; c0 + kMmNV * W <= cols; c0 += kMmNV * W)
    mm_rows<kMmNV, true, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, kMmNV * W, pf);
  for (; c0 + W <= cols; c0 += W) mm_rows<1, true, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, W, pf);
  if (c0 < cols) mm_rows<1, false, kMode>(rows, np, A, ars, aps, B + c0, ldb, C + c0, ldc, alpha, cols - c0, pf);
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

// Four columns (q rows at q0, q0 + D, ...) against one key: s[0..4). Two accumulators per column (even and
// odd vectors of D): eight independent FMA chains keep both FMA pipes busy, where four chains of D / W
// dependent FMAs left them waiting on latency.
template <class L>
inline void dot4(int D, const typename L::T* k, const float* q0, float* s) {
  const float* q1 = q0 + D;
  const float* q2 = q0 + 2 * D;
  const float* q3 = q0 + 3 * D;
  V_ a0 = Vec::zero(), a1 = Vec::zero(), a2 = Vec::zero(), a3 = Vec::zero();
  V_ b0 = Vec::zero(), b1 = Vec::zero(), b2 = Vec::zero(), b3 = Vec::zero();
  int d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    const V_ x = L::load(k + d), y = L::load(k + d + W);
    a0 = Vec::fma(x, Vec::load(q0 + d), a0);
    a1 = Vec::fma(x, Vec::load(q1 + d), a1);
    a2 = Vec::fma(x, Vec::load(q2 + d), a2);
    a3 = Vec::fma(x, Vec::load(q3 + d), a3);
    b0 = Vec::fma(y, Vec::load(q0 + d + W), b0);
    b1 = Vec::fma(y, Vec::load(q1 + d + W), b1);
    b2 = Vec::fma(y, Vec::load(q2 + d + W), b2);
    b3 = Vec::fma(y, Vec::load(q3 + d + W), b3);
  }
  for (; d < D; d += W) {
    const int w = D - d < W ? D - d : W;
    const V_ x = L::loadp(k + d, w);
    a0 = Vec::fma(x, Vec::loadp(q0 + d, w), a0);
    a1 = Vec::fma(x, Vec::loadp(q1 + d, w), a1);
    a2 = Vec::fma(x, Vec::loadp(q2 + d, w), a2);
    a3 = Vec::fma(x, Vec::loadp(q3 + d, w), a3);
  }
  hsum4(Vec::add(a0, b0), Vec::add(a1, b1), Vec::add(a2, b2), Vec::add(a3, b3), s);
}

// One column against one key.
template <class L>
inline float dot1(int D, const typename L::T* k, const float* q) {
  V_ a0 = Vec::zero();
  for (int d = 0; d < D; d += W) {
    const int w = D - d < W ? D - d : W;
    a0 = Vec::fma(L::loadp(k + d, w), Vec::loadp(q + d, w), a0);
  }
  return Vec::hsum(a0);
}

// Keeps a loaded value in a register: without this GCC folds the load into each FMA that uses it (two loads
// of each q vector in dot4x2, which made the loop load-bound).
inline void in_register(V_& x) {
#if defined(__AVX512F__)
  asm("" : "+v"(x));
#elif defined(__AVX2__)
  asm("" : "+x"(x));
#else
  (void)x;
#endif
}

// Four columns against two keys (rows ka, kb): sa[0..4), sb[0..4). The q loads serve both keys: 6 loads per
// 8 FMAs, where one key takes 5 per 4.
template <class L>
inline void dot4x2(int D, const typename L::T* ka, const typename L::T* kb, const float* q0, float* sa, float* sb) {
  const float* q1 = q0 + D;
  const float* q2 = q0 + 2 * D;
  const float* q3 = q0 + 3 * D;
  V_ a0 = Vec::zero(), a1 = Vec::zero(), a2 = Vec::zero(), a3 = Vec::zero();
  V_ b0 = Vec::zero(), b1 = Vec::zero(), b2 = Vec::zero(), b3 = Vec::zero();
  for (int d = 0; d < D; d += W) {
    const int w = D - d < W ? D - d : W;
    const bool full = w == W;
    const V_ x = full ? L::load(ka + d) : L::loadp(ka + d, w);
    const V_ y = full ? L::load(kb + d) : L::loadp(kb + d, w);
    V_ u0 = full ? Vec::load(q0 + d) : Vec::loadp(q0 + d, w);
    in_register(u0);
    a0 = Vec::fma(x, u0, a0), b0 = Vec::fma(y, u0, b0);
    V_ u1 = full ? Vec::load(q1 + d) : Vec::loadp(q1 + d, w);
    in_register(u1);
    a1 = Vec::fma(x, u1, a1), b1 = Vec::fma(y, u1, b1);
    V_ u2 = full ? Vec::load(q2 + d) : Vec::loadp(q2 + d, w);
    in_register(u2);
    a2 = Vec::fma(x, u2, a2), b2 = Vec::fma(y, u2, b2);
    V_ u3 = full ? Vec::load(q3 + d) : Vec::loadp(q3 + d, w);
    in_register(u3);
    a3 = Vec::fma(x, u3, a3), b3 = Vec::fma(y, u3, b3);
  }
  hsum4(a0, a1, a2, a3, sa);
  hsum4(b0, b1, b2, b3, sb);
}

// Columns [0, nkv * cols) of S^T, kv head by kv head: k_j of head g is K + j * ldk + g * D, the rows of its
// columns' queries Q + (g * cols + c) * D; four columns share the loads of k_j and one reduction.
//
// The keys come from two runs (see run_unit's two-run tiles): row i < na of S^T is key i of run A (rows
// KA), row na + i (i < nb <= na) key i of run B (rows KB); nb = 0 for one run. Keys A_i and B_i go together,
// sharing the q loads, each key row whole, all its kv heads in order. Each run is then read front to back,
// which the hardware prefetchers follow; two runs far apart in memory cost nothing more on this VM (a probe
// reading two streams 2 MiB apart in turns of 512 bytes: as fast as one stream), where two rows next to each
// other read in turns, or four runs, read at 0.6-0.75x the speed.
// Meanwhile it asks for the keys' V rows (vpa, vpb: the first key's of each run, vrow bytes each, vld bytes
// apart; null: none), whose 4 KiB pages P V then finds streaming in.
template <class L>
inline void scores_dot(int na, int nb, int nkv, int cols, int npad, int D, const typename L::T* KA, const typename L::T* KB,
                       int ldk, const float* Q, float* ST, const char* vpa, const char* vpb, int64_t vrow, int64_t vld) {
  for (int j = 0; j < na; j++) {
    const bool two = j < nb;
    if (vpa)  // the start of each 4 KiB page of the row: the hardware prefetchers follow on from there
      for (int64_t b = 0; b < vrow; b += 4096) {
        prefetch(vpa + j * vld + b);
        if (two) prefetch(vpb + j * vld + b);
      }
    for (int g = 0; g < nkv; g++) {
      const int64_t koff = static_cast<int64_t>(j) * ldk + static_cast<int64_t>(g) * D;
      const typename L::T* ka = KA + koff;
      const typename L::T* kb = two ? KB + koff : nullptr;
      const float* Qg = Q + static_cast<int64_t>(g) * cols * D;
      float* sa = ST + static_cast<int64_t>(j) * npad + g * cols;
      float* sb = sa + static_cast<int64_t>(na) * npad;
      int c = 0;
      if (two)
        for (; c + 4 <= cols; c += 4) dot4x2<L>(D, ka, kb, Qg + static_cast<int64_t>(c) * D, sa + c, sb + c);
      else
        for (; c + 4 <= cols; c += 4) dot4<L>(D, ka, Qg + static_cast<int64_t>(c) * D, sa + c);
      for (; c < cols; c++) {
        sa[c] = dot1<L>(D, ka, Qg + static_cast<int64_t>(c) * D);
        if (two) sb[c] = dot1<L>(D, kb, Qg + static_cast<int64_t>(c) * D);
      }
    }
  }
}

// ---- P V key by key, for units of several kv heads (decode): O[g cols + c] += P^T[j][g cols + c] V[j][g].
// Each key's V row (the unit's kv heads, contiguous) is read once, front to back, between computations, so
// the hardware prefetchers stream V while this computes. O stays in L1 (ncols rows of dvp) and takes a load
// and a store per visit, which bounds this loop (an L1 probe: ~50 cycles per key and kv head of 4 x 128).
// Keys A_i and B_i of a two-run tile (P^T rows i and na + i) go together: one visit of O for two FMAs.
// Measured on the decode T=1, S=32768, Hq=32, Hk=8, D=128 (256 MiB of K and V): key by key beat the
// microkernel over one kv head's slice of several rows (1.16x at 2 threads), which reads rows next to each
// other in turns; pairs from two runs far apart beat key by key (see run_unit).
template <class L, bool kTwo>
inline void pv_key(int nkv, int cols, int Dv, int dvp, const float* pa, const float* pb, const typename L::T* va,
                   const typename L::T* vb, float* O) {
  for (int g = 0; g < nkv; g++) {
    const typename L::T* v = va + static_cast<int64_t>(g) * Dv;
    const typename L::T* u = kTwo ? vb + static_cast<int64_t>(g) * Dv : nullptr;
    float* Og = O + static_cast<int64_t>(g) * cols * dvp;
    const float* pg = pa + g * cols;
    const float* qg = kTwo ? pb + g * cols : nullptr;
    int d = 0;
    for (; d + 4 * W <= Dv; d += 4 * W) {
      const V_ v0 = L::load(v + d), v1 = L::load(v + d + W), v2 = L::load(v + d + 2 * W), v3 = L::load(v + d + 3 * W);
      V_ u0 = v0, u1 = v1, u2 = v2, u3 = v3;
      if (kTwo) u0 = L::load(u + d), u1 = L::load(u + d + W), u2 = L::load(u + d + 2 * W), u3 = L::load(u + d + 3 * W);
      for (int c = 0; c < cols; c++) {
        const V_ pc = Vec::set1(pg[c]);
        float* o = Og + static_cast<int64_t>(c) * dvp + d;
        V_ o0 = Vec::fma(pc, v0, Vec::load(o)), o1 = Vec::fma(pc, v1, Vec::load(o + W));
        V_ o2 = Vec::fma(pc, v2, Vec::load(o + 2 * W)), o3 = Vec::fma(pc, v3, Vec::load(o + 3 * W));
        if (kTwo) {
          const V_ qc = Vec::set1(qg[c]);
          o0 = Vec::fma(qc, u0, o0), o1 = Vec::fma(qc, u1, o1), o2 = Vec::fma(qc, u2, o2), o3 = Vec::fma(qc, u3, o3);
        }
        Vec::store(o, o0), Vec::store(o + W, o1), Vec::store(o + 2 * W, o2), Vec::store(o + 3 * W, o3);
      }
    }
    for (; d < Dv; d += W) {  // O's rows are padded to dvp, a multiple of W; V's last vector is partial
      const int n = Dv - d < W ? Dv - d : W;
      const V_ x = L::loadp(v + d, n);
      const V_ y = kTwo ? L::loadp(u + d, n) : x;
      for (int c = 0; c < cols; c++) {
        float* o = Og + static_cast<int64_t>(c) * dvp + d;
        V_ oc = Vec::fma(Vec::set1(pg[c]), x, Vec::load(o));
        if (kTwo) oc = Vec::fma(Vec::set1(qg[c]), y, oc);
        Vec::store(o, oc);
      }
    }
  }
}

// All keys of a tile: rows i < na of P^T are keys of run A (V rows VA), rows na + i (i < nb <= na) of run B.
template <class L>
inline void pv_keys(int na, int nb, int nkv, int cols, int npad, int Dv, int dvp, const float* P, const typename L::T* VA,
                    const typename L::T* VB, int ldv, float* O) {
  for (int j = 0; j < na; j++) {
    const float* pa = P + static_cast<int64_t>(j) * npad;
    const typename L::T* va = VA + static_cast<int64_t>(j) * ldv;
    if (j < nb)
      pv_key<L, true>(nkv, cols, Dv, dvp, pa, pa + static_cast<int64_t>(na) * npad, va, VB + static_cast<int64_t>(j) * ldv, O);
    else
      pv_key<L, false>(nkv, cols, Dv, dvp, pa, nullptr, va, nullptr, O);
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
    // Four running maxima: one chain of nk dependent maxps waited on its latency (~1.5% of a prefill).
    V_ m0 = m_old, m1 = m_old, m2 = m_old, m3 = m_old;
    int j = 0;
    for (; j + 4 <= nk; j += 4) {
      const float* s = ST + static_cast<int64_t>(j) * npad + c;
      m0 = vmax(m0, Vec::load(s));
      m1 = vmax(m1, Vec::load(s + npad));
      m2 = vmax(m2, Vec::load(s + 2 * npad));
      m3 = vmax(m3, Vec::load(s + 3 * npad));
    }
    for (; j < nk; j++) m0 = vmax(m0, Vec::load(ST + static_cast<int64_t>(j) * npad + c));
    V_ mx = vmax(vmax(m0, m1), vmax(m2, m3));
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

// ---- masked tiles whose hidden keys hold non-finite values. P is exactly 0 on a masked key, but 0 * NaN
// (or 0 * Inf) in P V would still carry a NaN in V to the columns that cannot see that key, where the
// reference skips the key. Keys of tile row j sit at pos(j) = j < na ? ja + j : jb + j - na, their V rows at
// row(j) = j < na ? VA + j * ldv : VB + (j - na) * ldv, kv head g's slice g * Dv further.

// Whether a V row of a key past lim_min (hidden from some column) holds a NaN or an Inf: x * 0 + acc is NaN
// then, and acc stays 0 otherwise.
template <class L>
inline bool hidden_nonfinite(int na, int nb, int64_t ja, int64_t jb, int32_t lim_min, int nkv, int Dv,
                             const typename L::T* VA, const typename L::T* VB, int ldv) {
  V_ acc = Vec::zero();
  for (int j = 0; j < na + nb; j++) {
    const int64_t pos = j < na ? ja + j : jb + j - na;
    if (pos <= lim_min) continue;
    const typename L::T* v = j < na ? VA + static_cast<int64_t>(j) * ldv : VB + static_cast<int64_t>(j - na) * ldv;
    for (int d = 0; d < nkv * Dv; d += W) {
      const int n = nkv * Dv - d < W ? nkv * Dv - d : W;
      acc = Vec::fma(L::loadp(v + d, n), Vec::zero(), acc);
    }
  }
  const float s = Vec::hsum(acc);
  return s != s;
}

// P V of such a tile column by column, each over only the keys it sees (pos(j) <= lim[ct]): O set (first),
// rescaled by alpha and accumulated (rescale), or accumulated.
template <class L>
inline void pv_visible(int na, int nb, int64_t ja, int64_t jb, int ncols, int cols, int npad, int Dv, int dvp,
                       const float* P, const typename L::T* VA, const typename L::T* VB, int ldv, const int32_t* lim,
                       const float* alpha, bool first, bool rescale, float* O) {
  for (int ct = 0; ct < ncols; ct++) {
    float* o = O + static_cast<int64_t>(ct) * dvp;
    const int64_t g = ct / cols;
    if (first) std::memset(o, 0, static_cast<size_t>(dvp) * sizeof(float));
    else if (rescale)
      for (int d = 0; d < dvp; d += W) Vec::store(o + d, Vec::mul(Vec::set1(alpha[ct]), Vec::load(o + d)));
    for (int j = 0; j < na + nb; j++) {
      const int64_t pos = j < na ? ja + j : jb + j - na;
      if (pos > lim[ct]) continue;
      const typename L::T* v = (j < na ? VA + static_cast<int64_t>(j) * ldv : VB + static_cast<int64_t>(j - na) * ldv) + g * Dv;
      const V_ pj = Vec::set1(P[static_cast<int64_t>(j) * npad + ct]);
      for (int d = 0; d < Dv; d += W) {
        const int n = Dv - d < W ? Dv - d : W;
        Vec::store(o + d, Vec::fma(pj, L::loadp(v + d, n), Vec::load(o + d)));
      }
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
  const DType kvt = kv_dtype_of(a);
  const bool f32 = kvt == DType::f32;

  // Q of the unit's columns, scaled: transposed (D x npad, zero padding columns) or as rows (dot products).
  // Each column's q row is on its own 4 KiB page (Hq*D floats apart), where the hardware prefetchers stop:
  // rows kQAhead columns ahead are asked for while this one is read (measured at AVX-512, causal T=4096,
  // H=8, D=128: the gather waited on one row's misses after another, ~2.5% of the call).
  constexpr int kQAhead = 4;
  const int qesz = q_dtype_of(a) == DType::f32 ? 4 : 2;
  auto qoff = [&](int ct) {
    const int g = ct / cols, c = ct % cols;
    const int64_t tok = sq.qbos + u.i0 + c / nh;
    const int h = (u.hk + g) * p.group + u.hoff + c % nh;
    return (tok * a.Hq + h) * D;
  };
  auto qprefetch = [&](int ct) {
    const char* r = static_cast<const char*>(a.q) + qoff(ct) * qesz;
    for (int64_t b = 0; b < static_cast<int64_t>(D) * qesz; b += 64) prefetch(r + b);
  };
  for (int ct = 0; ct < kQAhead && ct < ncols; ct++) qprefetch(ct);
  if (!dot) std::memset(w.q, 0, static_cast<size_t>(D) * npad * sizeof(float));
  for (int ct = 0; ct < ncols; ct++) {
    if (ct + kQAhead < ncols) qprefetch(ct + kQAhead);
    float* dst = dot ? w.q + static_cast<int64_t>(ct) * D : w.row;
    load_row(a.q, q_dtype_of(a), qoff(ct), D, dst);
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

  // Tiles. A unit of several kv heads (decode: a few query heads of each) splits its keys into two runs,
  // A = [j0, mid) and B = [mid, j1), and takes half a tile from each: S^T rows [0, na) are keys of A, rows
  // [na, na + nb) keys of B, and scores_dot and pv_keys handle key A_i with key B_i, which halves P V's
  // visits of O and shares the q loads of the scores. Measured on the decode T=1, S=32768, Hq=32, Hk=8,
  // D=128: see the README. Other units take one run (nb = 0).
  const bool two = u.nkv > 1;
  const int64_t mid = two ? u.j0 + (u.j1 - u.j0 + 1) / 2 : u.j1;
  const int step = two ? p.bc / 2 : p.bc;
  // K and V rows of n keys from j: in place (the unit's kv heads are adjacent in a key's row), or converted
  // into the workspace from row `at`. Units of several kv heads (decode) read float16/bfloat16 in place too,
  // converting in registers as they load (LoadF16 / LoadBF16): converting rows into a buffer first made a
  // bfloat16 decode slower than the float32 one with twice its bytes (7.3 vs 6.1 ms at S=32768).
  // A unit of one kv head reads that head's slice of each key row, Hk*D (Hk*Dv) values apart. Its K rows
  // stay in place when float32 (the score microkernel broadcasts from a few rows at a time), but its V tile
  // is always copied into the workspace, at a row stride of vld floats, not a multiple of 4 KiB: P V's
  // microkernel reads a 64-byte column block of every V row of the tile once per few rows of O, and rows
  // 4 KiB apart (Hk = 8, Dv = 128) all fall in one L1 set, so every pass fetched them again from L2
  // (measured on a 64-key tile at AVX2, Zen 3: P V at 51-60% of the FMA peak in place, 91-93% copied; the
  // causal prefill T=4096, H=8, D=128 in 0.89-0.94x the time, on 1 and 2 threads; the copy itself ~3%).
  const bool inplace = u.nkv > 1;
  const int esz = f32 ? 4 : 2;
  const int64_t ldk_in = static_cast<int64_t>(a.Hk) * D, ldv_in = static_cast<int64_t>(a.Hk) * Dv;
  const int vld = vtile_ld(a.Dv);
  const bool packed = p.kpack && u.nkv == 1;
  const int ldk = static_cast<int>(!packed && (inplace || f32) ? ldk_in : D), ldv = static_cast<int>(inplace ? ldv_in : vld);
  const int64_t pbase = packed ? p.pack_base[static_cast<int64_t>(u.n) * a.Hk + u.hk] : 0;
  auto fetch = [&](int64_t j, int n, int at, const void*& K, const void*& V) {
    if (packed) {
      K = p.kpack + (pbase + j) * D;
      V = p.vpack + (pbase + j) * vld;
      return;
    }
    const int64_t krow = key_row(a, u.n, sq.kbos, j) * a.Hk + u.hk;  // in rows of D (or Dv); n rows in one block
    if (inplace) {
      K = static_cast<const char*>(a.k) + krow * D * esz;
      V = static_cast<const char*>(a.v) + krow * Dv * esz;
      return;
    }
    if (f32) {
      K = static_cast<const float*>(a.k) + krow * D;
    } else {
      K = w.kbuf + static_cast<int64_t>(at) * D;
      for (int i = 0; i < n; i++)
        load_row(a.k, kvt, (krow + static_cast<int64_t>(i) * a.Hk) * D, D, w.kbuf + static_cast<int64_t>(at + i) * D);
    }
    V = w.vbuf + static_cast<int64_t>(at) * vld;
    for (int i = 0; i < n; i++)
      load_row(a.v, kvt, (krow + static_cast<int64_t>(i) * a.Hk) * Dv, Dv, w.vbuf + static_cast<int64_t>(at + i) * vld);
  };
  // Calls f with the loader of the K and V rows fetch hands out: the input dtype's when in place, else float32.
  auto with_loader = [&](auto&& f) {
    if (!inplace || f32) f(LoadF32{});
    else if (kvt == DType::f16) f(LoadF16{});
    else f(LoadBF16{});
  };
  // Causal: -inf in the rows of keys [j, j + n) (rows from row0) past each column's last visible key.
  auto mask = [&](int64_t j, int n, int row0) {
    for (int ct = 0; ct < ncols; ct++)
      for (int64_t k = w.lim[ct] + int64_t{1} > j ? w.lim[ct] + int64_t{1} : j; k < j + n; k++)
        w.st[(row0 + k - j) * npad + ct] = -INFINITY;
  };
  // Keys fetched at once from j (before end): at most step and, in a paged cache, none past j's block (only
  // a block's rows are adjacent in memory).
  const int bs = a.block_table ? a.block_size : 0;
  auto span = [&](int64_t j, int64_t end) -> int {
    int64_t n = end - j < step ? end - j : step;
    if (bs && bs - j % bs < n) n = bs - j % bs;
    return static_cast<int>(n > 0 ? n : 0);
  };
  bool first = true;
  // Runs A and B advance by na and nb keys per tile, nb <= na; A is never the shorter one, but a paged
  // cache can cut it into more tiles than B, and then B's rest goes alone (as A) once A is done.
  for (int64_t ja = u.j0, jb = mid; ja < mid || jb < u.j1;) {
    if (cancelled(a)) return false;
    int64_t xa = ja, xb = jb;
    int na = span(ja, mid), nb = span(jb, u.j1);
    if (na == 0) {
      xa = jb, na = nb, nb = 0;
      jb += na;
    } else {
      if (nb > na) nb = na;
      ja += na, jb += nb;
    }
    const int nk = na + nb;
    const int next = ja < mid ? span(ja, mid) : span(jb, u.j1);
    // Single-kv-head units read one head's slice of each key row, a new 4 KiB page per row when Hk*D is
    // 1024 floats: ask for the next tile early. Units of several kv heads read whole rows, contiguous, which
    // the hardware prefetchers follow by themselves (measured: software prefetch gains nothing there).
    if (!packed && u.nkv == 1 && a.Hk > 1 && next > 0) prefetch_keys(a, u.n, sq.kbos, u.hk, ja < mid ? ja : jb, next);
    // Packed: the next tile is two contiguous runs (K then V rows), asked for into L2 during this tile's
    // two products (kpf, vpf: see Prefetcher), K during the scores, V during P V.
    Prefetcher kpf, vpf;
    if (packed && next > 0) {
      const int64_t jn = ja < mid ? ja : jb;
      kpf.p = reinterpret_cast<const char*>(p.kpack + (pbase + jn) * D);
      kpf.end = kpf.p + static_cast<int64_t>(next) * D * 4;
      vpf.p = reinterpret_cast<const char*>(p.vpack + (pbase + jn) * vld);
      vpf.end = vpf.p + static_cast<int64_t>(next) * vld * 4;
      // Steps: one per full microkernel tile: nk / kMmMR of the scores (rows: keys), ncols / kMmMR per
      // column block of P V (rows: columns); what is left goes after each product.
      const int64_t ks = std::max(1, nk / kMmMR), vs = std::max(1, ncols / kMmMR) * std::max(1, Dv / (kMmNV * W));
      kpf.per = static_cast<int>((kpf.end - kpf.p + 64 * ks - 1) / (64 * ks));
      vpf.per = static_cast<int>((vpf.end - vpf.p + 64 * vs - 1) / (64 * vs));
    }
    // The gate rows of the epilogue (one per column, Hq*Dv apart): asked for during the last tile, so they
    // are in cache when it ends (measured on the T = 4096 prefill: the elementwise gate costs ~2.5% with
    // this, ~4% without).
    if (next == 0 && a.gate_kind != GateKind::none && u.slot < 0) prefetch_gate(a, p, u, sq);
    const void *KA, *VA, *KB = nullptr, *VB = nullptr;
    fetch(xa, na, 0, KA, VA);
    if (nb) fetch(xb, nb, na, KB, VB);
    if (dot) {
      // Units of several kv heads: asks for the V rows' pages while it reads K (measured on a decode: 1.2x).
      const bool vpf = u.nkv > 1;
      with_loader([&](auto loader) {
        using T = typename decltype(loader)::T;
        scores_dot<decltype(loader)>(na, nb, u.nkv, cols, npad, D, static_cast<const T*>(KA), static_cast<const T*>(KB),
                                     ldk, w.q, w.st, vpf ? static_cast<const char*>(VA) : nullptr,
                                     vpf ? static_cast<const char*>(VB) : nullptr, static_cast<int64_t>(u.nkv) * Dv * esz,
                                     static_cast<int64_t>(ldv) * esz);
      });
    } else {
      mm<kMmSet>(nk, npad, D, static_cast<const float*>(KA), ldk, 1, w.q, npad, w.st, npad, w.alpha, &kpf);
    }
    kpf.per = 1 << 20;
    kpf.step();  // the rest, if the scores took fewer steps (the dot-product path takes none)

    // A tile holding a key past some column's last visible key: mask those entries with -inf.
    const bool masked = a.causal && (nb && xb + nb > xa + na ? xb + nb : xa + na) - 1 > lim_min;
    if (masked) {
      mask(xa, na, 0);
      if (nb) mask(xb, nb, na);
    }
    const bool rescale = masked ? softmax_tile<true>(nk, ncols, npad, w.st, w.m, w.l, w.alpha)
                                : softmax_tile<false>(nk, ncols, npad, w.st, w.m, w.l, w.alpha);
    bool hidden_bad = false;  // a NaN/Inf in the V row of a key some column cannot see (see pv_visible)
    if (masked)
      with_loader([&](auto loader) {
        using T = typename decltype(loader)::T;
        hidden_bad = hidden_nonfinite<decltype(loader)>(na, nb, xa, xb, lim_min, u.nkv, Dv, static_cast<const T*>(VA),
                                                        static_cast<const T*>(VB), ldv);
      });
    if (hidden_bad) {
      with_loader([&](auto loader) {
        using T = typename decltype(loader)::T;
        pv_visible<decltype(loader)>(na, nb, xa, xb, ncols, cols, npad, Dv, dvp, w.st, static_cast<const T*>(VA),
                                     static_cast<const T*>(VB), ldv, w.lim, w.alpha, first, rescale, w.o);
      });
    } else if (u.nkv > 1) {  // several kv heads: key by key (pv_keys), O first set or rescaled as a whole
      if (first) std::memset(w.o, 0, static_cast<size_t>(ncols) * dvp * sizeof(float));
      else if (rescale) scale_rows(ncols, dvp, w.alpha, w.o);
      with_loader([&](auto loader) {
        using T = typename decltype(loader)::T;
        pv_keys<decltype(loader)>(na, nb, u.nkv, cols, npad, Dv, dvp, w.st, static_cast<const T*>(VA),
                                  static_cast<const T*>(VB), ldv, w.o);
      });
    } else {  // one kv head: the microkernel over the whole tile, O set, rescaled or accumulated on the way
      const float* V = static_cast<const float*>(VA);
      if (first) mm<kMmSet>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha, &vpf);
      else if (rescale) mm<kMmScale>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha, &vpf);
      else mm<kMmAdd>(ncols, Dv, nk, w.st, 1, npad, V, ldv, w.o, dvp, w.alpha, &vpf);
    }
    vpf.per = 1 << 20;
    vpf.step();
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

// Packs keys [j0, j1) of sequence n, kv head hk (see AttnPlan::kpack), converting to float32.
void pack_kv(const AttentionArgs& a, int n, int hk, int64_t j0, int64_t j1, float* kdst, float* vdst) {
  const Seq sq = seq_of(a, n);
  const DType kvt = kv_dtype_of(a);
  const int vld = vtile_ld(a.Dv);
  for (int64_t j = j0; j < j1; j++) {
    const int64_t row = key_row(a, n, sq.kbos, j) * a.Hk + hk;
    load_row(a.k, kvt, row * a.D, a.D, kdst + (j - j0) * a.D);
    load_row(a.v, kvt, row * a.Dv, a.Dv, vdst + (j - j0) * vld);
  }
}

extern const AttentionKernels kAttentionKernels = {workspace_floats, partial_floats, run_unit, merge_unit, pack_kv};

}  // namespace SK_LEVEL_NS
}  // namespace sk
