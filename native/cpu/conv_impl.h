// The causal convolution's kernels, written once and compiled per SIMD level (conv_<level>.cc). The tile (long
// sequences): its inputs (W - 1 earlier positions, then its tokens) converted to float32 rows of 64 channels,
// W fused multiply-adds per output vector in j order (the same order at every level), silu, then stored in
// x's dtype. The update (short sequences, every decode): the same sums with the window held in registers.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "conv.h"
#include "convert_impl.h"
#include "silu_impl.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

constexpr int LD = kConvTileD;  // channels per scratch row (a multiple of every level's vector width)
static_assert(LD % Vec::W == 0, "tile rows hold whole vectors");

// Column col of channels [d0, d0 + dc) of a [D, P] state block, as float32 (the dtype switch outside the loop).
void gather_column(const void* st, DType dt, int64_t d0, int dc, int P, int col, float* row) {
  const int64_t base = d0 * P + col;
  if (dt == DType::f32) {
    const float* p = static_cast<const float*>(st) + base;
    for (int c = 0; c < dc; c++) row[c] = p[static_cast<int64_t>(c) * P];
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(st) + base;
    if (dt == DType::bf16) for (int c = 0; c < dc; c++) row[c] = bf16_to_float(p[static_cast<int64_t>(c) * P]);
    else for (int c = 0; c < dc; c++) row[c] = half_to_float(p[static_cast<int64_t>(c) * P]);
  }
}

// The reverse: row[0 .. dc) into column col of the state block, rounded to its dtype.
void scatter_column(void* st, DType dt, int64_t d0, int dc, int P, int col, const float* row) {
  const int64_t base = d0 * P + col;
  if (dt == DType::f32) {
    float* p = static_cast<float*>(st) + base;
    for (int c = 0; c < dc; c++) p[static_cast<int64_t>(c) * P] = row[c];
  } else {
    uint16_t* p = static_cast<uint16_t*>(st) + base;
    if (dt == DType::bf16) for (int c = 0; c < dc; c++) p[static_cast<int64_t>(c) * P] = float_to_bf16(row[c]);
    else for (int c = 0; c < dc; c++) p[static_cast<int64_t>(c) * P] = float_to_half(row[c]);
  }
}

// ---- the short-sequence pass (update): channel-major windows deinterleaved in registers
//
// A block of Vec::W channels holds S * Vec::W consecutive floats of a [D, S] array (the state's [D, P], the
// weight's [D, W]): channel c's value i is flat element c * S + i, in vector (c * S + i) / Vec::W. Tap i of
// the block (value i of every channel, one per lane) is assembled from the S vectors by lane selections; the
// reverse puts taps back into the flat layout. Each selection is one masked permute at AVX-512
// (vpermps with merge), a permute and a blend at AVX2.
struct LaneTable {
  int32_t idx[kConvMaxWidth][Vec::W];  // deinterleave: lane c of tap i takes lane idx[i][c] ...
  uint32_t bits[kConvMaxWidth][kConvMaxWidth];  // ... of vector s where bit c of bits[i][s]
  int32_t ridx[kConvMaxWidth][Vec::W];  // interleave: lane l of vector s takes lane ridx[s][l] ...
  uint32_t rbits[kConvMaxWidth][kConvMaxWidth];  // ... of tap i where bit l of rbits[s][i]
};

template <int S>
const LaneTable& lane_table() {
  static const LaneTable t = [] {
    LaneTable r{};
    for (int i = 0; i < S; i++)
      for (int c = 0; c < Vec::W; c++) {
        r.idx[i][c] = (c * S + i) % Vec::W;
        r.bits[i][(c * S + i) / Vec::W] |= 1u << c;
      }
    for (int s = 0; s < S; s++)
      for (int l = 0; l < Vec::W; l++) {
        const int k = s * Vec::W + l;
        r.ridx[s][l] = k / S;
        r.rbits[s][k % S] |= 1u << l;
      }
    return r;
  }();
  return t;
}

