// linear's per-level kernels (see linear.h), written once against Vec and compiled per SIMD level: the GEMV
// of few rows with the weights widened as they load (LoadF32 / LoadF16 / LoadBF16 of convert_impl.h), and the
// GEMM tile that packs weight panels and runs gemm_impl.h's register-blocked microkernel on them.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "convert_impl.h"
#include "linear.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

// Weight rows per register block for M rows: R x M accumulators, R weight vectors and one x vector fit the
// register file (32 zmm, 16 ymm), so nothing spills in the inner loop.
template <int M>
constexpr int rows_per_block() {
#if defined(__AVX512F__)
  return M <= 6 ? 4 : 3;
#else
  return M <= 2 ? 4 : M == 3 ? 3 : M <= 6 ? 2 : 1;
#endif
}

// Keeps v in a register: the compiler otherwise folds a row's x load into each of the R FMAs that use it
// (R x M loads a step where R + M do; at M = 8, R = 3: 27 against 11, over what the load ports take).
inline void in_register(V_& v) {
#if defined(__AVX2__)
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

#if defined(__AVX512F__)
// out[i] = Vec::hsum of accumulator i0 + i (c in row-major order; zeros past R x M), bit for bit: the same tree as _mm512_reduce_add_ps (lane l + l ^ 8,
// then + l ^ 4, then (l, l ^ 2), then (l, l ^ 1)), done on 16 vectors at once so each shuffle and add serves
// several sums (45 operations for 16 where one at a time takes 8 each). Output lane 4q + s holds input
// 4s + q, so the inputs go in transposed.
template <int R, int M>
__attribute__((always_inline)) inline void hsums(const V_ (&c)[R][M], int i0, float* out) {
  __m512 in[16];
  _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {
    const int src = i0 + (i % 4) * 4 + i / 4;
    in[i] = src < R * M ? c[src / M][src % M] : _mm512_setzero_ps();
  }
  __m512 s[8], u[4], p[2];
  _Pragma("GCC unroll 16") for (int i = 0; i < 8; i++)  // quarters (a0 + a2, a1 + a3, b0 + b2, b1 + b3)
    s[i] = _mm512_add_ps(_mm512_shuffle_f32x4(in[2 * i], in[2 * i + 1], 0x44), _mm512_shuffle_f32x4(in[2 * i], in[2 * i + 1], 0xEE));
  _Pragma("GCC unroll 16") for (int i = 0; i < 4; i++)  // one quarter per input: its 128-bit halves summed
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0x88), _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0xDD));
  _Pragma("GCC unroll 16") for (int i = 0; i < 2; i++)  // (t0 + t2, t1 + t3) of each quarter
    p[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44), _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
  _mm512_store_ps(out, _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], 0x88), _mm512_shuffle_ps(p[0], p[1], 0xDD)));
}

// A block's R x M sums (sum[r * M + m], as hsums left them) into y: bias + sum on the first K chunk, else added.
template <int R, int M>
__attribute__((always_inline)) inline void store_sums(const float* sum, int j, bool first, const float* bias, float* y, int64_t ldy) {
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {
    const float b = bias ? bias[j + r] : 0.f;
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) {
      float& out = y[m * ldy + j + r];
      out = first ? b + sum[r * M + m] : out + sum[r * M + m];
    }
  }
}
#endif

// Output features [j, j + R) of M rows over columns [k0, k1) of x (row stride ldx): each weight vector is
// loaded (widened) once and applied to the M rows, one accumulator per (feature, row) summed in k order,
// so a row's bits are the same whatever M and R are. `first`: y = bias + sum, else y += sum (K chunks).
// pf: where the next block's first weight row reads this chunk (its rows K apart), prefetched as this one
// is computed, so its pieces arrive while this block works from L1.
template <class L, int M, int R>
inline void gemv_block(const float* x, int64_t ldx, int K, const typename L::T* w, int j, int k0, int k1,
                       const typename L::T* pf, int pfr, bool first, const float* bias, float* y, int64_t ldy) {
  using T = typename L::T;
  constexpr int W = Vec::W;
  constexpr int kLine = 64 / sizeof(T);  // elements per cache line
  V_ c[R][M];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) c[r][m] = Vec::zero();
  const T* wr[R];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) wr[r] = w + static_cast<int64_t>(j + r) * K;
  // The next block's lines, spread over this block's iterations: line i of its pfr rows at iteration i.
  const int pf_lines = (k1 - k0 + kLine - 1) / kLine;
  int k = k0, it = 0;
  for (; k + W <= k1; k += W, it++) {
    if (it < pf_lines) {
      for (int r = 0; r < pfr; r++) prefetch(pf + static_cast<int64_t>(r) * K + it * kLine);
    }
    V_ wv[R];
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) wv[r] = L::load(wr[r] + k);
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) {
      V_ xv = Vec::load(x + m * ldx + k);
      if (R > 1) in_register(xv);
      _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) c[r][m] = Vec::fma(wv[r], xv, c[r][m]);
    }
  }
  if (k < k1) {  // the row's tail (zero lanes past it)
    const int n = k1 - k;
    V_ wv[R];
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) wv[r] = L::loadp(wr[r] + k, n);
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) {
      const V_ xv = Vec::loadp(x + m * ldx + k, n);
      _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) c[r][m] = Vec::fma(wv[r], xv, c[r][m]);
    }
  }
