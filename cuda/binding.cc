// N-API glue of the CUDA backend: device memory (handles the TypeScript side holds), copies, one stream per
// process, the ops on device tensors, and errors. Built into the CUDA addon (real runtime) and into the
// simulator addon seqkern_sim.node (SEQKERN_CUDA_SIM: the same code against cuda/sim).
//
//   cudaInfo()                               -> { available, simulated, reason?, device, computeCapability, ... }
//   cudaAlloc(bytes)                         -> handle (a number); OUT_OF_MEMORY says bytes asked and free
//   cudaFree(handle)                         -> false when it was freed already (stream-ordered)
//   cudaUpload(handle, typedArray)           -> undefined (copied in, synchronised)
//   cudaDownload(handle, typedArray)         -> undefined (copied out, synchronised)
//   cudaDownloadAsync(handle, typedArray)    -> Promise<undefined>
//   cudaSoftmax({ x, out, dtype, rows, cols, algorithm }) and cudaSoftmaxAsync(same)
//   cudaAttention({...}) / cudaAttentionAsync, cudaDelta({...}) / cudaDeltaAsync
//   cudaSynchronize()
// Async forms enqueue the work and a host function after it; the host function wakes the JS thread through
// a thread-safe function, which settles the Promise: no thread waits on the GPU meanwhile.
#include <napi.h>
#include <v8.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels.h"

namespace sk_cuda {
namespace {

struct CodedError : std::runtime_error {
  std::string code;
  CodedError(std::string c, const std::string& m) : std::runtime_error(m), code(std::move(c)) {}
};

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

std::string describe(cudaError_t e) {
  std::string s = std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
#ifdef SEQKERN_CUDA_SIM
  if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure) {
    const std::string f = sk_sim::last_fault();
    if (!f.empty()) s += ": " + f;
  }
#endif
  return s;
}

void check(cudaError_t e, const std::string& op) {
  if (e == cudaSuccess) return;
  if (e == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total = 0;
    cudaMemGetInfo(&free_b, &total);
    throw CodedError("OUT_OF_MEMORY", op + ": device memory exhausted (" + std::to_string(free_b) + " bytes free)");
  }
  throw CodedError("CUDA_ERROR", op + ": " + describe(e));
}

// ---- the process's stream and the device buffers ----

cudaStream_t g_stream = nullptr;
std::once_flag g_init;
cudaError_t g_init_error = cudaSuccess;

cudaError_t init() {
  std::call_once(g_init, [] {
    int n = 0;
    g_init_error = cudaGetDeviceCount(&n);
    if (g_init_error == cudaSuccess && n == 0) g_init_error = cudaErrorNoDevice;
    if (g_init_error == cudaSuccess) g_init_error = cudaSetDevice(0);
    if (g_init_error == cudaSuccess) g_init_error = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking);
  });
  return g_init_error;
}

cudaStream_t stream(const std::string& op) {
  const cudaError_t e = init();
  if (e != cudaSuccess) throw CodedError("NO_CUDA", op + ": CUDA is unavailable: " + describe(e));
  return g_stream;
}

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
};
std::unordered_map<int64_t, DevBuf> g_bufs;
int64_t g_next = 1;

DevBuf get_buf(const Napi::Object& o, const char* name, size_t need, const std::string& op) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) throw CodedError("BAD_ARGUMENT", op + ": expected " + name + " to be a device tensor handle");
  auto it = g_bufs.find(static_cast<int64_t>(v.As<Napi::Number>().DoubleValue()));
  if (it == g_bufs.end()) throw CodedError("BAD_ARGUMENT", op + ": expected " + name + " to be a live device tensor, got a disposed one");
  if (it->second.bytes < need)
    throw CodedError("SHAPE_MISMATCH", op + ": expected " + name + " of at least " + std::to_string(need) + " bytes, got " +
                                           std::to_string(it->second.bytes));
  return it->second;
}

bool has(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  return !v.IsUndefined() && !v.IsNull();
}

int64_t get_int(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " to be an integer in [0, 2^31)");
  return static_cast<int64_t>(d);
}

