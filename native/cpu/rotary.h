// Rotary position embedding on the CPU (RoPE; DESIGN.md 6.6, issue 14 part 4), as FlashAttention's
// apply_rotary_emb: the first rotaryDim values of each head row rotate in rotaryDim/2 planes, the rest pass.
//   non-interleaved (GPT-NeoX): plane i pairs x[i] and x[i + rotaryDim/2];
//   interleaved (GPT-J):        plane i pairs x[2i] and x[2i + 1];
//   (a, b) -> (a cos θ - b sin θ, b cos θ + a sin θ), with cos θ, sin θ from row `pos` of the tables.
// x [tokens, H, D] read in its dtype, written in out's (in place when out is x: each row is read whole before
// it is written). The KV-cache op (kvcache.h) rotates q and kNew with the same row kernel.
#pragma once
#include <cstdint>

#include "dtype.h"
#include "simd.h"

namespace sk {

// Longest head row (D) the op takes (the kernels' row buffer lives on the stack).
constexpr int kRotaryMaxDim = 1024;

// One head row: src (D values of sdt at element offset soff) -> dst (ddt, doff), its first rot values rotated
// by the table rows c and s (rot / 2 each; rot = 0: a converting copy). tmp: D floats of workspace.
struct RotaryKernels {
  void (*row)(const void* src, DType sdt, int64_t soff, void* dst, DType ddt, int64_t doff, int D, int rot,
              const float* c, const float* s, bool interleaved, float* tmp);
  // The H head rows of one token (D values each from element offset off, src and dst of dtype dt), all rotated
  // by the same table rows c and s; tmp: 2 * kRotaryMaxDim floats. The same bits as row on each.
  void (*token)(const void* src, void* dst, DType dt, int64_t off, int H, int D, int rot, const float* c, const float* s,
                bool interleaved, float* tmp);
};
const RotaryKernels& rotary_kernels(SimdLevel l);
namespace avx512 { extern const RotaryKernels kRotaryKernels; }
namespace avx2 { extern const RotaryKernels kRotaryKernels; }
namespace portable { extern const RotaryKernels kRotaryKernels; }

struct RotaryArgs {
  int64_t tokens = 0;                // B * T
  int T = 0, H = 0, D = 0, rot = 0;  // rot: rotaryDim, even, <= D
  bool interleaved = false;
  const void* x = nullptr;
  void* out = nullptr;               // may be x
  DType dtype = DType::f32;          // x's and out's
  const float *cos = nullptr, *sin = nullptr;  // [max_pos, rot / 2]
  int max_pos = 0;
  // Token i's position: positions[i]; else with cu (N + 1 offsets into T, B == 1) i - cu[n] for the sequence n
  // holding i; else i % T. Each is checked against max_pos by the caller.
  const int32_t* positions = nullptr;
  const int32_t* cu = nullptr;
  int ncu = 0;
  const int32_t* cancel = nullptr;
};

// Returns false when cancelled (out then partly written; never when out is the caller's, see the binding).
bool rotary_forward(const RotaryArgs& a);

}  // namespace sk
