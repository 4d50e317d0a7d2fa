// The GPU's limits, measured in the same run as `seqkern bench --backend cuda` (DESIGN.md 8): a copy
// kernel for the HBM bandwidth and a loop of tensor-core mma for the bf16 peak. Timed with CUDA events.
#include "kernels.h"

namespace sk_cuda {
namespace {

// dst = src, float4 at a time, grid-stride.
__global__ void __launch_bounds__(256) copy_kernel(const float4* __restrict__ src, float4* __restrict__ dst, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

// Each warp runs `iters` rounds of four independent 16x16x16 bf16 mma (four accumulator chains, so the
// tensor pipe never waits on one), then stores its accumulators so nothing is optimised away.
__global__ void __launch_bounds__(128) mma_kernel(float* out, int iters) {
  using namespace nvcuda;
  SK_SHARED(__nv_bfloat16, tile, [256]);
  for (int i = threadIdx.x; i < 256; i += blockDim.x) tile[i] = __float2bfloat16(0.001f * static_cast<float>(i % 7));
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
  wmma::load_matrix_sync(a, tile, 16);
  wmma::load_matrix_sync(b, tile, 16);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c0, c1, c2, c3;
  wmma::fill_fragment(c0, 0.0f);
  wmma::fill_fragment(c1, 1.0f);
  wmma::fill_fragment(c2, 2.0f);
  wmma::fill_fragment(c3, 3.0f);
  for (int i = 0; i < iters; i++) {
    wmma::mma_sync(c0, a, b, c0);
    wmma::mma_sync(c1, a, b, c1);
    wmma::mma_sync(c2, a, b, c2);
    wmma::mma_sync(c3, a, b, c3);
  }
  for (int i = 0; i < c0.num_elements; i++) c0.x[i] += c1.x[i] + c2.x[i] + c3.x[i];
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  wmma::store_matrix_sync(out + static_cast<int64_t>(warp) * 256, c0, 16, wmma::mem_row_major);
}

}  // namespace

// Milliseconds of `reps` copies of `bytes` (a multiple of 16) from src to dst.
cudaError_t limits_copy(const void* src, void* dst, int64_t bytes, int reps, int blocks, cudaStream_t s, float* ms) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  const int64_t n = bytes / 16;
  SK_LAUNCH(copy_kernel, dim3(blocks), dim3(256), s, static_cast<const float4*>(src), static_cast<float4*>(dst), n);  // warm-up
  cudaEventRecord(a, s);
  for (int r = 0; r < reps; r++)
    SK_LAUNCH(copy_kernel, dim3(blocks), dim3(256), s, static_cast<const float4*>(src), static_cast<float4*>(dst), n);
  cudaEventRecord(b, s);
  cudaError_t e = cudaEventSynchronize(b);
  if (e == cudaSuccess) e = cudaEventElapsedTime(ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return e != cudaSuccess ? e : cudaGetLastError();
}

// Milliseconds of the mma loop over `blocks` blocks of 4 warps; out holds blocks * 4 * 256 floats.
cudaError_t limits_mma(float* out, int blocks, int iters, cudaStream_t s, float* ms) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  SK_LAUNCH(mma_kernel, dim3(blocks), dim3(128), s, out, 16);  // warm-up
  cudaEventRecord(a, s);
  SK_LAUNCH(mma_kernel, dim3(blocks), dim3(128), s, out, iters);
  cudaEventRecord(b, s);
  cudaError_t e = cudaEventSynchronize(b);
  if (e == cudaSuccess) e = cudaEventElapsedTime(ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace sk_cuda
