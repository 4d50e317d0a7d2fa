// Driver of softmax: splits the batch over the thread pool and runs the kernels of the current SIMD level.
//
// Rows are the unit of work when there are enough of them: each unit takes whole rows (at least kUnitElems
// elements) and runs every pass of a row before the next, so the second and third passes read the row from
// L1/L2. A few long rows (longer than kSlice, fewer than 4 per thread) are cut into slices instead: each
// pass runs over all slices in parallel, the per-slice partial sums (m, n) merge exactly (ExtSum), and the
// next pass starts when the merge is done. In a batch out of cache each row prefetches the next one while
// its passes compute on cached data, and the two-pass writes a large float32 output with non-temporal
// stores (kStreamBytes): the batch then costs one read of x and one write of y in memory traffic.
//
// Rows needing more than the kernels' plain path (softmax.h): a maximum outside +-45000 (computed on
// x - max), and rows with NaN, +Inf or nothing but -Inf, which give a row of NaN, or an error under
// `strict`. Strict rows are checked in a read-only pass before anything is written.
#include "softmax.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "threadpool.h"

namespace sk {

const SoftmaxKernels& softmax_kernels(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return avx512::kSoftmaxKernels;
    case SimdLevel::avx2: return avx2::kSoftmaxKernels;
    default: return portable::kSoftmaxKernels;
  }
}

namespace {

constexpr int64_t kUnitElems = 16384;   // smallest unit of whole rows (~10 us of work)
constexpr int64_t kSlice = 65536;       // slice length of a split row (a multiple of every vector width)
// Smaller batches run on the calling thread: waking the pool costs ~30 us on the dev machine, as much as
// 2^17 elements take on one core.
constexpr int64_t kSerialElems = int64_t(1) << 17;
// Outputs at least this large are written with non-temporal stores by the two-pass's second pass (it writes
// each element once and never reads it back): they go to memory without first reading the destination
// line, a third of the traffic of an out-of-cache batch. Below it the output may still be in cache when
// the caller reads it, so normal stores. In place, the lines are in cache already (x was just read).
constexpr int64_t kStreamBytes = int64_t(64) << 20;
constexpr int64_t kPrefetchBatchBytes = int64_t(8) << 20;
constexpr int64_t kPrefetchRowBytes = int64_t(256) << 10;  // L2 is 1 MiB per core on the dev machine
// Rows up to this long keep pass 1's terms in a per-thread scratch (two rows' worth, ~260 KiB) for pass
// 2: with the row itself and the next one being prefetched, that stays within a 1 MiB L2.
constexpr int64_t kKeepElems = 32768;
constexpr float kShiftAbove = 45000.f;  // |row max| above this: compute on x - max (softmax.h)
constexpr double kLog2e = 1.4426950408889634;

enum class Kind { finite, nan_row, neg_inf_row };

Kind classify(float mx, bool nan) {
  if (nan || mx == std::numeric_limits<float>::infinity()) return Kind::nan_row;
  if (mx == -std::numeric_limits<float>::infinity()) return Kind::neg_inf_row;
  return Kind::finite;
}

// The sum of pass 1 is usable as it is: finite, and the row's largest exponent within the unshifted range.
bool plain_ok(const ExtSum& s) { return std::isfinite(s.m) && s.m > 0 && std::fabs(s.n) <= kSoftmaxMaxExponent; }

// Three-pass: the shift and reference exponent of a row with finite maximum mx.
void three_pass_ref(float mx, float* shift, float* nref) {
  if (std::fabs(mx) > kShiftAbove) {
    *shift = mx;
    *nref = 0.f;
  } else {
    *shift = 0.f;
    *nref = static_cast<float>(std::floor(static_cast<double>(mx) * kLog2e));  // ~ the exponent k of the max
  }
}

struct Ctx {
  const SoftmaxArgs& a;
  const SoftmaxKernels& k;
  int64_t es;  // bytes per element
  bool stream;
  std::atomic<bool> stop{false};

