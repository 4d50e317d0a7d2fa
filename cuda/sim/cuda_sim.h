// The CUDA kernel language and the runtime calls seqkern makes, executed on the CPU (DESIGN.md 6.8). The
// kernels in cuda/*.cu compile unchanged with nvcc and, against this header, with g++:
//
//   - a launch runs its blocks one after another; a block's threads are fibers (ucontext) on one OS thread,
//     each running until it blocks at a __syncthreads, a warp operation or its end;
//   - __shared__ is `static thread_local`: one copy per OS thread, so per block (blocks run in turn);
//   - __syncthreads is a barrier over the block's live threads, and every thread must reach the same one
//     (the same source line) or the launch fails;
//   - warp shuffles, votes and WMMA are collectives over the lanes of their mask: every lane named must take
//     part, and a lane that takes part must be named, or the launch fails;
//   - each launch can run under several thread schedules (forward, reverse, shuffled), every device
//     allocation compared after each: a result that depends on the order is a race (a missing barrier);
//   - device allocations end exactly at a guard page, so a read or write one element past one faults, and
//     the fault ends the launch with cudaErrorIllegalAddress instead of the process.
//
// The fake runtime gives every stream a worker thread that runs its work in order, so the host code's
// synchronisation is exercised as on a GPU. SEQKERN_CUDA_SIM_SCHEDULES (e.g. "forward,reverse,shuffle")
// and SEQKERN_CUDA_SIM_MEMORY (bytes of simulated device memory) configure it.
#pragma once
#ifdef __CUDACC__
#error "cuda_sim.h is the CPU execution of CUDA; nvcc uses the real headers"
#endif

#include <cfloat>
#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>

// ---- the kernel language's keywords ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static
#define __align__(n) alignas(n)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace sk_sim {

struct Thread;
struct Block {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
struct Thread {
  uint3 thread_idx;
};
extern thread_local Thread* t_thread;
extern thread_local Block* t_block;

// Barrier and warp collectives (sim.cc). A collective: every lane of `mask` posts `mine`; when all have, `fn`
// runs once with the 32 lanes' posts (null for lanes outside the mask), then each lane continues.
void syncthreads(const char* file, int line);
using CollectiveFn = void (*)(void** lanes, unsigned mask);
void warp_collective(unsigned mask, const char* what, void* mine, CollectiveFn fn);
int lane_id();
void shared_region(void* p, size_t bytes);  // SK_SHARED: poisoned (0xff bytes) at every block start
[[noreturn]] void fault(const std::string& message);  // ends the launch with the message

// A launch (the SK_LAUNCH macro): `body` runs once per thread of every block.
void launch(const char* name, dim3 grid, dim3 block, void* stream, std::function<void()> body);

}  // namespace sk_sim

#define threadIdx (::sk_sim::t_thread->thread_idx)
#define blockIdx (::sk_sim::t_block->block_idx)
#define blockDim (::sk_sim::t_block->block_dim)
#define gridDim (::sk_sim::t_block->grid_dim)
constexpr int warpSize = 32;

#define __syncthreads() ::sk_sim::syncthreads(__FILE__, __LINE__)

