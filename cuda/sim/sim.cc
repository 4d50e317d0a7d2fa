// The CPU execution of CUDA (see cuda_sim.h): fibers per block, the barrier and warp collectives with their
// checks, launches under several thread schedules, bounds-checked device memory, and streams as worker
// threads.
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_sim.h"

namespace sk_sim {

thread_local Thread* t_thread = nullptr;
thread_local Block* t_block = nullptr;

namespace {

// ---------------------------------------------------------------------------------------------------------
// Device memory: each allocation ends exactly at a PROT_NONE page (and starts after one), so the first byte
// past it faults. Freed memory is unmapped: a use after free faults too.

struct Alloc {
  char* map = nullptr;
  size_t map_len = 0;
  char* ptr = nullptr;
  size_t bytes = 0;
  uint64_t id = 0;
};

std::mutex g_mem_mu;
std::map<uintptr_t, Alloc> g_allocs;  // by ptr
size_t g_used = 0;
uint64_t g_next_id = 1;

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

size_t capacity() {
  static const size_t c = [] {
    const char* s = std::getenv("SEQKERN_CUDA_SIM_MEMORY");
    const double v = s ? std::atof(s) : 0;
    return v > 0 ? static_cast<size_t>(v) : static_cast<size_t>(16) << 30;
  }();
  return c;
}

// The allocation holding [p, p + n), or null.
const Alloc* find_alloc(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  const Alloc& al = it->second;
  const uintptr_t b = reinterpret_cast<uintptr_t>(al.ptr);
  if (a >= b && a + n <= b + al.bytes) return &al;
  return nullptr;
}

// A description of an address near an allocation, for fault messages.
std::string describe_address(uintptr_t addr) {
  std::lock_guard<std::mutex> lk(g_mem_mu);
  std::string best;
  for (const auto& kv : g_allocs) {
    const Alloc& al = kv.second;
    const uintptr_t b = reinterpret_cast<uintptr_t>(al.ptr), e = b + al.bytes;
    const uintptr_t mb = reinterpret_cast<uintptr_t>(al.map), me = mb + al.map_len;
    if (addr >= mb && addr < me) {
      char buf[256];
      if (addr >= e)
        std::snprintf(buf, sizeof buf, "%zu bytes past the end of device allocation #%llu (%zu bytes)",
                      static_cast<size_t>(addr - e), static_cast<unsigned long long>(al.id), al.bytes);
      else
        std::snprintf(buf, sizeof buf, "%zu bytes before the start of device allocation #%llu (%zu bytes)",
                      static_cast<size_t>(b - addr), static_cast<unsigned long long>(al.id), al.bytes);
      best = buf;
    }
  }
  if (best.empty()) best = "outside every live device allocation (freed, or never allocated)";
  char a[32];
  std::snprintf(a, sizeof a, "0x%llx", static_cast<unsigned long long>(addr));
  return std::string("address ") + a + ", " + best;
}

// ---------------------------------------------------------------------------------------------------------
// Fiber contexts. On x86-64 a switch saves the callee-saved registers on the old stack and loads the new
// stack pointer (MXCSR and the x87 control word are left alone: kernels never change them) (no system call: ucontext's swapcontext changes the signal mask
// on every switch, ~100x slower, which a kernel with a shuffle per key pays millions of times). Elsewhere
// ucontext.

#if defined(__x86_64__) && !defined(SEQKERN_SIM_UCONTEXT)
struct Ctx {
  void* sp = nullptr;
};
extern "C" void sk_sim_switch(Ctx* from, Ctx* to);
asm(R"(
  .text
  .globl sk_sim_switch
  .hidden sk_sim_switch
  .type sk_sim_switch, @function
sk_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq (%rsi), %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sk_sim_switch, .-sk_sim_switch
)");
inline void ctx_switch(Ctx* from, Ctx* to) { sk_sim_switch(from, to); }
[[noreturn]] inline void ctx_jump(Ctx* to) {
  Ctx dead;
  sk_sim_switch(&dead, to);
  __builtin_unreachable();
}
// A fresh context that starts `entry` on [stack, stack + size): the return slot 16-aligned (so entry sees
// the stack as after a call), under it six zeroed registers.
inline void ctx_make(Ctx* c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t{15};
  uintptr_t* ret = reinterpret_cast<uintptr_t*>(top - 16);
  ret[1] = 0;  // entry's own return address: it never returns
  ret[0] = reinterpret_cast<uintptr_t>(entry);
  uintptr_t* regs = ret - 6;
  for (int i = 0; i < 6; i++) regs[i] = 0;
  c->sp = regs;
}
#else
struct Ctx {
  ucontext_t uc;
};
inline void ctx_switch(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
[[noreturn]] inline void ctx_jump(Ctx* to) {
  setcontext(&to->uc);
  __builtin_unreachable();
}
inline void ctx_make(Ctx* c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}
#endif

// ---------------------------------------------------------------------------------------------------------
// Fibers and the block scheduler.

enum class St { ready, barrier, warp, done, dead };

struct Fiber {
  Thread t;
  int linear = 0;
  Ctx ctx;
  char* stack = nullptr;
  St st = St::ready;
  const char* bar_file = nullptr;
  int bar_line = 0;
  unsigned mask = 0;
  const char* what = nullptr;
  void* post = nullptr;
  CollectiveFn fn = nullptr;
};

constexpr size_t kStack = 128 << 10;

struct Worker {  // per OS thread that executes launches
  std::vector<Fiber> fibers;
  Ctx sched;
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;
  std::string fault;
  uintptr_t segv_addr = 0;
  bool segv = false;
  std::vector<std::pair<void*, size_t>> shared;  // SK_SHARED regions seen on this OS thread
};
thread_local Worker* t_worker = nullptr;

struct SimFault {
  std::string msg;
};

void fiber_entry() {
  Worker* w = t_worker;
  (*w->body)();
  w->cur->st = St::done;
  ctx_switch(&w->cur->ctx, &w->sched);
}

struct sigaction g_old_segv, g_old_bus;

void on_segv(int sig, siginfo_t* info, void* uctx) {
  Worker* w = t_worker;
  if (w && w->cur) {
    w->segv = true;
    w->segv_addr = reinterpret_cast<uintptr_t>(info->si_addr);
    w->cur->st = St::dead;
    ctx_jump(&w->sched);  // back to the scheduler; the fiber is abandoned
  }
  const struct sigaction& old = sig == SIGBUS ? g_old_bus : g_old_segv;
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction) return old.sa_sigaction(sig, info, uctx);
  } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    return old.sa_handler(sig);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  });
}