std::string get_str(const Napi::Object& o, const char* name, const char* dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return dflt;
  if (!v.IsString()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a string");
  return v.As<Napi::String>().Utf8Value();
}

DT get_dt(const Napi::Object& o, const char* name) {
  const std::string s = get_str(o, name, "float32");
  if (s == "float32") return DT::f32;
  if (s == "float16") return DT::f16;
  if (s == "bfloat16") return DT::bf16;
  throw CodedError("BAD_DTYPE", std::string("expected ") + name + " float32, float16 or bfloat16, got " + s);
}
size_t dt_bytes(DT d) { return d == DT::f32 ? 4 : 2; }

struct HostArray {
  void* data = nullptr;
  size_t bytes = 0;
  std::shared_ptr<v8::BackingStore> store;
};

HostArray host_array(Napi::Value v, const char* name) {
  if (!v.IsTypedArray()) throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a typed array");
  napi_value nv = v;
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_value ab;
  napi_get_typedarray_info(v.Env(), nv, &type, &length, &data, &ab, &offset);
  HostArray h;
  h.data = data;
  h.bytes = v.As<Napi::TypedArray>().ByteLength();
  v8::Local<v8::Value> lv;
  std::memcpy(static_cast<void*>(&lv), &nv, sizeof nv);
  if (!lv.IsEmpty() && lv->IsArrayBufferView()) h.store = lv.As<v8::ArrayBufferView>()->Buffer()->GetBackingStore();
  return h;
}

// What an enqueued call keeps alive until the stream has run it: host arrays it reads or writes, staging
// copies of small metadata, and temporary device buffers (freed in stream order after the work).
struct Keep {
  std::vector<std::shared_ptr<v8::BackingStore>> stores;
  std::vector<std::vector<int32_t>> ints;
  std::vector<void*> temps;
};

void* temp_alloc(Keep& k, size_t bytes, const std::string& op) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  check(cudaMallocAsync(&p, bytes, g_stream), op);
  k.temps.push_back(p);
  return p;
}

