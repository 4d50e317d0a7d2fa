// The causal convolution's tile, written once and compiled per SIMD level (conv_<level>.cc): the tile's
// inputs (W - 1 earlier positions, then its tokens) converted to float32 rows of 64 channels, W fused
// multiply-adds per output vector in j order (the same order at every level), silu, then stored in x's dtype.
#pragma once
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

void tile(const ConvArgs& a, const float* wT, const float* bias, int64_t s0, int64_t t0, int tc, int64_t d0, int dc,
          const void* state, float* scratch) {
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
      for (int c = 0; c < dc; c++) row[c] = load_one(state, a.sdt, (d0 + c) * P + col);
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
    for (int j = 0; j < W; j++) wv[j] = Vec::loadp(wT + j * D + d0 + c, m);
    const V_ b = bias ? Vec::loadp(bias + d0 + c, m) : Vec::zero();
    for (int t = 0; t < tc; t++) {
      V_ acc = b;
      const float* col = in + static_cast<int64_t>(t) * LD + c;
      for (int j = 0; j < W; j++) acc = Vec::fma(wv[j], Vec::load(col + static_cast<int64_t>(j) * LD), acc);
      if (a.silu) acc = vsilu(acc);
      Vec::store(out + static_cast<int64_t>(t) * LD + c, acc);
    }
  }
  for (int t = 0; t < tc; t++) store_row(a.y, a.xdt, (s0 + t0 + t) * D + d0, dc, out + static_cast<int64_t>(t) * LD);
}

void to_f32(const void* src, DType dt, int64_t off, int n, float* dst) { load_row(src, dt, off, n, dst); }

}  // namespace

extern const ConvKernels kConvKernels = {tile, to_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