std::string hex(unsigned m) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", m);
  return b;
}

std::string state_name(const Fiber& f) {
  switch (f.st) {
    case St::barrier: return std::string("waits at __syncthreads (line ") + std::to_string(f.bar_line) + ")";
    case St::warp: return std::string("waits in ") + f.what + " with mask " + hex(f.mask);
    case St::done: return "has exited";
    default: return "is running";
  }
}

// Completes the warp collectives whose every lane has arrived; faults on a lane outside its own mask or a
// mask naming a lane that does not exist. Returns whether any completed.
bool resolve_warps(std::vector<Fiber>& fs, int n) {
  bool any = false;
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int lanes = std::min(32, n - w0);
    for (int l = 0; l < lanes; l++) {
      Fiber& f = fs[w0 + l];
      if (f.st != St::warp) continue;
      if (!(f.mask >> l & 1u))
        throw SimFault{std::string(f.what) + ": lane " + std::to_string(l) + " of warp " + std::to_string(w0 / 32) +
                       " takes part, but its mask " + hex(f.mask) + " leaves it out"};
      if (lanes < 32 && (f.mask >> lanes) != 0)
        throw SimFault{std::string(f.what) + ": mask " + hex(f.mask) + " names lanes past the block's last thread"};
      bool complete = true;
      for (int m = 0; m < lanes && complete; m++) {
        if (!(f.mask >> m & 1u)) continue;
        const Fiber& g = fs[w0 + m];
        complete = g.st == St::warp && g.mask == f.mask && g.what == f.what;
      }
      if (!complete) continue;
      void* posts[32] = {};
      for (int m = 0; m < lanes; m++)
        if (f.mask >> m & 1u) posts[m] = fs[w0 + m].post;
      const unsigned mask = f.mask;
      f.fn(posts, mask);
      for (int m = 0; m < lanes; m++)
        if (mask >> m & 1u) fs[w0 + m].st = St::ready;
      any = true;
    }
  }
  return any;
}

