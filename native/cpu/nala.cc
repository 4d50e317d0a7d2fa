// Driver of the NaLaFormer family: splits the work into units, runs them on the pool with the kernels of the
// chosen SIMD level. Causal: one unit per (sequence, kv head), the state carried through its chunks.
// Non-causal: with at least two (sequence, kv head) units per thread, both passes in each unit; otherwise
// pass 1 per (sequence, kv head, key part), parts summed in order, and pass 2 per (sequence, head, block of
// queries).
#include "nala.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace sk {

const NalaKernels& nala_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kNalaKernels;
    case SimdLevel::avx2: return avx2::kNalaKernels;
    default: return portable::kNalaKernels;
  }
}

// This thread's workspace for the kernels (grown once, kept across calls).
static float* workspace(const NalaArgs& a) {
  thread_local std::vector<float> w;
  const size_t n = static_cast<size_t>(nala_work_floats(a.K, a.V));
  if (w.size() < n) w.resize(n);
  return w.data();
}

static NalaSeq seq_of(const NalaArgs& a, int n) {
  NalaSeq s{n, 0, 0, 0, 0, 0, 0};
  if (a.cu_q) {
    const int32_t* ck = a.cu_k ? a.cu_k : a.cu_q;
    s.qbos = a.cu_q[n], s.qlen = a.cu_q[n + 1] - a.cu_q[n];
    s.kbos = ck[n], s.klen = ck[n + 1] - ck[n];
    s.qrope = s.qbos, s.krope = s.kbos;  // packed: rows of the packed axis
  } else {
    s.qbos = static_cast<int64_t>(n) * a.T, s.qlen = a.T;
    s.kbos = static_cast<int64_t>(n) * a.S, s.klen = a.S;
    s.qrope = s.krope = a.step ? n : 0;  // batch rows share the tables; a step has one row per sequence
  }
  return s;
}

static bool run_causal(const NalaArgs& a, const NalaKernels& kern) {
  const int64_t L = nala_state_len(a.K, a.V);
  const int64_t units = static_cast<int64_t>(a.N) * a.Hk;
  std::atomic<bool> stop{false};
  parallel_for(units, [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(u / a.Hk), hk = static_cast<int>(u % a.Hk);
    const NalaSeq s = seq_of(a, n);
    if (s.qlen == 0 && !a.final_state) return;
    thread_local std::vector<float> own;
    float* st;
    if (a.final_state) {
      st = a.final_state + u * L;
    } else {
      own.resize(static_cast<size_t>(L));
      st = own.data();
    }
    const float* s0 = a.initial_state ? a.initial_state + u * L : nullptr;
    if (!s0) std::memset(st, 0, L * sizeof(float));
    else if (s0 != st) std::memcpy(st, s0, L * sizeof(float));
    if (s.qlen == 0) return;
    if (!kern.causal(a, s, hk, st, workspace(a))) stop.store(true);
  });
  return !stop.load();
}

static bool run_noncausal(const NalaArgs& a, const NalaKernels& kern) {
  const int64_t KVZ = 2LL * a.K * a.V + 2LL * a.K;
  const int threads = num_threads();
  const int64_t heads = static_cast<int64_t>(a.N) * a.Hk;
  const int G = a.H / a.Hk;
  std::atomic<bool> stop{false};
  if (heads >= 2LL * threads) {
    // Enough (sequence, kv head) units for every thread: both passes in one unit, the sums in a buffer of
    // this thread (no N x Hk x KVZ scratch for a batch of many sequences).
    parallel_for(heads, [&](int64_t u, int) {
      if (stop.load(std::memory_order_relaxed)) return;
      const NalaSeq s = seq_of(a, static_cast<int>(u / a.Hk));
      const int hk = static_cast<int>(u % a.Hk);
      if (s.qlen == 0) return;
      thread_local std::vector<float> sums;
      if (sums.size() < static_cast<size_t>(KVZ)) sums.resize(static_cast<size_t>(KVZ));
      float* work = workspace(a);
      bool ok = kern.kv_pass(a, s, hk, 0, s.klen, sums.data(), work);
      for (int g = 0; ok && g < G; g++) ok = kern.q_pass(a, s, hk * G + g, 0, s.qlen, sums.data(), work);
      if (!ok) stop.store(true);
    });
    return !stop.load();
  }
  // Key parts: enough units for two per thread when the sequences and heads alone are fewer, each part at
  // least 1024 keys (the sum of the parts costs one more KVZ read per part).
  int64_t max_len = 0;
  for (int n = 0; n < a.N; n++) {
    const NalaSeq s = seq_of(a, n);
    max_len = s.klen > max_len ? s.klen : max_len;
  }
  int parts = 1;
  if (heads > 0 && heads < 2LL * threads) {
    const int64_t want = (2LL * threads + heads - 1) / heads, fit = max_len / 1024;
    parts = static_cast<int>(want < fit ? want : fit);
    if (parts < 1) parts = 1;
  }
  std::vector<float> kvz(static_cast<size_t>(heads * parts * KVZ));
  parallel_for(heads * parts, [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int64_t hu = u / parts;
    const int part = static_cast<int>(u % parts);
    const NalaSeq s = seq_of(a, static_cast<int>(hu / a.Hk));
    // Part boundaries on chunk multiples: each part is whole chunks of the one-part blocking.
    const int64_t chunks = (s.klen + 63) / 64;
    const int64_t j0 = std::min(s.klen, chunks * part / parts * 64), j1 = std::min(s.klen, chunks * (part + 1) / parts * 64);
    if (!kern.kv_pass(a, s, static_cast<int>(hu % a.Hk), j0, j1, kvz.data() + u * KVZ, workspace(a))) stop.store(true);
  });
  if (stop.load()) return false;
  if (parts > 1) {
    parallel_for(heads, [&](int64_t hu, int) {
      float* dst = kvz.data() + hu * parts * KVZ;
      for (int p = 1; p < parts; p++) {
        const float* src = dst + p * KVZ;
        for (int64_t e = 0; e < KVZ; e++) dst[e] += src[e];
      }
    });
  }
  constexpr int64_t kBlock = 256;
  std::vector<int64_t> first(a.N + 1, 0);  // first block unit of each sequence
  for (int n = 0; n < a.N; n++) first[n + 1] = first[n] + (seq_of(a, n).qlen + kBlock - 1) / kBlock * a.H;
  parallel_for(first[a.N], [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(std::upper_bound(first.begin(), first.end(), u) - first.begin()) - 1;
    const NalaSeq s = seq_of(a, n);
    const int64_t blocks = (s.qlen + kBlock - 1) / kBlock, r = u - first[n];
    const int h = static_cast<int>(r / blocks);
    const int64_t i0 = (r % blocks) * kBlock, i1 = std::min(s.qlen, i0 + kBlock);
    const float* src = kvz.data() + ((static_cast<int64_t>(n) * a.Hk + h / G) * parts) * KVZ;
    if (!kern.q_pass(a, s, h, i0, i1, src, workspace(a))) stop.store(true);
  });
  return !stop.load();
}

bool nala_run(const NalaArgs& a) {
  const NalaKernels& kern = nala_kernels(simd_level());
  return a.causal ? run_causal(a, kern) : run_noncausal(a, kern);
}

}  // namespace sk