// acc with lanes l of `bits` replaced by src[idx[l]].
inline V_ select_lanes(V_ acc, V_ src, const int32_t* idx, uint32_t bits) {
#if defined(__AVX512F__)
  return _mm512_mask_permutexvar_ps(acc, static_cast<__mmask16>(bits), _mm512_loadu_si512(idx), src);
#elif defined(__AVX2__)
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane), lane);
  const __m256 p = _mm256_permutevar8x32_ps(src, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)));
  return _mm256_blendv_ps(acc, p, _mm256_castsi256_ps(m));
#else
  for (int l = 0; l < Vec::W; l++)
    if (bits >> l & 1u) acc.v[l] = src.v[idx[l]];
  return acc;
#endif
}

// S flat vectors v[0..S) -> taps t[0..S).
template <int S>
inline void deinterleave(const V_* v, V_* t) {
  if (S == 1) {
    t[0] = v[0];
    return;
  }
  const LaneTable& lt = lane_table<S>();
  for (int i = 0; i < S; i++) {
    V_ r = Vec::zero();
    for (int s = 0; s < S; s++)
      if (lt.bits[i][s]) r = select_lanes(r, v[s], lt.idx[i], lt.bits[i][s]);
    t[i] = r;
  }
}

// Taps t[0..S) -> S flat vectors v[0..S).
template <int S>
inline void interleave(const V_* t, V_* v) {
  if (S == 1) {
    v[0] = t[0];
    return;
  }
  const LaneTable& lt = lane_table<S>();
  for (int s = 0; s < S; s++) {
    V_ r = Vec::zero();
    for (int i = 0; i < S; i++)
      if (lt.rbits[s][i]) r = select_lanes(r, t[i], lt.ridx[s], lt.rbits[s][i]);
    v[s] = r;
  }
}

// The first n (<= W) lanes of v stored at element off of base, in dtype L's (L: the loader of that dtype).
template <class L>
inline void store_lanes(void* base, int64_t off, int n, V_ v) {
  if (std::is_same<L, LoadF32>::value) {
    float* p = static_cast<float*>(base) + off;
    if (n == Vec::W) Vec::store(p, v);
    else Vec::storep(p, v, n);
    return;
  }
  alignas(64) float tmp[Vec::W];
  Vec::store(tmp, v);
  store_row(base, std::is_same<L, LoadBF16>::value ? DType::bf16 : DType::f16, off, n, tmp);
}

template <class L>
inline V_ load_lanes(const void* base, int64_t off, int n) {
  const typename L::T* p = static_cast<const typename L::T*>(base) + off;
  return n == Vec::W ? L::load(p) : L::loadp(p, n);
}

static_assert(kConvUpdateChunk % 16 == 0, "chunks hold whole blocks");

