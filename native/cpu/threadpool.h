// One pool of worker threads shared by every kernel. parallel_for hands out indices from an atomic counter
// (dynamic scheduling: sequences and heads differ in length) and the calling thread works too.
#pragma once
#include <cstdint>
#include <functional>

namespace sk {

// fn(index, thread_id) for index in [0, n); thread_id < num_threads(). Calls from several threads at once
// are serialised (one op at a time owns the pool).
void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn);

int num_threads();
// Most threads a pool may have (setNumThreads past it: OUT_OF_RANGE).
constexpr int kMaxThreads = 1024;

// n <= 0 restores the default (the number of online cores). n > kMaxThreads throws std::out_of_range; a
// thread that cannot be created throws std::system_error and leaves the pool as it was.
void set_num_threads(int n);
int default_num_threads();

// How long an idle worker (and the async dispatcher, native/binding/runtime.cc) spins for new work before it
// sleeps: SEQKERN_SPIN_US (0..100000, read once), default 50. Spinning saves a kernel wake-up (~30 us) between
// back-to-back calls; 0 gives the cores back at once (a machine with no core to spare).
int spin_us();

}  // namespace sk