  Ctx(const SoftmaxArgs& args, const SoftmaxKernels& kern)
      : a(args), k(kern), es(args.dtype == DType::f32 ? 4 : 2) {
    const int64_t bytes = a.rows * a.cols * es;
    stream = a.dtype == DType::f32 && a.x != a.y && bytes >= kStreamBytes;
  }
  const void* x(int64_t row, int64_t off) const { return static_cast<const char*>(a.x) + (row * a.cols + off) * es; }
  void* y(int64_t row, int64_t off) const { return static_cast<char*>(a.y) + (row * a.cols + off) * es; }
  bool cancelled() {
    if (stop.load(std::memory_order_relaxed)) return true;
    if (a.cancel != nullptr && __atomic_load_n(a.cancel, __ATOMIC_RELAXED) != 0) {
      stop.store(true, std::memory_order_relaxed);
      return true;
    }
    return false;
  }
  void fill_nan(int64_t row, int64_t off, int64_t len) const {
    if (a.dtype == DType::f32) {
      std::fill_n(static_cast<float*>(y(row, off)), len, std::numeric_limits<float>::quiet_NaN());
    } else {
      std::fill_n(static_cast<uint16_t*>(y(row, off)), len, static_cast<uint16_t>(a.dtype == DType::f16 ? 0x7e00 : 0x7fc0));
    }
  }
  Kind row_kind(int64_t row) const {
    float mx;
    bool nan;
    k.max(x(row, 0), a.dtype, a.cols, &mx, &nan, {});
    return classify(mx, nan);
  }
  // Part `part` of `parts` of the row after `row`, to prefetch while working on `row` (when `next`).
  Prefetch ahead(bool next, int64_t row, int part, int parts) const {
    if (!next) return {};
    const int64_t bytes = a.cols * es, from = bytes * part / parts, to = bytes * (part + 1) / parts;
    return {static_cast<const char*>(x(row + 1, 0)) + from, to - from};
  }
};

template <class F>
void run_units(int64_t units, int64_t elems, F&& f) {
  if (units <= 1 || elems < kSerialElems) {
    for (int64_t u = 0; u < units; u++) f(u);
    return;
  }
  parallel_for(units, [&](int64_t u, int) { f(u); });
}

SoftmaxStatus strict_error(Kind kind, int64_t row) {
  SoftmaxStatus s;
  s.code = kind == Kind::nan_row ? SoftmaxStatus::non_finite : SoftmaxStatus::all_neg_inf;
  s.row = row;
  return s;
}

// ---- whole rows ----

// A per-thread scratch of at least `floats` floats, 64-byte aligned, kept for the thread's lifetime.
float* scratch(int64_t floats) {
  struct Buf {
    float* p = nullptr;
    int64_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf b;
  if (b.n < floats) {
    std::free(b.p);
    b.p = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((floats + 15) / 16 * 64)));
    b.n = b.p != nullptr ? floats : 0;
  }
  return b.p;
}

// Pass 2 of row r from pass 1's unshifted sum s: on x - max first when s is out of range (or a row of
// NaN), then y = e^x / s by computing exp again.
void two_pass_finish(Ctx& c, int64_t r, ExtSum s, Prefetch pf) {
  const int64_t L = c.a.cols;
  const DType dt = c.a.dtype;
  float shift = 0.f;
  if (!plain_ok(s)) {
    float mx;
    bool nan;
    c.k.max(c.x(r, 0), dt, L, &mx, &nan, {});
    if (classify(mx, nan) != Kind::finite) return c.fill_nan(r, 0, L);
    shift = mx;
    s = c.k.sum_exp(c.x(r, 0), dt, L, shift, {});
  }
  c.k.write_exp(c.x(r, 0), c.y(r, 0), dt, L, shift, s, c.stream, pf);
}

// Rows [r0, r1) by the two-pass. `prefetch`: each row prefetches the next one while it computes.
// Where the level keeps pass 1's terms (softmax_impl.h) and a row fits the scratch, row r's pass 2
// runs interleaved with row r + 1's pass 1 (two scratch buffers), so that its stores stream out while
// the next row computes; otherwise each row recomputes exp in its pass 2.
void two_pass_rows(Ctx& c, int64_t r0, int64_t r1, bool prefetch) {
  const int64_t L = c.a.cols;
  const DType dt = c.a.dtype;
  const int64_t kf = c.k.sum_exp_keep != nullptr && L <= kKeepElems ? (c.k.keep_floats(L) + 15) / 16 * 16 : 0;
  float* buf = kf > 0 ? scratch(2 * kf) : nullptr;
  KeptRow pending{};
  bool have = false;
  for (int64_t r = r0; r < r1; r++) {
    const bool next = prefetch && r + 1 < r1;
    if (buf == nullptr) {
      const ExtSum s = c.k.sum_exp(c.x(r, 0), dt, L, 0.f, c.ahead(next, r, 0, 2));
      two_pass_finish(c, r, s, c.ahead(next, r, 1, 2));
      continue;
    }
    float* keep = buf + (r & 1) * kf;
    const ExtSum s = c.k.sum_exp_keep(c.x(r, 0), dt, L, keep, c.ahead(next, r, 0, 1), have ? &pending : nullptr);
    have = plain_ok(s);
    if (have) pending = KeptRow{keep, c.y(r, 0), s, c.stream};
    else two_pass_finish(c, r, s, {});
  }
  if (have) c.k.write_kept(pending, dt, L, {});
}