// A host Int32Array (cuSeqlens) copied to the device through a staging copy taken now.
const int32_t* upload_ints(Keep& k, const Napi::Object& o, const char* name, const std::string& op, int& count) {
  count = 0;
  if (!has(o, name)) return nullptr;
  Napi::Value v = o.Get(name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw CodedError("BAD_DTYPE", op + ": expected " + name + " to be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  k.ints.emplace_back(a.Data(), a.Data() + a.ElementLength());
  count = static_cast<int>(a.ElementLength());
  void* d = temp_alloc(k, count * sizeof(int32_t), op);
  if (d) check(cudaMemcpyAsync(d, k.ints.back().data(), count * sizeof(int32_t), cudaMemcpyHostToDevice, g_stream), op);
  return static_cast<const int32_t*>(d);
}

struct Pending {
  Napi::Promise::Deferred deferred;
  Napi::ThreadSafeFunction tsfn;
  cudaEvent_t done = nullptr;
  std::string op;
  std::unique_ptr<Keep> keep;
  explicit Pending(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

void host_done(void* user) {
  Pending* p = static_cast<Pending*>(user);
  p->tsfn.NonBlockingCall([p](Napi::Env env, Napi::Function) {
    const cudaError_t e = cudaEventSynchronize(p->done);  // complete already: returns the work's error
    cudaEventDestroy(p->done);
    for (void* t : p->keep->temps) cudaFreeAsync(t, g_stream);
    if (e == cudaSuccess) {
      p->deferred.Resolve(env.Undefined());
    } else {
      try {
        check(e, p->op);
      } catch (const CodedError& ce) {
        p->deferred.Reject(make_error(env, ce.code, ce.what()).Value());
      }
    }
    p->tsfn.Release();
    delete p;
  });
}

// Ends an op: synchronously (wait for the stream, throw its error) or as a Promise.
Napi::Value finish(Napi::Env env, const std::string& op, bool async, std::unique_ptr<Keep> keep) {
  check(cudaGetLastError(), op);  // launch configuration errors
  if (!async) {
    const cudaError_t e = cudaStreamSynchronize(g_stream);
    for (void* t : keep->temps) cudaFreeAsync(t, g_stream);
    check(e, op);
    return env.Undefined();
  }
  auto* p = new Pending(env);
  p->op = op;
  p->keep = std::move(keep);
  p->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "seqkern-cuda", 0, 1);
  cudaError_t e = cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventRecord(p->done, g_stream);
  if (e == cudaSuccess) e = cudaLaunchHostFunc(g_stream, host_done, p);
  if (e != cudaSuccess) {
    p->tsfn.Release();
    Napi::Promise pr = p->deferred.Promise();
    delete p;
    check(e, op);
    return pr;
  }
  return p->deferred.Promise();
}

template <class F>
Napi::Value guarded(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const CodedError& e) {
    throw make_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "OUT_OF_MEMORY", "out of host memory");
  }
}

Napi::Object args_of(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("BAD_ARGUMENT", "expected an argument object");
  return info[0].As<Napi::Object>();
}

// ---- entries ----

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef SEQKERN_CUDA_SIM
  o.Set("simulated", true);
  o.Set("schedules", sk_sim::schedules());
#else
  o.Set("simulated", false);
#endif
  const cudaError_t e = init();
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  o.Set("driverVersion", drv);
  o.Set("runtimeVersion", rt);
  if (e != cudaSuccess) {
    o.Set("available", false);
    std::string why = e == cudaErrorNoDevice ? "no CUDA device" : drv == 0 ? "no CUDA driver" : describe(e);
    o.Set("reason", why);
    return o;
  }
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  size_t free_b = 0, total = 0;
  cudaMemGetInfo(&free_b, &total);
  o.Set("available", true);
  o.Set("device", std::string(p.name));
  o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
  o.Set("memoryBytes", static_cast<double>(total));
  o.Set("freeBytes", static_cast<double>(free_b));
  o.Set("multiprocessors", p.multiProcessorCount);
  return o;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = "to('cuda')";
    if (info.Length() < 1 || !info[0].IsNumber()) throw CodedError("BAD_ARGUMENT", "expected bytes to be a number");
    const double want = info[0].As<Napi::Number>().DoubleValue();
    if (!(want >= 0) || want > 9.0e15) throw CodedError("OUT_OF_RANGE", "expected bytes >= 0");
    cudaStream_t s = stream(op);
    void* p = nullptr;
    const size_t bytes = static_cast<size_t>(want);
    const cudaError_t e = bytes ? cudaMallocAsync(&p, bytes, s) : cudaSuccess;
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total = 0;
      cudaMemGetInfo(&free_b, &total);
      throw CodedError("OUT_OF_MEMORY", "could not allocate " + std::to_string(bytes) + " bytes of device memory (" +
                                            std::to_string(free_b) + " bytes free of " + std::to_string(total) + ")");
    }
    check(e, op);
    const int64_t id = g_next++;
    g_bufs[id] = DevBuf{p, bytes};
    return Napi::Number::New(env, static_cast<double>(id));
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return Napi::Boolean::New(env, false);
  auto it = g_bufs.find(static_cast<int64_t>(info[0].As<Napi::Number>().DoubleValue()));
  if (it == g_bufs.end()) return Napi::Boolean::New(env, false);
  if (it->second.p) cudaFreeAsync(it->second.p, g_stream);
  g_bufs.erase(it);
  return Napi::Boolean::New(env, true);
}

