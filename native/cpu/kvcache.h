// Attention over a KV cache on the CPU (DESIGN.md 6.6, issue 14 part 1), after FlashAttention's
// flash_attn_with_kvcache, on the attention family's kernels (attention.h).
//
// Caches: contiguous k [B, capacity, Hk, D], v [B, capacity, Hk, Dv], or paged k [numBlocks, blockSize, Hk, D],
// v [numBlocks, blockSize, Hk, Dv] with a block table (B x maxBlocks: row b lists sequence b's blocks in order).
// Sequence b holds cache_seqlens[b] tokens. One call:
//   1. appends kNew, vNew [B, Tq, Hk, D|Dv] at positions cache_seqlens[b] + t (converted to the cache dtype;
//      the first rotaryDim values of each kNew head row rotated at that position first);
//   2. rotates q [B, Tq, Hq, D] at the same positions into a float32 buffer (else reads q in place);
//   3. runs the attention kernels over the first cache_seqlens[b] + Tq keys of each sequence (k_len), paged
//      keys found through the table (key_row), causal among the new tokens (bottom-right aligned).
// Work and bytes are proportional to the keys attended, never to B x capacity; a decode's keys are split
// across threads by attention_forward as for any decode.
#pragma once
#include <cstdint>

#include "attention.h"

namespace sk {

struct KVCacheArgs {
  AttentionArgs att;                  // B, T = Tq, S = capacity (contiguous) or blockSize, Hq, Hk, D, Dv; q, o, lse,
                                      // gate, scale, causal, cancel; k, v = the caches; block_table; own_dtypes
  const int32_t* cache_seqlens = nullptr;  // B
  void *k_cache = nullptr, *v_cache = nullptr;  // the same as att.k, att.v (written here)
  const void *k_new = nullptr, *v_new = nullptr;  // or both null
  DType new_dtype = DType::f32;
  const float *cos = nullptr, *sin = nullptr;  // [max_pos, rot / 2], or null
  int rot = 0;
  bool interleaved = false;
};

// Runs the whole call (append, then attention) on the pool. Returns false when cancelled: before the append
// nothing is written; after it, the call's new tokens are in the cache (a retry writes the same values).
bool kvcache_forward(KVCacheArgs& a);

}  // namespace sk