#if defined(__AVX512F__)
  if (R * M >= 8) {  // the sums 16 at a time (the same bits as one at a time below)
    alignas(64) float sum[(R * M + 15) / 16 * 16];
    _Pragma("GCC unroll 4") for (int i = 0; i < R * M; i += 16) hsums<R, M>(c, i, sum + i);
    store_sums<R, M>(sum, j, first, bias, y, ldy);
    return;
  }
#endif
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {
    const float b = bias ? bias[j + r] : 0.f;
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) {
      float& out = y[m * ldy + j + r];
      out = first ? b + Vec::hsum(c[r][m]) : out + Vec::hsum(c[r][m]);
    }
  }
}

#if defined(__AVX512F__)
// gemv_block for bfloat16 weights at AVX-512, widening in the load ports: a zero-masked 16-bit load keeping
// the odd words puts each kept value in the top half of its 32-bit lane, which is the value as a float32. From
// the row at k - 1 that gives the even columns k, k + 2, ..., k + 30; from k the odd ones. No shift or permute
// on the FMA ports (the widening there cost 3 of 19 cycles a step at M = 8). x comes permuted to match
// (gemv_x: each 32 columns as their 16 even then their 16 odd, zeros past K), so accumulator pair (even, odd)
// lane i sums columns 32s + 2i and 32s + 2i + 1: a fixed order whatever M is. The masked-off word before
// the row is never read (masked lanes do not fault).
template <int M, int R>
inline void gemv_block_bf16(const float* x, int64_t ldx, int K, const uint16_t* w, int j, int k0, int k1,
                            const uint16_t* pf, int pfr, bool first, const float* bias, float* y, int64_t ldy) {
  constexpr __mmask32 kOdd = 0xAAAAAAAAu;
  V_ c[R][M];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) c[r][m] = Vec::zero();
  const uint16_t* wr[R];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) wr[r] = w + static_cast<int64_t>(j + r) * K;
  const int pf_lines = (k1 - k0 + 31) / 32;
  auto step = [&](int k, __mmask32 me, __mmask32 mo) {
    V_ we[R], wo[R];
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {
      we[r] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(me, wr[r] + k - 1));
      wo[r] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mo, wr[r] + k));
    }
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) {
      V_ xe = Vec::load(x + m * ldx + k), xo = Vec::load(x + m * ldx + k + 16);
      if (R > 1) in_register(xe), in_register(xo);
      _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) c[r][m] = Vec::fma(we[r], xe, c[r][m]);
      _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) c[r][m] = Vec::fma(wo[r], xo, c[r][m]);
    }
  };
  int k = k0, it = 0;
  for (; k + 32 <= k1; k += 32, it++) {
    if (it < pf_lines) {
      for (int r = 0; r < pfr; r++) prefetch(pf + static_cast<int64_t>(r) * K + it * 32);
    }
    step(k, kOdd, kOdd);
  }
  if (k < k1) {  // the row's tail: even columns k + 2i < k1 (word 2i + 1 <= n), odd ones k + 2i + 1 < k1
    const int n = k1 - k;
    step(k, kOdd & static_cast<__mmask32>((uint64_t{1} << (n + 1)) - 1), kOdd & static_cast<__mmask32>((uint64_t{1} << n) - 1));
  }
  alignas(64) float sum[(R * M + 15) / 16 * 16];
  _Pragma("GCC unroll 4") for (int i = 0; i < R * M; i += 16) hsums<R, M>(c, i, sum + i);
  store_sums<R, M>(sum, j, first, bias, y, ldy);
}
#endif

