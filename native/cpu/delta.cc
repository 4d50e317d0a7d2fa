// Driver of the delta family: splits the work into (sequence, v-head) units, runs them on the pool with the
// kernels of the chosen SIMD level.
#include "delta.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace sk {

const DeltaKernels& delta_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kDeltaKernels;
    case SimdLevel::avx2: return avx2::kDeltaKernels;
    default: return portable::kDeltaKernels;
  }
}

// v heads per unit: whole q/k groups (they share loads), at most 8 heads (their states stay in L2), and
// enough units for every thread to get at least two (dynamic scheduling then evens out varlen batches).
static int heads_per_unit(const DeltaArgs& a, int threads) {
  const int group = a.HV / a.H;
  int best = 1;
  for (int d = 1; d <= a.HV && d <= 8; d++) {
    if (a.HV % d != 0) continue;
    const bool whole_groups = d % group == 0 || group % d == 0;
    const bool enough = static_cast<int64_t>(a.N) * (a.HV / d) >= 2LL * threads;
    if (whole_groups && (enough || d == 1)) best = d;
  }
  return best;
}

// Runs one unit over its tokens, in segments of snap_every tokens when snapshots are asked for (a multiple of
// the chunk size, so the chunk boundaries are those of one whole run), writing the state after each full
// segment to the snapshot rows of the sequence.
static bool run_unit(const DeltaKernels& kern, const DeltaArgs& a, const DeltaUnit& unit) {
  if (!a.snaps || a.snap_every <= 0) return a.use_chunk ? kern.chunk(unit) : kern.recurrent(unit);
  const int64_t KV = static_cast<int64_t>(a.K) * a.V;
  DeltaUnit seg = unit;
  int64_t j = 0;
  for (int64_t done = 0; done < unit.len; done += seg.len, j++) {
    seg.bos = unit.bos + done;
    seg.len = unit.len - done < a.snap_every ? unit.len - done : a.snap_every;
    if (!(a.use_chunk ? kern.chunk(seg) : kern.recurrent(seg))) return false;
    if (seg.len < a.snap_every) break;
    for (int h = 0; h < unit.nh; h++)
      kern.store(a.snaps, a.snap_dtype, ((a.snap_base[unit.n] + j) * a.HV + unit.hv0 + h) * KV, KV, unit.S[h]);
  }
  return true;
}

bool delta_prefill(const DeltaArgs& a) {
  const DeltaKernels& kern = delta_kernels(simd_level());
  const int64_t KV = static_cast<int64_t>(a.K) * a.V;
  const int G = heads_per_unit(a, num_threads());
  const int per_seq = a.HV / G;
  const int64_t units = static_cast<int64_t>(a.N) * per_seq;
  std::atomic<bool> cancelled{false};
  parallel_for(units, [&](int64_t u, int) {
    if (cancelled.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(u / per_seq), hv0 = static_cast<int>(u % per_seq) * G;
    DeltaUnit unit{&a, n, hv0, G, 0, 0, nullptr};
    if (a.cu_seqlens) {
      unit.bos = a.cu_seqlens[n];
      unit.len = a.cu_seqlens[n + 1] - a.cu_seqlens[n];
    } else {
      unit.bos = static_cast<int64_t>(n) * a.T;
      unit.len = a.T;
    }
    if (a.pooled) {
      const int slot = a.state_indices ? a.state_indices[n] : n;
      if (slot < 0) {  // padding: o rows of these heads are 0, nothing else is touched
        const int64_t es = dtype_bytes(a.qkv_dtype);
        for (int64_t t = 0; t < unit.len; t++)
          std::memset(static_cast<char*>(a.o) + ((unit.bos + t) * a.HV + hv0) * a.V * es, 0, static_cast<size_t>(G * a.V * es));
        return;
      }
      // float32 pool updated in place: the kernels work on the slot itself; otherwise on a float32 copy.
      const bool direct = a.pool_dtype == DType::f32 && a.update_state;
      const bool read = a.has_initial == nullptr || a.has_initial[n] != 0;
      std::vector<float> own;
      if (!direct) own.resize(static_cast<size_t>(G * KV));
      std::vector<float*> S(G);
      for (int j = 0; j < G; j++) {
        const int64_t off = (static_cast<int64_t>(slot) * a.HV + hv0 + j) * KV;
        S[j] = direct ? static_cast<float*>(a.pool) + off : own.data() + j * KV;
        if (!read) std::memset(S[j], 0, KV * sizeof(float));
        else if (!direct) kern.load(a.pool, a.pool_dtype, off, KV, S[j]);
      }
      unit.S = S.data();
      if (unit.len > 0 && !run_unit(kern, a, unit)) {
        cancelled.store(true);
        return;
      }
      if (a.update_state && !direct)
        for (int j = 0; j < G; j++)
          kern.store(a.pool, a.pool_dtype, (static_cast<int64_t>(slot) * a.HV + hv0 + j) * KV, KV, S[j]);
      return;
    }
    if (unit.len == 0 && !a.final_state) return;  // nothing to compute and no state to hand back
    // Work on the final-state slices when there are (a fresh output, or the state itself for an in-place
    // step); otherwise on private buffers.
    std::vector<float> own;
    if (!a.final_state) own.resize(static_cast<size_t>(G * KV));
    std::vector<float*> S(G);
    for (int j = 0; j < G; j++) {
      const int64_t slot = static_cast<int64_t>(n) * a.HV + hv0 + j;
      S[j] = a.final_state ? a.final_state + slot * KV : own.data() + j * KV;
      const float* S0 = a.initial_state ? a.initial_state + slot * KV : nullptr;
      if (S0 == nullptr) std::memset(S[j], 0, KV * sizeof(float));
      else if (S0 != S[j]) std::memcpy(S[j], S0, KV * sizeof(float));
    }
    unit.S = S.data();
    if (unit.len == 0) return;  // a zero-length sequence: the final state is the initial one
    if (!run_unit(kern, a, unit)) cancelled.store(true);
  });
  return !cancelled.load();
}

}  // namespace sk