// One sequence of T tokens over the chunk's channels [d0, d0 + dc): per block of Vec::W channels, its P state
// taps deinterleaved into registers, T outputs by W multiply-adds in j order (the tile's order, so both give
// the same bits), each token shifting into the taps, and the last P taps interleaved back into the state.
// wt: the chunk's weight taps, block b's tap j at (b * (W + 1) + j) * Vec::W, the bias after the W taps.
template <int P, class LX, class LS>
void update_seq(const ConvArgs& a, const float* wt, int64_t s0, int T, int64_t d0, int dc, const void* state, void* state_out) {
  constexpr int W = P + 1;
  constexpr int NS = P > 0 ? P : 1;
  const int64_t D = a.D;
  for (int c0 = 0, b = 0; c0 < dc; c0 += Vec::W, b++) {
    const int cw = dc - c0 < Vec::W ? dc - c0 : Vec::W;
    const float* wb = wt + static_cast<int64_t>(b) * (W + 1) * Vec::W;
    V_ tap[NS], flat[NS];
    const int64_t soff = (d0 + c0) * P;
    for (int s = 0; s < P; s++) {
      const int n = cw * P - s * Vec::W;
      flat[s] = !state || n <= 0 ? Vec::zero() : load_lanes<LS>(state, soff + s * Vec::W, n < Vec::W ? n : Vec::W);
    }
    if (P > 0) deinterleave<NS>(flat, tap);
    const V_ bias = Vec::load(wb + W * Vec::W);
    for (int t = 0; t < T; t++) {
      const int64_t xoff = (s0 + t) * D + d0 + c0;
      const V_ x = load_lanes<LX>(a.x, xoff, cw);
      V_ acc = bias;
      for (int j = 0; j < P; j++) acc = Vec::fma(Vec::load(wb + j * Vec::W), tap[j], acc);
      acc = Vec::fma(Vec::load(wb + P * Vec::W), x, acc);
      if (a.silu) acc = vsilu(acc);
      store_lanes<LX>(a.y, xoff, cw, acc);
      for (int j = 0; j + 1 < P; j++) tap[j] = tap[j + 1];
      if (P > 0) tap[NS - 1] = x;
    }
    if (P > 0 && state_out) {
      interleave<NS>(tap, flat);
      for (int s = 0; s < P; s++) {
        const int n = cw * P - s * Vec::W;
        if (n > 0) store_lanes<LS>(state_out, soff + s * Vec::W, n < Vec::W ? n : Vec::W, flat[s]);
      }
    }
  }
}

// The chunk's weight taps and bias into wt (see update_seq), from weight [D, W] and bias in their dtypes.
template <int P>
void chunk_taps(const ConvArgs& a, int64_t d0, int dc, float* wt) {
  constexpr int W = P + 1;
  alignas(64) float row[W * Vec::W];
  for (int c0 = 0, b = 0; c0 < dc; c0 += Vec::W, b++) {
    const int cw = dc - c0 < Vec::W ? dc - c0 : Vec::W;
    for (int i = cw * W; i < W * Vec::W; i++) row[i] = 0.f;
    load_row(a.w, a.wdt, (d0 + c0) * W, cw * W, row);
    V_ flat[W], tap[W];
    for (int s = 0; s < W; s++) flat[s] = Vec::load(row + s * Vec::W);
    deinterleave<W>(flat, tap);
    float* wb = wt + static_cast<int64_t>(b) * (W + 1) * Vec::W;
    for (int j = 0; j < W; j++) Vec::store(wb + j * Vec::W, tap[j]);
    for (int i = 0; i < Vec::W; i++) row[i] = 0.f;
    if (a.bias) load_row(a.bias, a.bdt, d0 + c0, cw, row);
    Vec::store(wb + W * Vec::W, Vec::load(row));
  }
}

template <int P, class LX>
void update_p(const ConvArgs& a, const UpdateSeq* seqs, int ns, int64_t d0, int dc, float* wt) {
  chunk_taps<P>(a, d0, dc, wt);
  for (int i = 0; i < ns; i++) {
    const UpdateSeq& q = seqs[i];
    if (q.pad) {
      for (int t = 0; t < q.T; t++)
        for (int c0 = 0; c0 < dc; c0 += Vec::W)
          store_lanes<LX>(a.y, (q.s0 + t) * a.D + d0 + c0, dc - c0 < Vec::W ? dc - c0 : Vec::W, Vec::zero());
      continue;
    }
    switch (a.sdt) {
      case DType::f32: update_seq<P, LX, LoadF32>(a, wt, q.s0, q.T, d0, dc, q.state, q.state_out); break;
      case DType::bf16: update_seq<P, LX, LoadBF16>(a, wt, q.s0, q.T, d0, dc, q.state, q.state_out); break;
      default: update_seq<P, LX, LoadF16>(a, wt, q.s0, q.T, d0, dc, q.state, q.state_out); break;
    }
  }
}

template <int P>
void update_x(const ConvArgs& a, const UpdateSeq* seqs, int ns, int64_t d0, int dc, float* wt) {
  switch (a.xdt) {
    case DType::f32: return update_p<P, LoadF32>(a, seqs, ns, d0, dc, wt);
    case DType::bf16: return update_p<P, LoadBF16>(a, seqs, ns, d0, dc, wt);
    default: return update_p<P, LoadF16>(a, seqs, ns, d0, dc, wt);
  }
}