Napi::Value Copy(const Napi::CallbackInfo& info, bool up, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = up ? "to('cuda')" : "to('cpu')";
    cudaStream_t s = stream(op);
    if (info.Length() < 2 || !info[0].IsNumber()) throw CodedError("BAD_ARGUMENT", "expected (handle, typedArray)");
    auto it = g_bufs.find(static_cast<int64_t>(info[0].As<Napi::Number>().DoubleValue()));
    if (it == g_bufs.end()) throw CodedError("BAD_ARGUMENT", op + ": expected a live device tensor, got a disposed one");
    HostArray h = host_array(info[1], "data");
    if (h.bytes != it->second.bytes)
      throw CodedError("SHAPE_MISMATCH", op + ": expected " + std::to_string(it->second.bytes) + " bytes, got " + std::to_string(h.bytes));
    auto keep = std::make_unique<Keep>();
    if (h.store) keep->stores.push_back(h.store);
    if (h.bytes) {
      check(up ? cudaMemcpyAsync(it->second.p, h.data, h.bytes, cudaMemcpyHostToDevice, s)
               : cudaMemcpyAsync(h.data, it->second.p, h.bytes, cudaMemcpyDeviceToHost, s),
            op);
    }
    return finish(env, op, async, std::move(keep));
  });
}

Napi::Value Upload(const Napi::CallbackInfo& info) { return Copy(info, true, false); }
Napi::Value Download(const Napi::CallbackInfo& info) { return Copy(info, false, false); }
Napi::Value DownloadAsync(const Napi::CallbackInfo& info) { return Copy(info, false, true); }

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    check(cudaStreamSynchronize(stream("synchronize")), "synchronize");
    return env.Undefined();
  });
}

Napi::Value Softmax(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = async ? "softmaxAsync" : "softmax";
    Napi::Object o = args_of(info);
    cudaStream_t s = stream(op);
    const DT dt = get_dt(o, "dtype");
    const int64_t rows = get_int(o, "rows"), cols = get_int(o, "cols");
    if (cols < 1) throw CodedError("SHAPE_MISMATCH", op + ": expected cols >= 1");
    const size_t need = static_cast<size_t>(rows * cols) * dt_bytes(dt);
    DevBuf x = get_buf(o, "x", need, op), y = get_buf(o, "out", need, op);
    const std::string alg = get_str(o, "algorithm", "two-pass");
    if (alg != "two-pass" && alg != "three-pass") throw CodedError("BAD_ARGUMENT", op + ": unknown algorithm " + alg);
    auto keep = std::make_unique<Keep>();
    float* work = static_cast<float*>(temp_alloc(*keep, softmax_workspace(rows, cols) * sizeof(float), op));
    check(softmax(x.p, y.p, dt, rows, cols, alg == "three-pass", work, s), op);
    return finish(env, op, async, std::move(keep));
  });
}
Napi::Value SoftmaxSync(const Napi::CallbackInfo& info) { return Softmax(info, false); }
Napi::Value SoftmaxAsync(const Napi::CallbackInfo& info) { return Softmax(info, true); }

