// The rotary row kernel, written once against Vec and compiled per SIMD level (rotary_<level>.cc).
#pragma once
#include "convert_impl.h"
#include "rotary.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

void rotate_row(const void* src, DType sdt, int64_t soff, void* dst, DType ddt, int64_t doff, int D, int rot,
                const float* c, const float* s, bool interleaved, float* x) {
  constexpr int W = Vec::W;
  load_row(src, sdt, soff, D, x);
  const int h = rot / 2;
  if (h > 0 && !interleaved) {
    // Plane i: x[i], x[i + h]; each lane reads both before writing either, so the row rotates in place.
    int i = 0;
    for (; i + W <= h; i += W) {
      const V_ a = Vec::load(x + i), b = Vec::load(x + h + i), cv = Vec::load(c + i), sv = Vec::load(s + i);
      Vec::store(x + i, Vec::fnma(b, sv, Vec::mul(a, cv)));
      Vec::store(x + h + i, Vec::fma(a, sv, Vec::mul(b, cv)));
    }
    for (; i < h; i++) {
      const float a = x[i], b = x[h + i];
      x[i] = a * c[i] - b * s[i];
      x[h + i] = b * c[i] + a * s[i];
    }
  } else if (h > 0) {
    // Plane i: x[2i], x[2i + 1] (a plain loop: the compiler's shuffles do as well as hand-written ones here).
    for (int i = 0; i < h; i++) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = b * c[i] + a * s[i];
    }
  }
  store_row(dst, ddt, doff, D, x);
}

}  // namespace

extern const RotaryKernels kRotaryKernels = {rotate_row};

}  // namespace SK_LEVEL_NS
}  // namespace sk
