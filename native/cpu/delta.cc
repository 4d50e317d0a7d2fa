// Driver of the delta family: splits the work into (sequence, v-head) units, runs them on the pool with the
// kernels of the chosen SIMD level.
#include "delta.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace sk {

const DeltaKernels& delta_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kDeltaKernels;
    case SimdLevel::avx2: return avx2::kDeltaKernels;
    default: return portable::kDeltaKernels;
  }
}

bool delta_prefill(const DeltaArgs& a) {
  const DeltaKernels& kern = delta_kernels(simd_level());
  const int64_t KV = static_cast<int64_t>(a.K) * a.V;
  const int64_t units = static_cast<int64_t>(a.N) * a.HV;
  const int group = a.HV / a.H;
  std::atomic<bool> cancelled{false};
  parallel_for(units, [&](int64_t u, int) {
    if (cancelled.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(u / a.HV), hv = static_cast<int>(u % a.HV);
    DeltaHead head{&a, n, hv, hv / group, 0, 0, nullptr};
    if (a.cu_seqlens) {
      head.bos = a.cu_seqlens[n];
      head.len = a.cu_seqlens[n + 1] - a.cu_seqlens[n];
    } else {
      head.bos = static_cast<int64_t>(n) * a.T;
      head.len = a.T;
    }
    // Work on the final-state slice when there is one (it is a fresh output, or the state itself for an
    // in-place step); otherwise on a private buffer.
    std::vector<float> own;
    float* S = a.final_state ? a.final_state + u * KV : (own.resize(KV), own.data());
    const float* S0 = a.initial_state ? a.initial_state + u * KV : nullptr;
    if (S0 == nullptr) std::memset(S, 0, KV * sizeof(float));
    else if (S0 != S) std::memcpy(S, S0, KV * sizeof(float));
    head.S = S;
    bool ok = a.use_chunk ? kern.chunk(head) : kern.recurrent(head);
    if (!ok) cancelled.store(true);
  });
  return !cancelled.load();
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        exp--;
      }
      u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((u >> 23) & 0xffu);
  uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int32_t e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1), rem = mant & ((1u << shift) - 1u);
    uint32_t r = mant >> shift;
    if (rem > half || (rem == half && (r & 1u))) r++;
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t rem = mant & 0x1fffu;
  uint32_t r = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;  // may carry into the exponent: still correct
  return static_cast<uint16_t>(sign | r);
}

}  // namespace sk
