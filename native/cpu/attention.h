// Exact attention and gated attention on the CPU, flash-style (DESIGN.md 6.3).
//
// q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] read in place (float16/bfloat16 converted as tiles are loaded);
// o [B,T,Hq,Dv] in the inputs' dtype; lse [B,Hq,T] float32. Query head h reads kv head h / (Hq/Hk).
//
// Work is cut into units: one sequence, one kv head (or several adjacent ones when each has few queries, as
// in a decode), the query heads reading it (processed together, so each K/V tile is loaded once for all of
// them), a block of queries, and a range of keys. A unit walks its keys in tiles with the online softmax
// (running max m, running sum l, accumulator rescaled when m grows); it never holds more than one key tile's
// scores. Under the causal mask a unit's key range ends at the last key its last query sees, so fully masked
// tiles are never computed. When there are too few units to fill the threads (decode: one query per
// sequence against a long cache), each unit's key range is split and the pieces' partial (m, l, acc) are
// merged by their log-sum-exps.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

enum class GateKind : int { none = 0, elementwise = 1, headwise = 2 };

struct AttentionArgs {
  int B = 0, T = 0, S = 0, Hq = 0, Hk = 0, D = 0, Dv = 0;
  int N = 0;                         // sequences: B, or cu_seqlens length - 1 (then B == 1)
  const int32_t* cu_q = nullptr;     // N + 1 query offsets into T, or null
  const int32_t* cu_k = nullptr;     // N + 1 key offsets into S (cu_q when keys are packed alike), or null
  const int32_t* k_end = nullptr;    // with cu_k, optional: N key ends, sequence n's keys are [cu_k[n], k_end[n])
                                     // instead of [cu_k[n], cu_k[n + 1]) (ranges may overlap: HyperAttention's
                                     // sampled keys, hyper.cc); only the internal callers set it
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  DType dtype = DType::f32;          // q, k, v share it; o is written in it
  void* o = nullptr;                 // [B, T, Hq, Dv]
  float* lse = nullptr;              // [B, Hq, T] or null
  const void* gate = nullptr;        // logits z: [B, T, Hq, Dv] (elementwise) or [B, T, Hq] (headwise)
  DType gate_dtype = DType::f32;
  GateKind gate_kind = GateKind::none;
  bool causal = false;               // query i of a sequence sees key j iff j <= i + (S_n - T_n)
  float scale = 1.f;
  const int32_t* cancel = nullptr;   // non-zero: stop; checked between key tiles (JS sets it on abort)
  bool no_split = false;             // never split a unit's keys across threads, so the result does not
                                     // depend on the thread count (HyperAttention's determinism, hyper.h)
  // The KV-cache form (kvcache.h). Without cu_q: k_len, optional, B key counts: sequence n's keys are the
  // first k_len[n] of its S cache rows (else all S). block_table, optional (paged caches): sequence n's key j
  // is token row block_table[n * max_blocks + j / block_size] * block_size + j % block_size of k and v
  // (else row n * S + j). own_dtypes: q is read as q_dtype and k, v as kv_dtype (else all as dtype, which o
  // is written in either way).
  const int32_t* k_len = nullptr;
  const int32_t* block_table = nullptr;
  int block_size = 0, max_blocks = 0;
  bool own_dtypes = false;
  DType q_dtype = DType::f32, kv_dtype = DType::f32;
};

inline DType q_dtype_of(const AttentionArgs& a) { return a.own_dtypes ? a.q_dtype : a.dtype; }
inline DType kv_dtype_of(const AttentionArgs& a) { return a.own_dtypes ? a.kv_dtype : a.dtype; }
// Keys of sequence n (cu_q unset).
inline int keys_of(const AttentionArgs& a, int n) { return a.k_len ? a.k_len[n] : a.S; }
// Keys of sequence n, packed (cu_q set: from cu_k, or to k_end) or not.
inline int seq_keys(const AttentionArgs& a, int n) {
  return a.cu_q ? (a.k_end ? a.k_end[n] : a.cu_k[n + 1]) - a.cu_k[n] : keys_of(a, n);
}
// Token row of key j of sequence n in k and v, whose keys start at row kbos on the flattened axis (contiguous).
inline int64_t key_row(const AttentionArgs& a, int n, int64_t kbos, int64_t j) {
  if (!a.block_table) return kbos + j;
  return static_cast<int64_t>(a.block_table[static_cast<int64_t>(n) * a.max_blocks + j / a.block_size]) * a.block_size + j % a.block_size;
}

