// The work and traffic the benchmark divides by time: every FLOP and byte count of `seqkern bench` lives
// here, once, so the table, the JSON report and test/bench.test.ts use the same numbers.
//
// Conventions (DESIGN.md 6.1, 8):
// - FLOPs count a multiply and an add as two; exp, division and square roots are not counted (they are
//   O(C) or O(K) per token against the O(K V) of the matrix work).
// - Work is per (sequence, v-head): HV heads of V columns each, grouped q/k heads read H of K.
// - Bytes are the tensors an op must move at least once: inputs read, outputs written, the decode step's
//   state read and written. Scratch that stays in cache (a head's K x V state during a prefill, the chunk's
//   C x C matrices) is not counted. Write-allocate traffic is not counted (STREAM's convention, which the
//   copy/triad probes follow too, so the ratios compare like with like).
// - The working set is the distinct bytes an op touches (the decode step's state counts once although it
//   is read and written): the size at which an in-place update is measured. Copy bandwidth is measured on
//   the bytes the op moves (a copy whose source and destination total `bytes`).
// - Softmax has no FLOP count (exp is not a multiply-add): it is credited 2 reads + 1 write of its data,
//   and compared with a triad (2 reads + 1 write) over the same bytes. Attention counts 2·D + 2·Dv FLOPs per
//   unmasked (query, key) pair and each tensor once; its decode step is compared with copy over its bytes.

import { hyperPlan } from '../src/ops/hyper.js';

/** Default chunk length of the chunkwise algorithm. */
export const CHUNK = 64;

/** Bytes per element as the kernels read and write them (float16/bfloat16 are 2, float32 4). */
export const DTYPE_BYTES = { float32: 4, float16: 2, bfloat16: 2, float64: 8 } as const;
export type BenchDType = keyof typeof DTYPE_BYTES;

/**
 * FLOPs of the chunkwise form on one chunk of c tokens and one head (DESIGN.md 6.1):
 * 2·(3c²K + 2c²V + 3cKV) + c³/3, the factor 2 for multiply + add. The c²K products: A = K Kᵀ, Q Kᵀ and
 * W = Tm·diag(beta ⊙ exp(G))·K; the c²V ones: U = Tm·diag(beta)·V and [(Q Kᵀ) ⊙ M]·V'; the cKV ones: W S,
 * (Q) S and the state update Kᵀ V'; c³/3: forming Tm = (I + A)^{-1} by forward substitution. A kernel that
 * rearranges the algebra (seqkern's never forms W) is still credited this count, so algorithms compare.
 */
export function chunkFlopsPerChunk(c: number, K: number, V: number): number {
  return 2 * (3 * c * c * K + 2 * c * c * V + 3 * c * K * V) + (c * c * c) / 3;
}

/**
 * Chunkwise FLOPs of one sequence of `len` tokens, one head: full chunks of C and a last partial chunk
 * counted at its own length (not padded to C).
 */
export function chunkFlops(len: number, K: number, V: number, C = CHUNK): number {
  const full = Math.floor(len / C);
  const rest = len - full * C;
  return full * chunkFlopsPerChunk(C, K, V) + (rest > 0 ? chunkFlopsPerChunk(rest, K, V) : 0);
}

/**
 * Recurrence FLOPs of one sequence of `len` tokens, one head: 6KV per token — Sᵀk (2KV), the rank-one
 * update S + k uᵀ (2KV) and o = Sᵀq (2KV); the decay S·exp(g) (KV multiplies) is folded into the update and
 * not counted.
 */
export function recurrentFlops(len: number, K: number, V: number): number {
  return 6 * K * V * len;
}

export interface DeltaShape {
  /** Batch (prefill) or number of sequences N (decode step). */
  B: number;
  /** Tokens per sequence (1 for the decode step). */
  T: number;
  H: number;
  HV: number;
  K: number;
  V: number;
  dtype: BenchDType;
}

export interface Work {
  /** Tokens processed per call (all sequences). */
  tokens: number;
  /** FLOPs by the chunkwise count (absent where it does not apply: the decode step). */
  chunkFlops?: number;
  /** FLOPs by the recurrence count. */
  recurrentFlops: number;
  /** Bytes moved at least once per call (reads + writes). */
  bytes: number;
  /** Distinct bytes touched per call. */
  workingSet: number;
}

