// Shared pieces of the N-API layer: typed errors, reading typed arrays in place, and the entry points that
// run a job now or on seqkern's dispatcher thread. No N-API call is made off the main thread: workers touch only plain structs.
#pragma once
#include <napi.h>
#include <sys/mman.h>
#include <v8.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/dtype.h"

namespace sk {

// An error with a SeqkernError code; becomes a JS Error with .code (the JS side rewraps it).
struct CodedError : std::runtime_error {
  std::string code;
  CodedError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

inline Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

// A typed array argument viewed in place: pointer, element count, element type, and a share of its
// backing store. Holding the share keeps the memory alive even if the caller transfers or detaches the
// buffer while an async call still reads it (a reference to the JS object alone would not).
struct ArrayView {
  void* data = nullptr;
  int64_t length = 0;
  napi_typedarray_type type = napi_float32_array;
  bool present = false;
  std::shared_ptr<v8::BackingStore> store;
};

// N-API has no way to pin a buffer, so this one step uses V8 directly: in Node a napi_value is a
// v8::Local<v8::Value> (the addon is always built from source against the running Node's headers).
inline std::shared_ptr<v8::BackingStore> backing_store_of(napi_value value) {
  static_assert(sizeof(v8::Local<v8::Value>) == sizeof(napi_value), "napi_value is a v8::Local in Node");
  v8::Local<v8::Value> v;
  std::memcpy(static_cast<void*>(&v), &value, sizeof(value));
  if (v.IsEmpty() || !v->IsArrayBufferView()) return nullptr;
  return v.As<v8::ArrayBufferView>()->Buffer()->GetBackingStore();
}

inline ArrayView get_array(const Napi::Object& o, const char* name, bool required) {
  ArrayView a;
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a typed array, got undefined");
    return a;
  }
  if (!v.IsTypedArray()) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be a typed array");
  // napi_get_typedarray_info gives the element pointer directly (offset applied), for ArrayBuffer and
  // SharedArrayBuffer storage alike; a detached buffer reports length 0.
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(o.Env(), v, &type, &length, &data, &ab, &offset) != napi_ok)
    throw CodedError("BAD_ARGUMENT", std::string("could not read typed array ") + name);
  a.type = type;
  a.length = static_cast<int64_t>(length);
  a.data = data;
  a.store = backing_store_of(v);
  a.present = true;
  return a;
}

inline int64_t get_int(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " to be an integer in [0, 2^31), got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

inline double get_number(const Napi::Object& o, const char* name, double dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return dflt;
  if (!v.IsNumber()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline bool get_bool(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  return v.IsBoolean() && v.As<Napi::Boolean>().Value();
}

// seqkern's own async machinery (native/binding/runtime.cc). An op's job, type-erased: what the dispatcher
// thread runs (and what a chain strings together). Jobs hold only plain structs and pinned backing stores,
// never a napi object, so they may run and be destroyed off the main thread.
struct AnyJob {
  virtual ~AnyJob() = default;
  virtual void run() = 0;
};
template <class Job>
struct JobBox final : AnyJob {
  Job job;
  explicit JobBox(Job j) : job(std::move(j)) {}
  void run() override { job.run(); }
};

// Queues `job` on seqkern's dispatcher thread (one per process, feeding the kernel pool; no libuv thread is
// held while it waits) and returns a Promise settled on this env's main thread through a thread-safe
// function. `cancel` (the call's Int32Array(1), if any) is set when the env is torn down (worker.terminate(),
// exit) so that the kernel stops at its next cancellation point; the Promise then never settles.
Napi::Value submit_job(Napi::Env env, std::unique_ptr<AnyJob> job, const ArrayView& cancel);

// The parsers chain() may call by name: every op exported through export_op is registered.
using AnyParse = std::unique_ptr<AnyJob> (*)(const Napi::Object&);
void register_chain_op(const char* name, AnyParse parse);
template <class Job, Job (*Parse)(const Napi::Object&)>
std::unique_ptr<AnyJob> parse_any(const Napi::Object& o) {
  return std::make_unique<JobBox<Job>>(Parse(o));
}

// Calls f() and turns C++ exceptions into thrown JS errors with codes.
template <class F>
Napi::Value guarded(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const CodedError& e) {
    throw make_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "OUT_OF_MEMORY", "out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw make_error(env, "NATIVE_ERROR", e.what());
  }
}

// DESIGN.md 4: element counts fit int32 work arrays.
constexpr int64_t kMaxElements = 2147483647;

// A shape as text for messages: "[2,3,4]".
inline std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  bool first = true;
  for (int64_t x : d) {
    if (!first) s += ",";
    s += std::to_string(x);
    first = false;
  }
  return s + "]";
}

// Element count of a shape, refused past the cap before it is compared with any array length (an
// overflowing product could otherwise match an empty array).
inline int64_t checked(std::initializer_list<int64_t> d, const char* name) {
  int64_t n = 1;
  for (int64_t x : d)
    if (__builtin_mul_overflow(n, x, &n) || n > kMaxElements)
      throw CodedError("TOO_LARGE", std::string("expected ") + name + " of at most 2^31 - 1 elements, got shape " + dims(d));
  return n;
}

// The element type named by o[key] (default float32), checked against the storage of array `a` if present.
inline DType parse_dtype(const Napi::Object& o, const char* key, const ArrayView& a, const char* name) {
  Napi::Value v = o.Get(key);
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "float32";
  DType dt;
  napi_typedarray_type want;
  if (s == "float32") dt = DType::f32, want = napi_float32_array;
  else if (s == "float16") dt = DType::f16, want = napi_uint16_array;
  else if (s == "bfloat16") dt = DType::bf16, want = napi_uint16_array;
  else throw CodedError("BAD_DTYPE", std::string("expected ") + name + " dtype float32, float16 or bfloat16, got " + s);
  if (a.present && a.type != want)
    throw CodedError("BAD_DTYPE", std::string("expected ") + name + " data " +
                                      (want == napi_float32_array ? "Float32Array" : "Uint16Array") + " for dtype " + s);
  return dt;
}

// The one dtype (o.dtype) of q, k, v and o, each array checked against it in that order.
inline DType parse_qkvo_dtype(const Napi::Object& o, const ArrayView& q, const ArrayView& k, const ArrayView& v,
                              const ArrayView& out) {
  const DType dt = parse_dtype(o, "dtype", q, "q");
  parse_dtype(o, "dtype", k, "k");
  parse_dtype(o, "dtype", v, "v");
  parse_dtype(o, "dtype", out, "o");
  return dt;
}

inline void check_len(const ArrayView& a, int64_t want, const char* name, const std::string& shape) {
  if (a.length != want)
    throw CodedError("SHAPE_MISMATCH", std::string("expected ") + name + " of shape " + shape + " (" +
                                           std::to_string(want) + " elements), got " + std::to_string(a.length));
}

// Outputs are fresh arrays the kernels write once: on a large one, ask for transparent huge pages so its
// first touch costs a few faults per 2 MiB rather than one per 4 KiB (64 MiB of o is ~16k faults, about a
// quarter of a T=4096 delta prefill). Only a hint: without THP, off Linux, or on memory already touched
// (a reused buffer) nothing changes.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  if (bytes < static_cast<int64_t>(4 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

// The byte ranges [a, a + a_bytes) and [b, b + b_bytes) meet (compared by address, so views of one
// SharedArrayBuffer are caught too).
inline bool overlap(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  if (!a || !b || a_bytes <= 0 || b_bytes <= 0) return false;
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + static_cast<uintptr_t>(b_bytes) && y < x + static_cast<uintptr_t>(a_bytes);
}

// A private copy of a small int32 metadata array (offsets, block tables, slot indices, lengths), taken on the
// main thread at the call. Validate the copy and let the kernel read only it: the caller's array may change
// (a reused offsets array, another thread writing a SharedArrayBuffer) while the job runs.
inline std::vector<int32_t> copy_int32(const ArrayView& a, const char* name) {
  if (!a.present) return {};
  if (a.type != napi_int32_array) throw CodedError("BAD_DTYPE", std::string("expected ") + name + " to be an Int32Array");
  const int32_t* p = static_cast<const int32_t*>(a.data);
  return std::vector<int32_t>(p, p + a.length);
}

// The abort flag an async call polls (JS sets element 0 on abort), or null.
inline const int32_t* cancel_flag(const ArrayView& cancel) {
  if (!cancel.present) return nullptr;
  if (cancel.type != napi_int32_array || cancel.length < 1) throw CodedError("BAD_DTYPE", "expected cancel to be an Int32Array(1)");
  return static_cast<const int32_t*>(cancel.data);
}

// For a call that writes in place, whose output must end all old or all new: the cancel flag is read once,
// before any write, and then dropped so the kernel never stops halfway.
inline void cancel_before_writing(const int32_t*& cancel) {
  if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED) != 0) throw CodedError("ABORTED", "aborted");
  cancel = nullptr;
}

