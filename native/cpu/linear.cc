// Driver of linear (see linear.h): converts x and the bias to float32 where they are not, picks the GEMV or
// GEMM path, splits it into tasks over the pool, and narrows y to its dtype at the end.
#include "linear.h"

#include <algorithm>
#include <memory>
#include <new>
#include <vector>

#include "threadpool.h"

namespace sk {

const LinearKernels& linear_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kLinearKernels;
    case SimdLevel::avx2: return avx2::kLinearKernels;
    default: return portable::kLinearKernels;
  }
}

namespace {

// GEMV: output features per task, a multiple of every level's block of rows (1..4), so only a call's last
// task has a remainder; at K = 4096 a task streams 768 KiB of float32 weights, contiguous in memory.
constexpr int kGemvFeatures = 48;
constexpr int64_t kSerialFlops = 1 << 17;  // smaller calls run on the calling thread (waking the pool costs more)
constexpr int kConvRows = 64;              // rows per conversion task

bool cancelled(const int32_t* c) { return c && __atomic_load_n(c, __ATOMIC_RELAXED) != 0; }

template <class F>
void run_tasks(int64_t n, bool serial, const F& f) {
  if (serial) {
    for (int64_t i = 0; i < n; i++) f(i, 0);
  } else {
    parallel_for(n, f);
  }
}

std::unique_ptr<float[]> uninit(int64_t n) { return std::unique_ptr<float[]>(new float[static_cast<size_t>(n > 0 ? n : 1)]); }

// The GEMV's x copy, 64-byte aligned: its vector loads then never straddle two cache lines (a split load
// takes two of the load ports' slots; from new's 16-byte alignment the M = 8 GEMV ran at 0.6x).
struct FreeAligned {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
std::unique_ptr<float[], FreeAligned> uninit_aligned(int64_t n) {
  return std::unique_ptr<float[], FreeAligned>(new (std::align_val_t(64)) float[static_cast<size_t>(n > 0 ? n : 1)]);
}

}  // namespace

bool linear_forward(const LinearArgs& a) {
  const LinearKernels& k = linear_kernels(simd_level());
  const int64_t M = a.M;
  const int K = a.K, N = a.N;
  if (M == 0 || N == 0) return true;
  const bool serial = M * static_cast<int64_t>(N) * std::max(K, 1) <= kSerialFlops;
  bool stop = false;

  // float32 x and bias.
  const bool gemv = M <= kLinearGemvRows || a.row_wise;
  std::unique_ptr<float[]> xbuf, bbuf;
  std::unique_ptr<float[], FreeAligned> xgemv;
  const float* x = static_cast<const float*>(a.x);
  // The GEMV's x: a float32 copy (gemv_x) with rows one cache line more than a multiple of 32 floats apart, so that
  // the M rows of a chunk (and the weight rows, K apart) do not all fall in the same L1 sets.
  const int64_t ldx = gemv ? (K + 31) / 32 * 32 + 16 : K;
  if (gemv && K > 0) {
    xgemv = uninit_aligned(M * ldx);
    run_tasks((M + kConvRows - 1) / kConvRows, serial, [&](int64_t t, int) {
      const int64_t r1 = std::min<int64_t>(M, (t + 1) * kConvRows);
      for (int64_t r = t * kConvRows; r < r1; r++) k.gemv_x(a.x, a.xdt, r * K, K, a.wdt, xgemv.get() + r * ldx);
    });
    x = xgemv.get();
  } else if (a.xdt != DType::f32 && K > 0) {
    xbuf = uninit(M * K);
    run_tasks((M + kConvRows - 1) / kConvRows, serial, [&](int64_t t, int) {
      const int64_t r0 = t * kConvRows, r1 = std::min<int64_t>(M, r0 + kConvRows);
      k.to_f32(a.x, a.xdt, r0 * K, static_cast<int>((r1 - r0) * K), xbuf.get() + r0 * K);
    });
    x = xbuf.get();
  }
  const float* bias = static_cast<const float*>(a.bias);
  if (a.bias && a.bdt != DType::f32) {
    bbuf = uninit(N);
    k.to_f32(a.bias, a.bdt, 0, N, bbuf.get());
    bias = bbuf.get();
  }
  // float32 y: the output itself, or a buffer narrowed at the end.
  std::unique_ptr<float[]> ybuf;
  float* y = static_cast<float*>(a.y);
  if (a.ydt != DType::f32) {
    ybuf = uninit(M * N);
    y = ybuf.get();
  }

  if (gemv) {
    // A row's sums are the same whatever the block's row count (each row keeps its own accumulators), so
    // blocks of rows give the bits of a one-row call.
    // Fewer features per task where there would be under 4 tasks per thread (small N): still a multiple of 12.
    const int threads = serial ? 1 : num_threads();
    int feats = kGemvFeatures;
    while (feats > 12 && (N + feats - 1) / feats < 4 * threads) feats -= 12;
    const int64_t fblocks = (N + feats - 1) / feats, rblocks = (M + kLinearGemvRows - 1) / kLinearGemvRows;
    run_tasks(fblocks * rblocks, serial, [&](int64_t t, int) {
      if (cancelled(a.cancel)) {
        stop = true;
        return;
      }
      const int64_t r0 = (t / fblocks) * kLinearGemvRows;
      const int rows = static_cast<int>(std::min<int64_t>(kLinearGemvRows, M - r0));
      const int j0 = static_cast<int>((t % fblocks) * feats), j1 = std::min(N, j0 + feats);
      k.gemv(x + r0 * ldx, ldx, rows, K, a.w, a.wdt, j0, j1, bias, y + r0 * N, N);
    });
  } else {
    // x packed once (the conversion to float32 above where it was not).
    const int64_t tiles = (M + k.mr - 1) / k.mr;
    std::unique_ptr<float[]> xp = uninit(tiles * k.mr * std::max(K, 1));
    constexpr int64_t kPackTiles = 16;
    run_tasks((tiles + kPackTiles - 1) / kPackTiles, serial, [&](int64_t t, int) {
      k.pack_x(x, M, K, t * kPackTiles, std::min(tiles, (t + 1) * kPackTiles), xp.get());
    });
    // Feature blocks narrower where there would be under 4 tasks per thread (still whole panels).
    const int threads = serial ? 1 : num_threads();
    const int64_t rtiles = kLinearMC / k.mr, rblocks = (tiles + rtiles - 1) / rtiles;
    int cols = kLinearNC;
    while (cols > k.nr && rblocks * ((N + cols - 1) / cols) < 4 * threads) cols -= k.nr;
    const int64_t cblocks = (N + cols - 1) / cols;
    // Per thread: the weight panels, then the task's y block (kLinearMC x kLinearNC, see gemm_tiles).
    const int64_t pack_floats = static_cast<int64_t>(kLinearKC + kLinearMC) * kLinearNC;
    std::unique_ptr<float[]> packs = uninit(pack_floats * threads);
    run_tasks(rblocks * cblocks, serial, [&](int64_t t, int tid) {
      if (cancelled(a.cancel)) {
        stop = true;
        return;
      }
      const int64_t rb = t / cblocks, cb = t % cblocks;
      const int64_t t0 = rb * rtiles, t1 = std::min(tiles, t0 + rtiles);
      const int j0 = static_cast<int>(cb * cols), j1 = std::min(N, j0 + cols);
      k.gemm(xp.get(), M, K, a.w, a.wdt, j0, j1, t0, t1, bias, y, N, packs.get() + pack_floats * tid);
    });
  }
  if (stop) return false;

  if (a.ydt != DType::f32) {
    run_tasks((M + kConvRows - 1) / kConvRows, serial, [&](int64_t t, int) {
      const int64_t r0 = t * kConvRows, r1 = std::min<int64_t>(M, r0 + kConvRows);
      k.from_f32(y + r0 * N, a.y, a.ydt, r0 * N, static_cast<int>((r1 - r0) * N));
    });
  }
  return true;
}

}  // namespace sk
