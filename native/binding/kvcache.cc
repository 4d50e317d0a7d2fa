// N-API glue of the KV-cache op: reads the argument object into a KVCacheArgs (tensors in place, the small
// int32 arrays copied), checks it again (anything may call the addon directly), and runs it now or on a worker.
//   attentionWithKVCache(args) / attentionWithKVCacheAsync(args) -> undefined / Promise<undefined>; o (and
//   lse) written into args.o (args.lse), kNew / vNew into the caches in place. args: { B, Tq, Hq, Hk, D, Dv,
//   paged, capacity (contiguous) | numBlocks, blockSize, maxBlocks (paged), q, dtype (q's and o's), kCache,
//   vCache, cacheDtype, cacheSeqlens, blockTable?, kNew?, vNew?, newDtype, cos?, sin?, rotaryDim, maxPos,
//   interleaved, o, lse?, gate?, gateDtype, gateKind, causal, scale, cancel? }.
// The caches are written in place, so the cancel flag is read once, before the append, and then dropped: a
// call that started runs to the end (the caches end all old or all new).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/kvcache.h"
#include "cpu/rotary.h"

namespace sk {
namespace {

constexpr int64_t kMaxHeadDim = 1024;

struct KVCacheJob {
  KVCacheArgs a;
  std::vector<int32_t> seqlens, table;  // private copies, the kernel reads only these
  std::vector<std::shared_ptr<v8::BackingStore>> pinned;
  void run() {
    a.cache_seqlens = seqlens.data();
    a.att.block_table = table.empty() ? nullptr : table.data();
    cancel_before_writing(a.att.cancel);
    if (!kvcache_forward(a)) throw CodedError("ABORTED", "aborted");
  }
};

std::string str(int64_t x) { return std::to_string(x); }

KVCacheJob parse(const Napi::Object& o) {
  KVCacheJob job;
  KVCacheArgs& a = job.a;
  AttentionArgs& t = a.att;
  const int64_t B = get_int(o, "B"), Tq = get_int(o, "Tq"), Hq = get_int(o, "Hq"), Hk = get_int(o, "Hk"),
                D = get_int(o, "D"), Dv = get_int(o, "Dv");
  if (Tq < 1 || Hq < 1 || Hk < 1 || D < 1 || Dv < 1)
    throw CodedError("SHAPE_MISMATCH", "expected Tq, Hq, Hk, D, Dv >= 1, got " + dims({Tq, Hq, Hk, D, Dv}));
  if (Hq % Hk != 0) throw CodedError("SHAPE_MISMATCH", "expected Hq a multiple of Hk (grouped heads), got Hq=" + str(Hq) + ", Hk=" + str(Hk));
  if (D > kMaxHeadDim || Dv > kMaxHeadDim) throw CodedError("TOO_LARGE", "expected D, Dv <= 1024, got " + dims({D, Dv}));
  const bool paged = get_bool(o, "paged");
  int64_t rows = 0, cap = 0, nblocks = 0, bs = 0, maxb = 0;  // rows: token rows of the caches; cap: per sequence
  if (paged) {
    nblocks = get_int(o, "numBlocks"), bs = get_int(o, "blockSize"), maxb = get_int(o, "maxBlocks");
    if (bs < 1) throw CodedError("SHAPE_MISMATCH", "expected blockSize >= 1, got " + str(bs));
    rows = nblocks * bs, cap = maxb * bs;
    checked({nblocks, bs, Hk, D}, "kCache");
    checked({B, maxb}, "blockTable");
  } else {
    cap = get_int(o, "capacity");
    rows = B * cap;
    checked({B, cap, Hk, D}, "kCache");
  }
  const int64_t nq = checked({B, Tq, Hq, D}, "q"), nk = checked({rows, Hk, D}, "kCache"), nv = checked({rows, Hk, Dv}, "vCache");
  const int64_t no = checked({B, Tq, Hq, Dv}, "o"), nlse = checked({B, Hq, Tq}, "lse");
  const int64_t nkn = checked({B, Tq, Hk, D}, "kNew"), nvn = checked({B, Tq, Hk, Dv}, "vNew");
  if (cap > 2147483647) throw CodedError("TOO_LARGE", "expected a capacity per sequence below 2^31, got " + str(cap));
  t.B = static_cast<int>(B), t.T = static_cast<int>(Tq), t.S = static_cast<int>(paged ? bs : cap);
  t.Hq = static_cast<int>(Hq), t.Hk = static_cast<int>(Hk), t.D = static_cast<int>(D), t.Dv = static_cast<int>(Dv);
  t.N = t.B;

  ArrayView q = get_array(o, "q", true), kc = get_array(o, "kCache", true), vc = get_array(o, "vCache", true);
  ArrayView out = get_array(o, "o", true), lse = get_array(o, "lse", false), gate = get_array(o, "gate", false);
  ArrayView kn = get_array(o, "kNew", false), vn = get_array(o, "vNew", false);
  ArrayView sl = get_array(o, "cacheSeqlens", true), bt = get_array(o, "blockTable", false);
  ArrayView cs = get_array(o, "cos", false), sn = get_array(o, "sin", false), cancel = get_array(o, "cancel", false);

  t.own_dtypes = true;
  t.dtype = t.q_dtype = parse_dtype(o, "dtype", q, "q");
  parse_dtype(o, "dtype", out, "o");
  t.kv_dtype = parse_dtype(o, "cacheDtype", kc, "kCache");
  parse_dtype(o, "cacheDtype", vc, "vCache");
  check_len(q, nq, "q", dims({B, Tq, Hq, D}));
  check_len(kc, nk, "kCache", paged ? dims({nblocks, bs, Hk, D}) : dims({B, cap, Hk, D}));
  check_len(vc, nv, "vCache", paged ? dims({nblocks, bs, Hk, Dv}) : dims({B, cap, Hk, Dv}));
  check_len(out, no, "o", dims({B, Tq, Hq, Dv}));
  if (lse.present) {
    if (lse.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected lse to be a Float32Array");
    check_len(lse, nlse, "lse", dims({B, Hq, Tq}));
    t.lse = static_cast<float*>(lse.data);
  }
  if (kn.present != vn.present) throw CodedError("BAD_ARGUMENT", "expected kNew and vNew together");
  const bool append = kn.present;
  if (append) {
    a.new_dtype = parse_dtype(o, "newDtype", kn, "kNew");
    parse_dtype(o, "newDtype", vn, "vNew");
    check_len(kn, nkn, "kNew", dims({B, Tq, Hk, D}));
    check_len(vn, nvn, "vNew", dims({B, Tq, Hk, Dv}));
    a.k_new = kn.data, a.v_new = vn.data;
  }

  const std::string gk = o.Get("gateKind").IsString() ? o.Get("gateKind").As<Napi::String>().Utf8Value() : "none";
  if (gk == "none") t.gate_kind = GateKind::none;
  else if (gk == "elementwise") t.gate_kind = GateKind::elementwise;
  else if (gk == "headwise") t.gate_kind = GateKind::headwise;
  else throw CodedError("BAD_ARGUMENT", "expected gateKind none, elementwise or headwise, got " + gk);
  if (t.gate_kind != GateKind::none) {
    if (!gate.present) throw CodedError("BAD_ARGUMENT", "expected gate with gateKind " + gk);
    t.gate_dtype = parse_dtype(o, "gateDtype", gate, "gate");
    if (t.gate_kind == GateKind::elementwise) check_len(gate, checked({B, Tq, Hq, Dv}, "gate"), "gate", dims({B, Tq, Hq, Dv}));
    else check_len(gate, checked({B, Tq, Hq}, "gate"), "gate", dims({B, Tq, Hq}));
    t.gate = gate.data;
  } else if (gate.present) {
    throw CodedError("BAD_ARGUMENT", "expected gateKind elementwise or headwise with a gate, got none");
  }

  // Lengths: each sequence's tokens after the append fit its capacity (contiguous: the cache's rows; paged:
  // its row of the block table).
  job.seqlens = copy_int32(sl, "cacheSeqlens");
  if (static_cast<int64_t>(job.seqlens.size()) != B)
    throw CodedError("SHAPE_MISMATCH", "expected cacheSeqlens of " + str(B) + " entries (B), got " + str(job.seqlens.size()));
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; b++) {
    const int64_t s = job.seqlens[b], len = s + (append ? Tq : 0);
    if (s < 0) throw CodedError("OUT_OF_RANGE", "expected cacheSeqlens >= 0, got " + str(s) + " at index " + str(b));
    if (len > cap)
      throw CodedError("OUT_OF_RANGE", "expected cacheSeqlens[" + str(b) + "] + Tq <= " + (paged ? "maxBlocks * blockSize = " : "capacity = ") +
                                           str(cap) + ", got " + str(s) + " + " + str(append ? Tq : 0));
    max_len = std::max(max_len, len);
  }
  if (paged) {
    if (!bt.present) throw CodedError("BAD_ARGUMENT", "expected blockTable with a paged cache");
    job.table = copy_int32(bt, "blockTable");
    if (static_cast<int64_t>(job.table.size()) != B * maxb)
      throw CodedError("SHAPE_MISMATCH", "expected blockTable of B * maxBlocks = " + str(B * maxb) + " entries, got " + str(job.table.size()));
    for (int64_t b = 0; b < B; b++) {
      const int64_t len = job.seqlens[b] + (append ? Tq : 0), used = (len + bs - 1) / bs;
      for (int64_t i = 0; i < used; i++) {
        const int64_t blk = job.table[b * maxb + i];
        if (blk < 0 || blk >= nblocks)
          throw CodedError("OUT_OF_RANGE", "expected blockTable[" + str(b) + "][" + str(i) + "] in [0, numBlocks = " + str(nblocks) +
                                               "), got " + str(blk));
      }
    }
    t.block_size = static_cast<int>(bs), t.max_blocks = static_cast<int>(maxb);
    t.block_table = job.table.data();
  } else if (bt.present) {
    throw CodedError("BAD_ARGUMENT", "expected blockTable only with a paged cache");
  }
  // No two new tokens may land on one cache row (two sequences appending into one shared block).
  if (append && paged) {
    std::vector<int64_t> dst;
    dst.reserve(static_cast<size_t>(B * Tq));
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < Tq; j++) dst.push_back(key_row(t, static_cast<int>(b), 0, job.seqlens[b] + j));
    std::sort(dst.begin(), dst.end());
    if (std::adjacent_find(dst.begin(), dst.end()) != dst.end())
      throw CodedError("BAD_ARGUMENT", "expected blockTable to give every appended token its own cache row, got two on one row");
  }

