// Attention and gated attention on CUDA (DESIGN.md 6.3), the math of native/cpu/attention: o = softmax(scale
// q kᵀ + mask) v with an online softmax over the keys (never a T×S matrix), causal bottom-right aligned,
// GQA (query head h reads kv head h / (Hq/Hk)), varlen through cuSeqlens/cuSeqlensK, lse, and the gate
// (elementwise [B,T,Hq,Dv] or headwise [B,T,Hq], o ⊙ sigmoid(z)) fused into the epilogue.
//
// Two kernels:
//   - attn_prefill_wmma (float16/bfloat16, D = Dv in {64, 128}): a block of 4 (2 at 128) warps takes 64
//     (32) query rows of one head; K/V tiles of 32 keys go through shared memory; S = Q Kᵀ and O += P V run on tensor cores
//     (WMMA 16x16x16, float accumulate); the online softmax reads S from shared memory, one thread per row.
//     Causal tiles past a block's last visible key are never loaded.
//   - attn_rows (every dtype and head size up to 256, and decode): one warp per query row, q in shared
//     memory, Dv/32 of o per lane in registers, keys in tiles of 32 (a key per lane), the online softmax
//     per tile by shuffles. For decode (few rows, long cache) the keys are split across blocks (split-K), each block
//     writing its (m, l, o) partial, and attn_merge combines them by their log-sum-exps.
#include <type_traits>

#include "kernels.h"

namespace sk_cuda {
namespace {

constexpr int kWarps = 4;  // warps (query rows) per block in attn_rows

struct Row {  // where a query row's sequence lives
  int tok;    // global token index of the query, in [0, B*T)
  int t, Tn;  // position in its sequence, and the sequence's length
  int kbase, Sn;
};

__device__ __forceinline__ Row locate(const AttentionArgs& a, int tok) {
  Row r;
  r.tok = tok;
  if (a.cu_q) {
    int lo = 0, hi = a.N;  // the n with cu_q[n] <= tok < cu_q[n + 1]
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (a.cu_q[mid] <= tok) lo = mid;
      else hi = mid;
    }
    while (lo + 1 < a.N && a.cu_q[lo + 1] <= tok) lo++;  // skip zero-length sequences
    r.t = tok - a.cu_q[lo];
    r.Tn = a.cu_q[lo + 1] - a.cu_q[lo];
    r.kbase = a.cu_k[lo];
    r.Sn = a.cu_k[lo + 1] - a.cu_k[lo];
  } else {
    const int b = tok / a.T;
    r.t = tok % a.T;
    r.Tn = a.T;
    r.kbase = b * a.S;
    r.Sn = a.S;
  }
  return r;
}

// The visible keys [0, end) of a query row.
__device__ __forceinline__ int key_end(const AttentionArgs& a, const Row& r) {
  if (!a.causal) return r.Sn;
  const int e = r.t + r.Sn - r.Tn + 1;
  return e < 0 ? 0 : (e < r.Sn ? e : r.Sn);
}

template <class G>
__device__ __forceinline__ float gate_at(const void* g, int64_t i) {
  return 1.0f / (1.0f + expf(-to_f(static_cast<const G*>(g)[i])));
}
__device__ __forceinline__ float gate_value(const AttentionArgs& a, int64_t i) {
  switch (a.gate_dt) {
    case DT::f32: return gate_at<float>(a.gate, i);
    case DT::f16: return gate_at<__half>(a.gate, i);
    default: return gate_at<__nv_bfloat16>(a.gate, i);
  }
}

// The epilogue of one row: o = acc / l (0 with no visible key), times the gate; lse. Lane `lane` writes
// columns lane + 32 j.
template <class T, int VC>
__device__ __forceinline__ void write_row(const AttentionArgs& a, const Row& r, int h, float m, float l, const float* acc, int lane) {
  const float inf = __int_as_float(0x7f800000);
  const bool any = l > 0.0f;
  const float inv = any ? 1.0f / l : 0.0f;
  const int64_t oo = (static_cast<int64_t>(r.tok) * a.Hq + h) * a.Dv;
  const float hg = a.gate_kind == 2 ? gate_value(a, static_cast<int64_t>(r.tok) * a.Hq + h) : 1.0f;
#pragma unroll
  for (int j = 0; j < VC; j++) {
    const int c = lane + 32 * j;
    if (c >= a.Dv) break;
    float v = acc[j] * inv;
    if (a.gate_kind == 1) v *= gate_value(a, oo + c);
    else v *= hg;
    static_cast<T*>(a.o)[oo + c] = from_f<T>(v);
  }
  if (a.lse && lane == 0) {
    const int64_t lo = static_cast<int64_t>(r.tok / a.T) * a.Hq * a.T + static_cast<int64_t>(h) * a.T + r.tok % a.T;
    a.lse[lo] = any ? m + logf(l) : -inf;
  }
}

// One warp per (query row, head); blockIdx.y is the split of the keys (gridDim.y splits). With splits > 1
// the partial (m, l, acc) goes to work[(split * rows + row) * (Dv + 2)].
template <class T, int VC>
__global__ void __launch_bounds__(kWarps * 32) attn_rows(AttentionArgs a, float* work) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;  // tok * Hq + h
  const int64_t rows = static_cast<int64_t>(a.B) * a.T * a.Hq;
  if (row >= rows) return;  // a whole warp leaves together
  const int h = static_cast<int>(row % a.Hq);
  const int hk = h / (a.Hq / a.Hk);
  const Row r = locate(a, static_cast<int>(row / a.Hq));
  const int end = key_end(a, r);
  const int splits = gridDim.y, split = blockIdx.y;
  const int per = (end + splits - 1) / splits;
  const int s0 = split * per, s1 = s0 + per < end ? s0 + per : end;

