// Driver of the machine-limit probes: runs the per-level kernels on `threads` threads of the pool, all
// released together by a spin barrier, and times the span from the first start to the last finish.
#include "limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "binding/common.h"
#include "threadpool.h"

namespace sk {

const LimitKernels& limit_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kLimitKernels;
    case SimdLevel::avx2: return avx2::kLimitKernels;
    default: return portable::kLimitKernels;
  }
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Grows the pool for one probe when it has fewer threads than asked, and puts it back afterwards.
class PoolAtLeast {
 public:
  explicit PoolAtLeast(int threads) : before_(num_threads()) {
    if (threads > before_) set_num_threads(threads);
  }
  ~PoolAtLeast() {
    if (num_threads() != before_) set_num_threads(before_ == default_num_threads() ? 0 : before_);
  }

 private:
  int before_;
};

// Runs body(tid) once on each of `threads` distinct threads and returns the span in seconds from the
// first start to the last finish. The pool hands out indices dynamically, so without the barrier one fast
// thread could take two items and the probe would measure one thread's work at the wall time of two;
// a thread waiting at the barrier cannot take another item, so every item lands on its own thread.
double together(int threads, const std::function<void(int)>& body) {
  PoolAtLeast grow(threads);
  std::atomic<int> arrived{0};
  std::vector<Clock::time_point> start(threads), end(threads);
  parallel_for(threads, [&](int64_t i, int) {
    arrived.fetch_add(1, std::memory_order_acq_rel);
    const Clock::time_point wait_from = Clock::now();
    // The 2 s escape only matters if the pool ever ran items on fewer threads than asked: the probe then
    // reads low instead of hanging.
    while (arrived.load(std::memory_order_acquire) < threads && seconds_between(wait_from, Clock::now()) < 2.0) {
    }
    start[i] = Clock::now();
    body(static_cast<int>(i));
    end[i] = Clock::now();
  });
  return seconds_between(*std::min_element(start.begin(), start.end()), *std::max_element(end.begin(), end.end()));
}

volatile float g_sink;  // where the probes' results go, so no computation is dead
volatile float g_one = 1.0f;  // update's scale, read at run time so no compiler sees a * 1

void check_common(double seconds, int threads) {
  if (!(seconds > 0 && seconds <= 600))
    throw CodedError("OUT_OF_RANGE", "expected seconds in (0, 600], got " + std::to_string(seconds));
  if (threads < 1 || threads > 1024)
    throw CodedError("OUT_OF_RANGE", "expected threads in [1, 1024], got " + std::to_string(threads));
}

// 64-byte aligned float buffer.
struct Buffer {
  float* p = nullptr;
  explicit Buffer(int64_t n) {
    p = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(((n * 4 + 63) / 64) * 64)));
    if (p == nullptr) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

}  // namespace

double peak_gflops(SimdLevel l, double seconds, int threads) {
  check_common(seconds, threads);
  if (static_cast<int>(l) > static_cast<int>(simd_best_supported()))
    throw CodedError("OUT_OF_RANGE", std::string("expected a SIMD level this CPU supports (best: ") +
                                         simd_name(simd_best_supported()) + "), got " + simd_name(l));
  const LimitKernels& k = limit_kernels(l);
  // ~35 us per block at avx512: the clock is read rarely enough to cost nothing.
  constexpr int64_t kBlock = 1 << 14;
  const double flops_per_iter = 2.0 * k.width * k.chains;
  // Many short repeats rather than a few long ones: on a shared machine the best repeat is then likely
  // one that ran alone (25 ms is still ~10^8 cycles, far past any clock ramp-up).
  const int repeats = std::max(4, static_cast<int>(seconds / 0.025));
  const double each = seconds / repeats;
  double best = 0;
  std::vector<int64_t> iters(threads);
  std::vector<float> sums(threads);
  for (int r = 0; r < repeats; r++) {
    const double span = together(threads, [&](int tid) {
      const Clock::time_point t0 = Clock::now();
      int64_t n = 0;
      float s = 0;
      do {
        s += k.fma_block(kBlock, 1.0f + 0.001f * static_cast<float>(tid + r));
        n += kBlock;
      } while (seconds_between(t0, Clock::now()) < each);
      iters[tid] = n;
      sums[tid] = s;
    });
    double flops = 0;
    for (int t = 0; t < threads; t++) {
      flops += static_cast<double>(iters[t]) * flops_per_iter;
      g_sink = sums[t];
    }
    best = std::max(best, flops / span / 1e9);
  }
  return best;
}

