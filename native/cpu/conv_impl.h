// The causal convolution's tile, written once and compiled per SIMD level (conv_<level>.cc): the tile's
// inputs (W - 1 earlier positions, then its tokens) converted to float32 rows of 64 channels, W fused
// multiply-adds per output vector in j order (the same order at every level), silu, then stored in x's dtype.
#pragma once
#include <cmath>
#include <cstdint>

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

// A scalar multiply-add that rounds as Vec::fma does at this level (fused where the level has FMA), so the
// decode path below gives the tile's bits.
inline float sfma(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// State element i of a channel's [P] window in dtype SD (1 float32, 2 bfloat16, 3 float16).
template <int SD>
inline float sload(const void* p, int64_t i) {
  if (SD == 1) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return SD == 2 ? bf16_to_float(h) : half_to_float(h);
}
template <int SD>
inline void sstore(void* p, int64_t i, float v) {
  if (SD == 1) static_cast<float*>(p)[i] = v;
  else static_cast<uint16_t*>(p)[i] = SD == 2 ? float_to_bf16(v) : float_to_half(v);
}

// A sequence of one token (the decode update): each channel's window read straight from its P contiguous
// state values (no transposed tile), W multiply-adds in j order as the tile, the window shifted back in place.
template <int P, int SD>
void decode(const ConvArgs& a, const float* wT, const float* bias, int64_t row, int64_t d0, int dc, const void* state,
            void* state_out, float* scratch) {
  const int64_t D = a.D;
  float* xr = scratch;
  float* acc = scratch + LD;
  load_row(a.x, a.xdt, row * D + d0, dc, xr);
  for (int c = 0; c < dc; c++) {
    const int64_t d = d0 + c;
    float win[P + 1];
    for (int i = 0; i < P; i++) win[i] = state ? sload<SD>(state, d * P + i) : 0.f;
    win[P] = xr[c];
    float s = bias ? bias[d] : 0.f;
    for (int j = 0; j <= P; j++) s = sfma(wT[j * D + d], win[j], s);
    acc[c] = s;
    if (state_out)
      for (int i = 0; i < P; i++) sstore<SD>(state_out, d * P + i, win[i + 1]);
  }
  if (a.silu) {
    for (int c = dc; c < LD; c++) acc[c] = 0.f;
    for (int c = 0; c < dc; c += Vec::W) Vec::store(acc + c, vsilu(Vec::load(acc + c)));
  }
  store_row(a.y, a.xdt, row * D + d0, dc, acc);
}

template <int P>
void decode_p(const ConvArgs& a, const float* wT, const float* bias, int64_t row, int64_t d0, int dc, const void* state,
              void* state_out, float* scratch) {
  switch (a.sdt) {
    case DType::f32: decode<P, 1>(a, wT, bias, row, d0, dc, state, state_out, scratch); break;
    case DType::bf16: decode<P, 2>(a, wT, bias, row, d0, dc, state, state_out, scratch); break;
    default: decode<P, 3>(a, wT, bias, row, d0, dc, state, state_out, scratch); break;
  }
}

void tile(const ConvArgs& a, const float* wT, const float* bias, int64_t s0, int64_t t0, int tc, int64_t d0, int dc,
          const void* state, void* state_out, float* scratch) {
  const int W = a.W, P = W - 1;
  // One token of a one-token sequence (the decode update): the direct path.
  if (tc == 1 && t0 == 0 && (state_out || !a.pool)) {
    switch (P) {
      case 0: return decode_p<0>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 1: return decode_p<1>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 2: return decode_p<2>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 3: return decode_p<3>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 4: return decode_p<4>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 5: return decode_p<5>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      case 6: return decode_p<6>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
      default: return decode_p<7>(a, wT, bias, s0, d0, dc, state, state_out, scratch);
    }
  }
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

extern const ConvKernels kConvKernels = {tile, to_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