// Features [j0, j1) of M rows: the K axis in chunks of kLinearChunk columns, the features in blocks of R. The
// sums are cut at the chunks (y = bias + chunk 0, then y += each next chunk) whatever the order the pieces
// are visited in, and the chunk does not depend on M, so neither do a row's bits. Two orders:
//   - rows first, when all M rows of x fit in L1 (M = 1 to K = 8192): each block streams its weight rows start
//     to end, prefetching its next chunk (or the next block's first) as it computes one;
//   - chunks first (more rows), in groups of kGemvGroup blocks: the M rows' chunk stays in L1 while the
//     group's blocks pass over it, each prefetching the next block's piece; then the next chunk of the same
//     group. A group keeps few weight rows in flight (12 at R = 3), each read on in long pieces, which the
//     hardware prefetcher follows (the whole task's 48 rows at once ran at half the rate at 8 rows).
constexpr int kGemvGroup = 4;  // blocks per group in the chunks-first order

template <class L, int M>
void gemv_rows(const float* x, int64_t ldx, int K, const void* wv, int j0, int j1, const float* bias, float* y,
               int64_t ldy) {
  using T = typename L::T;
  constexpr int R = rows_per_block<M>();
  const T* w = static_cast<const T*>(wv);
  const int jfull = j0 + (j1 - j0) / R * R;
  auto rows_at = [&](int j) { return j < jfull ? R : 1; };  // the block starting at j
  auto chunk_end = [&](int k0) { return K - k0 < kLinearChunk ? K : k0 + kLinearChunk; };
  auto block = [&](int j, int k0, const T* pf, int pfr) {
    const int k1 = chunk_end(k0);
#if defined(__AVX512F__)
    if (std::is_same<L, LoadBF16>::value) {
      const uint16_t* wb = reinterpret_cast<const uint16_t*>(w);
      const uint16_t* pb = reinterpret_cast<const uint16_t*>(pf);
      if (j < jfull) gemv_block_bf16<M, R>(x, ldx, K, wb, j, k0, k1, pb, pfr, k0 == 0, bias, y, ldy);
      else gemv_block_bf16<M, 1>(x, ldx, K, wb, j, k0, k1, pb, pfr, k0 == 0, bias, y, ldy);
      return;
    }
#endif
    if (j < jfull) gemv_block<L, M, R>(x, ldx, K, w, j, k0, k1, pf, pfr, k0 == 0, bias, y, ldy);
    else gemv_block<L, M, 1>(x, ldx, K, w, j, k0, k1, pf, pfr, k0 == 0, bias, y, ldy);
  };
  const T* wrow = w;  // row 0: prefetch target past the task's end (harmless, prefetches never fault)
  if (static_cast<int64_t>(M) * K * 4 <= 32 * 1024) {
    for (int j = j0; j < j1; j += rows_at(j)) {
      const int nr = rows_at(j);
      for (int k0 = 0; k0 < K; k0 += kLinearChunk) {
        const int k1 = chunk_end(k0);
        if (k1 < K) block(j, k0, w + static_cast<int64_t>(j) * K + k1, nr);
        else if (j + nr < j1) block(j, k0, w + static_cast<int64_t>(j + nr) * K, rows_at(j + nr));
        else block(j, k0, wrow, 0);
      }
    }
    return;
  }
  for (int g0 = j0; g0 < j1;) {
    int g1 = g0;  // the group: features [g0, g1)
    for (int b = 0; b < kGemvGroup && g1 < j1; b++) g1 += rows_at(g1);
    for (int k0 = 0; k0 < K; k0 += kLinearChunk) {
      const int k1 = chunk_end(k0);
      for (int j = g0; j < g1; j += rows_at(j)) {
        const int nr = rows_at(j);
        // Next in visit order: the group's next block, its first at the next chunk, or the next group's first.
        if (j + nr < g1) block(j, k0, w + static_cast<int64_t>(j + nr) * K + k0, rows_at(j + nr));
        else if (k1 < K) block(j, k0, w + static_cast<int64_t>(g0) * K + k1, rows_at(g0));
        else if (g1 < j1) block(j, k0, w + static_cast<int64_t>(g1) * K, rows_at(g1));
        else block(j, k0, wrow, 0);
      }
    }
    g0 = g1;
  }
}

