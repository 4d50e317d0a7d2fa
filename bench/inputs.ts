// Seeded benchmark inputs for softmax and attention, fast enough for a 1 GiB batch: a 32-bit LCG fills a
// Float32Array in place (about a nanosecond an element: a quarter of a second for 268M floats), where randn's
// Box–Muller through a Float64Array would take tens of seconds and 3 GiB. The delta ops keep randn/rand
// (bench/registry.ts), as before. bench/peers/run.mjs imports these same functions (from dist/) so the peers
// run on exactly the bytes seqkern's bench does.
import { tensor, type Tensor } from '../src/index.js';
import type { AttentionShape, BenchDType, SoftmaxShape } from './formulas.js';

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
