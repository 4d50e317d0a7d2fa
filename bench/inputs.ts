// Seeded benchmark inputs for softmax and attention, fast enough for a 1 GiB batch: a 32-bit LCG fills a
// Float32Array in place (about a nanosecond an element: a quarter of a second for 268M floats), where randn's
// Box–Muller through a Float64Array would take tens of seconds and 3 GiB. The delta ops keep randn/rand
// (bench/registry.ts), as before. bench/peers/run.mjs imports these same functions (from dist/) so the peers
// run on exactly the bytes seqkern's bench does.
import { tensor, type Tensor } from '../src/index.js';
import type { AttentionShape, BenchDType, SoftmaxShape } from './formulas.js';
import type { NalaShape } from './formulas.js';

/**
 * Fills `a` with uniform values in [lo, hi): x_{n+1} = 1664525·x_n + 1013904223 mod 2^32 (Numerical Recipes),
 * value lo + (hi - lo)·x/2^32. The period (2^32) exceeds any array filled here, and only the high bits reach
 * a float32's mantissa. The seed is scrambled first so seeds 1, 2, 3 do not give shifted copies.
 */
export function fillUniform(a: Float32Array, seed: number, lo: number, hi: number): Float32Array {
  let s = Math.imul((seed >>> 0) ^ 0x5bd1e995, 0x9e3779b1) >>> 0;
  s = (s ^ (s >>> 16)) >>> 0;
  const scale = (hi - lo) / 4294967296;
  const n = a.length;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = lo + scale * s;
  }
  return a;
}

/** A tensor of `dtype` filled by fillUniform (float16/bfloat16: generated as float32, then rounded). */
export function uniformTensor(shape: readonly number[], dtype: BenchDType, seed: number, lo: number, hi: number): Tensor {
  let n = 1;
  for (const d of shape) n *= d;
  const f = fillUniform(new Float32Array(n), seed, lo, hi);
  return tensor(f, shape, dtype);
}

/** Softmax logits: uniform in [-8, 8), so e^x spans seven decades within a row (never all equal, never zeros). */
export const SOFTMAX_RANGE = [-8, 8] as const;

/** x [rows, cols] of seed `seed`. */
export function softmaxInput(s: SoftmaxShape, seed: number): Tensor {
  return uniformTensor([s.rows, s.cols], s.dtype, seed, SOFTMAX_RANGE[0], SOFTMAX_RANGE[1]);
}

/** q, k, v uniform in [-√3, √3) (unit variance, so scores q·k/√D have unit variance); gate logits in [-3, 3). */
export const ATTENTION_RANGE = Math.sqrt(3);
export const GATE_RANGE = 3;

/** q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv], seeds seed, seed+1, seed+2. */
export function attentionInputs(s: AttentionShape, seed: number): { q: Tensor; k: Tensor; v: Tensor } {
  const r = ATTENTION_RANGE;
  return {
    q: uniformTensor([s.B, s.T, s.Hq, s.D], s.dtype, seed, -r, r),
    k: uniformTensor([s.B, s.S, s.Hk, s.D], s.dtype, seed + 1, -r, r),
    v: uniformTensor([s.B, s.S, s.Hk, s.Dv], s.dtype, seed + 2, -r, r),
  };
}

/** The gate logits of `s.gate` (seed + 3): [B,T,Hq,Dv] elementwise, [B,T,Hq] headwise; undefined for 'none'. */
export function attentionGate(s: AttentionShape, seed: number): Tensor | undefined {
  if (s.gate === 'none') return undefined;
  const shape = s.gate === 'elementwise' ? [s.B, s.T, s.Hq, s.Dv] : [s.B, s.T, s.Hq];
  return uniformTensor(shape, s.dtype, seed + 3, -GATE_RANGE, GATE_RANGE);
}

/** Standard normals from fillUniform's LCG by Box–Muller (pairs of uniforms in (0, 1]), times `std`. */
export function fillNormal(a: Float32Array, seed: number, std = 1): Float32Array {
  const u = fillUniform(new Float32Array(2 * Math.ceil(a.length / 2)), seed, 0, 1);
  for (let i = 0; i + 1 < u.length; i += 2) {
    const r = std * Math.sqrt(-2 * Math.log(1 - u[i]));
    const t = 2 * Math.PI * u[i + 1];
    a[i] = r * Math.cos(t);
    if (i + 1 < a.length) a[i + 1] = r * Math.sin(t);
  }
  return a;
}