// ---- warp shuffles and votes ----
namespace sk_sim {
template <class T>
struct ShflPost {
  T in;
  T out;
  int src;
};
template <class T>
void shfl_fn(void** lanes, unsigned mask) {
  for (int l = 0; l < 32; l++) {
    if (!(mask >> l & 1u)) continue;
    auto* p = static_cast<ShflPost<T>*>(lanes[l]);
    if (!(mask >> p->src & 1u))
      fault("warp shuffle: lane " + std::to_string(l) + " reads lane " + std::to_string(p->src) +
            ", which its mask leaves out");
    p->out = static_cast<ShflPost<T>*>(lanes[p->src])->in;
  }
}
// The source lane of each shuffle kind (the lane itself when out of the width segment, as CUDA defines).
template <class T>
T shfl(unsigned mask, T v, int src, const char* what) {
  ShflPost<T> p{v, v, src};
  warp_collective(mask, what, &p, &shfl_fn<T>);
  return p.out;
}
struct VotePost {
  int pred;
  unsigned out;
};
inline void ballot_fn(void** lanes, unsigned mask) {
  unsigned b = 0;
  for (int l = 0; l < 32; l++)
    if ((mask >> l & 1u) && static_cast<VotePost*>(lanes[l])->pred) b |= 1u << l;
  for (int l = 0; l < 32; l++)
    if (mask >> l & 1u) static_cast<VotePost*>(lanes[l])->out = b;
}
inline void nothing_fn(void**, unsigned) {}
}  // namespace sk_sim

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = sk_sim::lane_id();
  return sk_sim::shfl(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)), "__shfl_sync");
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = sk_sim::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return sk_sim::shfl(mask, v, src, "__shfl_xor_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = sk_sim::lane_id();
  int src = lane + static_cast<int>(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return sk_sim::shfl(mask, v, src, "__shfl_down_sync");
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = sk_sim::lane_id();
  int src = lane - static_cast<int>(delta);
  if (src < (lane & ~(width - 1))) src = lane;
  return sk_sim::shfl(mask, v, src, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  sk_sim::VotePost p{pred, 0};
  sk_sim::warp_collective(mask, "__ballot_sync", &p, &sk_sim::ballot_fn);
  return p.out;
}
inline int __all_sync(unsigned mask, int pred) { return (__ballot_sync(mask, pred) & mask) == mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  sk_sim::warp_collective(mask, "__syncwarp", nullptr, &sk_sim::nothing_fn);
}

// ---- atomics (fibers of a block share one OS thread; blocks of other streams may run on others) ----
inline float atomicAdd(float* p, float v) {
  float old, nv;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do nv = old + v;
  while (!__atomic_compare_exchange(p, &old, &nv, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- float intrinsics ----
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ---- half and bfloat16 (storage as raw bits; arithmetic through float, round to nearest even) ----
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};
struct __half2 {
  __half x, y;
};
namespace sk_sim {
inline uint32_t f2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float u2f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace sk_sim
inline float __half2float(__half h) {
  const uint32_t sign = (h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1f, mant = h.x & 0x3ff;
  if (exp == 0) {
    const float m = static_cast<float>(mant) * 5.9604644775390625e-8f;  // 2^-24
    return sign ? -m : m;
  }
  if (exp == 31) return sk_sim::u2f(sign | 0x7f800000u | (mant << 13));
  return sk_sim::u2f(sign | ((exp + 112) << 23) | (mant << 13));
}
inline __half __float2half(float f) {
  const uint32_t u = sk_sim::f2u(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const int exp = static_cast<int>((u >> 23) & 0xff);
  uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) return {static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u))};
  const int e = exp - 127 + 15;
  if (e >= 31) return {static_cast<uint16_t>(sign | 0x7c00u)};
  if (e <= 0) {
    if (e < -10) return {sign};
    mant |= 0x800000u;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1), rem = mant & ((1u << shift) - 1);
    uint32_t r = mant >> shift;
    if (rem > half || (rem == half && (r & 1u))) r++;
    return {static_cast<uint16_t>(sign | r)};
  }
  const uint32_t rem = mant & 0x1fffu;
  uint32_t r = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return {static_cast<uint16_t>(sign | r)};
}
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return sk_sim::u2f(static_cast<uint32_t>(b.x) << 16); }
inline __nv_bfloat16 __float2bfloat16(float f) {
  const uint32_t u = sk_sim::f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }

// ---- WMMA (nvcuda::wmma), 16x16x16 with half/bfloat16 inputs and a float accumulator ----
// The fragment layout is unspecified in CUDA, so kernels may only load, store, fill and run mma_sync on
// fragments (and touch an accumulator's elements uniformly). Here lane l holds elements [8l, 8l + 8) of the
// row-major 16x16 tile; mma_sync is a full-warp collective.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int num_elements = 8;
  using storage = typename std::conditional<std::is_same<Use, accumulator>::value, float, T>::type;
  storage x[8];
};

template <class T>
inline float sim_to_float(T v) {
  if constexpr (std::is_same<T, __half>::value) return __half2float(v);
  else if constexpr (std::is_same<T, __nv_bfloat16>::value) return __bfloat162float(v);
  else return static_cast<float>(v);
}

// Loads: element (r, c) of the tile is p[r * ld + c] (row-major) or p[c * ld + r] (col-major).
template <class Use, class T, class Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
  __syncwarp();
  const int l = sk_sim::lane_id();
  for (int i = 0; i < 8; i++) {
    const int e = 8 * l + i, r = e / 16, c = e % 16;
    f.x[i] = std::is_same<Layout, col_major>::value ? p[c * ld + r] : p[r * ld + c];
  }
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld, layout_t lay) {
  __syncwarp();
  const int l = sk_sim::lane_id();
  for (int i = 0; i < 8; i++) {
    const int e = 8 * l + i, r = e / 16, c = e % 16;
    f.x[i] = lay == mem_col_major ? p[c * ld + r] : p[r * ld + c];
  }
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld, layout_t lay) {
  const int l = sk_sim::lane_id();
  for (int i = 0; i < 8; i++) {
    const int e = 8 * l + i, r = e / 16, c = e % 16;
    (lay == mem_col_major ? p[c * ld + r] : p[r * ld + c]) = f.x[i];
  }
  __syncwarp();
}
template <class Use, class T, class Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float v) {
  for (int i = 0; i < 8; i++) f.x[i] = static_cast<typename fragment<Use, 16, 16, 16, T, Layout>::storage>(v);
}