// Runs one block to its end in the given thread order. Throws SimFault.
void run_block(Worker& w, Block& blk, const std::vector<int>& order) {
  const int n = static_cast<int>(blk.block_dim.x * blk.block_dim.y * blk.block_dim.z);
  if (static_cast<int>(w.fibers.size()) < n) w.fibers.resize(n);
  for (int i = 0; i < n; i++) {
    Fiber& f = w.fibers[i];
    if (!f.stack) {
      void* s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (s == MAP_FAILED) throw SimFault{"could not map a fiber stack"};
      f.stack = static_cast<char*>(s);
    }
    f.linear = i;
    f.t.thread_idx = {i % blk.block_dim.x, (i / blk.block_dim.x) % blk.block_dim.y, i / (blk.block_dim.x * blk.block_dim.y)};
    f.st = St::ready;
    ctx_make(&f.ctx, f.stack, kStack, fiber_entry);
  }
  for (auto& r : w.shared) std::memset(r.first, 0xff, r.second);
  t_block = &blk;
  for (;;) {
    for (int i : order) {
      Fiber& f = w.fibers[i];
      if (f.st != St::ready) continue;
      w.cur = &f;
      t_thread = &f.t;
      ctx_switch(&w.sched, &f.ctx);
      w.cur = nullptr;
      if (w.segv) {
        w.segv = false;
        throw SimFault{"illegal memory access by thread " + std::to_string(i) + ": " + describe_address(w.segv_addr)};
      }
      if (!w.fault.empty()) {
        std::string m = std::move(w.fault);
        w.fault.clear();
        throw SimFault{m + " (thread " + std::to_string(i) + ")"};
      }
    }
    if (resolve_warps(w.fibers, n)) continue;
    int done = 0, bar = 0, warp = 0;
    for (int i = 0; i < n; i++) {
      const St s = w.fibers[i].st;
      done += s == St::done;
      bar += s == St::barrier;
      warp += s == St::warp;
    }
    if (done == n) return;
    if (warp > 0) {
      for (int i = 0; i < n; i++) {
        const Fiber& f = w.fibers[i];
        if (f.st != St::warp) continue;
        const int w0 = i & ~31;
        for (int m = 0; m < 32; m++) {
          if (!(f.mask >> m & 1u)) continue;
          const Fiber& g = w.fibers[w0 + m];
          if (g.st == St::warp && g.mask == f.mask && g.what == f.what) continue;
          throw SimFault{std::string(f.what) + ": thread " + std::to_string(i) + " waits with mask " + hex(f.mask) +
                         " for lane " + std::to_string(m) + ", which " + state_name(g)};
        }
      }
    }
    if (done > 0) {
      int waiting = 0, gone = 0;
      for (int i = 0; i < n; i++) {
        if (w.fibers[i].st == St::barrier) waiting = i;
        if (w.fibers[i].st == St::done) gone = i;
      }
      throw SimFault{"__syncthreads (line " + std::to_string(w.fibers[waiting].bar_line) + ") reached by thread " +
                     std::to_string(waiting) + " but thread " + std::to_string(gone) +
                     " has exited: every thread of the block must reach every barrier"};
    }
    const Fiber& f0 = w.fibers[0];
    for (int i = 1; i < n; i++) {
      const Fiber& f = w.fibers[i];
      if (f.bar_line != f0.bar_line || f.bar_file != f0.bar_file)
        throw SimFault{"threads wait at different __syncthreads: thread 0 at line " + std::to_string(f0.bar_line) +
                       ", thread " + std::to_string(i) + " at line " + std::to_string(f.bar_line)};
    }
    for (int i = 0; i < n; i++) w.fibers[i].st = St::ready;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Schedules.

std::mutex g_sched_mu;
std::vector<std::string> g_schedules = [] {
  std::vector<std::string> v;
  const char* s = std::getenv("SEQKERN_CUDA_SIM_SCHEDULES");
  std::string spec = s && *s ? s : "forward,reverse,shuffle";
  size_t p = 0;
  while (p <= spec.size()) {
    size_t q = spec.find(',', p);
    if (q == std::string::npos) q = spec.size();
    if (q > p) v.push_back(spec.substr(p, q - p));
    p = q + 1;
  }
  return v;
}();
std::atomic<uint64_t> g_launches{0};

std::vector<int> make_order(const std::string& kind, int n, uint64_t seed) {
  std::vector<int> o(n);
  for (int i = 0; i < n; i++) o[i] = i;
  if (kind == "reverse") std::reverse(o.begin(), o.end());
  if (kind == "shuffle") {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = n - 1; i > 0; i--) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      std::swap(o[i], o[static_cast<int>(s % static_cast<uint64_t>(i + 1))]);
    }
  }
  return o;
}

