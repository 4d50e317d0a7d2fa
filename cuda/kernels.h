// The entries of the CUDA kernels (cuda/<family>.cu), called by the glue (cuda/binding.cc). Each checks
// nothing about JS arguments (the glue did) and returns the launch's error, if any.
#pragma once
#include <cstdint>

#include "cuda_api.h"

namespace sk_cuda {

// softmax.cu: rows of x [rows, cols] into y (y may be x). three_pass: max, sum, normalise.
cudaError_t softmax(const void* x, void* y, DT dt, int64_t rows, int64_t cols, bool three_pass, float* work,
                    cudaStream_t s);
// Workspace floats softmax needs for rows x cols (0 when no long row is split across blocks).
int64_t softmax_workspace(int64_t rows, int64_t cols);

// attention.cu
struct AttentionArgs {
  int B, T, S, Hq, Hk, D, Dv;
  const void *q, *k, *v;
  void* o;
  float* lse;  // [B, Hq, T] or null
  const void* gate;
  int gate_kind;  // 0 none, 1 elementwise [B,T,Hq,Dv], 2 headwise [B,T,Hq]
  DT dt, gate_dt;
  bool causal;
  float scale;
  const int32_t* cu_q;  // device [N+1] or null (varlen: B = 1)
  const int32_t* cu_k;
  int N;
  int max_t, max_s;  // the longest sequence (varlen) or T, S
};
cudaError_t attention(const AttentionArgs& a, float* work, int64_t work_floats, cudaStream_t s);
int64_t attention_workspace(const AttentionArgs& a);

// delta.cu
struct DeltaArgs {
  int B, T, H, HV, K, V;
  const void *q, *k, *v, *beta, *g;
  DT dt, beta_dt, g_dt;
  int decay_kind;  // 0 none, 1 log (g), 2 signed (decay)
  bool kaczmarz;
  float eps;
  const float* h0;  // [N, HV, K, V] or null
  float* ht;        // [N, HV, K, V] or null (may equal h0: in place)
  void* o;          // [B, T, HV, V]
  const int32_t* cu;  // device [N+1] or null
  int N;
  bool qk_l2norm;
  float scale;
};
cudaError_t delta(const DeltaArgs& a, cudaStream_t s);

// limits.cu: milliseconds of `reps` copies of `bytes` (HBM bandwidth), and of an mma loop (tensor-core peak).
cudaError_t limits_copy(const void* src, void* dst, int64_t bytes, int reps, int blocks, cudaStream_t s, float* ms);
cudaError_t limits_mma(float* out, int blocks, int iters, cudaStream_t s, float* ms);

}  // namespace sk_cuda