  // q (scaled) in shared memory, one row per warp; then tiles of 32 keys, a key per lane: its score by a
  // dot product over D, the tile's max and sum by shuffles (10 per 32 keys), and each key's p broadcast
  // to the warp, which reads that key's v row coalesced.
  SK_SHARED(float, sq, [kWarps * 256]);
  float* qs = sq + (threadIdx.x / 32) * 256;
  const T* q = static_cast<const T*>(a.q) + row * a.D;
  for (int d = lane; d < a.D; d += 32) qs[d] = to_f(q[d]) * a.scale;
  __syncwarp();
  float acc[VC];
#pragma unroll
  for (int j = 0; j < VC; j++) acc[j] = 0.0f;
  const float inf = __int_as_float(0x7f800000);
  float m = -inf, l = 0.0f;
  const T* kp = static_cast<const T*>(a.k);
  const T* vp = static_cast<const T*>(a.v);
  for (int base = s0; base < s1; base += 32) {
    const int s = base + lane;
    float sc = -inf;
    if (s < s1) {
      const T* kr = kp + (static_cast<int64_t>(r.kbase + s) * a.Hk + hk) * a.D;
      float dot = 0.0f;
      for (int d = 0; d < a.D; d++) dot += qs[d] * to_f(kr[d]);
      sc = dot;
    }
    const float mn = fmaxf(m, warp_max(sc));  // finite: the tile has a key
    const float alpha = expf(m - mn);          // 0 at the first tile (m = -inf)
    const float p = s < s1 ? expf(sc - mn) : 0.0f;
    l = l * alpha + warp_sum(p);
#pragma unroll
    for (int j = 0; j < VC; j++) acc[j] *= alpha;
    const int cnt = s1 - base < 32 ? s1 - base : 32;
#pragma unroll 1  // unrolled, the float16 instance spills on sm_90
    for (int i = 0; i < cnt; i++) {
      const float pi = __shfl_sync(kFull, p, i);
      const T* vr = vp + (static_cast<int64_t>(r.kbase + base + i) * a.Hk + hk) * a.Dv;
#pragma unroll
      for (int j = 0; j < VC; j++) {
        const int c = lane + 32 * j;
        if (c < a.Dv) acc[j] += pi * to_f(vr[c]);
      }
    }
    m = mn;
  }
  if (splits == 1) {
    write_row<T, VC>(a, r, h, m, l, acc, lane);
    return;
  }
  float* w = work + (static_cast<int64_t>(split) * rows + row) * (a.Dv + 2);
#pragma unroll
  for (int j = 0; j < VC; j++) {
    const int c = lane + 32 * j;
    if (c < a.Dv) w[2 + c] = acc[j];
  }
  if (lane == 0) w[0] = m, w[1] = l;
}