/**
 * Prefill `gatedDeltaRule` with no initial state and no final state: reads q, k [B,T,H,K], v [B,T,HV,V],
 * beta, g [B,T,HV] and writes o [B,T,HV,V], all in `dtype`; every byte once, so bytes = working set.
 */
export function deltaPrefillWork(s: DeltaShape, C = CHUNK): Work {
  const e = DTYPE_BYTES[s.dtype];
  const BT = s.B * s.T;
  const bytes = e * BT * (2 * s.H * s.K + s.HV * s.V + 2 * s.HV + s.HV * s.V);
  return {
    tokens: BT,
    chunkFlops: s.B * s.HV * chunkFlops(s.T, s.K, s.V, C),
    recurrentFlops: s.B * s.HV * recurrentFlops(s.T, s.K, s.V),
    bytes,
    workingSet: bytes,
  };
}

/**
 * Decode step `gatedDeltaRuleStep`, N = s.B sequences of one token: reads q, k [N,H,K], v [N,HV,V], beta, g
 * [N,HV], writes o [N,HV,V] (in `dtype`), and reads and writes the float32 state [N,HV,K,V] in place.
 */
export function deltaStepWork(s: DeltaShape): Work {
  const e = DTYPE_BYTES[s.dtype];
  const N = s.B;
  const state = stateBytes(N, s.HV, s.K, s.V);
  const small = e * N * (2 * s.H * s.K + s.HV * s.V + 2 * s.HV + s.HV * s.V);
  return {
    tokens: N,
    recurrentFlops: N * s.HV * recurrentFlops(1, s.K, s.V),
    bytes: small + 2 * state,
    workingSet: small + state,
  };
}

/** Bytes of a float32 state [N, HV, K, V]. */
export function stateBytes(N: number, HV: number, K: number, V: number): number {
  return 4 * N * HV * K * V;
}

// ---- softmax (DESIGN.md 6.2) ----

export interface SoftmaxShape {
  /** Rows (all leading axes flattened). */
  rows: number;
  /** Row length: the softmax axis. */
  cols: number;
  dtype: BenchDType;
}

export interface SoftmaxWork {
  rows: number;
  /** rows · cols. */
  elements: number;
  /** Bytes of the input (= of the output). */
  dataBytes: number;
  /**
   * Bytes credited per call: 2 reads + 1 write of the data (3 · dataBytes), what the two-pass algorithm moves
   * at least (pass 1 reads x, pass 2 reads x again and writes y) and what a triad a = b + s·c moves over
   * arrays of the same size. The three-pass form is credited the same bytes (it reads x once more), so GB/s
   * of the two algorithms compare as speeds. No FLOPs: exp dominates and is not a multiply-add.
   */
  bytes: number;
  /** Distinct bytes: x and y (softmaxInto into a separate buffer). */
  workingSet: number;
}

export function softmaxWork(s: SoftmaxShape): SoftmaxWork {
  const elements = s.rows * s.cols;
  const dataBytes = DTYPE_BYTES[s.dtype] * elements;
  return { rows: s.rows, elements, dataBytes, bytes: 3 * dataBytes, workingSet: 2 * dataBytes };
}

// ---- attention (DESIGN.md 6.3) ----

export interface AttentionShape {
  B: number;
  /** Queries per sequence. */
  T: number;
  /** Keys per sequence. */
  S: number;
  Hq: number;
  Hk: number;
  D: number;
  Dv: number;
  causal: boolean;
  gate: 'none' | 'elementwise' | 'headwise';
  dtype: BenchDType;
}

/**
 * (query, key) pairs one head of one sequence scores and sums over. Non-causal: T·S. Causal, bottom-right
 * aligned (query i sees keys j <= i + S - T): only the unmasked pairs, T·(S - T) + T(T+1)/2 when S >= T
 * (a decode step, T = 1: all S keys), S(S+1)/2 when S < T (the first T - S queries see no key). At T = S
 * this is T(T+1)/2: the T²/2 of the 4·T²·D·H/2 plus half the diagonal (+1/T, 0.02% at T = 4096).
 */
export function attentionPairs(T: number, S: number, causal: boolean): number {
  if (!causal) return T * S;
  if (S >= T) return T * (S - T) + (T * (T + 1)) / 2;
  return (S * (S + 1)) / 2;
}

