// Causal depthwise convolution of channels-last sequences (Mamba's causal_conv1d, fla's ShortConvolution;
// issue 14 part 3), with a pool of conv states.
//
// x [rows, D] (the tokens of N sequences packed, sequence n = rows [cu[n], cu[n+1])), weight [D, W] (W <= 8),
// bias [D] or none; y [rows, D] in x's dtype:
//   y[t, d] = act(bias[d] + sum_{j<W} w[d, j] * x~[t - (W - 1) + j, d]),  act = silu or identity,
// where x~ is the sequence's x at positions >= 0 and its initial conv state at positions -(W-1) .. -1:
// state[slot, d, i] holds position i - (W - 1) (oldest first, the last column the newest), zeros when there
// is no pool or has_init[n] == 0. With a pool the final state (the last W - 1 positions of x~, so part of the
// initial state when the sequence is shorter than W - 1) is written back into the same slot, after every y
// is computed (the prefill reads and writes the pool in place). slot[n] == -1: padding, y rows left 0.
// The decode update is the same call: N sequences of Tq tokens, every initial state read from the pool.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

constexpr int kConvMaxWidth = 8;

struct ConvArgs {
  int64_t D = 0;
  int W = 0;
  const void* x = nullptr;
  DType xdt = DType::f32;
  void* y = nullptr;  // x's dtype
  const void* w = nullptr;
  DType wdt = DType::f32;
  const void* bias = nullptr;  // or null
  DType bdt = DType::f32;
  bool silu = false;
  int N = 0;
  const int32_t* cu = nullptr;  // N + 1 offsets, validated
  bool pool = false;            // a pool is given (state may still be null: W = 1 holds no columns)
  void* state = nullptr;        // [slots, D, W - 1]
  DType sdt = DType::f32;
  const int32_t* slot = nullptr;      // [N] (validated: in range, distinct among live) or null: slot n = n
  const uint8_t* has_init = nullptr;  // [N] or null: every initial state read from the pool
  const int32_t* cancel = nullptr;
};

// Tokens and channels of one work item (a tile of a sequence).
constexpr int kConvTileT = 64;
constexpr int kConvTileD = 64;

// A sequence of the update pass: T tokens from row s0, its state block (the slot's [D, P], or null: zeros) and
// where its final state goes (the same block, or null: none); pad: a padding sequence (y rows set to 0).
struct UpdateSeq {
  int64_t s0;
  int32_t T;
  bool pad;
  const void* state;
  void* state_out;
};

// Most channels per task of the update pass: a task deinterleaves its channels' weight taps (and bias) once into
// its workspace, then runs every sequence over them.
constexpr int kConvUpdateChunk = 4096;

struct ConvKernels {
  // One tile: tc tokens of channels [d0, d0 + dc) starting at row r0 of x (token t0 of a sequence whose
  // first row is s0); wT [W][D] and bias [D] float32; the initial state of the tile (positions < 0) from
  // `state` (the slot's [D, W - 1] block, already offset) or zeros when null. scratch: (W - 1 + tc) * 64 +
  // tc * 64 floats. state_out (a sequence that fits one tile: the slot's block, or null): the final state is
  // written there after the tile is computed (no other tile reads that block).
  void (*tile)(const ConvArgs& a, const float* wT, const float* bias, int64_t s0, int64_t t0, int tc, int64_t d0, int dc,
               const void* state, void* state_out, float* scratch);
  // The short sequences (T <= kConvTileT: every decode update, W - 1 state columns kept in registers) over
  // channels [d0, d0 + dc), dc <= kConvUpdateChunk (a multiple of 16 but for the last chunk), reading weight and bias in place. wt: workspace of
  // (W + 1) * kConvUpdateChunk floats, 64-byte aligned.
  void (*update)(const ConvArgs& a, const UpdateSeq* seqs, int ns, int64_t d0, int dc, float* wt);
  void (*to_f32)(const void* src, DType dt, int64_t off, int n, float* dst);
};
const ConvKernels& conv_kernels(SimdLevel l);
namespace avx512 { extern const ConvKernels kConvKernels; }
namespace avx2 { extern const ConvKernels kConvKernels; }
namespace portable { extern const ConvKernels kConvKernels; }

// Runs the call on the pool. Returns false when cancelled before any write (nothing written then; the
// binding drops the flag before a call that writes in place).
bool conv_forward(const ConvArgs& a);

}  // namespace sk
