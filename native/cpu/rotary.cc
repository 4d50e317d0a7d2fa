// Driver of the rotary op: resolves each token's position once, then rotates blocks of tokens on the pool.
#include "rotary.h"

#include <atomic>
#include <vector>

#include "threadpool.h"

namespace sk {

const RotaryKernels& rotary_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kRotaryKernels;
    case SimdLevel::avx2: return avx2::kRotaryKernels;
    default: return portable::kRotaryKernels;
  }
}

namespace {
// Tokens per task: enough rows that a task's overhead vanishes, few enough to spread a short call.
constexpr int64_t kTokensPerTask = 16;
}  // namespace

bool rotary_forward(const RotaryArgs& a) {
  const RotaryKernels& kern = rotary_kernels(simd_level());
  std::vector<int32_t> pos(static_cast<size_t>(a.tokens));
  for (int64_t i = 0; i < a.tokens; i++) pos[i] = a.positions ? a.positions[i] : static_cast<int32_t>(a.T ? i % a.T : 0);
  if (a.cu && !a.positions)
    for (int n = 0; n + 1 < a.ncu; n++)
      for (int64_t i = a.cu[n]; i < a.cu[n + 1]; i++) pos[i] = static_cast<int32_t>(i - a.cu[n]);
  const int half = a.rot / 2;
  const int64_t tasks = (a.tokens + kTokensPerTask - 1) / kTokensPerTask;
  std::atomic<bool> stop{false};
  parallel_for(tasks, [&](int64_t t, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    if (a.cancel && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0) {
      stop.store(true);
      return;
    }
    alignas(64) float tmp[2 * kRotaryMaxDim];
    const int64_t end = (t + 1) * kTokensPerTask < a.tokens ? (t + 1) * kTokensPerTask : a.tokens;
    for (int64_t i = t * kTokensPerTask; i < end; i++) {
      // One table row per token, for all its H heads.
      const float* c = a.cos + static_cast<int64_t>(pos[i]) * half;
      const float* s = a.sin + static_cast<int64_t>(pos[i]) * half;
      kern.token(a.x, a.out, a.dtype, i * a.H * a.D, a.H, a.D, a.rot, c, s, a.interleaved, tmp);
    }
  });
  return !stop.load();
}

}  // namespace sk