double bandwidth_gbs(BandwidthKind kind, int64_t bytes, int threads, double seconds) {
  check_common(seconds, threads);
  const int arrays = kind == BandwidthKind::copy ? 2 : kind == BandwidthKind::triad ? 3 : 1;
  // Floats per array per thread, a multiple of 64 (the kernels' unroll at avx512).
  const int64_t n = (bytes / (4 * static_cast<int64_t>(arrays) * threads)) / 64 * 64;
  if (bytes > (int64_t(1) << 40))
    throw CodedError("TOO_LARGE", "expected bytes <= 2^40, got " + std::to_string(bytes));
  if (n < 64)
    throw CodedError("OUT_OF_RANGE", "expected bytes >= " + std::to_string(256 * arrays * threads) + " for " +
                                         std::to_string(arrays) + " arrays on " + std::to_string(threads) +
                                         " threads, got " + std::to_string(bytes));
  const LimitKernels& k = limit_kernels(simd_best_supported());
  // Arrays start 320 bytes apart modulo 4 KiB, so loads and stores of one index never alias in the
  // store-forwarding check (4K aliasing), as STREAM's offsets do.
  const int64_t stride = n + 80;
  Buffer buf(stride * arrays * threads);
  auto arr = [&](int t, int j) { return buf.p + (static_cast<int64_t>(t) * arrays + j) * stride; };
  // Each thread first-touches its own arrays (its pages land on its node).
  together(threads, [&](int t) {
    for (int j = 0; j < arrays; j++) {
      float* a = arr(t, j);
      for (int64_t i = 0; i < n; i++) a[i] = 1.0f + static_cast<float>(j) + 1e-3f * static_cast<float>(i & 1023);
    }
  });
  const float update_scale = g_one;
  std::vector<float> sums(threads);  // the read probe's results, kept so its passes are not dead code
  auto pass = [&](int64_t reps) {
    return together(threads, [&](int t) {
      switch (kind) {
        case BandwidthKind::copy: k.copy(arr(t, 0), arr(t, 1), n, reps); break;
        case BandwidthKind::triad: k.triad(arr(t, 0), arr(t, 1), arr(t, 2), 0.5f, n, reps); break;
        // s = 1 keeps the values as they are for any number of passes; the kernel cannot know it is 1.
        case BandwidthKind::update: k.update(arr(t, 0), update_scale, n, reps); break;
        case BandwidthKind::read: sums[t] = k.read(arr(t, 0), n, reps); break;
      }
    });
  };
  // Counted bytes: each array is read or written once per pass, update's one array both.
  const int counted = kind == BandwidthKind::update ? 2 : arrays;
  const double bytes_per_pass = static_cast<double>(n) * 4 * counted * threads;
  pass(1);  // warm: caches, TLB
  // Samples of ~seconds/40 (at least 1 ms, so the barrier and clock reads do not count) for about
  // `seconds` in all, at least 3; the best one (STREAM reports the best too: the others lost time to
  // interference, not to the memory system, and short samples make a clean one likely on a shared host).
  const double one = std::max(pass(1), 1e-7);
  const double target = std::max(seconds / 40, 1e-3);
  const int64_t reps = std::max<int64_t>(1, static_cast<int64_t>(target / one));
  double best = 0, spent = 0;
  for (int s = 0; s < 3 || spent < seconds; s++) {
    const double t = pass(reps);
    spent += t;
    best = std::max(best, bytes_per_pass * static_cast<double>(reps) / t / 1e9);
    if (s > 100000) break;
  }
  g_sink = arr(0, kind == BandwidthKind::copy ? 1 : 0)[n - 1];
  for (float x : sums) g_sink = x;
  return best;
}

}  // namespace sk
