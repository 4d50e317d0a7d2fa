// Shared pieces of the native-vs-reference tests: seeded inputs of the delta family, slicing and
// concatenation that keep the dtype (raw bits for float16/bfloat16), and the relative Frobenius check of
// DESIGN.md 7 (NaN anywhere fails; the message carries the case and its seed).
import { expect } from 'vitest';
import { numel, randn, rand, rng, SeqkernError, Tensor, tensor, type DType, type TensorData } from '../src/index.js';

/** Relative Frobenius error |a - b| / |b| (absolute when |b| = 0); NaN when a or b holds a NaN. */
export function relErr(a: Tensor | Float64Array, b: Tensor | Float64Array): number {
  const x = a instanceof Tensor ? a.toFloat64() : a;
  const y = b instanceof Tensor ? b.toFloat64() : b;
  if (x.length !== y.length) throw new Error(`relErr: lengths differ (${x.length} vs ${y.length})`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  if (Number.isNaN(num) || Number.isNaN(den)) return NaN;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Index of the first non-finite element, or -1 (every element is looked at). */
export function firstNonFinite(t: Tensor | Float64Array): number {
  const x = t instanceof Tensor ? t.toFloat64() : t;
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
  return -1;
}

/**
 * Checks `got` against `want`: same shape, every element finite (outputs are NaN-poisoned before the call,
 * so an element the kernel forgot shows here), relative Frobenius error <= tol. `what` names the case and
 * its seed, and is printed on failure.
 */
export function expectClose(got: Tensor, want: Tensor, tol: number, what: string): number {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  const bad = firstNonFinite(got);
  expect(bad, `${what}: non-finite element at flat index ${bad} (value ${bad >= 0 ? got.toFloat64()[bad] : ''})`).toBe(-1);
  const e = relErr(got, want);
  expect(e, `${what}: relative Frobenius error ${e.toExponential(3)} > ${tol}`).toBeLessThanOrEqual(tol);
  return e;
}

/** Byte copy of a tensor's data (to check later that nothing wrote to it). */
export function snapshot(t: Tensor | { data: TensorData }): Uint8Array {
  const d = t.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
}

export function sameBytes(t: Tensor | { data: TensorData }, snap: Uint8Array): boolean {
  const d = t.data;
  const now = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  if (now.length !== snap.length) return false;
  for (let i = 0; i < now.length; i++) if (now[i] !== snap[i]) return false;
  return true;
}

function storage(dtype: DType, n: number): TensorData {
  return dtype === 'float32' ? new Float32Array(n) : dtype === 'float64' ? new Float64Array(n) : new Uint16Array(n);
}

/** Copy of the hyper-rectangle ranges[d] = [start, end) of x (all of a dim when undefined), same dtype, same bits. */
export function slice(x: Tensor, ranges: ([number, number] | undefined)[]): Tensor {
  const shape = x.shape;
  const r = shape.map((d, i) => ranges[i] ?? [0, d]);
  const outShape = r.map(([a, b]) => b - a);
  const out = storage(x.dtype, numel(outShape));
  const src = x.data;
  let w = 0;
  const rec = (dim: number, off: number): void => {
    if (dim === shape.length) {
      out[w++] = src[off];
      return;
    }
    for (let i = r[dim][0]; i < r[dim][1]; i++) rec(dim + 1, off * shape[dim] + i);
  };
  // Copy whole innermost rows at a time when the last dim is taken whole (the common case).
  if (r[shape.length - 1][0] === 0 && r[shape.length - 1][1] === shape[shape.length - 1] && shape.length > 1) {
    const inner = shape[shape.length - 1];
    const rows = (dim: number, off: number): void => {
      if (dim === shape.length - 1) {
        (out as Float32Array).set((src as Float32Array).subarray(off * inner, off * inner + inner), w);
        w += inner;
        return;
      }
      for (let i = r[dim][0]; i < r[dim][1]; i++) rows(dim + 1, off * shape[dim] + i);
    };
    rows(0, 0);
  } else {
    rec(0, 0);
  }
  return new Tensor(out, outShape, x.dtype);
}

/** Same data, another shape (no copy). */
export const reshape = (x: Tensor, shape: readonly number[]): Tensor => new Tensor(x.data, shape, x.dtype);

/** Concatenation along `axis`, same dtype. */
export function cat(parts: Tensor[], axis: number): Tensor {
  const p0 = parts[0];
  const outer = numel(p0.shape.slice(0, axis));
  const inner = numel(p0.shape.slice(axis + 1));
  const total = parts.reduce((s, p) => s + p.shape[axis], 0);
  const shape = [...p0.shape];
  shape[axis] = total;
  const out = storage(p0.dtype, numel(shape));
  for (let o = 0; o < outer; o++) {
    let a0 = 0;
    for (const p of parts) {
      const n = p.shape[axis] * inner;
      (out as Float32Array).set((p.data as Float32Array).subarray(o * n, (o + 1) * n), (o * total + a0) * inner);
      a0 += p.shape[axis];
    }
  }
  return new Tensor(out, shape, p0.dtype);
}

/** x / |x| over the last axis (so a delta rule without qkL2Norm stays stable), converted to `dtype`. */
export function unitRows(x: Tensor, dtype: DType = x.dtype): Tensor {
  const d = x.toFloat64();
  const n = x.shape[x.shape.length - 1];
  for (let off = 0; off < d.length; off += n) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += d[off + i] ** 2;
    const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
    for (let i = 0; i < n; i++) d[off + i] *= inv;
  }
  return tensor(d, x.shape, dtype);
}

/** Values of `x` with a fraction `frac` of its elements set to `value` (chosen by `seed`), same dtype. */
export function sprinkle(x: Tensor, value: number, frac: number, seed: number): Tensor {
  const d = x.toFloat64();
  const next = rng(seed);
  for (let i = 0; i < d.length; i++) if (next() < frac) d[i] = value;
  return tensor(d, x.shape, x.dtype);
}

export type Variant = 'gated' | 'plain' | 'decay' | 'negeig' | 'kla' | 'l2norm' | 'gated-extreme';

export interface DeltaCase {
  B: number;
  T: number;
  H: number;
  HV: number;
  K: number;
  V: number;
  seed: number;
  variant?: Variant;
  dtype?: DType;
  initial?: boolean;
  /** Packed sequence lengths (then B = 1, T = their sum). */
  lens?: number[];
}

/** "B=2,T=65,H=3,HV=6,K=48,V=24" for test ids and messages. */
export const shapeId = (c: Pick<DeltaCase, 'B' | 'T' | 'H' | 'HV' | 'K' | 'V'>): string =>
  `B=${c.B},T=${c.T},H=${c.H},HV=${c.HV},K=${c.K},V=${c.V}`;

/**
 * Seeded inputs of one case. Keys are unit rows (as fla's tests normalise them) except for the variants
 * that normalise in the kernel (l2norm, kla), whose keys are raw normals; beta is in [0, 1] (negeig: [0, 2]);
 * g in [-1, 0] (gated-extreme: [-20, 0] with exact zeros); decay in [-1, 1] with exact 0 and -1 values.
 */
export function deltaInputs(c: DeltaCase) {
  const { B, T, H, HV, K, V, seed } = c;
  const variant = c.variant ?? 'gated';
  const dtype = c.dtype ?? 'float32';
  const q = randn([B, T, H, K], { seed: seed + 1, dtype });
  const rawK = randn([B, T, H, K], { seed: seed + 2 });
  const k = variant === 'l2norm' || variant === 'kla' ? tensor(rawK.toFloat64().map((x) => 2 * x), rawK.shape, dtype) : unitRows(rawK, dtype);
  const v = randn([B, T, HV, V], { seed: seed + 3, dtype });
  const gates: { beta?: Tensor; eta?: Tensor; g?: Tensor; decay?: Tensor } = {};
  if (variant === 'kla') gates.eta = rand([B, T, HV], { seed: seed + 4, low: 0, high: 1.5 });
  else gates.beta = rand([B, T, HV], { seed: seed + 4, low: 0, high: variant === 'negeig' ? 2 : 1 });
  if (variant === 'gated' || variant === 'l2norm' || variant === 'kla') {
    gates.g = rand([B, T, HV], { seed: seed + 5, low: -1, high: 0 });
  } else if (variant === 'gated-extreme') {
    gates.g = sprinkle(rand([B, T, HV], { seed: seed + 5, low: -20, high: 0 }), 0, 0.3, seed + 7);
  } else if (variant === 'decay') {
    const d = sprinkle(sprinkle(rand([B, T, HV], { seed: seed + 5, low: -1, high: 1 }), 0, 0.05, seed + 7), -1, 0.1, seed + 8);
    gates.decay = sprinkle(d, 1, 0.1, seed + 9);
  }
  const N = c.lens ? c.lens.length : B;
  const initialState = c.initial ? randn([N, HV, K, V], { seed: seed + 6, std: 0.5 }) : undefined;
  const qkL2Norm = variant === 'l2norm' || variant === 'kla' ? true : undefined;
  return { q, k, v, ...gates, initialState, qkL2Norm };
}

/** cuSeqlens of packed lengths. */
export function offsets(lens: number[]): Int32Array {
  const cu = new Int32Array(lens.length + 1);
  lens.forEach((l, i) => (cu[i + 1] = cu[i] + l));
  return cu;
}

/** Tokens [a, b) of each [B, T, ...] input (the T axis), for split-and-carry and per-sequence runs. */
export function tokens<T extends Record<string, unknown>>(x: T, a: number, b: number): T {
  const out: Record<string, unknown> = {};
  for (const [key, val] of Object.entries(x)) {
    if (val instanceof Tensor && key !== 'initialState') out[key] = slice(val, [undefined, [a, b]]);
    else out[key] = val;
  }
  return out as T;
}

/** Token t of each [B, T, ...] input as a [B, ...] decode-step input. */
export function stepInputs<T extends Record<string, unknown>>(x: T, t: number): T {
  const out: Record<string, unknown> = {};
  for (const [key, val] of Object.entries(x)) {
    if (val instanceof Tensor && key !== 'initialState') {
      const s = slice(val, [undefined, [t, t + 1]]);
      out[key] = reshape(s, [s.shape[0], ...s.shape.slice(2)]);
    } else out[key] = val;
  }
  return out as T;
}

/** Asserts `f` throws a SeqkernError with `code` whose message names `arg`. Returns the error. */
export function expectSeqkernError(f: () => unknown, code: string, arg: string | undefined, what: string): SeqkernError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  checkSeqkernError(err, code, arg, what);
  return err as SeqkernError;
}

export function checkSeqkernError(err: unknown, code: string, arg: string | undefined, what: string): void {
  expect(err, `${what}: expected a SeqkernError ${code}, got ${err === undefined ? 'no error' : String(err)}`).toBeInstanceOf(SeqkernError);
  const e = err as SeqkernError;
  expect(e.code, `${what}: code (message: ${e.message})`).toBe(code);
  if (arg !== undefined) expect(e.message, `${what}: message names ${arg}`).toContain(arg);
}

/** Awaits a rejection and checks it as expectSeqkernError does. */
export async function expectSeqkernRejection(p: () => Promise<unknown>, code: string, arg: string | undefined, what: string): Promise<void> {
  let err: unknown;
  let promise: Promise<unknown>;
  try {
    promise = p();
  } catch (e) {
    throw new Error(`${what}: the async form threw synchronously (${String(e)}) instead of rejecting`);
  }
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  checkSeqkernError(err, code, arg, what);
}