template <class TA, class LA, class TB, class LB>
struct MmaPost {
  fragment<accumulator, 16, 16, 16, float>* d;
  const fragment<matrix_a, 16, 16, 16, TA, LA>* a;
  const fragment<matrix_b, 16, 16, 16, TB, LB>* b;
  const fragment<accumulator, 16, 16, 16, float>* c;
};
template <class TA, class LA, class TB, class LB>
void mma_fn(void** lanes, unsigned mask) {
  if (mask != 0xffffffffu) sk_sim::fault("wmma::mma_sync needs the full warp");
  float A[256], B[256], C[256];
  for (int l = 0; l < 32; l++) {
    auto* p = static_cast<MmaPost<TA, LA, TB, LB>*>(lanes[l]);
    for (int i = 0; i < 8; i++) {
      A[8 * l + i] = sim_to_float(p->a->x[i]);
      B[8 * l + i] = sim_to_float(p->b->x[i]);
      C[8 * l + i] = p->c->x[i];
    }
  }
  for (int l = 0; l < 32; l++) {
    auto* p = static_cast<MmaPost<TA, LA, TB, LB>*>(lanes[l]);
    for (int i = 0; i < 8; i++) {
      const int e = 8 * l + i, r = e / 16, c = e % 16;
      float acc = C[e];  // products of half values are exact in float; sums in k order
      for (int k = 0; k < 16; k++) acc += A[r * 16 + k] * B[k * 16 + c];
      p->d->x[i] = acc;
    }
  }
}
template <class TA, class LA, class TB, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  fragment<accumulator, 16, 16, 16, float> out;
  MmaPost<TA, LA, TB, LB> p{&out, &a, &b, &c};
  sk_sim::warp_collective(0xffffffffu, "wmma::mma_sync", &p, &mma_fn<TA, LA, TB, LB>);
  d = out;
}
}  // namespace wmma
}  // namespace nvcuda

// ---- the runtime API (the subset seqkern calls) ----
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
struct SimStream;
struct SimEvent;
using cudaStream_t = SimStream*;
using cudaEvent_t = SimEvent*;
using cudaHostFn_t = void (*)(void*);
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDisableTiming = 2;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  size_t sharedMemPerBlock;
  int maxThreadsPerBlock;
  int warpSize;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user);

// Sim-only controls (the sim addon exports them to the tests).
namespace sk_sim {
std::string last_fault();          // the message of the latest failed launch
void set_schedules(const std::string& spec);  // "forward,reverse,shuffle"
std::string schedules();
}  // namespace sk_sim