void update(const ConvArgs& a, const UpdateSeq* seqs, int ns, int64_t d0, int dc, float* wt) {
  switch (a.W - 1) {
    case 0: return update_x<0>(a, seqs, ns, d0, dc, wt);
    case 1: return update_x<1>(a, seqs, ns, d0, dc, wt);
    case 2: return update_x<2>(a, seqs, ns, d0, dc, wt);
    case 3: return update_x<3>(a, seqs, ns, d0, dc, wt);
    case 4: return update_x<4>(a, seqs, ns, d0, dc, wt);
    case 5: return update_x<5>(a, seqs, ns, d0, dc, wt);
    case 6: return update_x<6>(a, seqs, ns, d0, dc, wt);
    default: return update_x<7>(a, seqs, ns, d0, dc, wt);
  }
}

void tile(const ConvArgs& a, const float* wT, const float* bias, int64_t s0, int64_t t0, int tc, int64_t d0, int dc,
          const void* state, void* state_out, float* scratch) {
  const int W = a.W, P = W - 1;
  const int64_t D = a.D;
  float* in = scratch;                                   // (P + tc) rows: positions t0 - P .. t0 + tc - 1
  float* out = scratch + static_cast<int64_t>(P + tc) * LD;  // tc rows
  for (int i = 0; i < P + tc; i++) {
    float* row = in + static_cast<int64_t>(i) * LD;
    const int64_t pos = t0 - P + i;
    if (pos >= 0) {
      load_row(a.x, a.xdt, (s0 + pos) * D + d0, dc, row);
    } else if (state) {
      const int col = static_cast<int>(pos + P);  // state column of position pos (pos in [-P, 0))
      gather_column(state, a.sdt, d0, dc, P, col, row);
    } else {
      for (int c = 0; c < dc; c++) row[c] = 0.f;
    }
    for (int c = dc; c < LD; c++) row[c] = 0.f;
  }
  const int nv = (dc + Vec::W - 1) / Vec::W;
  for (int v = 0; v < nv; v++) {
    const int c = v * Vec::W;
    const int m = dc - c < Vec::W ? dc - c : Vec::W;
    V_ wv[kConvMaxWidth];
    const bool full = m == Vec::W;  // masked loads only on the block's last, partial vector
    for (int j = 0; j < W; j++) wv[j] = full ? Vec::load(wT + j * D + d0 + c) : Vec::loadp(wT + j * D + d0 + c, m);
    const V_ b = !bias ? Vec::zero() : full ? Vec::load(bias + d0 + c) : Vec::loadp(bias + d0 + c, m);
    for (int t = 0; t < tc; t++) {
      V_ acc = b;
      const float* col = in + static_cast<int64_t>(t) * LD + c;
      for (int j = 0; j < W; j++) acc = Vec::fma(wv[j], Vec::load(col + static_cast<int64_t>(j) * LD), acc);
      if (a.silu) acc = vsilu(acc);
      Vec::store(out + static_cast<int64_t>(t) * LD + c, acc);
    }
  }
  for (int t = 0; t < tc; t++) store_row(a.y, a.xdt, (s0 + t0 + t) * D + d0, dc, out + static_cast<int64_t>(t) * LD);
  // The whole sequence in this tile: its final state is rows tc .. tc + P - 1 of `in` (positions T - P .. T - 1,
  // the initial state's columns where T < P), written over the block just read.
  if (state_out)
    for (int i = 0; i < P; i++) scatter_column(state_out, a.sdt, d0, dc, P, i, in + static_cast<int64_t>(tc + i) * LD);
}

void to_f32(const void* src, DType dt, int64_t off, int n, float* dst) { load_row(src, dt, off, n, dst); }

}  // namespace

extern const ConvKernels kConvKernels = {tile, update, to_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
