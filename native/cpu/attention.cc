// Driver of the attention family: sizes the tiles, cuts the call into units (see attention.h), splits the
// keys of the units when there are too few of them to fill the threads, and runs everything on the pool with
// the kernels of the chosen SIMD level.
#include "attention.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <vector>

#include "threadpool.h"

namespace sk {

const AttentionKernels& attention_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kAttentionKernels;
    case SimdLevel::avx2: return avx2::kAttentionKernels;
    default: return portable::kAttentionKernels;
  }
}

namespace {

// Columns (queries x heads) of a unit's score tile: enough to reuse each K/V tile 64 times, few enough that
// Q^T, the tile and the accumulator stay in L1/L2 (64 x 128 floats is 32 KiB).
constexpr int kMaxCols = 64;
constexpr int kKeyTile = 64;
// A unit's keys are split only into pieces of at least this many keys (a piece costs one partial state and
// a share of a merge). Measured on a decode (T=1, Hq=32, Hk=8, D=128, 2 threads, back to back): 256 rather
// than 512 takes S=600 from 0.080 to 0.047 ms and S=1000 from 0.134 to 0.072 ms (both threads busy), and
// S=2000 from 0.19 to 0.15 ms; 128 gains nothing more.
constexpr int kMinSplitKeys = 256;
// Units with at most this many columns per kv head take several kv heads (see make_plan).
constexpr int kNarrowCols = 8;
// Packing K and V (see attention_forward): done when each key is read by at least this many units on
// average, in tasks of kPackKeys keys, and when the copy stays under kPackMaxFloats (512 MiB).
constexpr int64_t kPackReuse = 3;
constexpr int64_t kPackKeys = 512;
constexpr int64_t kPackMaxFloats = int64_t{1} << 27;

struct Aligned {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p;
  explicit Aligned(int64_t n) {
    const size_t bytes = (static_cast<size_t>(n > 0 ? n : 1) * sizeof(float) + 63) / 64 * 64;
    p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!p) throw std::bad_alloc();
  }
  float* get() const { return p.get(); }
};

AttnPlan make_plan(const AttentionArgs& a, int max_len) {
  AttnPlan p;
  p.group = a.Hq / a.Hk;
  const int slices = (p.group + kMaxCols - 1) / kMaxCols;
  p.heads = (p.group + slices - 1) / slices;
  p.rows = std::max(1, kMaxCols / p.heads);
  p.rows = std::min(p.rows, std::max(1, max_len));  // decode: one query per head
  p.cols = p.heads * p.rows;
  // Few columns per kv head (decode): take several kv heads per unit, up to kMaxCols columns in all, so a
  // unit reads each key's rows of K and V for all its heads at once, contiguous in memory.
  p.kv = p.cols <= kNarrowCols ? std::max(1, std::min(a.Hk, kMaxCols / p.cols)) : 1;
  p.bc = kKeyTile;
  return p;
}

}  // namespace