// Merges the split partials of each row by their maxima: l = Σ l_i e^(m_i - M), acc = Σ acc_i e^(m_i - M).
template <class T, int VC>
__global__ void __launch_bounds__(kWarps * 32) attn_merge(AttentionArgs a, const float* work, int splits) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t rows = static_cast<int64_t>(a.B) * a.T * a.Hq;
  if (row >= rows) return;
  const int h = static_cast<int>(row % a.Hq);
  const Row r = locate(a, static_cast<int>(row / a.Hq));
  const float inf = __int_as_float(0x7f800000);
  float M = -inf;
  for (int s = 0; s < splits; s++) M = fmaxf(M, work[(static_cast<int64_t>(s) * rows + row) * (a.Dv + 2)]);
  float l = 0.0f, acc[VC];
#pragma unroll
  for (int j = 0; j < VC; j++) acc[j] = 0.0f;
  for (int s = 0; s < splits; s++) {
    const float* w = work + (static_cast<int64_t>(s) * rows + row) * (a.Dv + 2);
    if (w[1] == 0.0f) continue;  // a split with no visible key
    const float f = expf(w[0] - M);
    l += w[1] * f;
#pragma unroll
    for (int j = 0; j < VC; j++) {
      const int c = lane + 32 * j;
      if (c < a.Dv) acc[j] += w[2 + c] * f;
    }
  }
  write_row<T, VC>(a, r, h, M, l, acc, lane);
}

// ---- the tensor-core prefill (float16/bfloat16, D = Dv = HD) ----

// Query rows per block (16 per warp): 64 at HD = 64, 32 at HD = 128, so the tiles fit 48 KiB of static
// shared memory (at HD = 128: q 8 KiB, k 8, v 8, scores 4, p 2, o 16).
template <int HD>
__host__ __device__ constexpr int bm() { return HD == 128 ? 32 : 64; }
constexpr int kBN = 32;  // keys per tile