  // Rotary: tables of rotaryDim / 2 float32 columns with a row for every position of the new tokens.
  if (cs.present != sn.present) throw CodedError("BAD_ARGUMENT", "expected cos and sin together");
  if (cs.present) {
    if (!append) throw CodedError("BAD_ARGUMENT", "expected kNew and vNew with rotary (it rotates q and kNew at their positions)");
    const int64_t rot = get_int(o, "rotaryDim"), max_pos = get_int(o, "maxPos");
    if (rot < 2 || rot % 2 != 0 || rot > D) throw CodedError("SHAPE_MISMATCH", "expected an even rotaryDim in [2, D = " + str(D) + "], got " + str(rot));
    if (cs.type != napi_float32_array || sn.type != napi_float32_array) throw CodedError("BAD_DTYPE", "expected cos and sin to be Float32Arrays");
    const int64_t ncs = checked({max_pos, rot / 2}, "cos");
    check_len(cs, ncs, "cos", dims({max_pos, rot / 2}));
    check_len(sn, ncs, "sin", dims({max_pos, rot / 2}));
    if (max_len > max_pos)
      throw CodedError("OUT_OF_RANGE", "expected rotary tables of at least " + str(max_len) + " rows (cacheSeqlens + Tq), got " + str(max_pos));
    a.cos = static_cast<const float*>(cs.data), a.sin = static_cast<const float*>(sn.data);
    a.rot = static_cast<int>(rot);
    a.interleaved = get_bool(o, "interleaved");
  }

