// Driver of the causal convolution (see conv.h). Sequences of at most kConvTileT tokens (every decode update)
// take one pass of the update kernel, which reads and writes each one's state block itself. Longer ones take
// the tiles: weights and bias to float32 once, every output tile (reading the initial states), then the final
// states written back into their slots (only after every tile has read them: a tile of sequence n reads slot
// n's old state).
#include "conv.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "threadpool.h"

namespace sk {

const ConvKernels& conv_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kConvKernels;
    case SimdLevel::avx2: return avx2::kConvKernels;
    default: return portable::kConvKernels;
  }
}

namespace {

inline float load_scalar(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f16: return half_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  }
}

inline void store_scalar(void* p, DType dt, int64_t i, float v) {
  switch (dt) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_half(v); break;
    default: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
  }
}

}  // namespace

bool conv_forward(const ConvArgs& a) {
  const ConvKernels& kern = conv_kernels(simd_level());
  const int W = a.W, P = W - 1;
  const int64_t D = a.D;
  if (D == 0 || a.N == 0) return true;
  auto slot_of = [&](int n) -> int64_t { return a.slot ? a.slot[n] : n; };
  auto init_of = [&](int n) -> bool { return a.pool && P > 0 && slot_of(n) >= 0 && (!a.has_init || a.has_init[n] != 0); };
  auto len_of = [&](int n) -> int32_t { return a.cu[n + 1] - a.cu[n]; };
  const int64_t es = dtype_bytes(a.sdt);
  auto block_of = [&](int n) { return static_cast<char*>(a.state) + slot_of(n) * D * P * es; };
  std::atomic<bool> stop{false};
  auto cancelled = [&] {
    if (stop.load(std::memory_order_relaxed)) return true;
    if (a.cancel && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0) {
      stop.store(true, std::memory_order_relaxed);
      return true;
    }
    return false;
  };

  // Short sequences (every decode update): one pass over channel chunks, each reading its weights once for
  // all of them, the windows in registers. Measured (N=8, D=2^20, W=4, silu, 16 scattered slots, 2 threads,
  // loaded Zen 5): 13% of copy bandwidth with the tile's scalar per-channel decode and the weights
  // transposed on one thread each call; see the README for the figure after.
  std::vector<UpdateSeq> shorts;
  bool any_long = false;
  for (int n = 0; n < a.N; n++) {
    if (len_of(n) > kConvTileT) {
      any_long = true;
      continue;
    }
    const bool pad = a.pool && slot_of(n) < 0;
    const bool keep = a.pool && P > 0 && !pad;
    shorts.push_back({a.cu[n], len_of(n), pad, init_of(n) ? block_of(n) : nullptr, keep ? block_of(n) : nullptr});
  }
  if (!shorts.empty()) {
    // Long runs of each sequence's x, y and state rows per task (the prefetchers ramp up on each run), but at
    // least four tasks per thread. Measured as above: chunks of 512 channels 26 ms, 4096 see the README.
    const int64_t quarter = (D + 4 * num_threads() - 1) / (4 * num_threads());
    const int64_t chunk = std::clamp<int64_t>((quarter + 15) / 16 * 16, 256, kConvUpdateChunk);
    const int64_t chunks = (D + chunk - 1) / chunk;
    std::vector<std::vector<float>> wt(num_threads());
    parallel_for(chunks, [&](int64_t i, int tid) {
      if (cancelled()) return;
      std::vector<float> own;
      std::vector<float>& w = tid < static_cast<int>(wt.size()) ? wt[tid] : own;
      w.resize(static_cast<size_t>(W + 1) * kConvUpdateChunk);
      const int64_t d0 = i * chunk;
      kern.update(a, shorts.data(), static_cast<int>(shorts.size()), d0, static_cast<int>(std::min<int64_t>(chunk, D - d0)), w.data());
    });
    if (stop.load()) return false;
  }
  if (!any_long) return true;

  // weight [D, W] -> wT [W][D] float32 (a tile loads W vectors of consecutive channels); bias [D] float32.
  std::vector<float> wT(static_cast<size_t>(W) * D), wrow(static_cast<size_t>(W) * D), bias(a.bias ? D : 0);
  kern.to_f32(a.w, a.wdt, 0, static_cast<int>(W * D), wrow.data());
  for (int64_t d = 0; d < D; d++)
    for (int j = 0; j < W; j++) wT[static_cast<size_t>(j) * D + d] = wrow[static_cast<size_t>(d) * W + j];
  if (a.bias) kern.to_f32(a.bias, a.bdt, 0, static_cast<int>(D), bias.data());
  const int64_t dblocks = (D + kConvTileD - 1) / kConvTileD;

  // Long sequences, work items (sequence, token tile, channel block); padding sequences (slot -1) get zero rows.
  struct Item { int32_t n; int32_t t0; };
  std::vector<Item> items;
  for (int n = 0; n < a.N; n++) {
    const int32_t T = len_of(n);
    if (T > kConvTileT)
      for (int32_t t0 = 0; t0 < T; t0 += kConvTileT) items.push_back({n, t0});
  }
  const int64_t tile_floats = static_cast<int64_t>(P + kConvTileT) * kConvTileD + static_cast<int64_t>(kConvTileT) * kConvTileD;
  std::vector<std::vector<float>> scratch(num_threads());
  parallel_for(static_cast<int64_t>(items.size()) * dblocks, [&](int64_t i, int tid) {
    if (cancelled()) return;
    const Item it = items[i / dblocks];
    const int64_t d0 = (i % dblocks) * kConvTileD;
    const int dc = static_cast<int>(std::min<int64_t>(kConvTileD, D - d0));
    const int64_t s0 = a.cu[it.n];
    const int tc = std::min<int32_t>(kConvTileT, a.cu[it.n + 1] - a.cu[it.n] - it.t0);
    if (a.pool && slot_of(it.n) < 0) {
      for (int t = 0; t < tc; t++)
        for (int c = 0; c < dc; c++) store_scalar(a.y, a.xdt, (s0 + it.t0 + t) * D + d0 + c, 0.f);
      return;
    }
    std::vector<float>& s = scratch[tid];
    if (s.size() < static_cast<size_t>(tile_floats)) s.resize(tile_floats);
    const void* st = init_of(it.n) ? block_of(it.n) : nullptr;
    // Their final states are written after all tiles (the first tile reads the block the last one would write).
    kern.tile(a, wT.data(), a.bias ? bias.data() : nullptr, s0, it.t0, tc, d0, dc, st, nullptr, s.data());
  });
  if (stop.load()) return false;
  if (!a.pool || P == 0) return true;

  // Final states: column i = position T - P + i of x~ (x when >= 0, else the old state's column T + i, read
  // before it is overwritten since T + i > i and i ascends; zeros without an initial state).
  parallel_for(static_cast<int64_t>(a.N) * dblocks, [&](int64_t i, int) {
    const int n = static_cast<int>(i / dblocks);
    if (slot_of(n) < 0 || len_of(n) <= kConvTileT) return;  // done by the update pass
    const int64_t d0 = (i % dblocks) * kConvTileD, d1 = std::min<int64_t>(D, d0 + kConvTileD);
    const int64_t s0 = a.cu[n], T = a.cu[n + 1] - a.cu[n];
    const bool init = init_of(n);
    void* st = block_of(n);
    for (int64_t d = d0; d < d1; d++) {
      for (int c = 0; c < P; c++) {
        const int64_t pos = T - P + c;
        float v;
        if (pos >= 0) v = load_scalar(a.x, a.xdt, (s0 + pos) * D + d);
        else v = init ? load_scalar(st, a.sdt, d * P + T + c) : 0.f;
        store_scalar(st, a.sdt, d * P + c, v);
      }
    }
  });
  return true;
}

}  // namespace sk
