// SIMD levels, chosen once at run time from CPUID. Each level's kernels live in their own translation unit
// compiled with that level's target flags; SEQKERN_SIMD=avx2|portable forces a lower level.
#pragma once
#include <string>

namespace sk {

enum class SimdLevel : int { portable = 0, avx2 = 1, avx512 = 2 };

const char* simd_name(SimdLevel l);
SimdLevel simd_best_supported();  // what the CPU (and OS) can run
SimdLevel simd_level();           // what kernels use: the best, or SEQKERN_SIMD when it names a lower one
bool simd_set_level(SimdLevel l); // false when the CPU cannot run l
std::string cpu_features();       // e.g. "avx2 fma f16c avx512f avx512bw avx512dq avx512vl"

}  // namespace sk
