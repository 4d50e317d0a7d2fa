// Driver of RMSNorm (see norm.h): the weight to float32 once, then blocks of rows over the pool.
#include "norm.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "threadpool.h"

namespace sk {

const NormKernels& norm_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kNormKernels;
    case SimdLevel::avx2: return avx2::kNormKernels;
    default: return portable::kNormKernels;
  }
}

bool norm_forward(const NormArgs& a) {
  const NormKernels& kern = norm_kernels(simd_level());
  if (a.rows == 0 || a.H == 0) return true;
  std::vector<float> w32(a.H);
  kern.to_f32(a.w, a.wdt, 0, static_cast<int>(a.H), w32.data());
  // About 64 KiB of x per task: enough to amortise the hand-out, small enough to balance the threads.
  const int64_t per = std::max<int64_t>(1, 16384 / a.H);
  const int64_t tasks = (a.rows + per - 1) / per;
  std::vector<std::vector<float>> scratch(num_threads());
  std::atomic<bool> stop{false};
  parallel_for(tasks, [&](int64_t t, int tid) {
    if (stop.load(std::memory_order_relaxed)) return;
    if (a.cancel && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0) {
      stop.store(true, std::memory_order_relaxed);
      return;
    }
    std::vector<float>& s = scratch[tid];
    if (s.size() < static_cast<size_t>(2 * a.H)) s.resize(2 * a.H);
    kern.rows(a, w32.data(), t * per, std::min(a.rows, (t + 1) * per), s.data());
  });
  return !stop.load();
}

}  // namespace sk
