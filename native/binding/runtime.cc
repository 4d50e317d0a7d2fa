// seqkern's async runtime: the job queue and dispatcher thread every `…Async` call goes through, the
// thread-safe function that settles its Promise, chained ops (one job running several ops), and the delta
// chunk/recurrent calibration as a job.
//
//   chain({ ops: [{ fn, args }, ...], cancel? }) / chainAsync(same) -> undefined / Promise<undefined>
//     fn: the sync name of an op exported through export_op ('softmax', 'deltaRule', 'attention', ...);
//     args: that op's own argument object. Every op is parsed (checked) before any runs; an error names
//     the op's index and fn. cancel is checked before each op (and passed to the ops by the JS side).
//   deltaCalibrate({ K, V, result: Int32Array(1), times?: Float64Array(2) }) / deltaCalibrateAsync(same)
//     times the chunk and the recurrent prefill on a synthetic problem (T = 512, 2 heads per pool thread)
//     and writes 0 (chunk faster) or 1 (recurrent) into result[0], the best times in ns into times.
//
// How an async call runs: run_async (common.h) parses the arguments on the main thread, then submit_job
// puts the job on one process-wide FIFO. A single dispatcher thread takes jobs in order and runs each (it
// is thread 0 of the kernel pool while it does), then hands the outcome to the calling env's thread-safe
// function; its callback settles the Promise on that env's main thread. libuv's threadpool is not used, so
// queued calls hold no libuv thread (fs, dns and zlib keep theirs). The dispatcher spins ~50 us for the
// next job before it sleeps, like the pool's workers, so back-to-back calls skip the kernel wake-up.
//
// Teardown: each env (the main thread, a worker) has an EnvState. Its cleanup hook (worker.terminate(),
// exit) marks it dead and sets the cancel flag of its running job, so the kernel stops at its next
// cancellation point; its queued jobs are skipped. Their Promises are never settled (nobody can receive
// them), and no napi call is made for a dead env: the thread-safe function's finalizer clears the handle
// under the state's mutex before Node frees it.
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "cpu/delta.h"
#include "cpu/threadpool.h"