export interface AttentionWork {
  /** Queries per call, B·T. */
  tokens: number;
  /** Unmasked (query, key) pairs over all sequences and q-heads. */
  pairs: number;
  /**
   * FLOPs: per pair 2·D for the score q·k and 2·Dv for p·v (multiply + add), over B·Hq heads:
   * pairs·(2D + 2Dv). With D = Dv: 4·D per pair, so 4·T·S·D·H non-causal and 4·D·H·T(T+1)/2 causal at T = S.
   * The softmax's exp, the online rescaling and the gate's sigmoid are not counted.
   */
  flops: number;
  /**
   * Bytes moved at least once: q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] read, o [B,T,Hq,Dv] written, and the
   * gate read ([B,T,Hq,Dv] elementwise, [B,T,Hq] headwise). A decode step (T = 1) is K and V read once.
   */
  bytes: number;
  workingSet: number;
}

export function attentionWork(s: AttentionShape): AttentionWork {
  const e = DTYPE_BYTES[s.dtype];
  const pairsPerHead = attentionPairs(s.T, s.S, s.causal);
  const pairs = s.B * s.Hq * pairsPerHead;
  const BT = s.B * s.T;
  const gate = s.gate === 'elementwise' ? BT * s.Hq * s.Dv : s.gate === 'headwise' ? BT * s.Hq : 0;
  const bytes = e * (BT * s.Hq * s.D + s.B * s.S * s.Hk * (s.D + s.Dv) + BT * s.Hq * s.Dv + gate);
  return { tokens: BT, pairs, flops: pairs * (2 * s.D + 2 * s.Dv), bytes, workingSet: bytes };
}

/** GFLOP/s of `flops` done in `seconds`. */
export function gflops(flops: number, seconds: number): number {
  return flops / seconds / 1e9;
}

/** GB/s (1e9 bytes, as STREAM) of `bytes` moved in `seconds`. */
export function gbs(bytes: number, seconds: number): number {
  return bytes / seconds / 1e9;
}

// ---- HyperAttention (DESIGN.md 6.4) ----

export interface HyperShape {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hk: number;
  D: number;
  Dv: number;
  causal: boolean;
  dtype: BenchDType;
}

export interface HyperWork {
  /** Queries per call, B·T. */
  tokens: number;
  /**
   * (query, key) pairs HyperAttention computes over all sequences and q-heads, by its plan with the
   * defaults (src/ops/hyper.ts hyperPlan: lshBits 7, blockSize 256, sampleSize 256, minSeqLen 4096): the
   * exact causal leaves' unmasked pairs, each problem's block pairs (query block b × key block b), and its
   * sampled pairs, counted at their expectation nq_b · m · (1 − |key block b| / nk) (the samples that fall in a
   * query's own block are left out). A problem below minSeqLen counts nq·nk.
   */
  pairs: number;
  /** FLOPs = pairs·(2D + 2Dv): the attention calls' work, as attentionWork counts it. */
  flops: number;
  /** Pairs and FLOPs of exact attention on the same input (attentionWork). */
  exactPairs: number;
  exactFlops: number;
  /** Bytes moved at least once: q, k, v read, o written (as attentionWork). */
  bytes: number;
  workingSet: number;
}

export function hyperWork(s: HyperShape, plan = hyperPlan(s.T, s.S, s.causal)): HyperWork {
  const exact = attentionWork({ ...s, gate: 'none' });
  let perHead = 0;
  if (plan.direct) perHead = attentionPairs(s.T, s.S, s.causal);
  for (let i = 0; i + 1 < plan.leaves.length; i++) {
    const n = plan.leaves[i + 1] - plan.leaves[i];
    perHead += attentionPairs(n, n, true);
  }
  for (const p of plan.problems) {
    for (let b = 0; b < p.nb; b++) {
      const nq = Math.max(0, Math.min(p.qbs, p.nq - b * p.qbs));
      const nk = Math.min(p.bs, p.nk - b * p.bs);
      perHead += nq * nk + (p.m > 0 ? nq * p.m * (1 - nk / p.nk) : 0);
    }
  }
  const pairs = s.B * s.Hq * perHead;
  return {
    tokens: s.B * s.T, pairs, flops: pairs * (2 * s.D + 2 * s.Dv), exactPairs: exact.pairs, exactFlops: exact.flops,
    bytes: exact.bytes, workingSet: exact.workingSet,
  };
}

// ---- serving: KV-cache attention and rotary (issue 14) ----