Napi::Value Attention(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = async ? "attentionAsync" : "attention";
    Napi::Object o = args_of(info);
    cudaStream_t s = stream(op);
    AttentionArgs a{};
    a.B = static_cast<int>(get_int(o, "B")), a.T = static_cast<int>(get_int(o, "T")), a.S = static_cast<int>(get_int(o, "S"));
    a.Hq = static_cast<int>(get_int(o, "Hq")), a.Hk = static_cast<int>(get_int(o, "Hk"));
    a.D = static_cast<int>(get_int(o, "D")), a.Dv = static_cast<int>(get_int(o, "Dv"));
    if (a.Hk < 1 || a.Hq % a.Hk != 0) throw CodedError("SHAPE_MISMATCH", op + ": expected Hq a multiple of Hk");
    a.dt = get_dt(o, "dtype");
    const size_t es = dt_bytes(a.dt);
    a.q = get_buf(o, "q", static_cast<size_t>(a.B) * a.T * a.Hq * a.D * es, op).p;
    a.k = get_buf(o, "k", static_cast<size_t>(a.B) * a.S * a.Hk * a.D * es, op).p;
    a.v = get_buf(o, "v", static_cast<size_t>(a.B) * a.S * a.Hk * a.Dv * es, op).p;
    a.o = get_buf(o, "o", static_cast<size_t>(a.B) * a.T * a.Hq * a.Dv * es, op).p;
    a.lse = has(o, "lse") ? static_cast<float*>(get_buf(o, "lse", static_cast<size_t>(a.B) * a.Hq * a.T * 4, op).p) : nullptr;
    const std::string gk = get_str(o, "gateKind", "none");
    a.gate_kind = gk == "elementwise" ? 1 : gk == "headwise" ? 2 : 0;
    if (a.gate_kind) {
      a.gate_dt = get_dt(o, "gateDtype");
      a.gate = get_buf(o, "gate", static_cast<size_t>(a.B) * a.T * a.Hq * (a.gate_kind == 1 ? a.Dv : 1) * dt_bytes(a.gate_dt), op).p;
    }
    a.causal = o.Get("causal").ToBoolean().Value();
    a.scale = static_cast<float>(o.Get("scale").As<Napi::Number>().DoubleValue());
    auto keep = std::make_unique<Keep>();
    int nq = 0, nk = 0;
    a.cu_q = upload_ints(*keep, o, "cuSeqlens", op, nq);
    a.cu_k = upload_ints(*keep, o, "cuSeqlensK", op, nk);
    if (!a.cu_k && a.cu_q) a.cu_k = a.cu_q, nk = nq;
    a.N = a.cu_q ? nq - 1 : a.B;
    a.max_t = a.T, a.max_s = a.S;
    if (a.cu_q) {
      const std::vector<int32_t>& cq = keep->ints[0];
      const std::vector<int32_t>& ck = keep->ints.size() > 1 ? keep->ints[1] : keep->ints[0];
      a.max_t = 0, a.max_s = 0;
      for (int i = 0; i < a.N; i++) {
        a.max_t = std::max(a.max_t, cq[i + 1] - cq[i]);
        a.max_s = std::max(a.max_s, ck[i + 1] - ck[i]);
      }
    }
    const int64_t wf = attention_workspace(a);
    float* work = static_cast<float*>(temp_alloc(*keep, wf * sizeof(float), op));
    check(attention(a, work, wf, s), op);
    return finish(env, op, async, std::move(keep));
  });
}
Napi::Value AttentionSync(const Napi::CallbackInfo& info) { return Attention(info, false); }
Napi::Value AttentionAsync(const Napi::CallbackInfo& info) { return Attention(info, true); }

Napi::Value Delta(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = async ? "gatedDeltaRuleAsync" : "gatedDeltaRule";
    Napi::Object o = args_of(info);
    cudaStream_t s = stream(op);
    DeltaArgs a{};
    a.B = static_cast<int>(get_int(o, "B")), a.T = static_cast<int>(get_int(o, "T"));
    a.H = static_cast<int>(get_int(o, "H")), a.HV = static_cast<int>(get_int(o, "HV"));
    a.K = static_cast<int>(get_int(o, "K")), a.V = static_cast<int>(get_int(o, "V"));
    if (a.H < 1 || a.HV % a.H != 0) throw CodedError("SHAPE_MISMATCH", op + ": expected HV a multiple of H");
    a.dt = get_dt(o, "dtype");
    const size_t es = dt_bytes(a.dt);
    const size_t tok = static_cast<size_t>(a.B) * a.T;
    a.q = get_buf(o, "q", tok * a.H * a.K * es, op).p;
    a.k = get_buf(o, "k", tok * a.H * a.K * es, op).p;
    a.v = get_buf(o, "v", tok * a.HV * a.V * es, op).p;
    a.beta_dt = get_dt(o, "betaDtype");
    a.beta = get_buf(o, "beta", tok * a.HV * dt_bytes(a.beta_dt), op).p;
    const std::string dk = get_str(o, "decayKind", "none");
    a.decay_kind = dk == "log" ? 1 : dk == "sign" ? 2 : 0;
    if (a.decay_kind) {
      a.g_dt = get_dt(o, "gDtype");
      a.g = get_buf(o, "g", tok * a.HV * dt_bytes(a.g_dt), op).p;
    }
    a.kaczmarz = o.Get("kaczmarz").ToBoolean().Value();
    a.eps = has(o, "eps") ? static_cast<float>(o.Get("eps").As<Napi::Number>().DoubleValue()) : 1e-6f;
    a.qk_l2norm = o.Get("qkL2Norm").ToBoolean().Value();
    a.scale = static_cast<float>(o.Get("scale").As<Napi::Number>().DoubleValue());
    a.o = get_buf(o, "o", tok * a.HV * a.V * es, op).p;
    auto keep = std::make_unique<Keep>();
    int nc = 0;
    a.cu = upload_ints(*keep, o, "cuSeqlens", op, nc);
    a.N = a.cu ? nc - 1 : a.B;
    const size_t sbytes = static_cast<size_t>(a.N) * a.HV * a.K * a.V * 4;
    a.h0 = has(o, "initialState") ? static_cast<const float*>(get_buf(o, "initialState", sbytes, op).p) : nullptr;
    a.ht = has(o, "finalState") ? static_cast<float*>(get_buf(o, "finalState", sbytes, op).p) : nullptr;
    check(delta(a, s), op);
    return finish(env, op, async, std::move(keep));
  });
}
Napi::Value DeltaSync(const Napi::CallbackInfo& info) { return Delta(info, false); }
Napi::Value DeltaAsync(const Napi::CallbackInfo& info) { return Delta(info, true); }