namespace sk {
namespace {

struct EnvState {
  napi_env env = nullptr;
  std::atomic<bool> alive{true};
  std::mutex mu;                             // guards tsfn against its finalizer
  napi_threadsafe_function tsfn = nullptr;   // null once Node finalised it
  // Main thread only:
  std::unordered_map<uint64_t, napi_deferred> pending;
  uint64_t next_id = 1;
};

struct Task {
  std::unique_ptr<AnyJob> job;
  std::shared_ptr<EnvState> env;
  uint64_t id = 0;
  int32_t* cancel = nullptr;
  std::shared_ptr<v8::BackingStore> cancel_store;
};

// The outcome of a task, carried to the env's main thread.
struct Done {
  uint64_t id = 0;
  bool ok = true;
  std::string code, message;
};


inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void deliver(const std::shared_ptr<EnvState>& s, Done* d) {
  std::lock_guard<std::mutex> lk(s->mu);
  if (s->tsfn && s->alive.load() && napi_call_threadsafe_function(s->tsfn, d, napi_tsfn_nonblocking) == napi_ok) return;
  delete d;
}

// One FIFO and one dispatcher thread for the process (the pool it feeds is process-wide too). Never
// destroyed: at exit the detached thread may still be finishing a cancelled kernel.
class Dispatcher {
 public:
  void push(Task t) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(t));
      size_.fetch_add(1);
      if (!started_) {
        started_ = true;
        std::thread([this] { loop(); }).detach();
      }
    }
    if (sleeping_.load()) cv_.notify_one();
  }

  // The env's cleanup hook: stop its running job.
  void cancel_env(const EnvState* s) {
    std::lock_guard<std::mutex> lk(mu_);
    if (current_ && current_->env.get() == s && current_->cancel) __atomic_store_n(current_->cancel, 1, __ATOMIC_RELAXED);
  }

 private:
  Task pop() {
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us());
    for (int i = 0; size_.load(std::memory_order_relaxed) == 0; i++) {
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) break;
      cpu_relax();
    }
    std::unique_lock<std::mutex> lk(mu_);
    if (q_.empty()) {
      sleeping_.store(true);
      cv_.wait(lk, [this] { return !q_.empty(); });
      sleeping_.store(false);
    }
    Task t = std::move(q_.front());
    q_.pop_front();
    size_.fetch_sub(1);
    return t;
  }

  void loop() {
    for (;;) {
      Task t = pop();
      Done* d = new Done();
      d->id = t.id;
      if (!t.env->alive.load()) {
        d->ok = false, d->code = "ABORTED", d->message = "aborted";
      } else {
        {
          std::lock_guard<std::mutex> lk(mu_);
          current_ = &t;
        }
        try {
          t.job->run();
        } catch (const CodedError& e) {
          d->ok = false, d->code = e.code, d->message = e.what();
        } catch (const std::bad_alloc&) {
          d->ok = false, d->code = "OUT_OF_MEMORY", d->message = "out of memory";
        } catch (const std::exception& e) {
          d->ok = false, d->code = "NATIVE_ERROR", d->message = e.what();
        } catch (...) {
          d->ok = false, d->code = "NATIVE_ERROR", d->message = "unknown native error";
        }
        std::lock_guard<std::mutex> lk(mu_);
        current_ = nullptr;
      }
      t.job.reset();  // unpins the arrays here, before the main thread hears of it
      deliver(t.env, d);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> q_;
  std::atomic<int64_t> size_{0};
  std::atomic<bool> sleeping_{false};
  bool started_ = false;
  Task* current_ = nullptr;
};

Dispatcher& dispatcher() {
  static Dispatcher* d = new Dispatcher();  // never destroyed (see above)
  return *d;
}

napi_value make_js_error(napi_env env, const std::string& code, const std::string& msg) {
  napi_value m = nullptr, c = nullptr, e = nullptr;
  napi_create_string_utf8(env, msg.c_str(), msg.size(), &m);
  napi_create_string_utf8(env, code.c_str(), code.size(), &c);
  napi_create_error(env, nullptr, m, &e);
  if (e) napi_set_named_property(env, e, "code", c);
  return e;
}

// The thread-safe function's callback, on the env's main thread (env null: Node is emptying the queue of a
// finalised function). Makes only C napi calls, whose failures (an env being torn down) are ignored.
void call_js(napi_env env, napi_value, void* context, void* data) {
  std::unique_ptr<Done> d(static_cast<Done*>(data));
  if (!env || !context) return;
  EnvState* s = static_cast<EnvState*>(context);
  if (!s->alive.load()) return;
  auto it = s->pending.find(d->id);
  if (it == s->pending.end()) return;
  napi_deferred def = it->second;
  s->pending.erase(it);
  if (s->pending.empty() && s->tsfn) napi_unref_threadsafe_function(env, s->tsfn);
  if (d->ok) {
    napi_value u = nullptr;
    napi_get_undefined(env, &u);
    napi_resolve_deferred(env, def, u);
  } else {
    napi_reject_deferred(env, def, make_js_error(env, d->code, d->message));
  }
}

void tsfn_finalize(napi_env, void* data, void*) {
  auto* keep = static_cast<std::shared_ptr<EnvState>*>(data);
  {
    std::lock_guard<std::mutex> lk((*keep)->mu);
    (*keep)->tsfn = nullptr;
  }
  delete keep;
}

void env_cleanup(void* arg) {
  auto* keep = static_cast<std::shared_ptr<EnvState>*>(arg);
  (*keep)->alive.store(false);
  dispatcher().cancel_env(keep->get());
  // The deferreds are left to Node, which frees an env's remaining references itself.
  (*keep)->pending.clear();
  delete keep;
}

// One state per env; an env's JS runs on one thread, and a thread hosts one env at a time.
thread_local std::shared_ptr<EnvState> t_state;

EnvState& state_for(napi_env env) {
  if (t_state && t_state->env == env && t_state->alive.load()) return *t_state;
  auto s = std::make_shared<EnvState>();
  s->env = env;
  napi_value name = nullptr;
  napi_create_string_utf8(env, "seqkern", NAPI_AUTO_LENGTH, &name);
  auto* fin = new std::shared_ptr<EnvState>(s);
  napi_threadsafe_function tsfn = nullptr;
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, fin, tsfn_finalize, s.get(), call_js, &tsfn) != napi_ok) {
    delete fin;
    throw CodedError("NATIVE_ERROR", "could not create the thread-safe function of the async queue");
  }
  s->tsfn = tsfn;
  napi_unref_threadsafe_function(env, tsfn);  // referenced only while calls are in flight
  napi_add_env_cleanup_hook(env, env_cleanup, new std::shared_ptr<EnvState>(s));
  t_state = s;
  return *s;
}