// `next`: prefetch row r + 1 meanwhile, a third during each pass.
void three_pass_row(Ctx& c, int64_t r, bool next) {
  const int64_t L = c.a.cols;
  const DType dt = c.a.dtype;
  float mx, shift, nref;
  bool nan;
  c.k.max(c.x(r, 0), dt, L, &mx, &nan, c.ahead(next, r, 0, 3));
  if (classify(mx, nan) != Kind::finite) return c.fill_nan(r, 0, L);
  three_pass_ref(mx, &shift, &nref);
  if (dt == DType::f32) {
    float* y = static_cast<float*>(c.y(r, 0));
    const double s = c.k.sum_rel(c.x(r, 0), y, dt, L, shift, nref, c.ahead(next, r, 1, 3));
    c.k.scale(y, L, static_cast<float>(1.0 / s), c.ahead(next, r, 2, 3));
  } else {
    // No float32 buffer to keep the terms in: the last pass computes them again.
    const double s = c.k.sum_rel(c.x(r, 0), nullptr, dt, L, shift, nref, c.ahead(next, r, 1, 3));
    c.k.write_exp(c.x(r, 0), c.y(r, 0), dt, L, shift, ExtSum{s, nref}, false, c.ahead(next, r, 2, 3));
  }
}

SoftmaxStatus by_rows(Ctx& c) {
  const int64_t R = c.a.rows, L = c.a.cols, total = R * L;
  // Whole rows per unit: at least kUnitElems elements, and in a large batch up to 16 rows while every
  // thread still gets 16 units, so that most rows can prefetch their successor in the same unit.
  const int64_t threads = num_threads();
  const int64_t per = std::max<int64_t>({1, kUnitElems / L, std::min<int64_t>(16, R / (16 * threads))});
  const int64_t units = (R + per - 1) / per;
  // Prefetching the next row pays when the batch is out of cache and two rows fit in L2 beside each other.
  const bool prefetch = total * c.es >= kPrefetchBatchBytes && L * c.es <= kPrefetchRowBytes;
  if (c.a.strict) {
    std::atomic<int64_t> first{std::numeric_limits<int64_t>::max()};
    run_units(units, total, [&](int64_t u) {
      if (c.cancelled()) return;
      for (int64_t r = u * per; r < std::min(R, (u + 1) * per) && r < first.load(std::memory_order_relaxed); r++) {
        if (c.row_kind(r) == Kind::finite) continue;
        int64_t f = first.load();
        while (r < f && !first.compare_exchange_weak(f, r)) {
        }
        break;
      }
    });
    if (c.stop.load()) return {SoftmaxStatus::cancelled, -1};
    const int64_t r = first.load();
    if (r < R) return strict_error(c.row_kind(r), r);
  }
  run_units(units, total, [&](int64_t u) {
    if (c.cancelled()) return;
    const int64_t end = std::min(R, (u + 1) * per);
    if (!c.a.three_pass) return two_pass_rows(c, u * per, end, prefetch);
    for (int64_t r = u * per; r < end; r++) three_pass_row(c, r, prefetch && r + 1 < end);
  });
  if (c.stop.load()) return {SoftmaxStatus::cancelled, -1};
  return {};
}

// ---- a few long rows, cut into slices ----