// The backing stores of the arrays given (those present), for a job to hold until it ends.
inline std::vector<std::shared_ptr<v8::BackingStore>> pin(std::initializer_list<const ArrayView*> arrays) {
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  for (const ArrayView* x : arrays)
    if (x->store) pinned.push_back(x->store);
  return pinned;
}

// The two entry points of an op: `fn(args)` runs Job now; `fnAsync(args)` runs it on a worker and returns a
// Promise. Parse reads and checks the argument object on the main thread either way.
template <class Job, Job (*Parse)(const Napi::Object&)>
Napi::Value run_now(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("BAD_ARGUMENT", "expected an argument object");
    Job job = Parse(info[0].As<Napi::Object>());
    job.run();
    return env.Undefined();
  });
}

template <class Job, Job (*Parse)(const Napi::Object&)>
Napi::Value run_async(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("BAD_ARGUMENT", "expected an argument object");
    Napi::Object args = info[0].As<Napi::Object>();
    std::unique_ptr<AnyJob> job = std::make_unique<JobBox<Job>>(Parse(args));
    return submit_job(env, std::move(job), get_array(args, "cancel", false));
  });
}

// Exports an op as `name` (run_now) and `async_name` (run_async).
template <class Job, Job (*Parse)(const Napi::Object&)>
void export_op(Napi::Env env, Napi::Object exports, const char* name, const char* async_name) {
  exports.Set(name, Napi::Function::New(env, run_now<Job, Parse>));
  exports.Set(async_name, Napi::Function::New(env, run_async<Job, Parse>));
  register_chain_op(name, parse_any<Job, Parse>);
}

void register_delta(Napi::Env env, Napi::Object exports);
void register_limits(Napi::Env env, Napi::Object exports);
void register_softmax(Napi::Env env, Napi::Object exports);
void register_attention(Napi::Env env, Napi::Object exports);
void register_hyper(Napi::Env env, Napi::Object exports);
void register_kvcache(Napi::Env env, Napi::Object exports);
void register_rotary(Napi::Env env, Napi::Object exports);
void register_nala(Napi::Env env, Napi::Object exports);
void register_tensor(Napi::Env env, Napi::Object exports);
void register_runtime(Napi::Env env, Napi::Object exports);
void register_linear(Napi::Env env, Napi::Object exports);
void register_conv(Napi::Env env, Napi::Object exports);
void register_norm(Napi::Env env, Napi::Object exports);

}  // namespace sk
