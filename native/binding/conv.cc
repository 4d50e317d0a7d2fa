// N-API glue of the causal convolution (native/cpu/conv.h): reads the argument object (typed arrays in place,
// offsets and slots copied), checks it again (anything may call the addon directly), and runs it now or on a
// worker.
//   causalConv1d(args) / causalConv1dAsync(args) -> undefined / Promise<undefined>; y written, and the pool
//   (state) updated in place. args: { D, W, rows, N, x, dtype, y, weight, wDtype, bias?, biasDtype?,
//   activation: 'silu' | 'none', cuSeqlens (Int32Array N + 1), state?, stateDtype?, slots, stateIndices?
//   (Int32Array N, -1 = padding), hasInitialState? (Uint8Array N), cancel?, callerOut? }. The decode update
//   is the same call with cuSeqlens = [0, Tq, 2 Tq, ...]. With a pool or the caller's y, cancel is read once,
//   before anything is written.
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/conv.h"

namespace sk {
namespace {

struct ConvJob {
  ConvArgs a;
  std::vector<int32_t> cu, slot;
  std::vector<uint8_t> init;
  bool in_place = false;
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() {
    if (in_place) cancel_before_writing(a.cancel);
    if (!conv_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

ConvJob parse(const Napi::Object& o) {
  ConvJob job;
  ConvArgs& a = job.a;
  const int64_t D = get_int(o, "D"), W = get_int(o, "W"), rows = get_int(o, "rows"), N = get_int(o, "N");
  if (W < 1 || W > kConvMaxWidth)
    throw CodedError("OUT_OF_RANGE", "expected the kernel width W in [1, 8], got " + std::to_string(W));
  ArrayView x = get_array(o, "x", true), y = get_array(o, "y", true), w = get_array(o, "weight", true);
  ArrayView bias = get_array(o, "bias", false), cuv = get_array(o, "cuSeqlens", true), state = get_array(o, "state", false);
  ArrayView slots = get_array(o, "stateIndices", false), init = get_array(o, "hasInitialState", false);
  ArrayView cancel = get_array(o, "cancel", false);
  a.xdt = parse_dtype(o, "dtype", x, "x");
  parse_dtype(o, "dtype", y, "y");
  a.wdt = parse_dtype(o, "wDtype", w, "weight");
  if (bias.present) a.bdt = parse_dtype(o, "biasDtype", bias, "bias");
  if (state.present) a.sdt = parse_dtype(o, "stateDtype", state, "state");
  check_len(x, checked({rows, D}, "x"), "x", dims({rows, D}));
  check_len(y, rows * D, "y", dims({rows, D}));
  check_len(w, checked({D, W}, "weight"), "weight", dims({D, W}));
  if (bias.present) check_len(bias, D, "bias", dims({D}));

  job.cu = copy_int32(cuv, "cuSeqlens");
  if (static_cast<int64_t>(job.cu.size()) != N + 1)
    throw CodedError("SHAPE_MISMATCH", "expected cuSeqlens of N + 1 = " + std::to_string(N + 1) + " offsets, got " + std::to_string(job.cu.size()));
  if (job.cu[0] != 0 || job.cu[N] != rows) throw CodedError("OUT_OF_RANGE", "expected cuSeqlens from 0 to rows=" + std::to_string(rows));
  for (int64_t n = 0; n < N; n++)
    if (job.cu[n + 1] < job.cu[n]) throw CodedError("OUT_OF_RANGE", "expected cuSeqlens non-decreasing, got a decrease at index " + std::to_string(n + 1));

  const int64_t P = W - 1;
  int64_t nslots = 0;
  if (state.present) {
    nslots = get_int(o, "slots");
    check_len(state, checked({nslots, D, P}, "state"), "state", dims({nslots, D, P}));
    job.slot = copy_int32(slots, "stateIndices");
    if (slots.present) {
      if (static_cast<int64_t>(job.slot.size()) != N) throw CodedError("SHAPE_MISMATCH", "expected stateIndices of N = " + std::to_string(N) + " entries");
      std::vector<uint8_t> used(nslots, 0);
      for (int64_t n = 0; n < N; n++) {
        const int32_t s = job.slot[n];
        if (s < -1 || s >= nslots)
          throw CodedError("OUT_OF_RANGE", "expected stateIndices in [-1, " + std::to_string(nslots) + "), got " + std::to_string(s) + " at index " + std::to_string(n));
        if (s >= 0 && used[s]++) throw CodedError("BAD_ARGUMENT", "expected distinct stateIndices among live sequences, got slot " + std::to_string(s) + " twice");
      }
    } else if (N > nslots) {
      throw CodedError("SHAPE_MISMATCH", "expected a pool of at least N = " + std::to_string(N) + " slots without stateIndices, got " + std::to_string(nslots));
    }
    if (init.present) {
      if (init.type != napi_uint8_array) throw CodedError("BAD_DTYPE", "expected hasInitialState to be a Uint8Array");
      if (init.length != N) throw CodedError("SHAPE_MISMATCH", "expected hasInitialState of N = " + std::to_string(N) + " entries");
      const uint8_t* p = static_cast<const uint8_t*>(init.data);
      job.init.assign(p, p + N);
    }
  } else if (slots.present || init.present) {
    throw CodedError("BAD_ARGUMENT", "expected state (the conv-state pool) with stateIndices or hasInitialState");
  }

  const Napi::Value act = o.Get("activation");
  const std::string s = act.IsString() ? act.As<Napi::String>().Utf8Value() : "none";
  if (s != "silu" && s != "none") throw CodedError("BAD_ARGUMENT", "expected activation 'silu' or 'none', got '" + s + "'");
  a.silu = s == "silu";

  // y is written while x, weight, bias and the pool are read (by other threads too); the pool is written
  // while x is read: no overlap is safe.
  const int64_t xb = rows * D * dtype_bytes(a.xdt), wb = D * W * dtype_bytes(a.wdt), bb = bias.present ? D * dtype_bytes(a.bdt) : 0;
  const int64_t sb = state.present ? nslots * D * P * dtype_bytes(a.sdt) : 0;
  const struct { const char* name; const void* p; int64_t bytes; } inputs[] = {
      {"x", x.data, xb}, {"weight", w.data, wb}, {"bias", bias.data, bb}, {"state", state.data, sb}};
  for (const auto& in : inputs)
    if (overlap(y.data, xb, in.p, in.bytes)) throw CodedError("BAD_ARGUMENT", std::string("expected y in memory apart from the inputs, got a view overlapping ") + in.name);
  for (int i = 0; i < 3; i++)
    if (overlap(state.data, sb, inputs[i].p, inputs[i].bytes))
      throw CodedError("BAD_ARGUMENT", std::string("expected state in memory apart from the inputs, got a view overlapping ") + inputs[i].name);

  a.D = D, a.W = static_cast<int>(W), a.N = static_cast<int>(N);
  a.x = x.data, a.y = y.data, a.w = w.data, a.bias = bias.present ? bias.data : nullptr;
  a.cu = job.cu.data();
  a.pool = state.present;
  a.state = state.present ? state.data : nullptr;
  a.slot = slots.present ? job.slot.data() : nullptr;
  a.has_init = init.present ? job.init.data() : nullptr;
  a.cancel = cancel_flag(cancel);
  job.in_place = state.present || get_bool(o, "callerOut");
  job.pinned = pin({&x, &y, &w, &bias, &state, &cancel});
  return job;
}

}  // namespace

void register_conv(Napi::Env env, Napi::Object exports) {
  export_op<ConvJob, parse>(env, exports, "causalConv1d", "causalConv1dAsync");
}

}  // namespace sk