  t.causal = get_bool(o, "causal");
  t.no_split = get_bool(o, "noSplit");  // batchInvariant: a sequence's keys never split across threads
  t.scale = static_cast<float>(get_number(o, "scale", 1.0 / std::sqrt(static_cast<double>(D))));
  if (!std::isfinite(t.scale)) throw CodedError("NON_FINITE", "expected a finite scale");
  t.q = q.data, t.k = kc.data, t.v = vc.data, t.o = out.data;
  a.k_cache = kc.data, a.v_cache = vc.data;

  // Memory: o and lse are written while everything else is read; the caches are written while q, kNew, vNew,
  // gate and the tables are read. So none of these may overlap.
  const int64_t qs = dtype_bytes(t.q_dtype), cbs = dtype_bytes(t.kv_dtype), ns = dtype_bytes(a.new_dtype);
  const struct { const char* name; const void* p; int64_t bytes; } reads[] = {
      {"q", q.data, nq * qs}, {"kNew", a.k_new, append ? nkn * ns : 0}, {"vNew", a.v_new, append ? nvn * ns : 0},
      {"gate", t.gate, t.gate ? gate.length * dtype_bytes(t.gate_dtype) : 0}, {"cos", a.cos, cs.present ? cs.length * 4 : 0},
      {"sin", a.sin, sn.present ? sn.length * 4 : 0}, {"cacheSeqlens", sl.data, sl.length * 4},
      {"blockTable", bt.present ? bt.data : nullptr, bt.present ? bt.length * 4 : 0},
  };
  const struct { const char* name; const void* p; int64_t bytes; } writes[] = {
      {"o", t.o, no * qs}, {"lse", t.lse, lse.present ? nlse * 4 : 0}, {"kCache", kc.data, nk * cbs}, {"vCache", vc.data, nv * cbs},
  };
  for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
    for (const auto& r : reads)
      if (overlap(writes[i].p, writes[i].bytes, r.p, r.bytes))
        throw CodedError("BAD_ARGUMENT", std::string("expected ") + writes[i].name + " in memory apart from the inputs, got a view overlapping " + r.name);
    for (size_t j = i + 1; j < sizeof(writes) / sizeof(writes[0]); j++)
      if (overlap(writes[i].p, writes[i].bytes, writes[j].p, writes[j].bytes))
        throw CodedError("BAD_ARGUMENT", std::string("expected ") + writes[i].name + " and " + writes[j].name + " in memory apart, got overlapping views");
  }

  t.cancel = cancel_flag(cancel);
  job.pinned = pin({&q, &kc, &vc, &out, &lse, &gate, &kn, &vn, &cs, &sn, &cancel});
  return job;
}

}  // namespace

void register_kvcache(Napi::Env env, Napi::Object exports) {
  export_op<KVCacheJob, parse>(env, exports, "attentionWithKVCache", "attentionWithKVCacheAsync");
}

}  // namespace sk