bool attention_forward(const AttentionArgs& a) {
  const AttentionKernels& kern = attention_kernels(simd_level());
  const int threads = num_threads();

  int max_len = 0;
  for (int n = 0; n < a.N; n++) max_len = std::max(max_len, a.cu_q ? a.cu_q[n + 1] - a.cu_q[n] : a.T);
  AttnPlan p = make_plan(a, max_len);

  // Units in the order they should start: the most work first (causal blocks near the end of a sequence
  // see the most keys), so the dynamic scheduler ends with the small ones.
  std::vector<AttnUnit> units;
  std::vector<int64_t> cost;
  for (int n = 0; n < a.N; n++) {
    const int Tn = a.cu_q ? a.cu_q[n + 1] - a.cu_q[n] : a.T;
    const int Sn = seq_keys(a, n);
    const int64_t off = static_cast<int64_t>(Sn) - Tn;
    for (int64_t i0 = 0; i0 < Tn; i0 += p.rows) {
      const int nq = static_cast<int>(std::min<int64_t>(p.rows, Tn - i0));
      // Causal: the last query of the block sees keys up to i0 + nq - 1 + off; later tiles are all masked.
      const int64_t end = a.causal ? std::clamp<int64_t>(i0 + nq + off, 0, Sn) : Sn;
      for (int hk = 0; hk < a.Hk; hk += p.kv) {
        const int nkv = std::min(p.kv, a.Hk - hk);
        for (int h = 0; h < p.group; h += p.heads) {
          const int nh = std::min(p.heads, p.group - h);
          units.push_back({n, hk, nkv, h, nh, static_cast<int32_t>(i0), nq, 0, static_cast<int32_t>(end), -1, 0});
        }
      }
    }
  }
  if (units.empty()) return true;

  // Too few units to keep every thread busy to the end: split their keys into pieces with partial states,
  // merged afterwards by log-sum-exp (decode: one query per sequence against a long cache).
  // Also when one unit holds more than a thread's share of the work (a batched decode over caches of mixed
  // lengths: one of 32768 keys among several of a few hundred), however many units there are: then each unit
  // is cut into pieces of about a quarter of a thread's share, so the long one spreads over every thread.
  std::vector<AttnUnit> work, merges;
  int64_t slots = 0;
  auto unit_cost = [](const AttnUnit& u) { return (static_cast<int64_t>(u.j1 - u.j0) + 16) * u.nkv * u.nh * u.nq; };
  int64_t total = 0, biggest = 0;
  for (const AttnUnit& u : units) total += unit_cost(u), biggest = std::max(biggest, unit_cost(u));
  const bool few = units.size() < static_cast<size_t>(4 * threads);
  const bool lopsided = biggest * threads > total;
  if (threads > 1 && !a.no_split && (few || lopsided)) {  // (one thread: nothing to gain)
    const int64_t want = (8 * static_cast<int64_t>(threads) + units.size() - 1) / units.size();
    const int64_t share = std::max<int64_t>(1, total / (4 * static_cast<int64_t>(threads)));
    for (const AttnUnit& u : units) {
      const int64_t keys = u.j1 - u.j0;
      int64_t pieces = std::min<int64_t>(few ? want : (unit_cost(u) + share - 1) / share, keys / kMinSplitKeys);
      // Between one and two pieces per thread, some thread would take two while the others take one.
      if (pieces > threads && pieces < 2 * threads) pieces = threads;
      if (pieces < 2) {
        work.push_back(u);
        continue;
      }
      const int64_t chunk = (keys + pieces - 1) / pieces;
      const int64_t step = (chunk + p.bc - 1) / p.bc * p.bc;  // tile-aligned
      AttnUnit m = u;
      m.slot = static_cast<int32_t>(slots);
      m.pieces = 0;
      for (int64_t j = u.j0; j < u.j1; j += step) {
        AttnUnit piece = u;
        piece.j0 = static_cast<int32_t>(j);
        piece.j1 = static_cast<int32_t>(std::min<int64_t>(j + step, u.j1));
        piece.slot = static_cast<int32_t>(slots++);
        work.push_back(piece);
        m.pieces++;
      }
      merges.push_back(m);
    }
  } else {
    work = std::move(units);
  }
  cost.resize(work.size());
  for (size_t i = 0; i < work.size(); i++) cost[i] = unit_cost(work[i]);
  std::vector<int32_t> order(work.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return cost[x] > cost[y]; });

  // Packing: when units of one kv head each take one head's slice of the key rows (a prefill), every unit
  // reading a tile used to copy its V rows (and convert float16/bfloat16 K) and prefetch 64 rows, each on
  // its own 4 KiB page (Hk*D floats apart); with T/64 query blocks reading each tile that work was repeated
  // tens of times. Measured at AVX-512 (Zen 5, causal T=4096, H=8, D=128, one thread, CPU time): the V copy
  // and the row prefetches took ~18% of the call. Copying every key once into contiguous float32 rows per
  // (sequence, kv head) first costs one pass over K and V; done when each key is read by at least kPackReuse
  // units on average, and the packed copy stays under kPackMaxFloats.
  std::unique_ptr<Aligned> kpack, vpack;
  std::vector<int64_t> pack_base;
  if (p.kv == 1) {
    int64_t keys = 0, reads = 0;
    pack_base.resize(static_cast<size_t>(a.N) * a.Hk);
    for (int n = 0; n < a.N; n++)
      for (int hk = 0; hk < a.Hk; hk++) pack_base[static_cast<size_t>(n) * a.Hk + hk] = keys, keys += seq_keys(a, n);
    for (const AttnUnit& u : work) reads += u.j1 - u.j0;
    const int vld = vtile_ld(a.Dv);
    if (keys > 0 && reads >= kPackReuse * keys && keys * (a.D + vld) <= kPackMaxFloats) {
      try {
        kpack = std::make_unique<Aligned>(keys * a.D);
        vpack = std::make_unique<Aligned>(keys * vld);
      } catch (const std::bad_alloc&) {
        kpack.reset(), vpack.reset();  // not enough memory for the copy: read in place
      }
    }
    if (kpack) {
      // Tasks of kPackKeys keys of one (sequence, kv head).
      std::vector<std::array<int64_t, 3>> tasks;  // n * Hk + hk, j0, j1
      for (int n = 0; n < a.N; n++)
        for (int hk = 0; hk < a.Hk; hk++)
          for (int64_t j = 0; j < seq_keys(a, n); j += kPackKeys)
            tasks.push_back({static_cast<int64_t>(n) * a.Hk + hk, j, std::min<int64_t>(j + kPackKeys, seq_keys(a, n))});
      float* kp = kpack->get();
      float* vp = vpack->get();
      parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
        const auto& t = tasks[i];
        const int64_t row = pack_base[t[0]] + t[1];
        kern.pack(a, static_cast<int>(t[0] / a.Hk), static_cast<int>(t[0] % a.Hk), t[1], t[2], kp + row * a.D, vp + row * vld);
      });
      p.kpack = kp, p.vpack = vp, p.pack_base = pack_base.data();
    }
  }

  // Workspaces per thread, allocated here (none in the loops). A pool resized by another call in the
  // meantime could hand out a thread id past them: that thread then uses one of its own.
  const int64_t ws_floats = kern.workspace_floats(a, p);
  std::vector<Aligned> ws;
  for (int t = 0; t < threads; t++) ws.emplace_back(ws_floats);
  std::unique_ptr<Aligned> scratch = slots ? std::make_unique<Aligned>(slots * kern.partial_floats(a, p)) : nullptr;
  float* sp = scratch ? scratch->get() : nullptr;

  // Nothing may throw on a pool thread: a failed allocation there is reported after the loop.
  std::atomic<bool> stop{false}, no_memory{false};
  auto workspace = [&](int tid, std::unique_ptr<Aligned>& own) -> float* {
    if (tid < threads) return ws[tid].get();
    try {
      own = std::make_unique<Aligned>(ws_floats);
    } catch (const std::bad_alloc&) {
      no_memory.store(true);
      stop.store(true);
      return nullptr;
    }
    return own->get();
  };
  parallel_for(static_cast<int64_t>(order.size()), [&](int64_t i, int tid) {
    if (stop.load(std::memory_order_relaxed)) return;
    std::unique_ptr<Aligned> own;
    float* w = workspace(tid, own);
    if (w && !kern.unit(a, p, work[order[i]], w, sp)) stop.store(true);
  });
  if (!no_memory.load() && !stop.load() && !merges.empty()) {
    parallel_for(static_cast<int64_t>(merges.size()), [&](int64_t i, int tid) {
      std::unique_ptr<Aligned> own;
      if (float* w = workspace(tid, own)) kern.merge(a, p, merges[i], w, sp);
    });
  }
  if (no_memory.load()) throw std::bad_alloc();
  return !stop.load();
}

}  // namespace sk