// Snapshot of every live allocation (to rerun a launch from the same memory under another schedule).
struct Snapshot {
  std::vector<std::pair<const Alloc*, std::vector<char>>> parts;
};
Snapshot take_snapshot() {
  Snapshot s;
  std::lock_guard<std::mutex> lk(g_mem_mu);
  for (const auto& kv : g_allocs) s.parts.emplace_back(&kv.second, std::vector<char>(kv.second.ptr, kv.second.ptr + kv.second.bytes));
  return s;
}
size_t live_bytes() {
  std::lock_guard<std::mutex> lk(g_mem_mu);
  return g_used;
}

std::mutex g_fault_mu;
std::string g_last_fault;

void set_last_fault(const std::string& m) {
  std::lock_guard<std::mutex> lk(g_fault_mu);
  g_last_fault = m;
}

// Runs a launch under every configured schedule; returns an empty string or the fault.
std::string execute(const char* name, dim3 grid, dim3 block, const std::function<void()>& body) {
  install_handler();
  if (!t_worker) t_worker = new Worker();  // one per OS thread, kept for its fibers' stacks
  Worker& w = *t_worker;
  std::vector<std::string> scheds;
  {
    std::lock_guard<std::mutex> lk(g_sched_mu);
    scheds = g_schedules;
  }
  if (scheds.empty()) scheds.push_back("forward");
  if (scheds.size() > 1 && live_bytes() > (static_cast<size_t>(256) << 20)) scheds.resize(1);
  const uint64_t launch_no = g_launches.fetch_add(1);
  const int nthreads = static_cast<int>(block.x * block.y * block.z);
  const int nblocks = static_cast<int>(grid.x * grid.y * grid.z);
  Snapshot before, first;
  if (scheds.size() > 1) before = take_snapshot();
  w.body = &body;
  for (size_t si = 0; si < scheds.size(); si++) {
    const std::string& kind = scheds[si];
    if (si > 0)
      for (auto& p : before.parts) std::memcpy(p.first->ptr, p.second.data(), p.second.size());
    std::vector<int> border = make_order(kind, nblocks, launch_no * 7919 + 17);
    try {
      for (int bi = 0; bi < nblocks; bi++) {
        const int b = border[bi];
        Block blk;
        blk.block_idx = {b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
        blk.block_dim = block;
        blk.grid_dim = grid;
        run_block(w, blk, make_order(kind, nthreads, launch_no * 1000003 + static_cast<uint64_t>(b)));
      }
    } catch (const SimFault& f) {
      t_block = nullptr;
      t_thread = nullptr;
      return std::string(name) + " (schedule " + kind + "): " + f.msg;
    }
    t_block = nullptr;
    t_thread = nullptr;
    if (scheds.size() == 1) break;
    if (si == 0) {
      first = take_snapshot();
      continue;
    }
    for (size_t pi = 0; pi < first.parts.size(); pi++) {
      const auto& p = first.parts[pi];
      const char* now = p.first->ptr;
      if (std::memcmp(now, p.second.data(), p.second.size()) == 0) continue;
      size_t off = 0;
      while (now[off] == p.second[off]) off++;
      return std::string(name) + ": the result depends on the thread schedule (" + scheds[0] + " vs " + kind +
             " differ at byte " + std::to_string(off) + " of device allocation #" + std::to_string(p.first->id) +
             "): a missing __syncthreads/__syncwarp or a race between threads";
    }
  }
  return "";
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// The kernel-side calls.

void syncthreads(const char* file, int line) {
  Worker* w = t_worker;
  Fiber* f = w->cur;
  f->st = St::barrier;
  f->bar_file = file;
  f->bar_line = line;
  ctx_switch(&f->ctx, &w->sched);
}

void warp_collective(unsigned mask, const char* what, void* mine, CollectiveFn fn) {
  Worker* w = t_worker;
  Fiber* f = w->cur;
  f->st = St::warp;
  f->mask = mask;
  f->what = what;
  f->post = mine;
  f->fn = fn;
  ctx_switch(&f->ctx, &w->sched);
}

void shared_region(void* p, size_t bytes) {
  Worker* w = t_worker;
  for (const auto& r : w->shared)
    if (r.first == p) return;
  std::memset(p, 0xff, bytes);
  w->shared.emplace_back(p, bytes);
}

int lane_id() { return t_worker->cur->linear & 31; }

void fault(const std::string& message) {
  Worker* w = t_worker;
  if (w && w->cur) {
    w->fault = message;
    w->cur->st = St::dead;
    ctx_jump(&w->sched);
  }
  throw SimFault{message};
}

std::string last_fault() {
  std::lock_guard<std::mutex> lk(g_fault_mu);
  return g_last_fault;
}

void set_schedules(const std::string& spec) {
  std::vector<std::string> v;
  size_t p = 0;
  while (p <= spec.size()) {
    size_t q = spec.find(',', p);
    if (q == std::string::npos) q = spec.size();
    if (q > p) v.push_back(spec.substr(p, q - p));
    p = q + 1;
  }
  std::lock_guard<std::mutex> lk(g_sched_mu);
  g_schedules = v;
}

std::string schedules() {
  std::lock_guard<std::mutex> lk(g_sched_mu);
  std::string s;
  for (const auto& x : g_schedules) s += (s.empty() ? "" : ",") + x;
  return s;
}

}  // namespace sk_sim

// ---------------------------------------------------------------------------------------------------------
// Streams: a worker thread each, running its work in order. The legacy default stream (null) is one more.

struct SimStream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> work;
  bool busy = false, stop = false;
  cudaError_t err = cudaSuccess;  // a failed launch, until a synchronisation reports it
  std::thread thread;
  SimStream() {
    thread = std::thread([this] {
      std::unique_lock<std::mutex> lk(mu);
      for (;;) {
        cv.wait(lk, [this] { return stop || !work.empty(); });
        if (work.empty()) return;
        std::function<void()> f = std::move(work.front());
        work.pop_front();
        busy = true;
        lk.unlock();
        f();
        lk.lock();
        busy = false;
        cv.notify_all();
      }
    });
  }
  void push(std::function<void()> f) {
    std::lock_guard<std::mutex> lk(mu);
    work.push_back(std::move(f));
    cv.notify_all();
  }
  cudaError_t sync() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [this] { return work.empty() && !busy; });
    const cudaError_t e = err;
    err = cudaSuccess;
    return e;
  }
};

