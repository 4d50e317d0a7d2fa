// The simulator addon seqkern_sim.node: the CUDA glue (cuda/binding.cc) over the CPU execution of CUDA, and
// the simulator's controls for the tests. SEQKERN_CUDA_SIM=1 makes src/device.ts load it.
#include <napi.h>

#include <string>

#include "cuda_sim.h"

namespace sk_cuda {
void register_cuda(Napi::Env env, Napi::Object exports);
std::string sim_selftest(const std::string& name);
}  // namespace sk_cuda

namespace {

Napi::Value SetSchedules(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsString()) sk_sim::set_schedules(info[0].As<Napi::String>().Utf8Value());
  return Napi::String::New(info.Env(), sk_sim::schedules());
}

Napi::Value LastFault(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), sk_sim::last_fault()); }

Napi::Value SelfTest(const Napi::CallbackInfo& info) {
  const std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  return Napi::String::New(info.Env(), sk_cuda::sim_selftest(name));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  sk_cuda::register_cuda(env, exports);
  exports.Set("simSetSchedules", Napi::Function::New(env, SetSchedules));
  exports.Set("simLastFault", Napi::Function::New(env, LastFault));
  exports.Set("simSelfTest", Napi::Function::New(env, SelfTest));
  return exports;
}

}  // namespace

NODE_API_MODULE(seqkern_sim, Init)
