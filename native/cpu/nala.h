// NaLaFormer's norm-aware linear attention on the CPU (DESIGN.md 6.5, issue 16), per head:
//   phiq(q) = [(relu(q)/|q|)^p, (relu(-q)/|q|)^p], p = 3 (0.5 + tanh |q|)      (q = 0: phiq = 0)
//   phik(k) = [relu(k)^3, relu(-k)^3]
//   o_i     = (rho_i phiq_i)^T KV / (phiq_i . z + n eps),  KV = sum_j (rho_j phik_j) v_j^T, z = sum_j phik_j
// over the keys query i sees (n of them), rho the rotary of the rope tables (identity without).
//
// Non-causal, two passes: kv_pass builds KV (2K x V) and z (2K) of each (sequence, kv head) from chunks of
// keys (KV += Kr^T V on the GEMM microkernels, A transposed: the phik rows as gathered), optionally in parts
// over the keys that are then summed; q_pass reads them for chunks of queries (O = Qr KV).
// Causal, chunkwise (chunks of C = 64 tokens, the state KV, z, count at the chunk start):
//   A = (Qr Kr^T) masked to j <= i          O = Qr KV + A V          den_i = phiq_i . (z + sum_{j<=i} phik_j)
//   KV += Kr^T V,  z += sum_j phik_j,  count += C
// (without rope A is unrotated, so den_i = phiq_i . z + sum_{j<=i} A_ij).
// Every kernel works on a group of heads, each token's rows of the group gathered together (one run in
// memory), and asks for the next chunk's rows while it computes this one.
// The decode step is the causal kernel on one token per sequence, the state updated in place.
//
// The state of one (sequence, kv head): L = 2K*V + 2K + 1 floats: KV row-major (the rotated numerator sum),
// then z (the unrotated denominator sum), then the key count (a float: exact to 2^24 keys).
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

struct NalaArgs {
  int B = 0, T = 0, S = 0, H = 0, Hk = 0, K = 0, V = 0;
  int N = 0;                              // sequences: B, or cu_q length - 1
  const int32_t* cu_q = nullptr;          // N + 1 offsets into T (then B == 1)
  const int32_t* cu_k = nullptr;          // non-causal: N + 1 offsets into S (default cu_q)
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  DType dtype = DType::f32;               // q, k, v and o share it
  void* o = nullptr;                      // [B, T, H, V]
  bool causal = false;
  bool step = false;                      // rope rows by sequence (the decode step: T = S = 1)
  const float *cos_q = nullptr, *sin_q = nullptr;  // [T, K] (step: [N, K]) or null
  const float *cos_k = nullptr, *sin_k = nullptr;  // [S, K] or null (causal: = q's)
  const float* initial_state = nullptr;   // [N, Hk, L] or null (zeros)
  float* final_state = nullptr;           // [N, Hk, L] or null; may equal initial_state (the step, in place)
  float eps = 1e-6f;
  const int32_t* cancel = nullptr;        // non-zero: stop; checked between chunks
  int32_t* nonfinite = nullptr;           // or null: the kernels set it non-zero when a q, k or v value they read
                                          // is not finite (every row is read; the output is then garbage)
};

inline int64_t nala_state_len(int K, int V) { return 2LL * K * V + 2LL * K + 1; }

// Chunk rows of the kernels (C).
constexpr int kNalaChunk = 64;

// Floats of one thread's workspace (the kernels' `work`) for a unit of hg kv heads and hq query heads, token
// rows of all of them gathered together: per kv head the phik rows, their rotation, Kr^T, the prefix sums of
// z (causal with rope), the V rows and a z sum; per query head phiq rows, their rotation, O rows and
// denominators; an A tile and two conversion rows.
inline int64_t nala_kv_head_floats(int K, int V) { const int64_t C = kNalaChunk, K2 = 2LL * K; return 4 * C * K2 + C * V + K2; }
inline int64_t nala_q_head_floats(int K, int V) { const int64_t C = kNalaChunk, K2 = 2LL * K; return 2 * C * K2 + C * V + C; }
inline int64_t nala_work_floats(int K, int V, int hg, int hq) {
  const int64_t C = kNalaChunk, R = K > V ? K : V;
  return hg * nala_kv_head_floats(K, V) + hq * nala_q_head_floats(K, V) + C * C + 2 * R;
}

// One sequence's tokens: queries [qbos, qbos + qlen) of the flattened B*T axis, keys [kbos, kbos + klen) of
// B*S, and the rope rows of its first query and first key.
struct NalaSeq {
  int n;
  int64_t qbos, qlen, kbos, klen;
  int64_t qrope, krope;
};

// Every kernel takes a range of consecutive heads and reads each token's rows of all of them at once (one run
// of (h1 - h0) * K floats in [B,T,H,K], which the hardware prefetchers follow, where one head's rows are a
// head stride apart), then computes head by head.
struct NalaKernels {
  // Causal: queries and keys of kv heads [hk0, hk1) and their query heads; the state of kv head hk (L floats)
  // at state + (hk - hk0) * L, carried in place. False: cancelled.
  bool (*causal)(const NalaArgs&, const NalaSeq&, int hk0, int hk1, float* state, float* work);
  // Non-causal pass 1: keys [j0, j1) of kv heads [hk0, hk1) into kvz + (hk - hk0) * stride (2K*V + 2K floats
  // each: KV, z; overwritten).
  bool (*kv_pass)(const NalaArgs&, const NalaSeq&, int hk0, int hk1, int64_t j0, int64_t j1, float* kvz, int64_t stride,
                  float* work);
  // Non-causal pass 2: queries [i0, i1) of heads [h0, h1) against the sums of kv head hk at
  // kvz + (hk - h0 / G) * stride.
  bool (*q_pass)(const NalaArgs&, const NalaSeq&, int h0, int h1, int64_t i0, int64_t i1, const float* kvz, int64_t stride,
                 float* work);
  // Features of one row (tests and the driver's checks): phiq / phik of x (K) into out (2K).
  void (*phi_q)(const float* x, int K, float* out);
  void (*phi_k)(const float* x, int K, float* out);
};
const NalaKernels& nala_kernels(SimdLevel l);
namespace avx512 { extern const NalaKernels kNalaKernels; }
namespace avx2 { extern const NalaKernels kNalaKernels; }
namespace portable { extern const NalaKernels kNalaKernels; }

// Prefill (or step) over all sequences and heads, in parallel. False when cancelled.
bool nala_run(const NalaArgs& a);

}  // namespace sk
