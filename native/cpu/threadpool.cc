#include "threadpool.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sk {
namespace {

class Pool {
 public:
  explicit Pool(int n) : n_(n < 1 ? 1 : n) {
    for (int i = 1; i < n_; i++) workers_.emplace_back([this, i] { loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      gen_++;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return n_; }

  void run(int64_t n, const std::function<void(int64_t, int)>& fn) {
    if (n <= 0) return;
    if (n_ == 1 || n == 1) {
      for (int64_t i = 0; i < n; i++) fn(i, 0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      total_ = n;
      next_.store(0);
      busy_ = n_ - 1;
      gen_++;
    }
    cv_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return busy_ == 0; });
    fn_ = nullptr;
  }

 private:
  void work(int tid) {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= total_) break;
      (*fn_)(i, tid);
    }
  }
  void loop(int tid) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (stop_) return;
      }
      work(tid);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--busy_ == 0) done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  uint64_t gen_ = 0;
  bool stop_ = false;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t total_ = 0;
  std::atomic<int64_t> next_{0};
  int busy_ = 0;
};

std::mutex g_owner;  // one op at a time owns the pool
std::unique_ptr<Pool> g_pool;
int g_requested = 0;

Pool& pool() {
  if (!g_pool) g_pool = std::make_unique<Pool>(g_requested > 0 ? g_requested : default_num_threads());
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
  std::lock_guard<std::mutex> lk(g_owner);
  return pool().size();
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_owner);
  g_requested = n > 0 ? n : 0;
  g_pool.reset();
}

}  // namespace sk
