// Driver of the NaLaFormer family: splits the work into units, runs them on the pool with the kernels of the
// chosen SIMD level. Units are groups of heads (the kernels read each token's rows of a group as one run).
// Causal: one unit per (sequence, kv head group), the states carried through its chunks. Non-causal: with at
// least two (sequence, kv head group) units per thread, both passes in each unit; otherwise pass 1 per
// (sequence, kv head group, key part), parts summed in order, and pass 2 per (sequence, head group, block of
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
static float* workspace(const NalaArgs& a, int hg, int hq) {
  thread_local std::vector<float> w;
  const size_t n = static_cast<size_t>(nala_work_floats(a.K, a.V, hg, hq));
  if (w.size() < n) w.resize(n);
  return w.data();
}

// Heads per unit: up to `want`, within a workspace of about 1 MiB (the bytes a unit touches per chunk stay in
// L2), at least one.
// Groups of equal size out of `heads`.
static int group_size(int64_t per_head_floats, int want, int heads) {
  const int64_t fit = (int64_t{1} << 18) / per_head_floats;
  int g = static_cast<int>(std::min<int64_t>({want, fit, heads}));
  if (g < 1) g = 1;
  const int groups = (heads + g - 1) / g;
  return (heads + groups - 1) / groups;
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

// Causal: one unit per (sequence, group of kv heads), the states carried through its chunks. Groups as large
// as leave a unit per thread (each token's rows of a group are one run in memory: on 2 threads, B = 1, H = 8,
// 4 heads per unit ran 1.15-1.4x faster than 2, under load from other processes).
static bool run_causal(const NalaArgs& a, const NalaKernels& kern) {
  const int64_t L = nala_state_len(a.K, a.V);
  const int G = a.H / a.Hk;
  const int64_t per = nala_kv_head_floats(a.K, a.V) + G * nala_q_head_floats(a.K, a.V);
  const int64_t want_units = num_threads();
  const int want = static_cast<int>(std::max<int64_t>(1, static_cast<int64_t>(a.N) * a.Hk / want_units));
  const int gk = group_size(per, want, a.Hk);
  const int groups = (a.Hk + gk - 1) / gk;
  const int64_t units = static_cast<int64_t>(a.N) * groups;
  std::atomic<bool> stop{false};
  parallel_for(units, [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(u / groups), hk0 = static_cast<int>(u % groups) * gk, hk1 = std::min(a.Hk, hk0 + gk);
    const NalaSeq s = seq_of(a, n);
    if (s.qlen == 0 && !a.final_state) return;
    const int64_t first = static_cast<int64_t>(n) * a.Hk + hk0, len = (hk1 - hk0) * L;
    thread_local std::vector<float> own;
    float* st;
    if (a.final_state) {
      st = a.final_state + first * L;
    } else {
      if (own.size() < static_cast<size_t>(len)) own.resize(static_cast<size_t>(len));
      st = own.data();
    }
    const float* s0 = a.initial_state ? a.initial_state + first * L : nullptr;
    if (!s0) std::memset(st, 0, len * sizeof(float));
    else if (s0 != st) std::memcpy(st, s0, len * sizeof(float));
    if (s.qlen == 0) return;
    if (!kern.causal(a, s, hk0, hk1, st, workspace(a, hk1 - hk0, (hk1 - hk0) * G))) stop.store(true);
  });
  return !stop.load();
}

// Non-causal. With at least two (sequence, kv head group) units per thread: both passes in each unit, the
// sums in a buffer of this thread (no N x Hk x KVZ scratch for a batch of many sequences). Otherwise pass 1
// per (sequence, kv head group, key part), parts summed in order, and pass 2 per (sequence, query head group,
// block of queries): a long sequence is split by tokens, every thread reading whole token rows.
static bool run_noncausal(const NalaArgs& a, const NalaKernels& kern) {
  const int64_t KVZ = 2LL * a.K * a.V + 2LL * a.K;
  const int threads = num_threads();
  const int G = a.H / a.Hk;
  std::atomic<bool> stop{false};
  {
    const int64_t per = nala_kv_head_floats(a.K, a.V) + G * nala_q_head_floats(a.K, a.V);
    const int want = static_cast<int>(std::max<int64_t>(1, static_cast<int64_t>(a.N) * a.Hk / (2LL * threads)));
    const int gk = group_size(per, want, a.Hk);
    const int groups = (a.Hk + gk - 1) / gk;
    if (static_cast<int64_t>(a.N) * groups >= 2LL * threads) {
      parallel_for(static_cast<int64_t>(a.N) * groups, [&](int64_t u, int) {
        if (stop.load(std::memory_order_relaxed)) return;
        const NalaSeq s = seq_of(a, static_cast<int>(u / groups));
        const int hk0 = static_cast<int>(u % groups) * gk, hk1 = std::min(a.Hk, hk0 + gk);
        if (s.qlen == 0 && (s.klen == 0 || !a.nonfinite)) return;  // the keys still checked when nothing scanned them
        thread_local std::vector<float> sums;
        const size_t need = static_cast<size_t>((hk1 - hk0) * KVZ);
        if (sums.size() < need) sums.resize(need);
        float* work = workspace(a, hk1 - hk0, (hk1 - hk0) * G);
        bool ok = kern.kv_pass(a, s, hk0, hk1, 0, s.klen, sums.data(), KVZ, work);
        if (ok && s.qlen > 0) ok = kern.q_pass(a, s, hk0 * G, hk1 * G, 0, s.qlen, sums.data(), KVZ, work);
        if (!ok) stop.store(true);
      });
      return !stop.load();
    }
  }
  // Key parts: enough units for two per thread when the sequences and head groups alone are fewer, each part
  // at least 1024 keys (the sum of the parts costs one more KVZ read per part).
  const int64_t C = kNalaChunk;
  const int gk = group_size(C * (4LL * a.K + a.V), a.Hk, a.Hk);  // the kv pass touches kf, kr and vc
  const int kgroups = (a.Hk + gk - 1) / gk;
  const int64_t kunits = static_cast<int64_t>(a.N) * kgroups;
  int64_t max_len = 0;
  for (int n = 0; n < a.N; n++) {
    const NalaSeq s = seq_of(a, n);
    max_len = s.klen > max_len ? s.klen : max_len;
  }
  int parts = 1;
  if (kunits > 0 && kunits < 2LL * threads) {
    const int64_t want = (2LL * threads + kunits - 1) / kunits, fit = max_len / 1024;
    parts = static_cast<int>(want < fit ? want : fit);
    if (parts < 1) parts = 1;
  }
  const int64_t heads = static_cast<int64_t>(a.N) * a.Hk;
  std::vector<float> kvz(static_cast<size_t>(heads * parts * KVZ));
  // kvz of (sequence n, kv head hk, part p) at ((n * Hk + hk) * parts + p) * KVZ.
  parallel_for(kunits * parts, [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int64_t gu = u / parts;
    const int part = static_cast<int>(u % parts);
    const int n = static_cast<int>(gu / kgroups), hk0 = static_cast<int>(gu % kgroups) * gk, hk1 = std::min(a.Hk, hk0 + gk);
    const NalaSeq s = seq_of(a, n);
    // Part boundaries on chunk multiples: each part is whole chunks of the one-part blocking.
    const int64_t chunks = (s.klen + kNalaChunk - 1) / kNalaChunk;
    const int64_t j0 = std::min(s.klen, chunks * part / parts * kNalaChunk), j1 = std::min(s.klen, chunks * (part + 1) / parts * kNalaChunk);
    float* dst = kvz.data() + ((static_cast<int64_t>(n) * a.Hk + hk0) * parts + part) * KVZ;
    if (!kern.kv_pass(a, s, hk0, hk1, j0, j1, dst, parts * KVZ, workspace(a, hk1 - hk0, 0))) stop.store(true);
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
  const int gq = group_size(nala_q_head_floats(a.K, a.V), a.H, a.H);
  const int qgroups = (a.H + gq - 1) / gq;
  std::vector<int64_t> first(a.N + 1, 0);  // first block unit of each sequence
  for (int n = 0; n < a.N; n++) first[n + 1] = first[n] + (seq_of(a, n).qlen + kBlock - 1) / kBlock * qgroups;
  parallel_for(first[a.N], [&](int64_t u, int) {
    if (stop.load(std::memory_order_relaxed)) return;
    const int n = static_cast<int>(std::upper_bound(first.begin(), first.end(), u) - first.begin()) - 1;
    const NalaSeq s = seq_of(a, n);
    const int64_t blocks = (s.qlen + kBlock - 1) / kBlock, r = u - first[n];
    const int h0 = static_cast<int>(r / blocks) * gq, h1 = std::min(a.H, h0 + gq);
    const int64_t i0 = (r % blocks) * kBlock, i1 = std::min(s.qlen, i0 + kBlock);
    const float* src = kvz.data() + ((static_cast<int64_t>(n) * a.Hk + h0 / G) * parts) * KVZ;
    if (!kern.q_pass(a, s, h0, h1, i0, i1, src, parts * KVZ, workspace(a, 0, h1 - h0))) stop.store(true);
  });
  return !stop.load();
}

bool nala_run(const NalaArgs& a) {
  const NalaKernels& kern = nala_kernels(simd_level());
  return a.causal ? run_causal(a, kern) : run_noncausal(a, kern);
}

}  // namespace sk