std::mutex g_ops_mu;
std::unordered_map<std::string, AnyParse>& chain_ops() {
  static auto* m = new std::unordered_map<std::string, AnyParse>();
  return *m;
}

// ---- chain ----

struct ChainJob {
  std::vector<std::unique_ptr<AnyJob>> ops;
  std::vector<std::string> names;
  const int32_t* cancel = nullptr;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() {
    for (size_t i = 0; i < ops.size(); i++) {
      if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED) != 0) throw CodedError("ABORTED", "aborted");
      try {
        ops[i]->run();
      } catch (const CodedError& e) {
        if (e.code == "ABORTED") throw;
        throw CodedError(e.code, "op " + std::to_string(i) + " (" + names[i] + "): " + e.what());
      } catch (const std::bad_alloc&) {
        throw;
      } catch (const std::exception& e) {
        throw CodedError("NATIVE_ERROR", "op " + std::to_string(i) + " (" + names[i] + "): " + e.what());
      }
    }
  }
};

ChainJob parse_chain(const Napi::Object& o) {
  ChainJob job;
  Napi::Value ops = o.Get("ops");
  if (!ops.IsArray()) throw CodedError("BAD_ARGUMENT", "expected ops to be an array of { fn, args }");
  Napi::Array arr = ops.As<Napi::Array>();
  const uint32_t n = arr.Length();
  for (uint32_t i = 0; i < n; i++) {
    const std::string at = "op " + std::to_string(i);
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) throw CodedError("BAD_ARGUMENT", "expected " + at + " to be an object { fn, args }");
    Napi::Object eo = e.As<Napi::Object>();
    Napi::Value fn = eo.Get("fn"), args = eo.Get("args");
    if (!fn.IsString()) throw CodedError("BAD_ARGUMENT", "expected " + at + " fn to be the name of an op");
    const std::string name = fn.As<Napi::String>().Utf8Value();
    AnyParse parse = nullptr;
    {
      std::lock_guard<std::mutex> lk(g_ops_mu);
      auto it = chain_ops().find(name);
      if (it != chain_ops().end()) parse = it->second;
    }
    if (!parse) throw CodedError("BAD_ARGUMENT", "expected " + at + " fn to name an op, got '" + name + "'");
    if (!args.IsObject()) throw CodedError("BAD_ARGUMENT", "expected " + at + " (" + name + ") args to be an object");
    try {
      job.ops.push_back(parse(args.As<Napi::Object>()));
    } catch (const CodedError& err) {
      throw CodedError(err.code, at + " (" + name + "): " + err.what());
    }
    job.names.push_back(name);
  }
  ArrayView cancel = get_array(o, "cancel", false);
  job.cancel = cancel_flag(cancel);
  job.pinned = pin({&cancel});
  return job;
}

// ---- delta calibration ----

struct CalibrateJob {
  int K = 0, V = 0;
  int32_t* result = nullptr;
  double* times = nullptr;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;

  static void fill(std::vector<float>& x, float lo, float hi, uint32_t seed) {
    uint32_t s = seed;
    for (float& e : x) {
      s = s * 1664525u + 1013904223u;
      e = lo + (hi - lo) * static_cast<float>(s / 4294967296.0);
    }
  }

