// Softmax over the last axis on CUDA (DESIGN.md 6.2), the same math as native/cpu/softmax: two-pass
// (Dukhan & Ablavatski 2020) by default, three-pass on request.
//
// Two-pass, pass 1 reads a row once and sums e^x as a (mantissa m, exponent e) pair: each term is
// r 2^n with n = round(x log2 e) and r = e^(x - n ln 2) in [0.7, 1.42], added after scaling by 2^(n - e)
// (the running sum is rescaled when a larger exponent arrives); pairs merge the same way across threads,
// warps and, for long rows, blocks. Pass 2 re-reads x and writes r 2^(n - E) / M. x is clamped at -65536
// below (the term is then far under any row maximum); a row whose largest |x| passes 65536 is redone on
// x - max, so ±1e30 stays exact. -Inf adds 0; NaN or +Inf makes the row NaN, and so does a row of all -Inf.
//
// Grid: short rows (cols <= 1024) take one warp each, eight to a block of 256; longer rows one block each;
// and when there are too few rows to fill the GPU, long rows are split across blocks whose (m, e, max)
// partials a second kernel merges before pass 2. Memory-bound: 2 reads + 1 write of x (3 + 1 three-pass).
#include "kernels.h"

namespace sk_cuda {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693147182464599609375f;  // float(ln 2)
constexpr float kLn2Lo = -1.904654323148236017e-9f;  // ln 2 - kLn2Hi
constexpr float kClamp = -65536.0f;
constexpr float kBig = 65536.0f;
constexpr int kBlock = 256;

struct Acc {
  float m;   // mantissa of the sum
  float e;   // its exponent (an integer)
  float mx;  // the largest x seen
  int bad;   // NaN or +Inf seen
};

__device__ __forceinline__ Acc acc_empty() { return Acc{0.0f, -1e9f, -__int_as_float(0x7f800000), 0}; }

// The term r 2^n of e^(x - shift).
__device__ __forceinline__ float term_exp(float xs, float& n) {
  xs = fmaxf(xs, kClamp);
  n = rintf(xs * kLog2e);
  return expf(fmaf(-n, kLn2Lo, fmaf(-n, kLn2Hi, xs)));
}

__device__ __forceinline__ void acc_add(Acc& a, float x, float shift) {
  if (x != x || x == __int_as_float(0x7f800000)) {
    a.bad = 1;
    return;
  }
  if (x == -__int_as_float(0x7f800000)) return;
  a.mx = fmaxf(a.mx, x);
  float n;
  const float r = term_exp(x - shift, n);
  if (n > a.e) {
    a.m = ldexpf(a.m, static_cast<int>(a.e - n)) + r;
    a.e = n;
  } else {
    a.m += ldexpf(r, static_cast<int>(n - a.e));
  }
}

__device__ __forceinline__ Acc acc_merge(Acc a, Acc b) {
  const float e = fmaxf(a.e, b.e);
  Acc r;
  r.m = ldexpf(a.m, static_cast<int>(a.e - e)) + ldexpf(b.m, static_cast<int>(b.e - e));
  r.e = e;
  r.mx = fmaxf(a.mx, b.mx);
  r.bad = a.bad | b.bad;
  return r;
}

__device__ __forceinline__ Acc acc_warp(Acc a) {
  for (int o = 16; o > 0; o >>= 1) {
    Acc b;
    b.m = __shfl_xor_sync(kFull, a.m, o);
    b.e = __shfl_xor_sync(kFull, a.e, o);
    b.mx = __shfl_xor_sync(kFull, a.mx, o);
    b.bad = __shfl_xor_sync(kFull, a.bad, o);
    a = acc_merge(a, b);
  }
  return a;
}

// The merged Acc of the whole block (every thread gets it). G: threads per row (32 or the block).
template <int G>
__device__ __forceinline__ Acc acc_reduce(Acc a) {
  a = acc_warp(a);
  if (G == 32) return a;
  SK_SHARED(Acc, part, [kBlock / 32]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = a;
  __syncthreads();
  Acc t = part[0];
  for (int w = 1; w < kBlock / 32; w++) t = acc_merge(t, part[w]);
  __syncthreads();  // part is reused by the next reduction
  return t;
}

template <int G>
__device__ __forceinline__ float max_reduce(float v) {
  v = warp_max(v);
  if (G == 32) return v;
  SK_SHARED(float, part, [kBlock / 32]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = part[0];
  for (int w = 1; w < kBlock / 32; w++) t = fmaxf(t, part[w]);
  __syncthreads();
  return t;
}

template <int G>
__device__ __forceinline__ float sum_reduce(float v) {
  v = warp_sum(v);
  if (G == 32) return v;
  SK_SHARED(float, part, [kBlock / 32]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < kBlock / 32; w++) t += part[w];
  __syncthreads();
  return t;
}

// Pass 1 over [begin, end) of a row by thread t of G: the row's (m, e, max), redone on x - max when |max|
// is past the clamp range.
template <class T, int G>
__device__ Acc row_stats(const T* x, int64_t begin, int64_t end, int t, float& shift) {
  Acc a = acc_empty();
  for (int64_t i = begin + t; i < end; i += G) acc_add(a, to_f(x[i]), 0.0f);
  a = acc_reduce<G>(a);
  shift = 0.0f;
  if (!a.bad && fabsf(a.mx) > kBig) {
    shift = a.mx;
    Acc b = acc_empty();
    for (int64_t i = begin + t; i < end; i += G) acc_add(b, to_f(x[i]), shift);
    a = acc_reduce<G>(b);
  }
  return a;
}

template <class T, int G>
__device__ void row_write(const T* x, T* y, int64_t begin, int64_t end, int t, Acc a, float shift) {
  const float nan = __int_as_float(0x7fc00000);
  const bool ok = !a.bad && a.m > 0.0f;
  const float inv = 1.0f / a.m;
  for (int64_t i = begin + t; i < end; i += G) {
    const float xi = to_f(x[i]);
    float out;
    if (!ok) {
      out = nan;
    } else if (xi == -__int_as_float(0x7f800000)) {
      out = 0.0f;
    } else {
      float n;
      const float r = term_exp(xi - shift, n);
      out = ldexpf(r * inv, static_cast<int>(n - a.e));
    }
    y[i] = from_f<T>(out);
  }
}

template <class T, int G>
__global__ void __launch_bounds__(kBlock) softmax_two_pass(const T* x, T* y, int64_t rows, int64_t cols) {
  constexpr int kRows = kBlock / G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / G;
  const int t = threadIdx.x % G;
  // Rows past the end still take part in the reductions (G = 256 has one row per block, so never there).
  const int64_t r = row < rows ? row : rows - 1;
  float shift;
  const Acc a = row_stats<T, G>(x + r * cols, 0, cols, t, shift);
  if (row < rows) row_write<T, G>(x + r * cols, y + r * cols, 0, cols, t, a, shift);
}

template <class T, int G>
__global__ void __launch_bounds__(kBlock) softmax_three_pass(const T* x, T* y, int64_t rows, int64_t cols) {
  constexpr int kRows = kBlock / G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / G;
  const int t = threadIdx.x % G;
  const int64_t r = row < rows ? row : rows - 1;
  const T* xr = x + r * cols;
  const float inf = __int_as_float(0x7f800000);
  float mx = -inf;
  int bad = 0;
  for (int64_t i = t; i < cols; i += G) {
    const float v = to_f(xr[i]);
    bad |= v != v || v == inf;
    mx = fmaxf(mx, v);
  }
  mx = max_reduce<G>(mx);
  bad = sum_reduce<G>(static_cast<float>(bad)) > 0.0f;
  float s = 0.0f;
  for (int64_t i = t; i < cols; i += G) s += expf(to_f(xr[i]) - mx);
  s = sum_reduce<G>(s);
  if (row >= rows) return;
  const float nan = __int_as_float(0x7fc00000);
  const bool ok = !bad && mx > -inf;
  const float inv = 1.0f / s;
  for (int64_t i = t; i < cols; i += G) y[r * cols + i] = from_f<T>(ok ? expf(to_f(xr[i]) - mx) * inv : nan);
}

// Long rows split in `splits` slices: pass 1 per slice into work[(row * splits + slice) * 4 ...].
template <class T>
__global__ void __launch_bounds__(kBlock) softmax_split_stats(const T* __restrict__ x, float* work, int64_t cols, int splits) {
  const int64_t row = blockIdx.y;
  const int slice = blockIdx.x;
  const int64_t len = (cols + splits - 1) / splits;
  const int64_t b = slice * len, e = b + len < cols ? b + len : cols;
  Acc a = acc_empty();
  for (int64_t i = b + threadIdx.x; i < e; i += kBlock) acc_add(a, to_f(x[row * cols + i]), 0.0f);
  a = acc_reduce<kBlock>(a);
  if (threadIdx.x == 0) {
    float* w = work + (row * splits + slice) * 4;
    w[0] = a.m, w[1] = a.e, w[2] = a.mx, w[3] = static_cast<float>(a.bad);
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock) softmax_split_write(const T* __restrict__ x, T* y, const float* work, int64_t cols, int splits) {
  const int64_t row = blockIdx.y;
  const int slice = blockIdx.x;
  Acc a = acc_empty();
  for (int s = 0; s < splits; s++) {
    const float* w = work + (row * splits + s) * 4;
    a = acc_merge(a, Acc{w[0], w[1], w[2], w[3] != 0.0f});
  }
  float shift = 0.0f;
  if (!a.bad && fabsf(a.mx) > kBig) {  // rare: the whole row's sum again, on x - max, by this block
    shift = a.mx;
    Acc b = acc_empty();
    for (int64_t i = threadIdx.x; i < cols; i += kBlock) acc_add(b, to_f(x[row * cols + i]), shift);
    a = acc_reduce<kBlock>(b);
  }
  const int64_t len = (cols + splits - 1) / splits;
  const int64_t b = slice * len, e = b + len < cols ? b + len : cols;
  row_write<T, kBlock>(x + row * cols, y + row * cols, b, e, threadIdx.x, a, shift);
}

int split_count(int64_t rows, int64_t cols) {
  if (rows >= 512 || cols < (int64_t{1} << 16) || rows > 65535) return 1;
  int64_t s = (1024 + rows - 1) / rows;  // ~1024 blocks in all
  const int64_t max_s = cols / 8192;     // at least 8192 elements a slice
  if (s > max_s) s = max_s;
  return s < 2 ? 1 : static_cast<int>(s);
}

template <class T>
cudaError_t run(const T* x, T* y, int64_t rows, int64_t cols, bool three_pass, float* work, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  // In place (y is x) a row is never split: the rare redo on x - max reads the whole row.
  const int splits = three_pass || static_cast<const void*>(x) == static_cast<const void*>(y) ? 1 : split_count(rows, cols);
  if (splits > 1) {
    const dim3 grid(splits, static_cast<unsigned>(rows));
    SK_LAUNCH(softmax_split_stats<T>, grid, dim3(kBlock), s, x, work, cols, splits);
    SK_LAUNCH(softmax_split_write<T>, grid, dim3(kBlock), s, x, y, static_cast<const float*>(work), cols, splits);
  } else if (cols <= 1024) {
    const dim3 grid(static_cast<unsigned>((rows + 7) / 8));
    if (three_pass) SK_LAUNCH((softmax_three_pass<T, 32>), grid, dim3(kBlock), s, x, y, rows, cols);
    else SK_LAUNCH((softmax_two_pass<T, 32>), grid, dim3(kBlock), s, x, y, rows, cols);
  } else {
    const dim3 grid(static_cast<unsigned>(rows));
    if (three_pass) SK_LAUNCH((softmax_three_pass<T, kBlock>), grid, dim3(kBlock), s, x, y, rows, cols);
    else SK_LAUNCH((softmax_two_pass<T, kBlock>), grid, dim3(kBlock), s, x, y, rows, cols);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t softmax_workspace(int64_t rows, int64_t cols) {
  const int s = split_count(rows, cols);
  return s > 1 ? rows * s * 4 : 0;
}

cudaError_t softmax(const void* x, void* y, DT dt, int64_t rows, int64_t cols, bool three_pass, float* work, cudaStream_t s) {
  switch (dt) {
    case DT::f32: return run(static_cast<const float*>(x), static_cast<float*>(y), rows, cols, three_pass, work, s);
    case DT::f16: return run(static_cast<const __half*>(x), static_cast<__half*>(y), rows, cols, three_pass, work, s);
    case DT::bf16:
      return run(static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), rows, cols, three_pass, work, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace sk_cuda