template <class L>
void gemv_dispatch(const float* x, int64_t ldx, int M, int K, const void* w, int j0, int j1, const float* bias, float* y,
                   int64_t ldy) {
  switch (M) {
    case 1: return gemv_rows<L, 1>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 2: return gemv_rows<L, 2>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 3: return gemv_rows<L, 3>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 4: return gemv_rows<L, 4>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 5: return gemv_rows<L, 5>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 6: return gemv_rows<L, 6>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 7: return gemv_rows<L, 7>(x, ldx, K, w, j0, j1, bias, y, ldy);
    case 8: return gemv_rows<L, 8>(x, ldx, K, w, j0, j1, bias, y, ldy);
    default: return;
  }
}

void gemv(const float* x, int64_t ldx, int M, int K, const void* w, DType wdt, int j0, int j1, const float* bias, float* y,
          int64_t ldy) {
  if (K == 0) {  // no columns: the bias (or zeros)
    for (int m = 0; m < M; m++)
      for (int j = j0; j < j1; j++) y[m * ldy + j] = bias ? bias[j] : 0.f;
    return;
  }
  switch (wdt) {
    case DType::f32: return gemv_dispatch<LoadF32>(x, ldx, M, K, w, j0, j1, bias, y, ldy);
    case DType::f16: return gemv_dispatch<LoadF16>(x, ldx, M, K, w, j0, j1, bias, y, ldy);
    case DType::bf16: return gemv_dispatch<LoadBF16>(x, ldx, M, K, w, j0, j1, bias, y, ldy);
  }
}

// ---- GEMM: an MR x NR tile of y in registers (MR broadcasts of x and NV weight vectors per k feed MR x NV
// FMAs), over x packed once per call and weight panels packed once per task and chunk.
#if defined(__AVX512F__)
constexpr int kMRg = 12, kNVg = 2;  // 24 accumulators + 2 weight vectors + 1 broadcast of 32 zmm
#elif defined(__AVX2__)
constexpr int kMRg = 6, kNVg = 2;   // 12 + 2 + 1 of 16 ymm
#else
constexpr int kMRg = 4, kNVg = 2;
#endif
constexpr int kNRg = kNVg * Vec::W;

