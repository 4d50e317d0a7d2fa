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

/** GFLOP/s of `flops` done in `seconds`. */
export function gflops(flops: number, seconds: number): number {
  return flops / seconds / 1e9;
}

/** GB/s (1e9 bytes, as STREAM) of `bytes` moved in `seconds`. */
export function gbs(bytes: number, seconds: number): number {
  return bytes / seconds / 1e9;
}
