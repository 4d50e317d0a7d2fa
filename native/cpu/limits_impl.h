// The machine-limit kernels, written once against `Vec` and compiled per SIMD level (limits_<level>.cc).
//
// FMA peak: kChains independent accumulator chains, acc_i <- acc_i * m + c with (m, c) a distinct pair per
// chain and every chain starting from a different value, so the compiler can neither merge two chains
// (chains that start equal and see equal constants are one chain to it, and the "peak" comes out ~1.7x too
// high) nor shorten the loop (no fast-math: it may not reassociate). kChains covers FMA latency x FMA
// ports (4 x 2 on current x86) with room to spare; the constants are picked so that the accumulators never
// spill (a spilled chain waits on store forwarding every iteration): all in zmm at avx512, addends read from
// L1 at avx2 (16 ymm), and at portable (SSE2) 5 chains whose mul + add latency still hides behind ten
// independent xmm halves (6 chains spilled and measured half as fast). m is just below 1 and c tiny, so the values drift slowly towards
// c / (1 - m) ~ 1..16: never denormal, never overflowing, for any number of iterations.
//
// Bandwidth: plain vector loads and stores (no non-temporal stores: the ops write normally), unrolled by
// four; a compiler barrier between passes keeps repeated identical passes from being merged. The read probe
// sums its array into eight accumulators (four would leave an L1-resident pass waiting on add latency) and
// returns the sum, so no pass is dead code.
#pragma once
#include <cstdint>

#include "limits.h"
#include "vec.h"

namespace sk {
namespace SK_LEVEL_NS {

namespace {

#if defined(__AVX512F__)
constexpr int kChains = 16, kMuls = 4;  // 16 accumulators + 4 multipliers + 4 addends = 24 of 32 zmm
#elif defined(__AVX2__)
constexpr int kChains = 12, kMuls = 2;  // 12 accumulators + 2 multipliers in ymm; addends read from L1
#else
constexpr int kChains = 5, kMuls = 5;   // SSE2, no FMA: mul + add; 5 x 2 xmm accumulators + 5 m + 1 c = 16 xmm
#endif
constexpr int kAdds = kChains / kMuls;
static_assert(kChains % kMuls == 0, "chains must split into (multiplier, addend) pairs");

float fma_block(int64_t iters, float seed) {
  V_ acc[kChains], m[kMuls], c[kAdds];
  for (int i = 0; i < kChains; i++) acc[i] = Vec::set1(seed * (1.0f + 0.0625f * static_cast<float>(i)));
  // m_j = 1 - (j+1) 2^-22 and c_j = (j+1) 2^-20 are exact in float32.
  for (int j = 0; j < kMuls; j++) m[j] = Vec::set1(1.0f - static_cast<float>(j + 1) * 0x1p-22f);
  for (int j = 0; j < kAdds; j++) c[j] = Vec::set1(static_cast<float>(j + 1) * 0x1p-20f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; i++) acc[i] = Vec::fma(acc[i], m[i % kMuls], c[i / kMuls]);
  }
  V_ s = acc[0];
  for (int i = 1; i < kChains; i++) s = Vec::add(s, acc[i]);
  return Vec::hsum(s);
}

// Keeps the compiler from merging or dropping repeated passes over the same memory.
inline void clobber_memory() { asm volatile("" ::: "memory"); }

void copy(const float* a, float* b, int64_t n, int64_t reps) {
  constexpr int W = Vec::W;
  for (int64_t r = 0; r < reps; r++) {
    for (int64_t i = 0; i < n; i += 4 * W) {
      const V_ x0 = Vec::load(a + i), x1 = Vec::load(a + i + W);
      const V_ x2 = Vec::load(a + i + 2 * W), x3 = Vec::load(a + i + 3 * W);
      Vec::store(b + i, x0);
      Vec::store(b + i + W, x1);
      Vec::store(b + i + 2 * W, x2);
      Vec::store(b + i + 3 * W, x3);
    }
    clobber_memory();
  }
}

void triad(float* a, const float* b, const float* c, float s, int64_t n, int64_t reps) {
  constexpr int W = Vec::W;
  const V_ vs = Vec::set1(s);
  for (int64_t r = 0; r < reps; r++) {
    for (int64_t i = 0; i < n; i += 4 * W) {
      const V_ y0 = Vec::fma(vs, Vec::load(c + i), Vec::load(b + i));
      const V_ y1 = Vec::fma(vs, Vec::load(c + i + W), Vec::load(b + i + W));
      const V_ y2 = Vec::fma(vs, Vec::load(c + i + 2 * W), Vec::load(b + i + 2 * W));
      const V_ y3 = Vec::fma(vs, Vec::load(c + i + 3 * W), Vec::load(b + i + 3 * W));
      Vec::store(a + i, y0);
      Vec::store(a + i + W, y1);
      Vec::store(a + i + 2 * W, y2);
      Vec::store(a + i + 3 * W, y3);
    }
    clobber_memory();
  }
}

float read(const float* a, int64_t n, int64_t reps) {
  constexpr int W = Vec::W;
  V_ s[8];
  for (int u = 0; u < 8; u++) s[u] = Vec::zero();
  for (int64_t r = 0; r < reps; r++) {
    int64_t i = 0;
    for (; i + 8 * W <= n; i += 8 * W)
      for (int u = 0; u < 8; u++) s[u] = Vec::add(s[u], Vec::load(a + i + u * W));
    for (; i < n; i += 4 * W)  // n is a multiple of 4 W, not always of 8 W
      for (int u = 0; u < 4; u++) s[u] = Vec::add(s[u], Vec::load(a + i + u * W));
    clobber_memory();
  }
  for (int u = 1; u < 8; u++) s[0] = Vec::add(s[0], s[u]);
  return Vec::hsum(s[0]);
}

void update(float* a, float s, int64_t n, int64_t reps) {
  constexpr int W = Vec::W;
  const V_ vs = Vec::set1(s);
  for (int64_t r = 0; r < reps; r++) {
    for (int64_t i = 0; i < n; i += 4 * W) {
      const V_ y0 = Vec::mul(vs, Vec::load(a + i)), y1 = Vec::mul(vs, Vec::load(a + i + W));
      const V_ y2 = Vec::mul(vs, Vec::load(a + i + 2 * W)), y3 = Vec::mul(vs, Vec::load(a + i + 3 * W));
      Vec::store(a + i, y0);
      Vec::store(a + i + W, y1);
      Vec::store(a + i + 2 * W, y2);
      Vec::store(a + i + 3 * W, y3);
    }
    clobber_memory();
  }
}

}  // namespace

extern const LimitKernels kLimitKernels = {Vec::W, kChains, fma_block, copy, triad, update, read};

}  // namespace SK_LEVEL_NS
}  // namespace sk
