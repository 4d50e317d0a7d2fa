// Driver of HyperAttention (see hyper.h): the generator, the plan, hashing, sorting and gathering into packed
// float32 sequences, the two attention calls, and the lse merges. Everything but the attention calls is
// O(rows) work (hashing: lshBits * D per row) spread over the pool in tasks whose results do not depend on
// which thread ran them.
#include "hyper.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>

#include <sys/mman.h>

#include "attention.h"
#include "threadpool.h"

namespace sk {

// ---- the generator

uint64_t hyper_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t hyper_word(uint64_t s, uint64_t i) { return hyper_mix64(s + (i + 1) * 0x9e3779b97f4a7c15ULL); }

uint64_t hyper_sample_stream(uint64_t seed, int64_t b, int64_t hk, int64_t q0) {
  return hyper_word(hyper_word(hyper_word(hyper_word(seed, 1), static_cast<uint64_t>(b)), static_cast<uint64_t>(hk)),
                    static_cast<uint64_t>(q0));
}

int32_t hyper_sample(uint64_t stream, int64_t j, int32_t n) {
  // The top 32 bits of the word scaled to [0, n) by a multiply-shift (exact in 64-bit integers).
  return static_cast<int32_t>(((hyper_word(stream, static_cast<uint64_t>(j)) >> 32) * static_cast<uint64_t>(n)) >> 32);
}

uint32_t hyper_gray_rank(uint32_t bin) {
  for (int s = 1; s < 32; s <<= 1) bin ^= bin >> s;
  return bin;
}

namespace {

// R must come out bit-identical in the TypeScript reference, here, and on CUDA later: every operation below
// is one IEEE-754 double +, -, *, / or sqrt, rounded to nearest, in the order written. A compiler may fuse a
// product into a following add (FMA contraction: GCC does across statements by default where the target has
// FMA, clang within an expression), which changes the rounding; passing each product that feeds an add
// through a volatile forces it to be rounded on its own. (Cost: irrelevant, R has D * lshBits entries.)
inline double rounded(double x) {
  volatile double y = x;
  return y;
}

// ln r for r in (0, 1), with only + - * / : r = m * 2^e with m in (sqrt(1/2), sqrt(2)] (exact scalings),
// ln m = 2 atanh(t) = 2 t (1 + t^2/3 + ... + t^20/21), t = (m - 1) / (m + 1), |t| <= 0.1716 (the truncation
// is below 1e-18 relative).
double polar_log(double r) {
  int e = 0;
  double m = r;
  while (m < 1.0) {
    m *= 2.0;
    e--;
  }
  if (m > 1.4142135623730951) {
    m /= 2.0;
    e++;
  }
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = rounded(t * t);
  double p = 1.0 / 21.0;
  for (int k = 9; k >= 0; k--) p = rounded(p * t2) + 1.0 / (2 * k + 1);
  return rounded(e * 0.6931471805599453) + rounded(rounded(2.0 * t) * p);
}

inline double unit_interval(uint64_t w) { return static_cast<double>(w >> 11) * (1.0 / 9007199254740992.0); }  // 2^-53

}  // namespace

void hyper_projections(uint64_t seed, int D, int bits, float* R) {
  const int64_t n = static_cast<int64_t>(D) * bits;
  const uint64_t s = hyper_word(seed, 0);
  uint64_t i = 0;
  for (int64_t e = 0; e < n;) {
    const double u = 2.0 * unit_interval(hyper_word(s, i)) - 1.0;  // exact: multiples of 2^-52 in [-1, 1)
    const double v = 2.0 * unit_interval(hyper_word(s, i + 1)) - 1.0;
    i += 2;
    const double r = rounded(u * u) + rounded(v * v);
    if (r >= 1.0 || r == 0.0) continue;
    const double f = std::sqrt(-2.0 * polar_log(r) / r);
    R[e++] = static_cast<float>(u * f);
    if (e < n) R[e++] = static_cast<float>(v * f);
  }
}

// ---- the plan

HyperPlan hyper_plan(const HyperArgs& a) {
  HyperPlan p;
  const int64_t msl = a.min_seq_len;
  auto add = [&](int32_t q0, int32_t nq, int32_t k0, int32_t nk, int32_t depth) {
    HyperProblem pr{q0, nq, k0, nk, depth, nk < msl, 1, nk, nq, 0};
    if (!pr.exact) {
      pr.bs = std::min(a.block_size, nk);
      pr.nb = static_cast<int32_t>((static_cast<int64_t>(nk) + pr.bs - 1) / pr.bs);
      pr.qbs = static_cast<int32_t>((static_cast<int64_t>(nq) * pr.bs + nk - 1) / nk);
      pr.m = pr.nb > 1 ? a.sample_size : 0;
    }
    p.problems.push_back(pr);
  };
  // Causal: the diagonal halves recurse (leaves left to right), then the lower-left block of this node.
  auto build = [&](auto&& self, int32_t a0, int32_t n, int32_t depth) -> void {
    if (n <= msl || n < 2) {
      p.leaves.push_back(a0);
      return;
    }
    const int32_t n1 = n - n / 2;  // ceil(n / 2)
    self(self, a0, n1, depth + 1);
    self(self, a0 + n1, n - n1, depth + 1);
    add(a0 + n1, n - n1, a0, n1, depth);
  };
  if (!a.causal) {
    if (a.T >= 1 && a.S >= 1 && a.S >= msl) {
      p.direct = false;
      add(0, a.T, 0, a.S, 0);
    }
  } else if (a.T >= 2 && a.T > msl) {
    p.direct = false;
    build(build, 0, a.T, 0);
    p.leaves.push_back(a.T);
  }
  const int64_t bh = static_cast<int64_t>(a.B) * a.Hk;
  for (const HyperProblem& pr : p.problems) {
    p.qrows += bh * pr.nq;
    p.krows += bh * pr.nk;
    p.srows += bh * 2 * static_cast<int64_t>(pr.m);
    p.seqs += bh * pr.nb;
  }
  return p;
}

// ---- the call

namespace {

inline bool cancelled(const int32_t* c) { return c != nullptr && __atomic_load_n(c, __ATOMIC_RELAXED) != 0; }

// Uninitialised storage (every element is written before it is read). Large buffers are 2 MiB aligned and
// marked for transparent huge pages: their first touch then costs a fault per 2 MiB instead of one per
// 4 KiB (the gathered copies of a T = 32768 call are ~70 MiB, fresh on every call).
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using Buf = std::unique_ptr<T[], FreeDeleter>;

template <class T>
Buf<T> uninit(int64_t n) {
  constexpr size_t kHuge = size_t{2} << 20;
  size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(T);
  void* p;
  if (bytes >= 4 * kHuge) {
    bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    p = std::aligned_alloc(kHuge, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  } else {
    p = std::malloc(bytes);
  }
  if (!p) throw std::bad_alloc();
  return Buf<T>(static_cast<T*>(p));
}

void to_float(const HyperKernels& kern, const void* src, DType dt, int64_t n, float* dst) {
  const int64_t chunk = 1 << 16;
  parallel_for((n + chunk - 1) / chunk, [&](int64_t c, int) { kern.to_f32(src, dt, c * chunk, std::min(n, (c + 1) * chunk), dst); });
}

void from_float(const HyperKernels& kern, const float* src, DType dt, int64_t n, void* dst) {
  const int64_t chunk = 1 << 16;
  parallel_for((n + chunk - 1) / chunk, [&](int64_t c, int) { kern.from_f32(src, dt, c * chunk, std::min(n, (c + 1) * chunk), dst); });
}

// The Gray-code rank of the bucket of each of `rows` rows of D floats (hyper_impl.h: the same bits on every
// level and in the float64 reference).
void hash_rows(const HyperKernels& kern, const float* x, int64_t rows, int D, int bits, const double* Rp, uint16_t* rank) {
  const int64_t chunk = 512;
  parallel_for((rows + chunk - 1) / chunk, [&](int64_t c, int) { kern.hash_rows(x, c * chunk, std::min(rows, (c + 1) * chunk), D, bits, Rp, rank); });
}

// Stable counting sort of n rows by rank (rank of local row i at rank[i * stride]): perm[k] = the k-th row.
void sort_rows(const uint16_t* rank, int64_t stride, int32_t n, int bits, int32_t* perm) {
  std::vector<int32_t> start((size_t{1} << bits) + 1, 0);
  for (int32_t i = 0; i < n; i++) start[rank[i * stride] + 1]++;
  for (size_t b = 1; b < start.size(); b++) start[b] += start[b - 1];
  for (int32_t i = 0; i < n; i++) perm[start[rank[i * stride]]++] = i;
}

// (o, l) <- merge of (o, l) and (ob, lb) by log-sum-exp: weights e^l / (e^l + e^lb) and e^lb / (...).
inline void merge_into(float* o, float& l, const float* ob, float lb, int Dv) {
  if (lb == -INFINITY) return;
  if (l == -INFINITY) {
    std::memcpy(o, ob, static_cast<size_t>(Dv) * sizeof(float));
    l = lb;
    return;
  }
  const double mx = std::max(l, lb);
  const double wa = std::exp(l - mx), wb = std::exp(lb - mx), s = wa + wb;
  const float ca = static_cast<float>(wa / s), cb = static_cast<float>(wb / s);
  for (int d = 0; d < Dv; d++) o[d] = ca * o[d] + cb * ob[d];
  l = static_cast<float>(mx + std::log(s));
}

// Rows per task of the gathers and merges (a long sub-problem is shared by many threads).
constexpr int32_t kRowChunk = 2048;

// Where each problem's rows sit in the gathered buffers.
struct Layout {
  int64_t qrow, krow, srow, seq, samp;  // bases: Q' rows, K' rows, sampled K' rows, sequences, sample draws
};

}  // namespace

const HyperKernels& hyper_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kHyperKernels;
    case SimdLevel::avx2: return avx2::kHyperKernels;
    default: return portable::kHyperKernels;
  }
}

