// Kernels with deliberate bugs, and their correct twins, that the simulator must tell apart (test/cuda-sim):
// a dropped barrier (caught by comparing thread schedules), a read one past a buffer (the guard page), and a
// warp reduction whose mask leaves out a lane that takes part.
#include "../kernels.h"

namespace sk_cuda {
namespace {

// out[t] = in[n - 1 - t] through shared memory, n = blockDim.x <= 256.
__global__ void reverse_shared(const float* in, float* out, bool barrier) {
  SK_SHARED(float, s, [256]);
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = in[t];
  if (barrier) __syncthreads();
  out[t] = s[n - 1 - t];
}

// out[t] = in[t] + in[t + 1]; with past = false the last thread reads in[t] twice instead.
__global__ void pair_sum(const float* in, float* out, int n, bool past) {
  const int t = threadIdx.x;
  if (t >= n) return;
  const int u = past || t + 1 < n ? t + 1 : t;
  out[t] = in[t] + in[u];
}

// out[0] = the sum of 32 values by xor shuffles, with the given mask.
__global__ void warp_reduce(const float* in, float* out, unsigned mask) {
  float v = in[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o);
  if (threadIdx.x == 0) out[0] = v;
}

}  // namespace

// Runs one case; returns "" or the CUDA error with the simulator's message.
std::string sim_selftest(const std::string& name) {
  float *in = nullptr, *out = nullptr;
  const int n = 64;
  cudaMalloc(reinterpret_cast<void**>(&in), n * sizeof(float));
  cudaMalloc(reinterpret_cast<void**>(&out), n * sizeof(float));
  float host[n];
  for (int i = 0; i < n; i++) host[i] = 1.0f + 0.5f * static_cast<float>(i);
  cudaMemcpy(in, host, sizeof host, cudaMemcpyHostToDevice);
  if (name == "barrier" || name == "barrier-dropped")
    SK_LAUNCH(reverse_shared, dim3(2), dim3(n), nullptr, in, out, name == "barrier");
  else if (name == "bounds" || name == "bounds-past")
    SK_LAUNCH(pair_sum, dim3(1), dim3(n), nullptr, in, out, n, name == "bounds-past");
  else if (name == "mask" || name == "mask-missing-lane")
    SK_LAUNCH(warp_reduce, dim3(1), dim3(32), nullptr, in, out, name == "mask" ? kFull : 0x0000ffffu);
  else
    return "unknown self-test " + name;
  cudaError_t e = cudaDeviceSynchronize();
  std::string r;
  if (e != cudaSuccess) r = std::string(cudaGetErrorName(e)) + ": " + sk_sim::last_fault();
  cudaFree(in);
  cudaFree(out);
  return r;
}

}  // namespace sk_cuda