// cudaLimits({ copyBytes, reps, mmaBlocks, mmaIters }) -> { copyMs, mmaMs, sms }: the caller turns them into
// GB/s (2 copyBytes reps / copyMs) and FLOP/s (mmaBlocks 4 warps 4 chains 2 16^3 mmaIters / mmaMs).
Napi::Value Limits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string op = "limits";
    Napi::Object o = args_of(info);
    cudaStream_t s = stream(op);
    const int64_t bytes = get_int(o, "copyBytes") / 16 * 16;
    const int reps = static_cast<int>(get_int(o, "reps"));
    const int mb = static_cast<int>(get_int(o, "mmaBlocks")), iters = static_cast<int>(get_int(o, "mmaIters"));
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    void *src = nullptr, *dst = nullptr, *out = nullptr;
    check(cudaMalloc(&src, bytes), op);
    check(cudaMalloc(&dst, bytes), op);
    check(cudaMalloc(&out, static_cast<size_t>(mb) * 4 * 256 * sizeof(float)), op);
    cudaMemsetAsync(src, 0, bytes, s);
    float copy_ms = 0, mma_ms = 0;
    const cudaError_t e1 = limits_copy(src, dst, bytes, reps, p.multiProcessorCount * 8, s, &copy_ms);
    const cudaError_t e2 = e1 == cudaSuccess ? limits_mma(static_cast<float*>(out), mb, iters, s, &mma_ms) : e1;
    cudaFree(src);
    cudaFree(dst);
    cudaFree(out);
    check(e2, op);
    Napi::Object r = Napi::Object::New(env);
    r.Set("copyMs", copy_ms);
    r.Set("mmaMs", mma_ms);
    r.Set("sms", p.multiProcessorCount);
    return r;
  });
}

}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, Info));
  exports.Set("cudaAlloc", Napi::Function::New(env, Alloc));
  exports.Set("cudaFree", Napi::Function::New(env, Free));
  exports.Set("cudaUpload", Napi::Function::New(env, Upload));
  exports.Set("cudaDownload", Napi::Function::New(env, Download));
  exports.Set("cudaDownloadAsync", Napi::Function::New(env, DownloadAsync));
  exports.Set("cudaSynchronize", Napi::Function::New(env, Synchronize));
  exports.Set("cudaSoftmax", Napi::Function::New(env, SoftmaxSync));
  exports.Set("cudaSoftmaxAsync", Napi::Function::New(env, SoftmaxAsync));
  exports.Set("cudaAttention", Napi::Function::New(env, AttentionSync));
  exports.Set("cudaAttentionAsync", Napi::Function::New(env, AttentionAsync));
  exports.Set("cudaDelta", Napi::Function::New(env, DeltaSync));
  exports.Set("cudaDeltaAsync", Napi::Function::New(env, DeltaAsync));
  exports.Set("cudaLimits", Napi::Function::New(env, Limits));
}

}  // namespace sk_cuda