bool hyper_forward(const HyperArgs& a) {
  const HyperKernels& kern = hyper_kernels(simd_level());
  const HyperPlan plan = hyper_plan(a);
  const int B = a.B, T = a.T, S = a.S, Hq = a.Hq, Hk = a.Hk, D = a.D, Dv = a.Dv, group = Hq / Hk;

  auto attention_args = [&]() {
    AttentionArgs x;
    x.scale = a.scale;
    x.cancel = a.cancel;
    x.no_split = true;
    return x;
  };
  if (plan.direct) {  // exact attention, on the inputs as they are
    AttentionArgs x = attention_args();
    x.B = B, x.T = T, x.S = S, x.Hq = Hq, x.Hk = Hk, x.D = D, x.Dv = Dv, x.N = B;
    x.q = a.q, x.k = a.k, x.v = a.v, x.dtype = a.dtype, x.o = a.o, x.lse = a.lse, x.causal = a.causal;
    return attention_forward(x);
  }

  // float32 inputs: in place; float16/bfloat16: converted once.
  const int64_t nq_el = static_cast<int64_t>(B) * T * Hq * D, nk_el = static_cast<int64_t>(B) * S * Hk * D,
                nv_el = static_cast<int64_t>(B) * S * Hk * Dv, no_el = static_cast<int64_t>(B) * T * Hq * Dv;
  Buf<float> qc, kc, vc, oc, lc;
  const float *qf = static_cast<const float*>(a.q), *kf = static_cast<const float*>(a.k), *vf = static_cast<const float*>(a.v);
  if (a.dtype != DType::f32) {
    qc = uninit<float>(nq_el), kc = uninit<float>(nk_el), vc = uninit<float>(nv_el);
    to_float(kern, a.q, a.dtype, nq_el, qc.get());
    to_float(kern, a.k, a.dtype, nk_el, kc.get());
    to_float(kern, a.v, a.dtype, nv_el, vc.get());
    qf = qc.get(), kf = kc.get(), vf = vc.get();
  }
  // The accumulated output (o itself when float32) and lse (lse itself when asked for), [B,T,Hq,Dv], [B,Hq,T].
  float* acc_o = a.dtype == DType::f32 ? static_cast<float*>(a.o) : (oc = uninit<float>(no_el)).get();
  float* acc_l = a.lse ? a.lse : (lc = uninit<float>(static_cast<int64_t>(B) * Hq * T)).get();

  // Causal: the exact causal leaves, one packed call per batch row, straight into the accumulator.
  if (a.causal) {
    for (int b = 0; b < B; b++) {
      AttentionArgs x = attention_args();
      x.B = 1, x.T = T, x.S = T, x.Hq = Hq, x.Hk = Hk, x.D = D, x.Dv = Dv;
      x.N = static_cast<int>(plan.leaves.size()) - 1;
      x.cu_q = x.cu_k = plan.leaves.data();
      x.q = qf + static_cast<int64_t>(b) * T * Hq * D;
      x.k = kf + static_cast<int64_t>(b) * S * Hk * D;
      x.v = vf + static_cast<int64_t>(b) * S * Hk * Dv;
      x.o = acc_o + static_cast<int64_t>(b) * T * Hq * Dv;
      x.lse = acc_l + static_cast<int64_t>(b) * Hq * T;
      x.causal = true;
      if (!attention_forward(x)) return false;
    }
  }
  if (cancelled(a.cancel)) return false;

  const std::vector<HyperProblem>& P = plan.problems;
  const int np = static_cast<int>(P.size());
  std::vector<Layout> lay(np);
  {
    Layout at{0, 0, 0, 0, 0};
    const int64_t bh = static_cast<int64_t>(B) * Hk;
    for (int p = 0; p < np; p++) {
      lay[p] = at;
      at.qrow += bh * P[p].nq;
      at.krow += bh * P[p].nk;
      at.srow += bh * 2 * static_cast<int64_t>(P[p].m);
      at.seq += bh * P[p].nb;
      at.samp += bh * P[p].m;
    }
  }
  const int64_t nsamp = np ? lay[np - 1].samp + static_cast<int64_t>(B) * Hk * P[np - 1].m : 0;

  // Hashes of every row (only when some problem is not exact).
  const bool hashing = std::any_of(P.begin(), P.end(), [](const HyperProblem& p) { return !p.exact; });
  Buf<uint16_t> qrank, krank;
  if (hashing) {
    std::vector<float> R(static_cast<size_t>(D) * a.lsh_bits);
    hyper_projections(a.seed, D, a.lsh_bits, R.data());
    const int ld = kern.hash_width(a.lsh_bits);
    std::vector<double> Rp(static_cast<size_t>(D) * ld, 0.0);
    for (int d = 0; d < D; d++)
      for (int r = 0; r < a.lsh_bits; r++) Rp[static_cast<size_t>(d) * ld + r] = R[static_cast<size_t>(d) * a.lsh_bits + r];
    qrank = uninit<uint16_t>(static_cast<int64_t>(B) * T * Hq);
    krank = uninit<uint16_t>(static_cast<int64_t>(B) * S * Hk);
    hash_rows(kern, qf, static_cast<int64_t>(B) * T * Hq, D, a.lsh_bits, Rp.data(), qrank.get());
    hash_rows(kern, kf, static_cast<int64_t>(B) * S * Hk, D, a.lsh_bits, Rp.data(), krank.get());
    if (cancelled(a.cancel)) return false;
  }

  // Sorted orders: of each query head's queries (qperm, Q' row order) and each kv head's keys (kperm), and
  // each (batch row, kv head)'s samples (sorted positions, ascending).
  auto qperm = uninit<int32_t>(plan.qrows * group), kperm = uninit<int32_t>(plan.krows), samp = uninit<int32_t>(nsamp);
  // Query perms: problem p, batch b, query head h at (lay.qrow + (b * Hk + hk) * nq) * group + g * nq.
  auto qperm_of = [&](int p, int b, int h) {
    return qperm.get() + (lay[p].qrow + (static_cast<int64_t>(b) * Hk + h / group) * P[p].nq) * group +
           static_cast<int64_t>(h % group) * P[p].nq;
  };
  auto kofs = [&](int p, int b, int hk) { return lay[p].krow + (static_cast<int64_t>(b) * Hk + hk) * P[p].nk; };
  auto qofs = [&](int p, int b, int hk) { return lay[p].qrow + (static_cast<int64_t>(b) * Hk + hk) * P[p].nq; };
  auto sofs = [&](int p, int b, int hk) { return lay[p].srow + (static_cast<int64_t>(b) * Hk + hk) * 2 * static_cast<int64_t>(P[p].m); };
  auto samp_of = [&](int p, int b, int hk) { return samp.get() + lay[p].samp + (static_cast<int64_t>(b) * Hk + hk) * P[p].m; };
  auto seq_of = [&](int p, int b, int hk) { return lay[p].seq + (static_cast<int64_t>(b) * Hk + hk) * P[p].nb; };
  {
    const int64_t qtasks = static_cast<int64_t>(np) * B * Hq, ktasks = static_cast<int64_t>(np) * B * Hk;
    parallel_for(qtasks + ktasks, [&](int64_t i, int) {
      if (i < qtasks) {
        const int p = static_cast<int>(i / (B * Hq)), b = static_cast<int>(i / Hq % B), h = static_cast<int>(i % Hq);
        const HyperProblem& pr = P[p];
        int32_t* perm = qperm_of(p, b, h);
        if (pr.exact) {
          for (int32_t j = 0; j < pr.nq; j++) perm[j] = j;
        } else {
          sort_rows(qrank.get() + (static_cast<int64_t>(b) * T + pr.q0) * Hq + h, Hq, pr.nq, a.lsh_bits, perm);
        }
        return;
      }
      i -= qtasks;
      const int p = static_cast<int>(i / (B * Hk)), b = static_cast<int>(i / Hk % B), hk = static_cast<int>(i % Hk);
      const HyperProblem& pr = P[p];
      int32_t* perm = kperm.get() + kofs(p, b, hk);
      if (pr.exact) {
        for (int32_t j = 0; j < pr.nk; j++) perm[j] = j;
      } else {
        sort_rows(krank.get() + (static_cast<int64_t>(b) * S + pr.k0) * Hk + hk, Hk, pr.nk, a.lsh_bits, perm);
      }
      if (pr.m > 0) {
        int32_t* s = samp_of(p, b, hk);
        const uint64_t stream = hyper_sample_stream(a.seed, b, hk, pr.q0);
        for (int32_t j = 0; j < pr.m; j++) s[j] = hyper_sample(stream, j, pr.nk);
        std::sort(s, s + pr.m);
      }
    });
  }
  qrank.reset(), krank.reset();
  if (cancelled(a.cancel)) return false;

  // Gathers, float32: Q' [qrows, group, D], K' [krows, D], V' [krows, Dv], the sampled K'/V' [srows, .], and
  // the offsets of the packed sequences (problem, batch row, kv head, block). The m samples of a (problem,
  // batch row, kv head), ascending, are laid out twice in a row (2m rows): the samples outside key block blk,
  // [hi, m) then [0, lo), are then the one range [hi, lo + m) of that, which the block's sequence takes
  // (cu_s, k_end: ranges of different blocks overlap).
  auto Qg = uninit<float>(plan.qrows * group * D), Kg = uninit<float>(plan.krows * D), Vg = uninit<float>(plan.krows * Dv);
  auto Ks = uninit<float>(plan.srows * D), Vs = uninit<float>(plan.srows * Dv);
  std::vector<int32_t> cu_q(plan.seqs + 1), cu_k(plan.seqs + 1), cu_s(plan.seqs + 1), s_end(plan.seqs);
  cu_q[plan.seqs] = static_cast<int32_t>(plan.qrows);
  cu_k[plan.seqs] = static_cast<int32_t>(plan.krows);
  cu_s[plan.seqs] = static_cast<int32_t>(plan.srows);
  {
    // Tasks: query rows of (problem, batch row, query head) and key rows of (problem, batch row, kv head) in
    // chunks (so that many threads share a long sequence), and per (problem, batch row, kv head) its samples
    // and the offsets of its sequences.
    struct Task {
      int kind, p, b, h;  // kind 0: queries, 1: keys, 2: samples and offsets; h: query or kv head
      int32_t j0, j1;
    };
    std::vector<Task> tasks;
    for (int p = 0; p < np; p++)
      for (int b = 0; b < B; b++) {
        for (int h = 0; h < Hq; h++)
          for (int32_t j = 0; j < P[p].nq; j += kRowChunk) tasks.push_back({0, p, b, h, j, std::min(P[p].nq, j + kRowChunk)});
        for (int hk = 0; hk < Hk; hk++) {
          for (int32_t j = 0; j < P[p].nk; j += kRowChunk) tasks.push_back({1, p, b, hk, j, std::min(P[p].nk, j + kRowChunk)});
          tasks.push_back({2, p, b, hk, 0, 0});
        }
      }
    parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
      const Task& tk = tasks[i];
      const int p = tk.p, b = tk.b;
      const HyperProblem& pr = P[p];
      if (tk.kind == 0) {
        const int h = tk.h;
        const int32_t* perm = qperm_of(p, b, h);
        const int64_t base = qofs(p, b, h / group), g = h % group;
        for (int32_t j = tk.j0; j < tk.j1; j++)
          std::memcpy(Qg.get() + ((base + j) * group + g) * D, qf + ((static_cast<int64_t>(b) * T + pr.q0 + perm[j]) * Hq + h) * D,
                      static_cast<size_t>(D) * sizeof(float));
        return;
      }
      const int hk = tk.h;
      const int32_t* perm = kperm.get() + kofs(p, b, hk);
      const int64_t kb = kofs(p, b, hk);
      auto src_row = [&](int32_t j) { return (static_cast<int64_t>(b) * S + pr.k0 + perm[j]) * Hk + hk; };
      if (tk.kind == 1) {
        for (int32_t j = tk.j0; j < tk.j1; j++) {
          const int64_t src = src_row(j);
          std::memcpy(Kg.get() + (kb + j) * D, kf + src * D, static_cast<size_t>(D) * sizeof(float));
          std::memcpy(Vg.get() + (kb + j) * Dv, vf + src * Dv, static_cast<size_t>(Dv) * sizeof(float));
        }
        return;
      }
      // Query block blk of this (batch row, kv head): sequence seq + blk, its queries from blk * qbs, its block
      // keys from blk * bs, its sampled keys all samples but those in key block blk, [lo, hi) of the samples.
      const int64_t qb = qofs(p, b, hk), seq = seq_of(p, b, hk), sb = sofs(p, b, hk);
      const int32_t* s = pr.m > 0 ? samp_of(p, b, hk) : nullptr;
      for (int32_t j = 0; j < 2 * pr.m; j++) {
        const int64_t src = src_row(s[j % pr.m]);
        std::memcpy(Ks.get() + (sb + j) * D, kf + src * D, static_cast<size_t>(D) * sizeof(float));
        std::memcpy(Vs.get() + (sb + j) * Dv, vf + src * Dv, static_cast<size_t>(Dv) * sizeof(float));
      }
      int32_t lo = 0;
      for (int32_t blk = 0; blk < pr.nb; blk++) {
        cu_q[seq + blk] = static_cast<int32_t>(qb + std::min<int64_t>(static_cast<int64_t>(blk) * pr.qbs, pr.nq));
        cu_k[seq + blk] = static_cast<int32_t>(kb + static_cast<int64_t>(blk) * pr.bs);
        const int64_t end = std::min<int64_t>(static_cast<int64_t>(blk + 1) * pr.bs, pr.nk);
        int32_t hi = lo;
        while (hi < pr.m && s[hi] < end) hi++;
        cu_s[seq + blk] = static_cast<int32_t>(sb + hi);
        s_end[seq + blk] = static_cast<int32_t>(sb + lo + pr.m);
        lo = hi;
      }
    });
  }
  kperm.reset();
  if (cancelled(a.cancel)) return false;

  // The two attention calls: block part (O1, L1) and sampled part (O2, L2), over the same queries.
  auto O1 = uninit<float>(plan.qrows * group * Dv), L1 = uninit<float>(plan.qrows * group);
  Buf<float> O2, L2;
  {
    AttentionArgs x = attention_args();
    x.B = 1, x.T = static_cast<int>(plan.qrows), x.S = static_cast<int>(plan.krows), x.Hq = group, x.Hk = 1, x.D = D, x.Dv = Dv;
    x.N = static_cast<int>(plan.seqs), x.cu_q = cu_q.data(), x.cu_k = cu_k.data();
    x.q = Qg.get(), x.k = Kg.get(), x.v = Vg.get(), x.dtype = DType::f32, x.o = O1.get(), x.lse = L1.get();
    if (!attention_forward(x)) return false;
    Kg.reset(), Vg.reset();
    if (plan.srows > 0) {
      O2 = uninit<float>(plan.qrows * group * Dv), L2 = uninit<float>(plan.qrows * group);
      x.S = static_cast<int>(plan.srows), x.cu_k = cu_s.data(), x.k_end = s_end.data();
      x.k = Ks.get(), x.v = Vs.get(), x.o = O2.get(), x.lse = L2.get();
      if (!attention_forward(x)) return false;
    }
  }
  Qg.reset(), Ks.reset(), Vs.reset();

  // Merges, deepest problems first (problems of one depth have disjoint query rows): each sorted query's block
  // and sampled parts, into its row of the accumulator (causal: merged with what is there; otherwise written).
  std::vector<int> order(np);
  for (int p = 0; p < np; p++) order[p] = p;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return P[x].depth > P[y].depth; });
  const int64_t Q = plan.qrows;
  for (size_t at = 0; at < order.size();) {
    size_t end = at;
    while (end < order.size() && P[order[end]].depth == P[order[at]].depth) end++;
    struct Task {
      int p, b, h;
      int32_t j0, j1;
    };
    std::vector<Task> tasks;
    for (size_t x = at; x < end; x++)
      for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
          for (int32_t j = 0; j < P[order[x]].nq; j += kRowChunk) tasks.push_back({order[x], b, h, j, std::min(P[order[x]].nq, j + kRowChunk)});
    parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
      const int p = tasks[i].p, b = tasks[i].b, h = tasks[i].h;
      const HyperProblem& pr = P[p];
      const int32_t* perm = qperm_of(p, b, h);
      const int64_t base = qofs(p, b, h / group), g = h % group;
      const float logw = pr.m > 0 ? static_cast<float>(std::log(static_cast<double>(pr.nk) / pr.m)) : 0.f;
      std::vector<float> row(static_cast<size_t>(Dv));
      for (int32_t j = tasks[i].j0; j < tasks[i].j1; j++) {
        const int64_t r = (base + j) * group + g;  // in O1/O2 rows
        float l = L1[g * Q + base + j];
        std::memcpy(row.data(), O1.get() + r * Dv, static_cast<size_t>(Dv) * sizeof(float));
        if (O2 && pr.m > 0) merge_into(row.data(), l, O2.get() + r * Dv, L2[g * Q + base + j] + logw, Dv);
        const int64_t t = pr.q0 + perm[j];
        float* dst = acc_o + ((static_cast<int64_t>(b) * T + t) * Hq + h) * Dv;
        float& dl = acc_l[(static_cast<int64_t>(b) * Hq + h) * T + t];
        if (a.causal) {
          merge_into(dst, dl, row.data(), l, Dv);
        } else {
          std::memcpy(dst, row.data(), static_cast<size_t>(Dv) * sizeof(float));
          dl = l;
        }
      }
    });
    at = end;
  }
  if (a.dtype != DType::f32) from_float(kern, acc_o, a.dtype, no_el, a.o);
  return true;
}

}  // namespace sk