export interface KVCacheShape {
  /** Tokens already in each sequence's cache (B = lens.length). */
  lens: readonly number[];
  /** New tokens per sequence (appended, then attended: a decode is Tq = 1). */
  Tq: number;
  Hq: number;
  Hk: number;
  D: number;
  Dv: number;
  /** 0: contiguous caches [B, capacity, Hk, D]; else paged with this block size. */
  paged: number;
  /** The caches' dtype (q, kNew, vNew and o are float32). */
  dtype: BenchDType;
}

export interface KVCacheWork {
  /** Queries per call, B·Tq. */
  tokens: number;
  /** Keys attended over all sequences: Σ (lens[b] + Tq). */
  keys: number;
  /** (query, key) pairs over all q-heads, causal among the new tokens, and FLOPs = pairs·(2D + 2Dv). */
  pairs: number;
  flops: number;
  /**
   * Bytes of the keys actually attended, K and V read once each (Σ (lens[b] + Tq)·Hk·(D + Dv)·cache bytes):
   * the figure the "GB/s over the bytes actually attended" divides by, never B × capacity. q, kNew,
   * vNew read and o written are added (0.1% of a decode).
   */
  bytes: number;
  /** The attended K and V alone. */
  cacheBytes: number;
  workingSet: number;
}

export function kvcacheWork(s: KVCacheShape): KVCacheWork {
  const e = DTYPE_BYTES[s.dtype];
  const B = s.lens.length;
  let keys = 0;
  let pairs = 0;
  for (const L of s.lens) {
    keys += L + s.Tq;
    pairs += s.Hq * attentionPairs(s.Tq, L + s.Tq, true);
  }
  const cacheBytes = e * keys * s.Hk * (s.D + s.Dv);
  const small = 4 * B * s.Tq * (s.Hq * s.D + s.Hk * (s.D + s.Dv) + s.Hq * s.Dv);
  const bytes = cacheBytes + small;
  return { tokens: B * s.Tq, keys, pairs, flops: pairs * (2 * s.D + 2 * s.Dv), bytes, cacheBytes, workingSet: bytes };
}

export interface RotaryShape {
  B: number;
  T: number;
  H: number;
  D: number;
  rotaryDim: number;
  interleaved: boolean;
  dtype: BenchDType;
}

/** x read and the output written once (B·T·H·D each), and the tables' rows of the T positions (cos and sin). */
export function rotaryWork(s: RotaryShape): { tokens: number; bytes: number; workingSet: number } {
  const e = DTYPE_BYTES[s.dtype];
  const x = s.B * s.T * s.H * s.D * e;
  const tables = 2 * s.T * (s.rotaryDim / 2) * 4;
  return { tokens: s.B * s.T, bytes: 2 * x + tables, workingSet: 2 * x + tables };
}

// ---- NaLaFormer (DESIGN.md 6.5, issue 16) ----

export interface NalaShape {
  B: number;
  /** Queries = keys per sequence (the suite's shapes; S = T). */
  T: number;
  H: number;
  Hk: number;
  K: number;
  V: number;
  causal: boolean;
  dtype: BenchDType;
}

export interface NalaWork {
  /** Queries per call, B·T. */
  tokens: number;
  /**
   * FLOPs of the matrix work, multiply + add counted as two, with features of 2K per row (the feature maps'
   * powers, the rotary and the divisions are not counted). Non-causal, the two passes: per key and kv head
   * 2·2K·V (Σ φk vᵀ), per query and head 2·2K·V (φq against it) + 2·2K (the denominator). Causal, chunkwise
   * (C = 64, the last chunk at its length c), per chunk and head: 2·2K·c(c+1)/2 (Qr Krᵀ, lower triangle),
   * 2·c·2K·V (Qr against the state), 2·V·c(c+1)/2 (the masked products times V), 2·2K·c (denominators); per
   * chunk and kv head 2·2K·c·V (the state update).
   */
  flops: number;
  /** q, k, v read and o written once. */
  bytes: number;
  workingSet: number;
}

