#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sk {

int spin_us() {
  static const int us = [] {
    const char* e = std::getenv("SEQKERN_SPIN_US");
    if (!e || !*e) return 50;
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    return *end == 0 && v >= 0 && v <= 100000 ? static_cast<int>(v) : 50;
  }();
  return us;
}

namespace {

// Workers that find no new work spin for a short while (spin_us(), threadpool.h) before they sleep on the condition
// variable, and the caller spins the same while it waits for them: a wake-up through the kernel costs
// ~30 us on the dev machine, as much as a small op's whole work, and back-to-back ops (a server's decode
// steps, a benchmark loop) then find the workers still awake. Sleepers are counted so that a wake-up
// that finds everyone spinning skips the kernel; gen_ and the counts are seq_cst, which with the mutex
// around each sleep makes a lost wake-up impossible (the waker either sees the sleeper's count, or the
// sleeper's re-check under the mutex sees the new generation). A worker joins a call by registering in
// reg_ (generation, count); the caller closes the registration once it has run out of indices and waits
// only for the workers that joined, so a call too small to split is not held up by sleeping workers.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until ready() or spin_us() has passed; returns ready().
template <class F>
bool spin_until(F&& ready) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us());
  for (int i = 0;; i++) {
    if (ready()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return ready();
    cpu_relax();
  }
}

class Pool {
 public:
  // Throws (std::system_error) when a thread cannot be created, after joining the ones that were: a pool
  // destroyed with joinable threads would terminate the process.
  explicit Pool(int n) : n_(n < 1 ? 1 : n) {
    try {
      for (int i = 1; i < n_; i++) workers_.emplace_back([this, i] { loop(i); });
    } catch (...) {
      shutdown();
      throw;
    }
  }
  ~Pool() { shutdown(); }
  int size() const { return n_; }

  void run(int64_t n, const std::function<void(int64_t, int)>& fn) {
    if (n <= 0) return;
    if (n_ == 1 || n == 1) {
      for (int64_t i = 0; i < n; i++) fn(i, 0);
      return;
    }
    fn_ = &fn;
    total_ = n;
    next_.store(0);
    done_.store(0);
    const uint64_t g = (gen_.load() + 1) & kGenMask;
    reg_.store(g << 32);
    gen_.store(g);  // publishes the fields above (seq_cst)
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
    work(0);
    // Close the registration: workers that had not joined by now stay out, and the caller waits only for
    // those that did. A call too small to split is thus over as soon as the caller has done all of it,
    // without waiting for sleeping workers to wake up (a kernel wake-up costs ~30 us on the dev machine).
    const uint64_t joined = reg_.fetch_or(kClosed) & kCountMask;
    if (!spin_until([&] { return done_.load() == joined; })) {
      std::unique_lock<std::mutex> lk(mu_);
      caller_sleeps_ = true;
      done_cv_.wait(lk, [&] { return done_.load() == joined; });
      caller_sleeps_ = false;
    }
    fn_ = nullptr;
  }

 private:
  static constexpr uint64_t kGenMask = 0xffffffffu, kClosed = 1ull << 31, kCountMask = kClosed - 1;

  void work(int tid) {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= total_) break;
      (*fn_)(i, tid);
    }
  }
  // Joins generation g unless the caller has closed it (or moved on): then it must not touch its fields.
  bool join(uint64_t g) {
    uint64_t v = reg_.load();
    for (;;) {
      if ((v >> 32) != g || (v & kClosed)) return false;
      if (reg_.compare_exchange_weak(v, v + 1)) return true;
    }
  }
  void loop(int tid) {
    uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return gen_.load() != seen; })) {
        std::unique_lock<std::mutex> lk(mu_);
        sleepers_++;
        cv_.wait(lk, [&] { return gen_.load() != seen; });
        sleepers_--;
      }
      seen = gen_.load();
      if (stop_.load()) return;
      if (!join(seen)) continue;
      work(tid);
      done_.fetch_add(1);
      if (caller_sleeps_.load()) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_one();
      }
    }
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      gen_++;
    }
    cv_.notify_all();
    for (auto& w : workers_)
      if (w.joinable()) w.join();
    workers_.clear();
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_sleeps_{false};
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t total_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> reg_{0};   // generation << 32 | kClosed | workers joined
  std::atomic<uint64_t> done_{0};  // joined workers finished
};

std::mutex g_owner;  // one op at a time owns the pool
// Never destroyed: at exit seqkern's dispatcher thread (native/binding/runtime.cc) may still be finishing a
// cancelled kernel on it, and joining the workers would make the exit wait for that kernel.
std::unique_ptr<Pool>& g_pool = *new std::unique_ptr<Pool>();
int g_requested = 0;
// The size in effect, readable without g_owner: num_threads() (info(), the calibration cache's key) must not
// wait for a kernel an async call runs on the pool.
std::atomic<int> g_size{0};

Pool& pool() {
  if (!g_pool) {
    g_pool = std::make_unique<Pool>(g_requested > 0 ? g_requested : default_num_threads());
    g_size.store(g_pool->size());
  }
  return *g_pool;
}

}  // namespace

int default_num_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) {
  std::lock_guard<std::mutex> lk(g_owner);
  pool().run(n, fn);
}

int num_threads() {
  const int n = g_size.load();
  if (n > 0) return n;
  std::lock_guard<std::mutex> lk(g_owner);
  return pool().size();
}

void set_num_threads(int n) {
  if (n > kMaxThreads) throw std::out_of_range("expected at most " + std::to_string(kMaxThreads) + " threads, got " + std::to_string(n));
  std::lock_guard<std::mutex> lk(g_owner);
  const int want = n > 0 ? n : 0;
  // The new pool is built before the old one goes: if its threads cannot be created, the old pool and the
  // old setting stay as they were and the error reaches the caller.
  auto next = std::make_unique<Pool>(want > 0 ? want : default_num_threads());
  g_pool = std::move(next);
  g_size.store(g_pool->size());
  g_requested = want;
}

}  // namespace sk
