// Machine-limit probes of `seqkern bench --limits` (DESIGN.md 8): FP32 FMA peak per SIMD level and
// copy/triad bandwidth at a given working-set size. The benchmark divides each op's GFLOP/s and GB/s by
// these, measured in the same process, so the ratios compare like with like.
#pragma once
#include <cstdint>

#include "simd.h"

namespace sk {

// The per-level pieces (limits_<level>.cc, written once in limits_impl.h).
struct LimitKernels {
  int width;   // floats per vector
  int chains;  // independent FMA accumulator chains in fma_block
  // iters x chains vector FMAs (each 2 * width flops); returns the sum of the accumulators so that nothing
  // is dead code.
  float (*fma_block)(int64_t iters, float seed);
  // reps passes of b = a over n floats (n a multiple of 64).
  void (*copy)(const float* a, float* b, int64_t n, int64_t reps);
  // reps passes of a = b + s * c over n floats (n a multiple of 64).
  void (*triad)(float* a, const float* b, const float* c, float s, int64_t n, int64_t reps);
  // reps passes of a = s * a in place over n floats (n a multiple of 64): read + write of the same lines.
  void (*update)(float* a, float s, int64_t n, int64_t reps);
  // reps passes reading a (n floats, a multiple of 64) into a sum, which it returns.
  float (*read)(const float* a, int64_t n, int64_t reps);
};
const LimitKernels& limit_kernels(SimdLevel l);
namespace avx512 { extern const LimitKernels kLimitKernels; }
namespace avx2 { extern const LimitKernels kLimitKernels; }
namespace portable { extern const LimitKernels kLimitKernels; }

// FP32 FMA peak in GFLOP/s at level l on `threads` threads of the pool, measured for about `seconds`:
// the best of a few repeats (a peak is a best case; the first repeat may still be ramping the clock up).
double peak_gflops(SimdLevel l, double seconds, int threads);

enum class BandwidthKind : int { copy = 0, triad = 1, update = 2, read = 3 };

// Bandwidth in GB/s (1e9 bytes) of copy (b = a: read + write counted), triad (a = b + s c: two reads and
// one write counted), update (a = s a in place: read + write counted) or read (sum of a: the read counted;
// the ceiling of an op that only reads, as an attention decode reads K and V), STREAM's counting: write-allocate
// traffic is not counted. So copy and triad move more than they are credited with (the destination line is
// read before it is written) and an in-place update does not (its lines are already in cache when written):
// out of cache, update reads up to 1.5x copy, and an op that updates its data in place (the decode step's
// state) is compared with update, not copy, or it can show more than 100% of "copy". `bytes` is the total
// working set, all arrays of all threads (copy: two arrays of bytes/2, triad: three of bytes/3, update and
// read: one), split evenly over `threads`. Ordinary stores (the ops write normally), vectors of the best level
// the CPU has. The best of repeated samples of about `seconds` in all. Throws CodedError on bad sizes.
double bandwidth_gbs(BandwidthKind kind, int64_t bytes, int threads, double seconds);

}  // namespace sk