SoftmaxStatus by_slices(Ctx& c) {
  const int64_t R = c.a.rows, L = c.a.cols, total = R * L;
  const DType dt = c.a.dtype;
  const int64_t S = (L + kSlice - 1) / kSlice, units = R * S;
  const auto off = [&](int64_t u) { return (u % S) * kSlice; };
  const auto len = [&](int64_t u) { return std::min(L, off(u) + kSlice) - off(u); };
  const auto row = [&](int64_t u) { return u / S; };
  // Runs f over the slices of the rows with want[row] set (all rows when want is empty).
  const auto phase = [&](const std::vector<char>& want, auto&& f) {
    run_units(units, total, [&](int64_t u) {
      if (!want.empty() && !want[row(u)]) return;
      if (c.cancelled()) return;
      f(u);
    });
    return !c.stop.load();
  };
  const std::vector<char> all;
  std::vector<float> mx(R, -std::numeric_limits<float>::infinity());
  std::vector<char> nan_row(R, 0);
  std::vector<float> shift(R, 0.f);

  // Row maxima (three-pass pass 1, the strict check, the two-pass's large-value rows).
  const auto maxima = [&](const std::vector<char>& want) {
    std::vector<float> m(units);
    std::vector<char> n(units);
    if (!phase(want, [&](int64_t u) {
          bool b;
          c.k.max(c.x(row(u), off(u)), dt, len(u), &m[u], &b, {});
          n[u] = b;
        }))
      return false;
    for (int64_t r = 0; r < R; r++) {
      if (!want.empty() && !want[r]) continue;
      bool any_nan = false;
      mx[r] = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < S; j++) {
        mx[r] = std::max(mx[r], m[r * S + j]);
        any_nan = any_nan || n[r * S + j];
      }
      nan_row[r] = classify(mx[r], any_nan) != Kind::finite;
    }
    return true;
  };

  bool have_max = false;
  if (c.a.strict || c.a.three_pass) {
    if (!maxima(all)) return {SoftmaxStatus::cancelled, -1};
    have_max = true;
    if (c.a.strict) {
      for (int64_t r = 0; r < R; r++)
        if (nan_row[r]) return strict_error(c.row_kind(r), r);
    }
  }

  if (c.a.three_pass) {
    std::vector<float> nref(R, 0.f);
    for (int64_t r = 0; r < R; r++)
      if (!nan_row[r]) three_pass_ref(mx[r], &shift[r], &nref[r]);
    std::vector<double> part(units, 0.0);
    if (!phase(all, [&](int64_t u) {
          const int64_t r = row(u);
          if (nan_row[r]) return;
          float* y = dt == DType::f32 ? static_cast<float*>(c.y(r, off(u))) : nullptr;
          part[u] = c.k.sum_rel(c.x(r, off(u)), y, dt, len(u), shift[r], nref[r], {});
        }))
      return {SoftmaxStatus::cancelled, -1};
    std::vector<double> sum(R, 0.0);
    for (int64_t u = 0; u < units; u++) sum[row(u)] += part[u];
    if (!phase(all, [&](int64_t u) {
          const int64_t r = row(u);
          if (nan_row[r]) return c.fill_nan(r, off(u), len(u));
          if (dt == DType::f32) c.k.scale(static_cast<float*>(c.y(r, off(u))), len(u), static_cast<float>(1.0 / sum[r]), {});
          else c.k.write_exp(c.x(r, off(u)), c.y(r, off(u)), dt, len(u), shift[r], ExtSum{sum[r], nref[r]}, false, {});
        }))
      return {SoftmaxStatus::cancelled, -1};
    return {};
  }

  // Two-pass: pass 1 on every slice, merged per row; rows that need it again on x - max.
  std::vector<ExtSum> part(units);
  std::vector<ExtSum> sum(R, ExtSum{0.0, -std::numeric_limits<double>::infinity()});
  const auto sums = [&](const std::vector<char>& want) {
    if (!phase(want, [&](int64_t u) { part[u] = c.k.sum_exp(c.x(row(u), off(u)), dt, len(u), shift[row(u)], {}); })) return false;
    for (int64_t r = 0; r < R; r++) {
      if (!want.empty() && !want[r]) continue;
      sum[r] = ExtSum{0.0, -std::numeric_limits<double>::infinity()};
      for (int64_t j = 0; j < S; j++) ext_add(sum[r], part[r * S + j].m, part[r * S + j].n);
    }
    return true;
  };
  if (!sums(all)) return {SoftmaxStatus::cancelled, -1};
  std::vector<char> again(R, 0);
  bool any = false;
  for (int64_t r = 0; r < R; r++) any |= (again[r] = !plain_ok(sum[r])) != 0;
  if (any) {
    if (!have_max && !maxima(again)) return {SoftmaxStatus::cancelled, -1};
    for (int64_t r = 0; r < R; r++) {
      again[r] = again[r] && !nan_row[r];
      if (again[r]) shift[r] = mx[r];
    }
    if (!sums(again)) return {SoftmaxStatus::cancelled, -1};
  }
  if (!phase(all, [&](int64_t u) {
        const int64_t r = row(u);
        if (nan_row[r]) return c.fill_nan(r, off(u), len(u));
        c.k.write_exp(c.x(r, off(u)), c.y(r, off(u)), dt, len(u), shift[r], sum[r], c.stream, {});
      }))
    return {SoftmaxStatus::cancelled, -1};
  return {};
}

}  // namespace

SoftmaxStatus softmax_run(const SoftmaxArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return {};
  Ctx c(a, softmax_kernels(simd_level()));
  const bool split = a.cols > kSlice && a.rows < 4 * static_cast<int64_t>(num_threads());
  return split ? by_slices(c) : by_rows(c);
}

}  // namespace sk
