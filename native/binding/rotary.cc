// N-API glue of the rotary op: reads the argument object into a RotaryArgs (x, out and the tables in place,
// positions / cuSeqlens copied), checks it again, and runs it now or on a worker.
//   rotary(args) / rotaryAsync(args) -> undefined / Promise<undefined>; args: { tokens, T, H, D, rotaryDim,
//   maxPos, interleaved, x, out (may be x), dtype, cos, sin, positions?, cuSeqlens?, cancel? }.
// out may be x (in place) or the caller's buffer: either way it must end all old or all new, so the cancel flag
// is read once, before the first write.
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/rotary.h"

namespace sk {
namespace {

struct RotaryJob {
  RotaryArgs a;
  std::vector<int32_t> positions, cu;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() {
    a.positions = positions.empty() ? nullptr : positions.data();
    a.cu = cu.empty() ? nullptr : cu.data();
    cancel_before_writing(a.cancel);
    if (!rotary_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

std::string str(int64_t x) { return std::to_string(x); }

RotaryJob parse(const Napi::Object& o) {
  RotaryJob job;
  RotaryArgs& a = job.a;
  const int64_t tokens = get_int(o, "tokens"), T = get_int(o, "T"), H = get_int(o, "H"), D = get_int(o, "D");
  const int64_t rot = get_int(o, "rotaryDim"), max_pos = get_int(o, "maxPos");
  if (D < 1 || D > kRotaryMaxDim) throw CodedError("SHAPE_MISMATCH", "expected D in [1, " + str(kRotaryMaxDim) + "], got " + str(D));
  if (rot < 2 || rot % 2 != 0 || rot > D) throw CodedError("SHAPE_MISMATCH", "expected an even rotaryDim in [2, D = " + str(D) + "], got " + str(rot));
  if (T < 1 && tokens > 0) throw CodedError("SHAPE_MISMATCH", "expected T >= 1, got " + str(T));
  if (T > 0 && tokens % T != 0) throw CodedError("SHAPE_MISMATCH", "expected tokens a multiple of T, got " + str(tokens) + ", T=" + str(T));
  const int64_t nx = checked({tokens, H, D}, "x"), ncs = checked({max_pos, rot / 2}, "cos");
  ArrayView x = get_array(o, "x", true), out = get_array(o, "out", true), cs = get_array(o, "cos", true), sn = get_array(o, "sin", true);
  ArrayView ps = get_array(o, "positions", false), cu = get_array(o, "cuSeqlens", false), cancel = get_array(o, "cancel", false);
  a.dtype = parse_dtype(o, "dtype", x, "x");
  parse_dtype(o, "dtype", out, "out");
  check_len(x, nx, "x", dims({tokens, H, D}));
  check_len(out, nx, "out", dims({tokens, H, D}));
  if (cs.type != napi_float32_array || sn.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected cos and sin to be Float32Arrays");
  check_len(cs, ncs, "cos", dims({max_pos, rot / 2}));
  check_len(sn, ncs, "sin", dims({max_pos, rot / 2}));

  if (ps.present && cu.present) throw CodedError("BAD_ARGUMENT", "expected positions or cuSeqlens, not both");
  if (ps.present) {
    job.positions = copy_int32(ps, "positions");
    if (static_cast<int64_t>(job.positions.size()) != tokens)
      throw CodedError("SHAPE_MISMATCH", "expected positions of " + str(tokens) + " entries (B * T), got " + str(job.positions.size()));
    for (int64_t i = 0; i < tokens; i++)
      if (job.positions[i] < 0 || job.positions[i] >= max_pos)
        throw CodedError("OUT_OF_RANGE", "expected positions in [0, maxPos = " + str(max_pos) + "), got " + str(job.positions[i]) + " at index " + str(i));
  } else if (cu.present) {
    job.cu = copy_int32(cu, "cuSeqlens");
    const int64_t n = static_cast<int64_t>(job.cu.size());
    if (n < 2 || job.cu[0] != 0 || job.cu[n - 1] != tokens || tokens != T)
      throw CodedError("OUT_OF_RANGE", "expected cuSeqlens of N + 1 offsets from 0 to T = " + str(tokens) + " (B = 1)");
    for (int64_t i = 1; i < n; i++) {
      if (job.cu[i] < job.cu[i - 1]) throw CodedError("OUT_OF_RANGE", "expected cuSeqlens non-decreasing, at index " + str(i));
      if (job.cu[i] - job.cu[i - 1] > max_pos)
        throw CodedError("OUT_OF_RANGE", "expected rotary tables of at least " + str(job.cu[i] - job.cu[i - 1]) + " rows (the longest sequence), got " + str(max_pos));
    }
    a.ncu = static_cast<int>(n);
  } else if (tokens > 0 && T > max_pos) {
    throw CodedError("OUT_OF_RANGE", "expected rotary tables of at least T = " + str(T) + " rows, got " + str(max_pos));
  }

  // out is x itself (in place: each row is read whole before it is written) or apart from x and the tables.
  const int64_t es = dtype_bytes(a.dtype);
  const bool same = out.data == x.data;
  if (!same && overlap(out.data, nx * es, x.data, nx * es)) throw CodedError("BAD_ARGUMENT", "expected out to be x itself or apart from it, got a partial overlap");
  if (overlap(out.data, nx * es, cs.data, ncs * 4) || overlap(out.data, nx * es, sn.data, ncs * 4))
    throw CodedError("BAD_ARGUMENT", "expected out in memory apart from cos and sin");

  a.tokens = tokens, a.T = static_cast<int>(T), a.H = static_cast<int>(H), a.D = static_cast<int>(D), a.rot = static_cast<int>(rot);
  a.max_pos = static_cast<int>(max_pos);
  a.interleaved = get_bool(o, "interleaved");
  a.x = x.data, a.out = out.data;
  a.cos = static_cast<const float*>(cs.data), a.sin = static_cast<const float*>(sn.data);
  a.cancel = cancel_flag(cancel);
  job.pinned = pin({&x, &out, &cs, &sn, &cancel});
  return job;
}

}  // namespace

void register_rotary(Napi::Env env, Napi::Object exports) {
  export_op<RotaryJob, parse>(env, exports, "rotary", "rotaryAsync");
}

}  // namespace sk
