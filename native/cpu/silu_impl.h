// silu(v) = v / (1 + e^-v) on the level's vectors (included after vec.h; shared by conv and norm). e^-v by
// vexp (+Inf below v = -88.7, where v / Inf = -0, as silu's limit); one IEEE division, so every level rounds
// the quotient the same way.
#pragma once
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

inline V_ vdiv(V_ a, V_ b) {
#if defined(__AVX512F__)
  return _mm512_div_ps(a, b);
#elif defined(__AVX2__)
  return _mm256_div_ps(a, b);
#else
  V_ r;
  for (int i = 0; i < Vec::W; i++) r.v[i] = a.v[i] / b.v[i];
  return r;
#endif
}

inline V_ vsilu(V_ v) { return vdiv(v, Vec::add(Vec::set1(1.f), vexp(Vec::sub(Vec::zero(), v)))); }

}  // namespace SK_LEVEL_NS
}  // namespace sk