struct SimEvent {
  std::mutex mu;
  std::condition_variable cv;
  bool done = true;
  cudaError_t err = cudaSuccess;
  std::chrono::steady_clock::time_point at;
};

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
std::mutex g_streams_mu;
std::vector<SimStream*> g_streams;

SimStream* stream_of(cudaStream_t s) {
  static SimStream* legacy = [] {
    auto* d = new SimStream();
    std::lock_guard<std::mutex> lk(g_streams_mu);
    g_streams.push_back(d);
    return d;
  }();
  return s ? s : legacy;
}

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

bool device_range_ok(const void* p, size_t n) {
  std::lock_guard<std::mutex> lk(sk_sim::g_mem_mu);
  return n == 0 || sk_sim::find_alloc(p, n) != nullptr;
}

// Which sides of a copy are device memory, checked against the live allocations.
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) return cudaSuccess;
  if (dd && !device_range_ok(dst, bytes)) return cudaErrorInvalidValue;
  if (sd && !device_range_ok(src, bytes)) return cudaErrorInvalidValue;
  return cudaSuccess;
}
}  // namespace

void sk_sim::launch(const char* name, dim3 grid, dim3 block, void* stream, std::function<void()> body) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    t_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  SimStream* s = stream_of(static_cast<cudaStream_t>(stream));
  s->push([s, name, grid, block, body = std::move(body)] {
    const std::string f = execute(name, grid, block, body);
    if (!f.empty()) {
      set_last_fault(f);
      std::lock_guard<std::mutex> lk(s->mu);
      if (s->err == cudaSuccess)
        s->err = f.find("illegal memory access") != std::string::npos ? cudaErrorIllegalAddress : cudaErrorLaunchFailure;
    }
  });
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotReady: return "device not ready";
    default: return cudaGetErrorName(e);
  }
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : ret(cudaErrorInvalidValue); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return ret(cudaErrorInvalidValue);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "seqkern CUDA simulator (CPU)");
  p->totalGlobalMem = sk_sim::capacity();
  p->major = 9, p->minor = 0;
  p->multiProcessorCount = 1;
  p->sharedMemPerBlock = 48 << 10;
  p->maxThreadsPerBlock = 1024;
  p->warpSize = 32;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lk(sk_sim::g_mem_mu);
  *total_bytes = sk_sim::capacity();
  *free_bytes = sk_sim::capacity() - sk_sim::g_used;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** out, size_t bytes) {
  *out = nullptr;
  if (bytes == 0) return cudaSuccess;
  using namespace sk_sim;
  {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    if (bytes > capacity() - g_used) return ret(cudaErrorMemoryAllocation);
    g_used += bytes;
  }
  const size_t pg = page_size();
  const size_t body = (bytes + pg - 1) / pg * pg;
  const size_t len = body + 2 * pg;
  void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED || mprotect(static_cast<char*>(m) + pg, body, PROT_READ | PROT_WRITE) != 0) {
    if (m != MAP_FAILED) munmap(m, len);
    std::lock_guard<std::mutex> lk(g_mem_mu);
    g_used -= bytes;
    return ret(cudaErrorMemoryAllocation);
  }
  // The end sits on the guard page, as exactly as the alignment allows (the largest power of two up to 16
  // dividing the size, so vector loads stay aligned and the first byte past is the guard's).
  size_t align = 16;
  while (bytes % align) align >>= 1;
  char* end = static_cast<char*>(m) + pg + body;
  char* p = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(end - bytes) & ~(align - 1));
  Alloc a;
  a.map = static_cast<char*>(m), a.map_len = len, a.ptr = p, a.bytes = bytes;
  std::lock_guard<std::mutex> lk(g_mem_mu);
  a.id = g_next_id++;
  g_allocs[reinterpret_cast<uintptr_t>(p)] = a;
  *out = p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  cudaDeviceSynchronize();
  using namespace sk_sim;
  Alloc a;
  {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == g_allocs.end()) return ret(cudaErrorInvalidValue);
    a = it->second;
    g_allocs.erase(it);
    g_used -= a.bytes;
  }
  munmap(a.map, a.map_len);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lk(sk_sim::g_mem_mu);
    if (!sk_sim::g_allocs.count(reinterpret_cast<uintptr_t>(p))) return ret(cudaErrorInvalidValue);
  }
  stream_of(s)->push([p] {
    using namespace sk_sim;
    Alloc a;
    {
      std::lock_guard<std::mutex> lk(g_mem_mu);
      auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
      if (it == g_allocs.end()) return;
      a = it->second;
      g_allocs.erase(it);
      g_used -= a.bytes;
    }
    munmap(a.map, a.map_len);
  });
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t e = check_copy(dst, src, bytes, kind);
  if (e != cudaSuccess) return ret(e);
  const cudaError_t s = cudaDeviceSynchronize();
  if (s != cudaSuccess) return s;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  const cudaError_t e = check_copy(dst, src, bytes, kind);
  if (e != cudaSuccess) return ret(e);
  if (bytes) stream_of(s)->push([dst, src, bytes] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
  if (!device_range_ok(p, bytes)) return ret(cudaErrorInvalidValue);
  if (bytes) stream_of(s)->push([p, value, bytes] { std::memset(p, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new SimStream();
  std::lock_guard<std::mutex> lk(g_streams_mu);
  g_streams.push_back(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  s->sync();
  {
    std::lock_guard<std::mutex> lk(g_streams_mu);
    g_streams.erase(std::remove(g_streams.begin(), g_streams.end(), s), g_streams.end());
  }
  {
    std::lock_guard<std::mutex> lk(s->mu);
    s->stop = true;
    s->cv.notify_all();
  }
  s->thread.join();
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return stream_of(s)->sync(); }
cudaError_t cudaDeviceSynchronize() {
  stream_of(nullptr);
  std::vector<SimStream*> all;
  {
    std::lock_guard<std::mutex> lk(g_streams_mu);
    all = g_streams;
  }
  cudaError_t first = cudaSuccess;
  for (SimStream* s : all) {
    const cudaError_t e = s->sync();
    if (first == cudaSuccess) first = e;
  }
  return first;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new SimEvent();
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return ret(cudaErrorInvalidResourceHandle);
  {
    std::lock_guard<std::mutex> lk(e->mu);
    e->done = false;
  }
  SimStream* st = stream_of(s);
  st->push([e, st] {
    cudaError_t err;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      err = st->err;
      st->err = cudaSuccess;  // reported once, by this event
    }
    std::lock_guard<std::mutex> lk(e->mu);
    e->err = err;
    e->at = std::chrono::steady_clock::now();
    e->done = true;
    e->cv.notify_all();
  });
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  std::unique_lock<std::mutex> lk(e->mu);
  e->cv.wait(lk, [e] { return e->done; });
  const cudaError_t r = e->err;
  e->err = cudaSuccess;
  return r;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  std::lock_guard<std::mutex> lk(e->mu);
  return e->done ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (e) {
    cudaEventSynchronize(e);
    delete e;
  }
  return cudaSuccess;
}
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user) {
  stream_of(s)->push([fn, user] { fn(user); });
  return cudaSuccess;
}
