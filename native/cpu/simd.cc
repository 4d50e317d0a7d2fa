#include "simd.h"

#include <cstdlib>
#include <cstring>

namespace sk {
namespace {

bool has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

SimdLevel initial_level() {
  SimdLevel best = simd_best_supported();
  const char* env = std::getenv("SEQKERN_SIMD");
  if (env == nullptr || *env == 0) return best;
  SimdLevel want = best;
  if (std::strcmp(env, "portable") == 0) want = SimdLevel::portable;
  else if (std::strcmp(env, "avx2") == 0) want = SimdLevel::avx2;
  else if (std::strcmp(env, "avx512") == 0) want = SimdLevel::avx512;
  // Only ever lower: asking for a level the CPU lacks keeps the best one it has.
  return static_cast<int>(want) < static_cast<int>(best) ? want : best;
}

SimdLevel g_level = initial_level();

}  // namespace

const char* simd_name(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    default: return "portable";
  }
}

SimdLevel simd_best_supported() {
  if (has_avx512()) return SimdLevel::avx512;
  if (has_avx2()) return SimdLevel::avx2;
  return SimdLevel::portable;
}

SimdLevel simd_level() { return g_level; }

bool simd_set_level(SimdLevel l) {
  if (static_cast<int>(l) > static_cast<int>(simd_best_supported())) return false;
  g_level = l;
  return true;
}

std::string cpu_features() {
  std::string s;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const char* names[] = {"sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16"};
  bool on[] = {(bool)__builtin_cpu_supports("sse4.2"), (bool)__builtin_cpu_supports("avx"),
               (bool)__builtin_cpu_supports("avx2"), (bool)__builtin_cpu_supports("fma"),
               (bool)__builtin_cpu_supports("avx512f"), (bool)__builtin_cpu_supports("avx512bw"),
               (bool)__builtin_cpu_supports("avx512dq"), (bool)__builtin_cpu_supports("avx512vl"),
               (bool)__builtin_cpu_supports("avx512bf16")};
  for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
    if (!on[i]) continue;
    if (!s.empty()) s += ' ';
    s += names[i];
  }
#endif
  return s;
}

}  // namespace sk
