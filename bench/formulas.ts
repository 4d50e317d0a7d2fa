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

// ---- serving: the causal conv update and gated RMSNorm (issue 14, modules) ----

export interface ConvUpdateShape {
  /** Sequences (one token each), their slots scattered through a pool of `slots`. */
  N: number;
  D: number;
  W: number;
  slots: number;
  /** x, y and the pool's dtype (weights float32). */
  dtype: BenchDType;
}

/** x read, y written, the N slots' states read and written (D·(W−1) each), the weights read once. */
export function convUpdateWork(s: ConvUpdateShape): { tokens: number; bytes: number; workingSet: number } {
  const e = DTYPE_BYTES[s.dtype];
  const io = 2 * s.N * s.D * e;
  const state = s.N * s.D * (s.W - 1) * e;
  const w = s.D * s.W * 4 + s.D * 4;
  return { tokens: s.N, bytes: io + 2 * state + w, workingSet: io + state + w };
}

export interface RmsNormShape {
  rows: number;
  H: number;
  /** The gate is given (rmsNormGated). */
  gated: boolean;
  dtype: BenchDType;
}

/** x (and the gate) read, y written, the weight read once. */
export function rmsNormWork(s: RmsNormShape): { tokens: number; bytes: number; workingSet: number } {
  const e = DTYPE_BYTES[s.dtype];
  const bytes = (s.gated ? 3 : 2) * s.rows * s.H * e + s.H * 4;
  return { tokens: s.rows, bytes, workingSet: bytes };
}
