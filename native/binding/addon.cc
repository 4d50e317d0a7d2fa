// Module entry: info, threads, SIMD level; each family registers its own functions.
#include <napi.h>

#include <string>
#include <system_error>

#include "common.h"
#include "cpu/simd.h"
#include "cpu/threadpool.h"

#ifndef SEQKERN_BUILD_SYSTEM
#define SEQKERN_BUILD_SYSTEM "unknown"
#endif

#ifdef SEQKERN_HAS_CUDA
namespace sk_cuda {
void register_cuda(Napi::Env env, Napi::Object exports);  // cuda/binding.cc
}
#endif

namespace sk {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("simd", simd_name(simd_level()));
  o.Set("simdBest", simd_name(simd_best_supported()));
  o.Set("cpuFeatures", cpu_features());
  o.Set("threads", num_threads());
  o.Set("defaultThreads", default_num_threads());
  o.Set("buildSystem", SEQKERN_BUILD_SYSTEM);
#if defined(__clang__)
  o.Set("compiler", std::string("clang ") + __clang_version__);
#elif defined(__GNUC__)
  o.Set("compiler", std::string("gcc ") + __VERSION__);
#endif
  o.Set("cuda", false);
  return o;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsNumber()) throw CodedError("BAD_ARGUMENT", "expected a number of threads");
    const double d = info[0].As<Napi::Number>().DoubleValue();
    if (!(d <= kMaxThreads))  // also NaN
      throw CodedError("OUT_OF_RANGE", "expected at most " + std::to_string(kMaxThreads) + " threads, got " + std::to_string(d));
    try {
      set_num_threads(static_cast<int>(d));
    } catch (const std::system_error& e) {
      throw CodedError("NATIVE_ERROR", std::string("could not start the threads (the pool is unchanged): ") + e.what());
    }
    return Napi::Number::New(env, num_threads());
  });
}

Napi::Value SetSimd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string want = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  SimdLevel l = want == "avx512" ? SimdLevel::avx512 : want == "avx2" ? SimdLevel::avx2 : SimdLevel::portable;
  if (want != "avx512" && want != "avx2" && want != "portable")
    throw make_error(env, "BAD_ARGUMENT", "expected simd level avx512, avx2 or portable, got '" + want + "'");
  if (!simd_set_level(l))
    throw make_error(env, "OUT_OF_RANGE", std::string("expected a simd level this CPU supports (best: ") +
                                              simd_name(simd_best_supported()) + "), got " + want);
  return Napi::String::New(env, simd_name(simd_level()));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("setSimd", Napi::Function::New(env, SetSimd));
  register_delta(env, exports);
  register_limits(env, exports);
  register_softmax(env, exports);
  register_attention(env, exports);
  register_hyper(env, exports);
  register_kvcache(env, exports);
  register_rotary(env, exports);
  register_nala(env, exports);
  register_tensor(env, exports);
  register_runtime(env, exports);
  register_linear(env, exports);
  register_conv(env, exports);
  register_norm(env, exports);
#ifdef SEQKERN_HAS_CUDA
  sk_cuda::register_cuda(env, exports);
#endif
  return exports;
}

}  // namespace sk

static Napi::Object InitSeqkern(Napi::Env env, Napi::Object exports) { return sk::Init(env, exports); }
NODE_API_MODULE(seqkern, InitSeqkern)