template <class T, int HD>
__global__ void __launch_bounds__(bm<HD>() * 2) attn_prefill_wmma(AttentionArgs a) {
  constexpr int kBM = bm<HD>(), kThreads = kBM * 2;
  using namespace nvcuda;
  // Sequence n (varlen) or batch b, query tile, head.
  const int h = blockIdx.y, hk = h / (a.Hq / a.Hk);
  const int n = blockIdx.z;
  int q0, Tn, k0, Sn;
  if (a.cu_q) {
    q0 = a.cu_q[n], Tn = a.cu_q[n + 1] - a.cu_q[n];
    k0 = a.cu_k[n], Sn = a.cu_k[n + 1] - a.cu_k[n];
  } else {
    q0 = n * a.T, Tn = a.T, k0 = n * a.S, Sn = a.S;
  }
  const int t0 = blockIdx.x * kBM;
  if (t0 >= Tn) return;  // the whole block leaves together
  const int rows = Tn - t0 < kBM ? Tn - t0 : kBM;
  const int tid = threadIdx.x, warp = tid / 32;

  SK_SHARED(T, sq, [kBM * HD]);
  SK_SHARED(T, sk, [kBN * HD]);
  SK_SHARED(T, sv, [kBN * HD]);
  SK_SHARED(float, ss, [kBM * kBN]);
  SK_SHARED(T, sp, [kBM * kBN]);
  SK_SHARED(float, so, [kBM * HD]);
  SK_SHARED(float, sm, [kBM]);
  SK_SHARED(float, sl, [kBM]);
  SK_SHARED(float, salpha, [kBM]);

  const T* qg = static_cast<const T*>(a.q);
  const T* kg = static_cast<const T*>(a.k);
  const T* vg = static_cast<const T*>(a.v);
  const T zero = from_f<T>(0.0f);
  for (int i = tid; i < kBM * HD; i += kThreads) {
    const int rr = i / HD, d = i % HD;
    sq[i] = rr < rows ? qg[(static_cast<int64_t>(q0 + t0 + rr) * a.Hq + h) * HD + d] : zero;
    so[i] = 0.0f;
  }
  const float inf = __int_as_float(0x7f800000);
  for (int i = tid; i < kBM; i += kThreads) sm[i] = -inf, sl[i] = 0.0f;
  // Keys this block can see: up to the last row's causal limit.
  int end = Sn;
  if (a.causal) {
    const int e = t0 + rows - 1 + Sn - Tn + 1;
    end = e < 0 ? 0 : (e < Sn ? e : Sn);
  }
  __syncthreads();
  for (int s0 = 0; s0 < end; s0 += kBN) {
    for (int i = tid; i < kBN * HD; i += kThreads) {
      const int j = i / HD, d = i % HD;
      const bool in = s0 + j < end;
      const int64_t kr = (static_cast<int64_t>(k0 + s0 + j) * a.Hk + hk) * HD + d;
      sk[i] = in ? kg[kr] : zero;
      sv[i] = in ? vg[kr] : zero;
    }
    __syncthreads();
    // S[16 rows of this warp][32 keys] = Q Kᵀ: K as a col-major B operand (element (d, j) at sk[j * HD + d]).
    for (int nt = 0; nt < kBN / 16; nt++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::fill_fragment(c, 0.0f);
      for (int kt = 0; kt < HD / 16; kt++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, sq + warp * 16 * HD + kt * 16, HD);
        wmma::load_matrix_sync(fb, sk + nt * 16 * HD + kt * 16, HD);
        wmma::mma_sync(c, fa, fb, c);
      }
      wmma::store_matrix_sync(ss + warp * 16 * kBN + nt * 16, c, kBN, wmma::mem_row_major);
    }
    __syncthreads();
    // Online softmax, one thread per row (threads 0..63); masked scores are -inf.
    if (tid < kBM) {
      const int rr = tid, t = t0 + rr;
      const int lim = a.causal ? t + Sn - Tn + 1 : Sn;
      float mx = sm[rr];
      for (int j = 0; j < kBN; j++) {
        const int s = s0 + j;
        const bool vis = rr < rows && s < end && s < lim;
        const float v = vis ? ss[rr * kBN + j] * a.scale : -inf;
        ss[rr * kBN + j] = v;
        mx = fmaxf(mx, v);
      }
      const float alpha = mx == -inf ? 1.0f : expf(sm[rr] - mx);
      float lsum = 0.0f;
      for (int j = 0; j < kBN; j++) {
        const float p = mx == -inf ? 0.0f : expf(ss[rr * kBN + j] - mx);
        const T pt = from_f<T>(p);
        sp[rr * kBN + j] = pt;
        lsum += to_f(pt);  // the rounded p the mma multiplies, so that o / l stays a weighted mean
      }
      sl[rr] = sl[rr] * alpha + lsum;
      sm[rr] = mx;
      salpha[rr] = alpha;
    }
    __syncthreads();
    for (int i = tid; i < kBM * HD; i += kThreads) so[i] *= salpha[i / HD];
    __syncthreads();
    // O[16 rows][HD] += P V.
    for (int nt = 0; nt < HD / 16; nt++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::load_matrix_sync(c, so + warp * 16 * HD + nt * 16, HD, wmma::mem_row_major);
      for (int kt = 0; kt < kBN / 16; kt++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, sp + warp * 16 * kBN + kt * 16, kBN);
        wmma::load_matrix_sync(fb, sv + kt * 16 * HD + nt * 16, HD);
        wmma::mma_sync(c, fa, fb, c);
      }
      wmma::store_matrix_sync(so + warp * 16 * HD + nt * 16, c, HD, wmma::mem_row_major);
    }
    __syncthreads();
  }
  // Epilogue: o = acc / l, gate, lse.
  T* og = static_cast<T*>(a.o);
  for (int i = tid; i < rows * HD; i += kThreads) {
    const int rr = i / HD, d = i % HD;
    const int tok = q0 + t0 + rr;
    const int64_t oo = (static_cast<int64_t>(tok) * a.Hq + h) * HD + d;
    const float l = sl[rr];
    float v = l > 0.0f ? so[i] / l : 0.0f;
    if (a.gate_kind == 1) v *= gate_value(a, oo);
    else if (a.gate_kind == 2) v *= gate_value(a, static_cast<int64_t>(tok) * a.Hq + h);
    og[oo] = from_f<T>(v);
  }
  if (a.lse)
    for (int rr = tid; rr < rows; rr += kThreads) {
      const int tok = q0 + t0 + rr;
      const int64_t lo = static_cast<int64_t>(tok / a.T) * a.Hq * a.T + static_cast<int64_t>(h) * a.T + tok % a.T;
      a.lse[lo] = sl[rr] > 0.0f ? sm[rr] + logf(sl[rr]) : -inf;
    }
}