// y rows [0, rows) x columns [0, ncols) of the tile (+)= a . b over kc: a [kc][MR] (x's packed tile), b [kc][NR]
// (a packed panel). first: y = bias + a . b (bias at the tile's columns, or null), else y += a . b.
// pf, pf_lines: lines asked for into L2 on the way, one every few iterations of p (see gemm_tiles).
template <bool kFullCols>
inline void gemm_micro(int kc, const float* a, const float* b, float* y, int64_t ldy, int rows, int ncols,
                       const float* bias, bool first, const char* pf = nullptr, int pf_lines = 0) {
  constexpr int W = Vec::W;
  V_ c[kMRg][kNVg];
  auto width = [&](int v) { return ncols - v * W < W ? ncols - v * W : W; };
  _Pragma("GCC unroll 16") for (int v = 0; v < kNVg; v++) {
    V_ init = Vec::zero();
    if (first && bias) init = kFullCols ? Vec::load(bias + v * W) : (width(v) > 0 ? Vec::loadp(bias + v * W, width(v)) : Vec::zero());
    _Pragma("GCC unroll 16") for (int i = 0; i < kMRg; i++) {
      if (first || i >= rows) c[i][v] = init;
      else if (kFullCols) c[i][v] = Vec::load(y + i * ldy + v * W);
      else c[i][v] = width(v) > 0 ? Vec::loadp(y + i * ldy + v * W, width(v)) : Vec::zero();
    }
  }
  const int stride = pf_lines > 0 ? (kc / pf_lines > 0 ? kc / pf_lines : 1) : 1 << 30;
  int cnt = stride;
  const char* pe = pf + static_cast<int64_t>(pf_lines) * 64;
  for (int p = 0; p < kc; p++) {
    if (--cnt == 0) {  // __builtin_prefetch: around an asm statement GCC kept c in memory (attention_impl.h)
      cnt = stride;
      if (pf < pe) __builtin_prefetch(pf, 0, 2), pf += 64;
    }
    V_ bv[kNVg];
    _Pragma("GCC unroll 16") for (int v = 0; v < kNVg; v++) bv[v] = Vec::load(b + p * kNRg + v * W);
    _Pragma("GCC unroll 16") for (int i = 0; i < kMRg; i++) {
      const V_ av = Vec::set1(a[p * kMRg + i]);
      _Pragma("GCC unroll 16") for (int v = 0; v < kNVg; v++) c[i][v] = Vec::fma(av, bv[v], c[i][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int i = 0; i < kMRg; i++) {
    if (i >= rows) break;
    _Pragma("GCC unroll 16") for (int v = 0; v < kNVg; v++) {
      if (kFullCols) Vec::store(y + i * ldy + v * W, c[i][v]);
      else if (width(v) > 0) Vec::storep(y + i * ldy + v * W, c[i][v], width(v));
    }
  }
}

// Row tiles [t0, t1) of x [M, K] (float32) into xp: chunk c (columns c * kLinearKC ...) of tile t at
// xp + c * kLinearKC * Mp + t * kMRg * kc as [kc][MR] (rows past M zero), Mp = M rounded up to MR.
void pack_x(const float* x, int64_t M, int K, int64_t t0, int64_t t1, float* xp) {
  const int64_t Mp = (M + kMRg - 1) / kMRg * kMRg;
  for (int k0 = 0; k0 < K; k0 += kLinearKC) {
    const int kc = K - k0 < kLinearKC ? K - k0 : kLinearKC;
    for (int64_t t = t0; t < t1; t++) {
      float* dst = xp + static_cast<int64_t>(k0) * Mp + t * kMRg * kc;
      for (int i = 0; i < kMRg; i++) {
        const int64_t r = t * kMRg + i;
        if (r >= M) {
          for (int kk = 0; kk < kc; kk++) dst[kk * kMRg + i] = 0.f;
          continue;
        }
        const float* src = x + r * K + k0;
        for (int kk = 0; kk < kc; kk++) dst[kk * kMRg + i] = src[kk];
      }
    }
  }
}

// Row tiles [t0, t1) of y (rows of M, stride ldy) x features [j0, j1): for each chunk of kLinearKC columns the
// features' weights are widened and packed into panels (panel p: [kc][NR], feature j0 + p * NR + col, zeros
// past j1; pack: kLinearKC x (j1 - j0 rounded up to NR) floats), then each panel meets every row tile while
// it stays in L1. y starts as the bias in the first chunk.
void gemm_tiles(const float* xp, int64_t M, int K, const void* w, DType wdt, int j0, int j1, int64_t t0, int64_t t1,
                const float* bias, float* y, int64_t ldy, float* pack) {
  const int64_t Mp = (M + kMRg - 1) / kMRg * kMRg;
  const int ncols = j1 - j0, npanels = (ncols + kNRg - 1) / kNRg;
  if (K == 0) {  // no columns: the bias (or zeros)
    for (int64_t r = t0 * kMRg; r < M && r < t1 * kMRg; r++)
      for (int j = j0; j < j1; j++) y[r * ldy + j] = bias ? bias[j] : 0.f;
    return;
  }
  alignas(64) float row[kLinearKC];
  const int esz = wdt == DType::f32 ? 4 : 2;
  // The task's y block is summed in a dense buffer after the panels, copied to y at the end: y's own rows
  // (N floats apart, 16 KiB at N = 4096) fall on a few L2 sets, where the block's rows evicted each other
  // between chunks and each microkernel call waited on its tile's loads.
  float* yb = pack + static_cast<int64_t>(kLinearKC) * kLinearNC;
  const int64_t ldb = static_cast<int64_t>(npanels) * kNRg;
  for (int k0 = 0; k0 < K; k0 += kLinearKC) {
    const int kc = K - k0 < kLinearKC ? K - k0 : kLinearKC;
    int cv = 0;  // features packed by blocks of 16 (AVX-512, float32)
#if defined(__AVX512F__)
    // 16 features x 16 columns at a time, transposed in registers: one full-line store per panel row, where
    // a store per value (panel rows 128 bytes apart) waited on the store buffer (~8% of the call).
    if (wdt == DType::f32 && kc % 16 == 0)
      for (; cv + 16 <= ncols; cv += 16) {
        const float* src = static_cast<const float*>(w) + static_cast<int64_t>(j0 + cv) * K + k0;
        float* dst = pack + static_cast<int64_t>(cv / kNRg) * kc * kNRg + cv % kNRg;
        for (int kb = 0; kb < kc; kb += 16) {
          __m512 r[16];
          for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + static_cast<int64_t>(i) * K + kb);
          transpose16(r);
          for (int k = 0; k < 16; k++) _mm512_storeu_ps(dst + static_cast<int64_t>(kb + k) * kNRg, r[k]);
        }
      }
#endif
    for (int c = cv; c < npanels * kNRg; c++) {
      float* dst = pack + static_cast<int64_t>(c / kNRg) * kc * kNRg + c % kNRg;
      if (c >= ncols) {
        for (int kk = 0; kk < kc; kk++) dst[kk * kNRg] = 0.f;
        continue;
      }
      if (wdt == DType::f32) {  // in place: no copy first
        const float* src = static_cast<const float*>(w) + static_cast<int64_t>(j0 + c) * K + k0;
        for (int kk = 0; kk < kc; kk++) dst[kk * kNRg] = src[kk];
        continue;
      }
      load_row(w, wdt, static_cast<int64_t>(j0 + c) * K + k0, kc, row);
      for (int kk = 0; kk < kc; kk++) dst[kk * kNRg] = row[kk];
    }
    // The next chunk's weights: each feature's row piece (kc2 values) is on its own page (rows K apart), where
    // the hardware prefetchers stop, and read one after another by the packing it waited on each piece's
    // misses (measured at AVX-512, 512 x 4096 x 4096 on one thread: ~10% of the call). Asked for into L2
    // during this chunk's products instead, one feature's piece per microkernel call.
    const int k2 = k0 + kc, kc2 = K - k2 < kLinearKC ? K - k2 : kLinearKC;
    const int pf_lines = k2 < K ? (kc2 * esz + 63) / 64 : 0;
    int pf_row = 0;
    auto pf_at = [&]() -> const char* {
      if (pf_lines == 0 || pf_row >= ncols) return nullptr;
      return static_cast<const char*>(w) + (static_cast<int64_t>(j0 + pf_row++) * K + k2) * esz;
    };
    const float* xc = xp + static_cast<int64_t>(k0) * Mp;
    for (int p = 0; p < npanels; p++) {
      const int jc = j0 + p * kNRg, pw = j1 - jc < kNRg ? j1 - jc : kNRg;
      const float* b = pack + static_cast<int64_t>(p) * kc * kNRg;
      const float* bb = bias ? bias + jc : nullptr;
      for (int64_t t = t0; t < t1; t++) {
        const int rows = M - t * kMRg < kMRg ? static_cast<int>(M - t * kMRg) : kMRg;
        float* yt = yb + (t - t0) * kMRg * ldb + p * kNRg;
        const float* a = xc + t * kMRg * kc;
        const char* pf = pf_at();
        const int pn = pf ? pf_lines : 0;
        if (pw == kNRg) gemm_micro<true>(kc, a, b, yt, ldb, rows, pw, bb, k0 == 0, pf, pn);
        else gemm_micro<false>(kc, a, b, yt, ldb, rows, pw, bb, k0 == 0, pf, pn);
      }
    }
    for (const char* pf = pf_at(); pf; pf = pf_at())  // fewer calls than features: the rest at once
      for (int l = 0; l < pf_lines; l++) prefetch_l2(pf + l * 64);
  }
  for (int64_t r = t0 * kMRg; r < M && r < t1 * kMRg; r++)
    std::memcpy(y + r * ldy + j0, yb + (r - t0 * kMRg) * ldb, sizeof(float) * ncols);
}

void to_f32(const void* src, DType dt, int64_t off, int n, float* dst) { load_row(src, dt, off, n, dst); }

// A row of the GEMV's x as gemv reads it: float32, and at AVX-512 with bfloat16 weights each 32 columns as
// their 16 even then their 16 odd (gemv_block_bf16), zeros to the next 32. dst: K rounded up to 32 floats.
void gemv_x(const void* src, DType dt, int64_t off, int K, DType wdt, float* dst) {
#if defined(__AVX512F__)
  if (wdt == DType::bf16) {
    alignas(64) float t[32];
    for (int k = 0; k < K; k += 32) {
      const int n = K - k < 32 ? K - k : 32;
      if (n < 32) std::memset(t, 0, sizeof(t));
      load_row(src, dt, off + k, n, t);
      const __m512 a = _mm512_load_ps(t), b = _mm512_load_ps(t + 16);
      const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
      _mm512_storeu_ps(dst + k, _mm512_permutex2var_ps(a, ev, b));
      _mm512_storeu_ps(dst + k + 16, _mm512_permutex2var_ps(a, od, b));
    }
    return;
  }
#endif
  (void)wdt;
  load_row(src, dt, off, K, dst);
}
void from_f32(const float* src, void* dst, DType dt, int64_t off, int n) { store_row(dst, dt, off, n, src); }

}  // namespace

extern const LinearKernels kLinearKernels = {kMRg, kNRg, gemv, pack_x, gemm_tiles, to_f32, from_f32, gemv_x};

}  // namespace SK_LEVEL_NS
}  // namespace sk