  void run() {
    const int T = 512, HV = 2 * num_threads();
    std::vector<float> q(static_cast<size_t>(T) * HV * K), k(q.size()), v(static_cast<size_t>(T) * HV * V),
        beta(static_cast<size_t>(T) * HV), g(beta.size()), o(v.size());
    fill(q, -1, 1, 1), fill(k, -1, 1, 2), fill(v, -1, 1, 3), fill(beta, 0, 1, 4), fill(g, -0.1f, 0, 5);
    DeltaArgs a;
    a.B = 1, a.T = T, a.H = HV, a.HV = HV, a.K = K, a.V = V, a.N = 1;
    a.q = q.data(), a.k = k.data(), a.v = v.data(), a.beta = beta.data(), a.g = g.data(), a.o = o.data();
    a.decay_kind = DecayKind::log, a.qk_l2norm = true, a.scale = 1.f / std::sqrt(static_cast<float>(K));
    a.chunk_size = 64;
    double best[2] = {INFINITY, INFINITY};
    for (int rep = 0; rep < 4; rep++) {  // rep 0 warms caches and pages
      for (int alg = 0; alg < 2; alg++) {
        a.use_chunk = alg == 0;
        const auto t0 = std::chrono::steady_clock::now();
        delta_prefill(a);
        const double dt = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
        if (rep > 0) best[alg] = std::min(best[alg], dt);
      }
    }
    *result = best[0] <= best[1] ? 0 : 1;
    if (times) times[0] = best[0], times[1] = best[1];
  }
};

CalibrateJob parse_calibrate(const Napi::Object& o) {
  CalibrateJob job;
  const int64_t K = get_int(o, "K"), V = get_int(o, "V");
  if (K < 1 || V < 1 || K > 1024 || V > 1024) throw CodedError("OUT_OF_RANGE", "expected K, V in [1, 1024], got " + dims({K, V}));
  job.K = static_cast<int>(K), job.V = static_cast<int>(V);
  ArrayView r = get_array(o, "result", true), t = get_array(o, "times", false);
  if (r.type != napi_int32_array || r.length < 1) throw CodedError("BAD_DTYPE", "expected result to be an Int32Array(1)");
  if (t.present && (t.type != napi_float64_array || t.length < 2)) throw CodedError("BAD_DTYPE", "expected times to be a Float64Array(2)");
  job.result = static_cast<int32_t*>(r.data);
  job.times = t.present ? static_cast<double*>(t.data) : nullptr;
  job.pinned = pin({&r, &t});
  return job;
}

}  // namespace

Napi::Value submit_job(Napi::Env env, std::unique_ptr<AnyJob> job, const ArrayView& cancel) {
  EnvState& s = state_for(env);
  napi_deferred def = nullptr;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &def, &promise) != napi_ok) throw CodedError("NATIVE_ERROR", "could not create a Promise");
  Task t;
  t.job = std::move(job);
  t.env = t_state;
  t.id = s.next_id++;
  if (cancel.present && cancel.type == napi_int32_array && cancel.length >= 1) {
    t.cancel = static_cast<int32_t*>(cancel.data);
    t.cancel_store = cancel.store;
  }
  if (s.pending.empty()) napi_ref_threadsafe_function(env, s.tsfn);  // keeps the loop alive while calls are out
  s.pending.emplace(t.id, def);
  dispatcher().push(std::move(t));
  return Napi::Value(env, promise);
}

void register_chain_op(const char* name, AnyParse parse) {
  std::lock_guard<std::mutex> lk(g_ops_mu);
  chain_ops()[name] = parse;
}

void register_runtime(Napi::Env env, Napi::Object exports) {
  // chain is not itself a chain op (no nesting): exported by hand.
  exports.Set("chain", Napi::Function::New(env, run_now<ChainJob, parse_chain>));
  exports.Set("chainAsync", Napi::Function::New(env, run_async<ChainJob, parse_chain>));
  export_op<CalibrateJob, parse_calibrate>(env, exports, "deltaCalibrate", "deltaCalibrateAsync");
}

}  // namespace sk
