// RMSNorm rows, written once and compiled per SIMD level (norm_<level>.cc): a row (and its gate) to float32,
// the sum of squares of each group in Vec::W lanes (then a horizontal sum), the scale, w, silu(gate), and the
// row stored in y's dtype.
#pragma once
#include <cmath>
#include <cstdint>

#include "convert_impl.h"
#include "norm.h"
#include "silu_impl.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {
namespace {

void rows(const NormArgs& a, const float* w32, int64_t r0, int64_t r1, float* scratch) {
  const int64_t H = a.H, G = a.group;
  float* xr = scratch;
  float* gr = scratch + H;
  for (int64_t r = r0; r < r1; r++) {
    // float32 rows are read (and y written) in place; others converted into the scratch rows. Each element
    // is read before its own index is written, so y may be x or the gate.
    const float* xrow = xr;
    if (a.xdt == DType::f32) xrow = static_cast<const float*>(a.x) + r * H;
    else load_row(a.x, a.xdt, r * H, static_cast<int>(H), xr);
    const float* grow = gr;
    if (a.gate && a.gdt == DType::f32) grow = static_cast<const float*>(a.gate) + r * H;
    else if (a.gate) load_row(a.gate, a.gdt, r * H, static_cast<int>(H), gr);
    float* yrow = a.ydt == DType::f32 ? static_cast<float*>(a.y) + r * H : xr;
    for (int64_t g0 = 0; g0 < H; g0 += G) {
      const float* x = xrow + g0;
      float* yo = yrow + g0;
      const int n = static_cast<int>(G);
      V_ s0 = Vec::zero(), s1 = Vec::zero();
      int i = 0;
      for (; i + 2 * Vec::W <= n; i += 2 * Vec::W) {
        const V_ u = Vec::load(x + i), v = Vec::load(x + i + Vec::W);
        s0 = Vec::fma(u, u, s0);
        s1 = Vec::fma(v, v, s1);
      }
      for (; i < n; i += Vec::W) {
        const int m = n - i < Vec::W ? n - i : Vec::W;
        const V_ u = Vec::loadp(x + i, m);
        s0 = Vec::fma(u, u, s0);
      }
      const float ss = Vec::hsum(Vec::add(s0, s1));
      const V_ scale = Vec::set1(1.f / std::sqrt(ss / static_cast<float>(n) + a.eps));
      const float* w = w32 + g0;
      const float* gt = grow + g0;
      // Full vectors with plain loads and stores (AVX2's masked store is microcoded on AMD), the tail masked.
      for (i = 0; i + Vec::W <= n; i += Vec::W) {
        V_ y = Vec::mul(Vec::mul(Vec::load(x + i), scale), Vec::load(w + i));
        if (a.gate) y = Vec::mul(y, vsilu(Vec::load(gt + i)));
        Vec::store(yo + i, y);
      }
      if (i < n) {
        const int m = n - i;
        V_ y = Vec::mul(Vec::mul(Vec::loadp(x + i, m), scale), Vec::loadp(w + i, m));
        if (a.gate) y = Vec::mul(y, vsilu(Vec::loadp(gt + i, m)));
        Vec::storep(yo + i, y, m);
      }
    }
    if (a.ydt != DType::f32) store_row(a.y, a.ydt, r * H, static_cast<int>(H), xr);
  }
}

void to_f32(const void* src, DType dt, int64_t off, int n, float* dst) { load_row(src, dt, off, n, dst); }

}  // namespace

extern const NormKernels kNormKernels = {rows, to_f32};

}  // namespace SK_LEVEL_NS
}  // namespace sk
