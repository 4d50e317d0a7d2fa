// N-API glue of the machine-limit probes (native/cpu/limits.h), used by `seqkern bench --limits`:
//   peakFlops(level, seconds, threads) -> GFLOP/s     FP32 FMA peak at 'avx512' | 'avx2' | 'portable'
//   bandwidth(kind, bytes, threads, seconds) -> GB/s  'copy' | 'triad' | 'update' | 'read' over a `bytes` working set
// Both run synchronously on the pool (the CLI waits for them anyway) and throw coded errors.
#include <cmath>
#include <string>

#include "common.h"
#include "cpu/limits.h"

namespace sk {
namespace {

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw CodedError("BAD_ARGUMENT", std::string("expected ") + name + " to be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw CodedError("NON_FINITE", std::string("expected finite ") + name + ", got " + std::to_string(d));
  return d;
}

int64_t arg_integer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double d = arg_number(info, i, name);
  if (d != std::floor(d) || d < 0 || d > 9007199254740991.0)
    throw CodedError("OUT_OF_RANGE", std::string("expected ") + name + " to be a non-negative integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

Napi::Value PeakFlops(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string level = arg_string(info, 0, "level");
    SimdLevel l;
    if (level == "avx512") l = SimdLevel::avx512;
    else if (level == "avx2") l = SimdLevel::avx2;
    else if (level == "portable") l = SimdLevel::portable;
    else throw CodedError("BAD_ARGUMENT", "expected level avx512, avx2 or portable, got '" + level + "'");
    const double seconds = arg_number(info, 1, "seconds");
    const int64_t threads = arg_integer(info, 2, "threads");
    if (threads < 1 || threads > 1024) throw CodedError("OUT_OF_RANGE", "expected threads in [1, 1024], got " + std::to_string(threads));
    return Napi::Number::New(env, peak_gflops(l, seconds, static_cast<int>(threads)));
  });
}

Napi::Value Bandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string kind = arg_string(info, 0, "kind");
    BandwidthKind k;
    if (kind == "copy") k = BandwidthKind::copy;
    else if (kind == "triad") k = BandwidthKind::triad;
    else if (kind == "update") k = BandwidthKind::update;
    else if (kind == "read") k = BandwidthKind::read;
    else throw CodedError("BAD_ARGUMENT", "expected kind copy, triad, update or read, got '" + kind + "'");
    const int64_t bytes = arg_integer(info, 1, "bytes");
    const int64_t threads = arg_integer(info, 2, "threads");
    if (threads < 1 || threads > 1024) throw CodedError("OUT_OF_RANGE", "expected threads in [1, 1024], got " + std::to_string(threads));
    const double seconds = arg_number(info, 3, "seconds");
    return Napi::Number::New(env, bandwidth_gbs(k, bytes, static_cast<int>(threads), seconds));
  });
}

}  // namespace

void register_limits(Napi::Env env, Napi::Object exports) {
  exports.Set("peakFlops", Napi::Function::New(env, PeakFlops));
  exports.Set("bandwidth", Napi::Function::New(env, Bandwidth));
}

}  // namespace sk
