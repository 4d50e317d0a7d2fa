// Driver of the KV-cache op (kvcache.h): the append and q's rotation, then the attention kernels.
#include "kvcache.h"

#include <memory>
#include <vector>

#include "rotary.h"
#include "threadpool.h"

namespace sk {

bool kvcache_forward(KVCacheArgs& a) {
  AttentionArgs& t = a.att;
  const int B = t.B, Tq = t.T, Hq = t.Hq, Hk = t.Hk, D = t.D, Dv = t.Dv;
  if (t.cancel && __atomic_load_n(t.cancel, __ATOMIC_RELAXED) != 0) return false;
  const RotaryKernels& kern = rotary_kernels(simd_level());
  const int half = a.rot / 2;
  const bool append = a.k_new != nullptr;

  std::vector<int32_t> k_len(static_cast<size_t>(B));
  for (int b = 0; b < B; b++) k_len[b] = a.cache_seqlens[b] + (append ? Tq : 0);
  t.k_len = k_len.data();

  // Cache row of position pos of sequence b (token rows of Hk head rows).
  auto cache_row = [&](int b, int64_t pos) { return key_row(t, b, static_cast<int64_t>(b) * t.S, pos); };

  // 1. The append, one (sequence, new token) per task; kNew rotated on the way.
  if (append) {
    parallel_for(static_cast<int64_t>(B) * Tq, [&](int64_t i, int) {
      alignas(64) float tmp[kRotaryMaxDim];
      const int b = static_cast<int>(i / Tq), j = static_cast<int>(i % Tq);
      const int64_t pos = a.cache_seqlens[b] + j;
      const int64_t row = cache_row(b, pos);
      const float* c = a.cos ? a.cos + pos * half : nullptr;
      const float* s = a.sin ? a.sin + pos * half : nullptr;
      for (int h = 0; h < Hk; h++) {
        kern.row(a.k_new, a.new_dtype, (i * Hk + h) * D, a.k_cache, t.kv_dtype, (row * Hk + h) * D, D, c ? a.rot : 0, c, s,
                 a.interleaved, tmp);
        kern.row(a.v_new, a.new_dtype, (i * Hk + h) * Dv, a.v_cache, t.kv_dtype, (row * Hk + h) * Dv, Dv, 0, nullptr, nullptr,
                 false, tmp);
      }
    });
  }

  // 2. q rotated into float32 rows, at the positions of the new tokens (the last Tq attended keys).
  std::unique_ptr<float[]> q_rot;
  if (a.cos) {
    q_rot.reset(new float[static_cast<size_t>(B) * Tq * Hq * D]);
    float* qr = q_rot.get();
    parallel_for(static_cast<int64_t>(B) * Tq, [&](int64_t i, int) {
      alignas(64) float tmp[kRotaryMaxDim];
      const int b = static_cast<int>(i / Tq), j = static_cast<int>(i % Tq);
      const int64_t pos = static_cast<int64_t>(k_len[b]) - Tq + j;
      for (int h = 0; h < Hq; h++)
        kern.row(t.q, t.q_dtype, (i * Hq + h) * D, qr, DType::f32, (i * Hq + h) * D, D, a.rot, a.cos + pos * half,
                 a.sin + pos * half, a.interleaved, tmp);
    });
    t.q = qr;
    t.q_dtype = DType::f32;
  }

  // 3. Attention over each sequence's first k_len[b] keys.
  const bool ok = attention_forward(t);
  t.k_len = nullptr;
  return ok;
}

}  // namespace sk