export function nalaWork(s: NalaShape, C = CHUNK): NalaWork {
  const e = DTYPE_BYTES[s.dtype];
  const K2 = 2 * s.K;
  let perHead = 0;
  let perKvHead = 0;
  if (!s.causal) {
    perKvHead = s.T * 2 * K2 * s.V;
    perHead = s.T * (2 * K2 * s.V + 2 * K2);
  } else {
    for (let t0 = 0; t0 < s.T; t0 += C) {
      const c = Math.min(C, s.T - t0);
      const tri = (c * (c + 1)) / 2;
      perHead += 2 * K2 * tri + 2 * c * K2 * s.V + 2 * s.V * tri + 2 * K2 * c;
      perKvHead += 2 * K2 * c * s.V;
    }
  }
  const flops = s.B * (s.H * perHead + s.Hk * perKvHead);
  const BT = s.B * s.T;
  const bytes = e * BT * (s.H * s.K + s.Hk * (s.K + s.V) + s.H * s.V);
  return { tokens: BT, flops, bytes, workingSet: bytes };
}

// ---- serving: linear, conv update, gated norm, decode layers (issue 14 part 8) ----

export interface LinearShape {
  /** Rows of x [M, K] (float32); 1..8 run the GEMV, more the GEMM. */
  M: number;
  /** in features. */
  K: number;
  /** out features. */
  N: number;
  /** The weight's dtype (x and y are float32). */
  dtype: BenchDType;
}

export interface LinearWork {
  /** Rows per call (a decode: one token per row). */
  tokens: number;
  /** 2·M·K·N (multiply + add). */
  flops: number;
  /** The weight [N, K] in its dtype: what a GEMV streams once, and the size its read limit is measured at. */
  weightBytes: number;
  /** weightBytes + x [M, K] read + y [M, N] written (float32). */
  bytes: number;
  workingSet: number;
}

export function linearWork(s: LinearShape): LinearWork {
  const weightBytes = DTYPE_BYTES[s.dtype] * s.N * s.K;
  const bytes = weightBytes + 4 * s.M * (s.K + s.N);
  return { tokens: s.M, flops: 2 * s.M * s.K * s.N, weightBytes, bytes, workingSet: bytes };
}

export interface ConvUpdateShape {
  /** Sequences, one token each: x [N, D]. */
  N: number;
  /** Channels. */
  D: number;
  /** Kernel width (the state holds W - 1 columns per channel). */
  W: number;
  /** Slots of the conv-state pool [slots, D, W - 1] (the N sequences at scattered slots). */
  slots: number;
  /** x, y and the pool's dtype (weight [D, W] float32; no bias, as Qwen3-Next's). */
  dtype: BenchDType;
}

/**
 * causalConv1dUpdate: x [N, D] read, y [N, D] written, each sequence's window [D, W - 1] read and written in
 * place, weight [D, W] (float32) read. 2·W FLOPs per output (the silu not counted).
 */
export function convUpdateWork(s: ConvUpdateShape): { tokens: number; flops: number; bytes: number; workingSet: number } {
  const e = DTYPE_BYTES[s.dtype];
  const state = e * s.N * s.D * (s.W - 1);
  const params = 4 * s.D * s.W;
  const io = 2 * e * s.N * s.D;
  return { tokens: s.N, flops: 2 * s.W * s.N * s.D, bytes: io + 2 * state + params, workingSet: io + state + params };
}

export interface RmsNormGatedShape {
  /** Rows normalised (tokens × heads). */
  rows: number;
  /** Row length (the group: Qwen3-Next's value head dim 128); weight [H] shared by all rows. */
  H: number;
  /** x, gate and y's dtype (weight float32). */
  dtype: BenchDType;
}

/** rmsNormGated: x and gate read, y written (rows·H each), the weight [H] float32 once. */
export function rmsNormGatedWork(s: RmsNormGatedShape): { tokens: number; bytes: number; workingSet: number } {
  const bytes = 3 * DTYPE_BYTES[s.dtype] * s.rows * s.H + 4 * s.H;
  return { tokens: s.rows, bytes, workingSet: bytes };
}

/**
 * A Qwen3-Next Gated DeltaNet decode layer (bench/layers.ts gdnLayer), B sequences of one token: in-projection
 * hidden -> q, k (H·K each), v and z (HV·V each), b and a (HV each); conv update (width W) over the q, k, v
 * channels on a conv-state pool; the gated delta step (in-kernel gating) on a float32 state pool; rmsNormGated
 * of o with z (groups of V); out-projection HV·V -> hidden. The pools have `slots` slots, B of them live.
 */
export interface GdnLayerShape {
  B: number;
  hidden: number;
  H: number;
  HV: number;
  K: number;
  V: number;
  W: number;
  slots: number;
  /** The projections' weight dtype (activations, pools and norms float32). */
  dtype: BenchDType;
}

