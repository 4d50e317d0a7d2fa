// Gated delta rule family on the CPU (DESIGN.md 6.1): chunkwise and recurrent prefill, and the decode step.
// Inputs are read in place in the caller's layout ([B,T,H,K] etc.) and converted to float32 as they are
// gathered, so float16/bfloat16 cost no extra copy of the tensors.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

enum class DecayKind : int { none = 0, log = 1, sign = 2 };  // none: DeltaNet; log: a = exp(g); sign: a = decay

struct DeltaArgs {
  int B = 0, T = 0, H = 0, HV = 0, K = 0, V = 0;
  int N = 0;                            // sequences: B, or cu_seqlens length - 1
  const int32_t* cu_seqlens = nullptr;  // N + 1 offsets into T (then B == 1)
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  DType qkv_dtype = DType::f32;         // q, k, v share it; o is written in it
  const void* beta = nullptr;           // beta, or eta when kaczmarz
  DType beta_dtype = DType::f32;
  bool kaczmarz = false;
  float eps = 1e-6f;
  const void* g = nullptr;              // g (log decay) or decay (signed), per decay_kind
  DType g_dtype = DType::f32;
  DecayKind decay_kind = DecayKind::none;
  const float* initial_state = nullptr; // [N, HV, K, V] or null (zeros)
  void* o = nullptr;                    // [B, T, HV, V]
  float* final_state = nullptr;         // [N, HV, K, V] or null; may equal initial_state (decode step, in place)
  bool qk_l2norm = false;
  float scale = 1.f;
  int chunk_size = 64;
  bool use_chunk = true;
  const int32_t* cancel = nullptr;      // non-zero: stop; checked between chunks (JS sets it on abort)

  // State pool (README "Serving: the delta-state pool"): when `pooled`, initial_state / final_state are
  // unused and sequence n reads and writes slot state_indices[n] of pool [slots, HV, K, V] in place.
  bool pooled = false;                  // the pool is in use (pool may be null when it has no slots)
  void* pool = nullptr;
  DType pool_dtype = DType::f32;        // f32 or bf16 (computed in float32, rounded on the write back)
  int slots = 0;
  const int32_t* state_indices = nullptr;  // [N] slot, -1 = padding (skipped, its o rows set to 0); null: n
  const uint8_t* has_initial = nullptr;    // [N] 0 = start from zeros; null: every sequence reads its slot
  bool update_state = true;                // false: the pool is only read (speculative verify)
  // Snapshots: the state after every snap_every tokens of sequence n (positions snap_every * (j + 1) <= len_n)
  // goes to snaps + (snap_base[n] + j) * HV * K * V: prefill checkpoints, or a verify's intermediate states.
  void* snaps = nullptr;
  DType snap_dtype = DType::f32;
  int snap_every = 0;
  const int64_t* snap_base = nullptr;      // [N]
  // In-kernel gating (fla's use_gate_in_kernel / use_beta_sigmoid_in_kernel):
  const float* a_log = nullptr;            // [HV] with dt_bias: g = -exp(aLog) softplus(g + dtBias)
  const float* dt_bias = nullptr;          // [HV] or null (0)
  bool beta_sigmoid = false;               // beta (or eta) = beta_scale * sigmoid(raw)
  float beta_scale = 1.f;
};

// One unit of work: v heads [hv0, hv0 + nh) of one sequence. Adjacent heads go together so that the v heads
// of a q/k head share its loads and products, and each token's rows of the unit are one contiguous span.
struct DeltaUnit {
  const DeltaArgs* a;
  int n;               // sequence
  int hv0, nh;         // v heads
  int64_t bos, len;    // first token in the flattened B*T axis, number of tokens
  float* const* S;     // S[j]: K x V state of head hv0 + j; initial state on entry, final state on exit
};

// The per-level kernels; return false when cancelled.
struct DeltaKernels {
  bool (*chunk)(const DeltaUnit&);
  bool (*recurrent)(const DeltaUnit&);
  void (*load)(const void* src, DType dt, int64_t off, int64_t n, float* dst);   // state rows to float32
  void (*store)(void* dst, DType dt, int64_t off, int64_t n, const float* src);  // and back (round to nearest even)
};
const DeltaKernels& delta_kernels(SimdLevel l);
namespace avx512 { extern const DeltaKernels kDeltaKernels; }
namespace avx2 { extern const DeltaKernels kDeltaKernels; }
namespace portable { extern const DeltaKernels kDeltaKernels; }

// Prefill over all sequences and heads, in parallel. Returns false when cancelled (outputs then undefined;
// the initial state is never written unless final_state aliases it).
bool delta_prefill(const DeltaArgs& a);

}  // namespace sk
