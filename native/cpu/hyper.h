// HyperAttention on the CPU (Han et al. 2023; DESIGN.md 6.4), after the authors' hyper_attn.py and
// angular_lsh.py, with their three bugs fixed (README "HyperAttention").
//
// q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] (float32/float16/bfloat16, read in place or converted once to
// float32); o [B,T,Hq,Dv] in the inputs' dtype; lse [B,Hq,T] float32. Query head h reads kv head h / (Hq/Hk).
//
// Non-causal (a "problem": queries [q0, q0 + nq) against keys [k0, k0 + nk) of each sequence), nk >= minSeqLen:
//   1. bucket of a row x: bit r = (x . R[:, r] > 0), r < lshBits, R [D, lshBits] Gaussian from the seed (one R
//      for every batch, head and problem); sort key = the Gray-code rank of the bucket (neighbouring keys are
//      buckets that differ in one bit); each query head's queries and each kv head's keys stable-sorted by it;
//   2. block part: exact attention of sorted query block b against sorted key block b, nb = ceil(nk / blockSize)
//      key blocks of blockSize (the last one shorter: no padding keys), query blocks of
//      qbs = ceil(nq * blockSize / nk) queries (= blockSize when nq = nk), with its lse;
//   3. sampled part: sampleSize sorted key positions per (batch, kv head, problem), uniform with replacement;
//      query block b attends to the samples outside key block b, lse + log(nk / sampleSize);
//   4. o = (e^lse1 o1 + e^lse2 o2) / (e^lse1 + e^lse2), lse = log(e^lse1 + e^lse2); rows back in their order.
// Causal (T = S): the authors' recursion on [a, a + n): n <= minSeqLen: exact causal; else n1 = ceil(n / 2),
// both halves recursively, and the lower-left block (queries [a + n1, a + n), keys [a, a + n1)) as a
// non-causal problem (exact when n1 < minSeqLen), merged by lse into the second half. All leaves run in one
// causal attention call per batch row, all problems of all depths in two attention calls (blocks, samples);
// the problems are then merged into the leaves' output deepest first, as the recursion would.
//
// Both attention calls run on the flash attention kernel (attention.h) over gathered float32 copies: every
// (problem, batch row, kv head, query block) is one packed "sequence" (cu_q / cu_k) whose query heads are the
// kv head's group; the sampled keys of each query block leave out those of its own key block, so
// the mask costs nothing in the kernel: the samples, sorted by position and laid out twice in a row, give each
// block its samples outside the block as one range (attention.h k_end).
//
// Deterministic: R and the samples come from the counter-based generator below, the hashes are sums of exact
// products in double in a fixed order, the sorts are stable, and the attention calls never split a unit's
// keys (no_split): the same seed gives the same bits on any thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "dtype.h"
#include "simd.h"

namespace sk {

struct HyperArgs {
  int B = 0, T = 0, S = 0, Hq = 0, Hk = 0, D = 0, Dv = 0;
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  DType dtype = DType::f32;  // q, k, v and o share it
  void* o = nullptr;         // [B, T, Hq, Dv]
  float* lse = nullptr;      // [B, Hq, T] or null
  bool causal = false;       // requires T == S
  float scale = 1.f;
  int lsh_bits = 7, block_size = 256, sample_size = 256, min_seq_len = 4096;
  uint64_t seed = 0;
  const int32_t* cancel = nullptr;
};

// ---- the generator (README "HyperAttention": written down for the CUDA backend and the reference)
// splitmix64's output function; W(s, i) is word i of the stream with state s: mix64(s + (i + 1) * gamma).
uint64_t hyper_mix64(uint64_t z);
uint64_t hyper_word(uint64_t s, uint64_t i);
// R [D, bits] row-major (entry d * bits + r), float32: Marsaglia's polar method on the words of W(seed, 0).
void hyper_projections(uint64_t seed, int D, int bits, float* R);
// The sample stream of (batch b, kv head hk, problem whose first query is q0) and its draw j in [0, n).
uint64_t hyper_sample_stream(uint64_t seed, int64_t b, int64_t hk, int64_t q0);
int32_t hyper_sample(uint64_t stream, int64_t j, int32_t n);
// Gray-code rank of a bucket: the position of `bin` in the reflected Gray sequence (inverse of i ^ (i >> 1)).
uint32_t hyper_gray_rank(uint32_t bin);

// ---- the plan of one call (also computed by the binding to refuse sizes before anything is written)
struct HyperProblem {
  int32_t q0, nq, k0, nk;
  int32_t depth;  // recursion depth (0: the whole call); problems merge deepest first
  bool exact;     // nk < minSeqLen: one block, no samples, no hashing (plain exact attention)
  int32_t nb;     // key blocks
  int32_t bs;     // keys per block (exact: nk)
  int32_t qbs;    // queries per block
  int32_t m;      // samples (0 when exact or nb == 1)
};

struct HyperPlan {
  // direct: the whole call is exact attention on the inputs (non-causal S < minSeqLen, causal T <= minSeqLen).
  bool direct = true;
  std::vector<int32_t> leaves;  // causal: offsets of the exact causal leaves, 0 first, T last
  std::vector<HyperProblem> problems;
  // Rows of the gathered buffers (all batch rows and kv heads): queries (times group heads), block keys,
  // sampled keys (2 * sampleSize per problem, batch row and kv head); and the packed sequences.
  int64_t qrows = 0, krows = 0, srows = 0, seqs = 0;
};

// The plan of a call (throws nothing; sizes are checked by the caller).
HyperPlan hyper_plan(const HyperArgs& a);

// Per-level pieces (hyper_<level>.cc, written once in hyper_impl.h).
struct HyperKernels {
  // Columns R is padded to (as doubles) for hash_rows: lshBits rounded up to the level's vector width.
  int (*hash_width)(int bits);
  // rank[row] for rows [r0, r1) of x (D floats each); Rp: R as doubles, D rows of hash_width(bits).
  void (*hash_rows)(const float* x, int64_t r0, int64_t r1, int D, int bits, const double* Rp, uint16_t* rank);
  // Elements [i0, i1) converted from/to float16 or bfloat16.
  void (*to_f32)(const void* src, DType dt, int64_t i0, int64_t i1, float* dst);
  void (*from_f32)(const float* src, DType dt, int64_t i0, int64_t i1, void* dst);
};
const HyperKernels& hyper_kernels(SimdLevel l);
namespace avx512 { extern const HyperKernels kHyperKernels; }
namespace avx2 { extern const HyperKernels kHyperKernels; }
namespace portable { extern const HyperKernels kHyperKernels; }

// Runs the whole call on the pool. Returns false when cancelled (outputs then partly written).
bool hyper_forward(const HyperArgs& a);

}  // namespace sk
