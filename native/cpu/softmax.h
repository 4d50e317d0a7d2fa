// Softmax over the last axis on the CPU (DESIGN.md 6.2): the two-pass algorithm of Dukhan & Ablavatski
// (2020) and the classic three-pass one (max, sum, normalise), for float32 / float16 / bfloat16 rows read and
// written in place in the caller's arrays (float32 compute).
//
// Numerics shared by both algorithms ("extended exp", see softmax_impl.h): e^x = p * 2^k with p in
// [0.95, 2) and k an integer exponent, so a sum of exponentials is kept as a pair (mantissa m, exponent n)
// and can never overflow. x is first clamped below at -65536, which keeps k exact and the reduction
// accurate. A row whose maximum lies outside [-45000, 45000] (values near 1e30, or a row all near -1e30) is
// instead computed on x - max(row): for such large values the subtraction is exact for every element that
// can matter, so the answer stays exact to float32 rounding for any finite input.
#pragma once
#include <cmath>
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

// A sum of exponentials: m * 2^n with n integer-valued (m = 0, n = -inf for an empty sum).
struct ExtSum {
  double m;
  double n;
};

// 2^d for an integer-valued d <= 0 (0 below double's range, -inf included).
inline double exp2_nonpos(double d) { return d < -1074 ? 0.0 : std::ldexp(1.0, static_cast<int>(d)); }

// s += m 2^n for a term m >= 0 (or NaN, which sticks) with integer-valued n; the larger exponent is kept,
// so nothing overflows whatever the exponents.
inline void ext_add(ExtSum& s, double m, double n) {
  if (!(m > 0)) {
    if (m != m) s.m = m;
    return;
  }
  if (n > s.n) {
    s.m = s.m * exp2_nonpos(s.n - n) + m;
    s.n = n;
  } else {
    s.m += m * exp2_nonpos(n - s.n);
  }
}

// Largest |exponent| of a row computed without a shift: the row maximum is then within ~45426 of 0, so
// clamped elements (x < -65536) are at least 20000 below it and add exactly 0.
constexpr double kSoftmaxMaxExponent = 65536.0;

// Bytes to pull into L2 while a kernel runs (the next row of a large batch), spread evenly over its loop
// so that memory keeps streaming while the kernel computes on cached data. Empty: none.
struct Prefetch {
  const void* p = nullptr;
  int64_t bytes = 0;
};

// A row whose two-pass pass 1 kept its terms, waiting for pass 2 (SoftmaxKernels::sum_exp_keep).
struct KeptRow {
  const float* keep;
  void* y;
  ExtSum s;
  bool stream;
};

// The per-level kernels (softmax_<level>.cc). `x` and `y` point at element 0 of a run of `len` elements of
// `dt`; every kernel computes on x - shift when `shift` is non-zero (the large-value path above).
struct SoftmaxKernels {
  // Largest element and whether there is a NaN (the three-pass's first pass, and the checks).
  void (*max)(const void* x, DType dt, int64_t len, float* mx, bool* nan, Prefetch pf);
  // Two-pass, pass 1: sum of e^(x_i - shift) with no max pass, the running sum rescaled whenever a larger
  // exponent arrives.
  ExtSum (*sum_exp)(const void* x, DType dt, int64_t len, float shift, Prefetch pf);
  // Two-pass, pass 2 (and the three-pass's last pass for float16/bfloat16): y_i = e^(x_i - shift) / s.
  // `stream`: float32 output written with non-temporal stores (large outputs; see softmax.cc).
  void (*write_exp)(const void* x, void* y, DType dt, int64_t len, float shift, ExtSum s, bool stream, Prefetch pf);
  // Three-pass, pass 2: sum of e^(x_i - shift) * 2^-nref, nref the exponent of the row maximum, so every
  // term is at most ~1.42; with `y` (float32 output) each term is stored there too.
  double (*sum_rel)(const void* x, float* y, DType dt, int64_t len, float shift, float nref, Prefetch pf);
  // Three-pass, pass 3 for float32: y_i *= s.
  void (*scale)(float* y, int64_t len, float s, Prefetch pf);
  // Two-pass with the terms kept (no shift; null where pass 2 recomputes exp): pass 1 as sum_exp, also
  // storing every term in `keep` (keep_floats(len) floats, 64-byte aligned: the caller's per-thread
  // scratch), and pass 2 scaling them into y, a multiply per element instead of an exp. `prev`, a row of
  // the same length and dtype whose pass 1 is done, gets its pass 2 interleaved with this pass 1.
  int64_t (*keep_floats)(int64_t len);
  ExtSum (*sum_exp_keep)(const void* x, DType dt, int64_t len, float* keep, Prefetch pf, const KeptRow* prev);
  void (*write_kept)(const KeptRow& row, DType dt, int64_t len, Prefetch pf);
};
const SoftmaxKernels& softmax_kernels(SimdLevel l);
namespace avx512 { extern const SoftmaxKernels kSoftmaxKernels; }
namespace avx2 { extern const SoftmaxKernels kSoftmaxKernels; }
namespace portable { extern const SoftmaxKernels kSoftmaxKernels; }

struct SoftmaxArgs {
  const void* x = nullptr;   // [rows, cols] of dtype
  void* y = nullptr;         // [rows, cols] of dtype; may be x itself (in place)
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;  // cols >= 1
  bool three_pass = false;
  // NaN or +Inf anywhere, or a row of all -Inf, is an error (reported before anything is written) instead
  // of a row of NaN.
  bool strict = false;
  const int32_t* cancel = nullptr;  // non-zero: stop; checked between blocks of rows (JS sets it on abort)
};

struct SoftmaxStatus {
  enum Code { ok, cancelled, non_finite, all_neg_inf } code = ok;
  int64_t row = -1;  // the first offending row (strict errors)
};

// Runs the whole batch on the thread pool with the kernels of the current SIMD level.
SoftmaxStatus softmax_run(const SoftmaxArgs& a);

}  // namespace sk