export interface LayerWork {
  /** Tokens per call: B. */
  tokens: number;
  /** Projections 2·B·(weights' elements), + the mixer's (the step's 6KV per v-head, or attention's pairs). */
  flops: number;
  /** The projections' weights (their dtype) read once. */
  weightBytes: number;
  /** The recurrent/cache state moved: pools read and written (GDN), or the K and V attended (attention). */
  stateBytes: number;
  /** weightBytes + stateBytes + the activations each op reads and writes (float32). */
  bytes: number;
  workingSet: number;
}

/** The in-projection's out features of a GDN layer: q, k, v, z, b, a. */
export function gdnInFeatures(s: GdnLayerShape): { qk: number; v: number; conv: number; total: number } {
  const qk = s.H * s.K;
  const v = s.HV * s.V;
  return { qk, v, conv: 2 * qk + v, total: 2 * qk + 2 * v + 2 * s.HV };
}

export function gdnLayerWork(s: GdnLayerShape): LayerWork {
  const e = DTYPE_BYTES[s.dtype];
  const f = gdnInFeatures(s);
  const vOut = s.HV * s.V;
  const weights = s.hidden * f.total + vOut * s.hidden;
  const weightBytes = e * weights;
  const delta = 4 * s.B * s.HV * s.K * s.V;
  const conv = 4 * s.B * f.conv * (s.W - 1);
  const stateBytes = 2 * (delta + conv);
  // Activations, float32: x (read by each of the 4 in-projection calls) and their outputs; the conv's x, y and the split copy of q, k, v (in
  // and out); the step's q, k, v, b, a read and o written; the norm's o, z read and y written; the
  // out-projection's y read and output written; conv weight [D, W] (no bias), aLog, dtBias, norm weight.
  const act = 4 * s.B * (4 * s.hidden + f.total + 2 * f.conv + 2 * f.conv + (f.conv + 2 * s.HV + vOut) + 3 * vOut + vOut + s.hidden);
  const params = 4 * (f.conv * s.W + 2 * s.HV + s.V);
  const bytes = weightBytes + stateBytes + act + params;
  const flops = 2 * s.B * weights + s.B * s.HV * recurrentFlops(1, s.K, s.V) + 2 * s.W * s.B * f.conv;
  return { tokens: s.B, flops, weightBytes, stateBytes, bytes, workingSet: weightBytes + stateBytes / 2 + act + params };
}

/**
 * A Qwen3-Next gated-attention decode layer (bench/layers.ts attnLayer), B sequences of one token over caches
 * of `lens` tokens: q, gate (Hq·D each), k, v (Hk·D each) projections; q/k RMSNorm per head; partial rotary
 * (rotaryDim of D) and the KV-cache decode with the elementwise gate in one attentionWithKVCache call (kNew,
 * vNew appended); out-projection Hq·D -> hidden. Caches float32, contiguous.
 */
export interface AttnLayerShape {
  lens: readonly number[];
  hidden: number;
  Hq: number;
  Hk: number;
  D: number;
  rotaryDim: number;
  /** The projections' weight dtype. */
  dtype: BenchDType;
}

export function attnLayerWork(s: AttnLayerShape): LayerWork {
  const e = DTYPE_BYTES[s.dtype];
  const B = s.lens.length;
  const qOut = s.Hq * s.D;
  const kvOut = s.Hk * s.D;
  const weights = s.hidden * (2 * qOut + 2 * kvOut) + qOut * s.hidden;
  const weightBytes = e * weights;
  const kv = kvcacheWork({ lens: s.lens, Tq: 1, Hq: s.Hq, Hk: s.Hk, D: s.D, Dv: s.D, paged: 0, dtype: 'float32' });
  // Activations, float32: x (read by each of the 4 projections) and their outputs; the norms' q, k in and out; the gate read by the
  // attention (q, kNew, vNew, o are in kvcacheWork's small bytes); its o read by the out-projection and the
  // output written; the norm weights and the rotary tables' rows at B positions.
  const act = 4 * B * (4 * s.hidden + 2 * qOut + 2 * kvOut + 2 * (qOut + kvOut) + qOut + qOut + s.hidden);
  const params = 4 * (2 * s.D + B * s.rotaryDim);
  const bytes = weightBytes + kv.bytes + act + params;
  const flops = 2 * B * weights + kv.flops;
  return { tokens: B, flops, weightBytes, stateBytes: kv.cacheBytes, bytes, workingSet: bytes };
}