// Sizes of the tiles; chosen once per call by the driver, the same for every unit.
struct AttnPlan {
  int group = 1;   // Hq / Hk
  int heads = 1;   // query heads per kv head in a unit (a slice of one group)
  int rows = 1;    // queries per unit
  int cols = 1;    // heads * rows: the columns of one kv head's score tile
  int kv = 1;      // kv heads per unit: 1, or several when cols is small (decode), so that a unit streams
                   // whole token rows of K and V instead of one head's slice of each
  int bc = 64;     // keys per tile
  // Packed K and V (set by the driver when many units read each key, see attention_forward): the keys of
  // sequence n and kv head hk are rows pack_base[n * Hk + hk] + j, float32, K rows D apart, V rows
  // vtile_ld(Dv) apart, so a unit's tiles are contiguous and need no copy or conversion. Null: read in place.
  const float* kpack = nullptr;
  const float* vpack = nullptr;
  const int64_t* pack_base = nullptr;
};

// One unit of work (see the header comment). Positions are within the sequence.
struct AttnUnit {
  int32_t n;         // sequence
  int32_t hk, nkv;   // kv heads [hk, hk + nkv)
  int32_t hoff, nh;  // of each kv head g, query heads g * group + [hoff, hoff + nh)
  int32_t i0, nq;    // queries [i0, i0 + nq)
  int32_t j0, j1;    // keys [j0, j1)
  int32_t slot;      // -1: write the outputs; else index of this piece's partial state in the scratch
  int32_t pieces;    // merge units only: number of consecutive partial slots from `slot`
};

// Per-level kernels (attention_<level>.cc, written once in attention_impl.h).
struct AttentionKernels {
  // Floats of per-thread workspace a unit needs, and of one partial state (m, l, acc) in the scratch.
  int64_t (*workspace_floats)(const AttentionArgs&, const AttnPlan&);
  int64_t (*partial_floats)(const AttentionArgs&, const AttnPlan&);
  // Runs one unit: writes o (and lse) of its queries, or its partial state to scratch + slot * partial.
  // Returns false when cancelled.
  bool (*unit)(const AttentionArgs&, const AttnPlan&, const AttnUnit&, float* ws, float* scratch);
  // Merges the partial states of u.pieces pieces starting at u.slot and writes o (and lse).
  void (*merge)(const AttentionArgs&, const AttnPlan&, const AttnUnit&, float* ws, const float* scratch);
  // Packs keys [j0, j1) of sequence n, kv head hk as float32 rows: K into kdst (D apart), V into vdst
  // (vtile_ld(Dv) apart), row j0 first.
  void (*pack)(const AttentionArgs&, int n, int hk, int64_t j0, int64_t j1, float* kdst, float* vdst);
};
// Row stride of a packed or copied V tile: Dv rounded up to whole vectors of the widest level (16 floats),
// plus one such vector, so that consecutive rows start in different L1 sets.
inline int vtile_ld(int Dv) { return (Dv + 15) / 16 * 16 + 16; }
const AttentionKernels& attention_kernels(SimdLevel l);
namespace avx512 { extern const AttentionKernels kAttentionKernels; }
namespace avx2 { extern const AttentionKernels kAttentionKernels; }
namespace portable { extern const AttentionKernels kAttentionKernels; }

// Runs the whole call on the pool. Returns false when cancelled (outputs then partly written).
bool attention_forward(const AttentionArgs& a);

}  // namespace sk