/** HyperAttention's bench inputs: Gaussian, or keys in tight clusters with queries near them. */
export type HyperInputKind = 'gaussian' | 'clustered';

/** Keys per cluster of the clustered inputs: a quarter of HyperAttention's default block (256 keys). */
export const HYPER_CLUSTER_KEYS = 64;
/** Spread of a cluster's keys around its centre (centres are standard normal), and of a query around its key. */
export const HYPER_CLUSTER_SPREAD = 0.02;
export const HYPER_QUERY_SPREAD = 0.01;

/**
 * q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] float32 (then converted to `dtype`). gaussian: all three standard
 * normal (seeds seed, seed+1, seed+2). clustered: per batch row and kv head, max(1, round(S / 64)) centres
 * drawn standard normal; each key is a centre chosen uniformly plus HYPER_CLUSTER_SPREAD·N(0, I) (tight: the
 * angle to its centre is ~0.02 rad, so the angular LSH keeps a cluster in one bucket but for a few percent of
 * its keys); each query is a key chosen uniformly (of its kv head) plus HYPER_QUERY_SPREAD·N(0, I); v standard
 * normal. Attention is then concentrated on the query's cluster (64 keys, a quarter of a block).
 */
export function hyperInputs(
  s: { B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number; dtype: BenchDType },
  kind: HyperInputKind, seed: number,
): { q: Tensor; k: Tensor; v: Tensor } {
  const { B, T, S, Hq, Hk, D, Dv } = s;
  const v = tensor(fillNormal(new Float32Array(B * S * Hk * Dv), seed + 2), [B, S, Hk, Dv], s.dtype);
  if (kind === 'gaussian') {
    return {
      q: tensor(fillNormal(new Float32Array(B * T * Hq * D), seed), [B, T, Hq, D], s.dtype),
      k: tensor(fillNormal(new Float32Array(B * S * Hk * D), seed + 1), [B, S, Hk, D], s.dtype),
      v,
    };
  }
  const C = Math.max(1, Math.round(S / HYPER_CLUSTER_KEYS));
  const centres = fillNormal(new Float32Array(B * Hk * C * D), seed + 3);
  const pick = fillUniform(new Float32Array(B * S * Hk + B * T * Hq), seed + 4, 0, 1);
  const k = fillNormal(new Float32Array(B * S * Hk * D), seed + 1, HYPER_CLUSTER_SPREAD);
  const q = fillNormal(new Float32Array(B * T * Hq * D), seed, HYPER_QUERY_SPREAD);
  let p = 0;
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < S; j++) {
      for (let h = 0; h < Hk; h++) {
        const c = Math.min(C - 1, Math.floor(pick[p++] * C));
        const ko = ((b * S + j) * Hk + h) * D, co = ((b * Hk + h) * C + c) * D;
        for (let d = 0; d < D; d++) k[ko + d] += centres[co + d];
      }
    }
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < Hq; h++) {
        const j = Math.min(S - 1, Math.floor(pick[p++] * S));
        const qo = ((b * T + t) * Hq + h) * D, ko = ((b * S + j) * Hk + Math.floor(h / (Hq / Hk))) * D;
        if (S > 0) for (let d = 0; d < D; d++) q[qo + d] += k[ko + d];
      }
    }
  }
  return { q: tensor(q, [B, T, Hq, D], s.dtype), k: tensor(k, [B, S, Hk, D], s.dtype), v };
}

/** NaLaFormer's q, k, v: uniform in [-1, 1) (seeds seed..seed+2), q [B,T,H,K], k [B,T,Hk,K], v [B,T,Hk,V]. */
export function nalaInputs(s: NalaShape, seed: number): { q: Tensor; k: Tensor; v: Tensor } {
  return {
    q: uniformTensor([s.B, s.T, s.H, s.K], s.dtype, seed, -1, 1),
    k: uniformTensor([s.B, s.T, s.Hk, s.K], s.dtype, seed + 1, -1, 1),
    v: uniformTensor([s.B, s.T, s.Hk, s.V], s.dtype, seed + 2, -1, 1),
  };
}
