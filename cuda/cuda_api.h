// The one include of every cuda/ source: the real CUDA headers under nvcc (or a host compiler building the
// glue against the toolkit), or seqkern's CPU execution of CUDA (cuda/sim/) when SEQKERN_CUDA_SIM is set.
// SK_LAUNCH is the one spelling of a launch both accept: SK_LAUNCH(kernel, grid, block, stream, args...).
#pragma once

#ifdef SEQKERN_CUDA_SIM
#include "sim/cuda_sim.h"
#define SK_LAUNCH(kernel, grid, block, stream, ...) \
  ::sk_sim::launch(#kernel, (grid), (block), (stream), [=] { kernel(__VA_ARGS__); })
// Shared memory is declared with SK_SHARED(type, name, [dims]) so that the simulator can fill it with NaN
// bits at the start of every block (stale values from another block would hide a missing barrier).
#define SK_SHARED(type, name, dims) \
  static thread_local type name dims;  \
  ::sk_sim::shared_region(&name, sizeof(name))
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#ifdef __CUDACC__
#include <mma.h>
#define SK_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define SK_SHARED(type, name, dims) __shared__ type name dims
#endif
#endif

namespace sk_cuda {

// Element loads and stores of the three storage types, converting to and from float.
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

enum class DT { f32, f16, bf16 };

constexpr unsigned kFull = 0xffffffffu;

#if defined(__CUDACC__) || defined(SEQKERN_CUDA_SIM)  // device code: not for the host compiler's glue
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
#endif

}  // namespace sk_cuda
