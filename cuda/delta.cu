// The gated delta rule on CUDA (DESIGN.md 6.1), the recurrence of native/cpu/delta, for the prefill
// (`algorithm: 'recurrent'`) and the decode step (T = 1, state in place). Per token, fla's convention:
//
//   S ← exp(g_t) S  (or a_t S, signed decay; nothing without g)
//   u_t = beta_t (v_t − Sᵀ k_t)          beta_t = eta_t / (‖k_t‖² + eps) for KLA
//   S ← S + k_t u_tᵀ
//   o_t = Sᵀ (scale q_t)                   q, k L2-normalised first with qkL2Norm
//
// Grid: (V / 32 column slices, HV, N sequences); a block of 128 threads holds its 32 columns of the state in
// registers, K/4 rows per thread (thread = column * 4 + row quarter, so a column's four quarters are
// neighbouring lanes and Sᵀk and Sᵀq reduce with two shuffles). The state is read once at the start and
// written once at the end; per token the block stages q_t, k_t (and their norms) in shared memory.
// Memory-bound in the step: (K + K + V) per token and 2 K V per sequence and head.
#include "kernels.h"

namespace sk_cuda {
namespace {

constexpr int kCols = 32;
constexpr int kThreads = 128;  // kCols columns x 4 row quarters

__device__ __forceinline__ float load_as(const void* p, DT dt, int64_t i) {
  switch (dt) {
    case DT::f32: return static_cast<const float*>(p)[i];
    case DT::f16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
}

// KC: state rows per thread (K <= 4 KC).
template <class T, int KC>
__global__ void __launch_bounds__(kThreads) delta_recurrent(DeltaArgs a) {
  const int tid = threadIdx.x;
  const int c = blockIdx.x * kCols + tid / 4;  // this thread's column
  const int quarter = tid % 4;
  const int hv = blockIdx.y, n = blockIdx.z;
  const int h = hv / (a.HV / a.H);
  const bool col = c < a.V;
  int bos, len;
  if (a.cu) {
    bos = a.cu[n];
    len = a.cu[n + 1] - a.cu[n];
  } else {
    bos = n * a.T;
    len = a.T;
  }
  const int64_t sbase = (static_cast<int64_t>(n) * a.HV + hv) * a.K * a.V;
  float S[KC];
  for (int i = 0; i < KC; i++) {
    const int k = quarter * KC + i;
    S[i] = a.h0 && col && k < a.K ? a.h0[sbase + static_cast<int64_t>(k) * a.V + c] : 0.0f;
  }
  SK_SHARED(float, sk, [4 * KC]);
  SK_SHARED(float, sq, [4 * KC]);
  SK_SHARED(float, snorm, [2]);
  const T* qg = static_cast<const T*>(a.q);
  const T* kg = static_cast<const T*>(a.k);
  const T* vg = static_cast<const T*>(a.v);
  T* og = static_cast<T*>(a.o);
  const bool norms = a.qk_l2norm || a.kaczmarz;
  for (int t = 0; t < len; t++) {
    const int64_t tok = bos + t;
    for (int i = tid; i < 4 * KC; i += kThreads) {
      const bool in = i < a.K;
      sq[i] = in ? to_f(qg[(tok * a.H + h) * a.K + i]) : 0.0f;
      sk[i] = in ? to_f(kg[(tok * a.H + h) * a.K + i]) : 0.0f;
    }
    __syncthreads();
    if (norms && tid < 32) {  // warp 0: ‖q‖², ‖k‖²
      float nq = 0.0f, nk = 0.0f;
      for (int i = tid; i < a.K; i += 32) nq += sq[i] * sq[i], nk += sk[i] * sk[i];
      nq = warp_sum(nq);
      nk = warp_sum(nk);
      if (tid == 0) snorm[0] = nq, snorm[1] = nk;
    }
    if (norms) __syncthreads();
    float rq = a.scale, rk = 1.0f, knorm2 = 0.0f;
    if (norms) {
      knorm2 = snorm[1];
      if (a.qk_l2norm) {
        rq = a.scale / sqrtf(snorm[0] + 1e-6f);
        rk = 1.0f / sqrtf(snorm[1] + 1e-6f);
        knorm2 = snorm[1] * rk * rk;
      }
    }
    const int64_t hi = tok * a.HV + hv;
    float beta = load_as(a.beta, a.beta_dt, hi);
    if (a.kaczmarz) beta = beta / (knorm2 + a.eps);
    if (a.decay_kind == 1) {
      const float d = expf(load_as(a.g, a.g_dt, hi));
      for (int i = 0; i < KC; i++) S[i] *= d;
    } else if (a.decay_kind == 2) {
      const float d = load_as(a.g, a.g_dt, hi);
      for (int i = 0; i < KC; i++) S[i] *= d;
    }
    float kv = 0.0f;
    for (int i = 0; i < KC; i++) kv += S[i] * sk[quarter * KC + i];
    kv *= rk;
    kv += __shfl_xor_sync(kFull, kv, 1);
    kv += __shfl_xor_sync(kFull, kv, 2);
    const float vt = col ? to_f(vg[hi * a.V + c]) : 0.0f;
    const float u = beta * (vt - kv);
    float o = 0.0f;
    for (int i = 0; i < KC; i++) {
      S[i] += sk[quarter * KC + i] * rk * u;
      o += S[i] * sq[quarter * KC + i];
    }
    o *= rq;
    o += __shfl_xor_sync(kFull, o, 1);
    o += __shfl_xor_sync(kFull, o, 2);
    if (col && quarter == 0) og[hi * a.V + c] = from_f<T>(o);
    __syncthreads();  // sq/sk are rewritten by the next token
  }
  if (a.ht)
    for (int i = 0; i < KC; i++) {
      const int k = quarter * KC + i;
      if (col && k < a.K) a.ht[sbase + static_cast<int64_t>(k) * a.V + c] = S[i];
    }
}

template <class T>
cudaError_t run(const DeltaArgs& a, cudaStream_t s) {
  const dim3 grid((a.V + kCols - 1) / kCols, a.HV, a.N);
  if (a.K <= 32) SK_LAUNCH((delta_recurrent<T, 8>), grid, dim3(kThreads), s, a);
  else if (a.K <= 64) SK_LAUNCH((delta_recurrent<T, 16>), grid, dim3(kThreads), s, a);
  else if (a.K <= 128) SK_LAUNCH((delta_recurrent<T, 32>), grid, dim3(kThreads), s, a);
  else SK_LAUNCH((delta_recurrent<T, 64>), grid, dim3(kThreads), s, a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t delta(const DeltaArgs& a, cudaStream_t s) {
  if (a.N == 0 || a.HV == 0 || a.V == 0) return cudaSuccess;
  if (a.K > 256) return cudaErrorInvalidValue;
  switch (a.dt) {
    case DT::f32: return run<float>(a, s);
    case DT::f16: return run<__half>(a, s);
    default: return run<__nv_bfloat16>(a, s);
  }
}

}  // namespace sk_cuda