int chunks(int d) { return d <= 32 ? 1 : d <= 64 ? 2 : d <= 128 ? 4 : 8; }

// Key splits for a decode-shaped call: enough blocks to fill the GPU, at least 256 keys per split.
int split_count(const AttentionArgs& a) {
  const int64_t rows = static_cast<int64_t>(a.B) * a.T * a.Hq;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  if (blocks >= 256 || a.max_s < 512) return 1;
  int64_t s = 512 / blocks;
  const int64_t most = a.max_s / 256;
  if (s > most) s = most;
  if (s > 64) s = 64;
  return s < 2 ? 1 : static_cast<int>(s);
}

bool use_wmma(const AttentionArgs& a) {
  return a.dt != DT::f32 && a.D == a.Dv && (a.D == 64 || a.D == 128) && a.max_t >= 16;
}

template <class T, int VC>
cudaError_t run_rows(const AttentionArgs& a, float* work, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(a.B) * a.T * a.Hq;
  const unsigned blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  const int splits = split_count(a);
  SK_LAUNCH((attn_rows<T, VC>), dim3(blocks, splits), dim3(kWarps * 32), s, a, work);
  if (splits > 1) SK_LAUNCH((attn_merge<T, VC>), dim3(blocks), dim3(kWarps * 32), s, a, static_cast<const float*>(work), splits);
  return cudaGetLastError();
}


template <class T>
cudaError_t run(const AttentionArgs& a, float* work, cudaStream_t s) {
  if constexpr (!std::is_same<T, float>::value) {
    if (use_wmma(a)) {
      if (a.D == 64) SK_LAUNCH((attn_prefill_wmma<T, 64>), dim3((a.max_t + 63) / 64, a.Hq, a.N), dim3(128), s, a);
      else SK_LAUNCH((attn_prefill_wmma<T, 128>), dim3((a.max_t + 31) / 32, a.Hq, a.N), dim3(64), s, a);
      return cudaGetLastError();
    }
  }
  switch (chunks(a.Dv)) {
    case 1: return run_rows<T, 1>(a, work, s);
    case 2: return run_rows<T, 2>(a, work, s);
    case 4: return run_rows<T, 4>(a, work, s);
    default: return run_rows<T, 8>(a, work, s);
  }
}

}  // namespace

int64_t attention_workspace(const AttentionArgs& a) {
  if (use_wmma(a)) return 0;
  const int s = split_count(a);
  return s > 1 ? static_cast<int64_t>(s) * a.B * a.T * a.Hq * (a.Dv + 2) : 0;
}

cudaError_t attention(const AttentionArgs& a, float* work, int64_t, cudaStream_t s) {
  if (static_cast<int64_t>(a.B) * a.T * a.Hq == 0) return cudaSuccess;
  if (a.D > 256 || a.Dv > 256) return cudaErrorInvalidValue;
  switch (a.dt) {
    case DT::f32: return run<float>(a, work, s);
    case DT::f16: return run<__half>(a, work, s);
    default: return run<__nv_bfloat16>(a, work, s);
  }
}

}  // namespace sk_cuda
