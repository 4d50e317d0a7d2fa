// Shared pieces of the native-vs-reference tests: seeded inputs of the delta family, slicing and
// concatenation that keep the dtype (raw bits for float16/bfloat16), and the relative Frobenius check of
// DESIGN.md 7 (NaN anywhere fails; the message carries the case and its seed). Then the bad-input pieces of
// the error tests: SeqkernError checks, tensor mutations for the fuzzers, and raw-addon calls in a child process;
// last, the checks of the `out` option tests.
import { spawnSync } from 'node:child_process';
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

/**
 * One call of a fast-check run over valid and invalid arguments: `invalid` lists why the call should be
 * refused (empty: it should run). A throw must be a SeqkernError of a call with reasons; a return, a call with
 * none. Returns `{ ok: true, value }` or `{ ok: false }` (refused as it should be); `what` names the case.
 */
export function fuzzCall<R>(spec: unknown, invalid: readonly string[], f: () => R): { ok: true; value: R; what: string } | { ok: false; what: string } {
  const what = `${JSON.stringify(spec)} invalid=[${invalid.join(', ')}]`;
  let value: R;
  try {
    value = f();
  } catch (e) {
    if (!(e instanceof SeqkernError)) throw new Error(`${what}: not a SeqkernError: ${String(e)}`);
    if (invalid.length === 0) throw new Error(`${what}: valid call threw ${e.message}`);
    return { ok: false, what };
  }
  if (invalid.length > 0) throw new Error(`${what}: an invalid call returned`);
  return { ok: true, value, what };
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

/** A random tensor of `shape` whose buffer has been transferred away (detached: length 0). */
export function detached(shape: number[]): Tensor {
  const t = randn(shape, { seed: 99 });
  structuredClone(t.data.buffer, { transfer: [t.data.buffer as ArrayBuffer] });
  return t;
}

/** A uniform [0, 1) generator (xorshift32) for the fuzzers' tensor data. */
export function seededUniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Values that are not a tensor (or not a usable one) for a tensor argument. */
const JUNK: unknown[] = [null, 0, 'x', [1, 2], { shape: [1, 2], data: new Float32Array(1), dtype: 'float32' }, new Float32Array(4), true];

/** The fuzzers' mutations of a tensor argument that need nothing of the op: each makes a call invalid. */
export type TensorMutation = 'rank' | 'huge' | 'short' | 'storage' | 'junk' | 'detach';

/**
 * Applies `how` to tensor `t` (the argument `name`; `pick` chooses the junk value). Returns the value to pass
 * instead of `t` and why the call is now invalid, or undefined where the mutation does nothing (detaching an
 * empty tensor). 'detach' detaches t's own buffer and returns t.
 */
export function mutateTensor(t: Tensor, how: TensorMutation, pick: number, name: string): { value: unknown; invalid: string } | undefined {
  const n = t.size;
  switch (how) {
    case 'rank':
      return { value: new Tensor(t.data, [...t.shape, 1], t.dtype), invalid: `${name} rank` };
    case 'huge':
      return { value: new Tensor(t.data, t.shape.map((d) => Math.max(d, 1) * 1_000_003), t.dtype), invalid: `${name} huge` };
    case 'short': {
      const len = n > 0 ? n - 1 : 1;
      const d = t.dtype === 'float32' ? new Float32Array(len) : t.dtype === 'float64' ? new Float64Array(len) : new Uint16Array(len);
      return { value: new Tensor(d, t.shape, t.dtype), invalid: `${name} short` };
    }
    case 'storage': {
      const d = t.dtype === 'float32' ? new Float64Array(n) : new Float32Array(n);
      return { value: new Tensor(d, t.shape, t.dtype), invalid: `${name} storage` };
    }
    case 'junk':
      return { value: JUNK[pick % JUNK.length], invalid: `${name} junk` };
    case 'detach':
      if (n === 0) return undefined;
      structuredClone(t.data.buffer, { transfer: [t.data.buffer as ArrayBuffer] });
      return { value: t, invalid: `${name} detached` };
  }
}

/** What a raw-addon script run by runInChild writes: success, or the error it threw or rejected with. */
export interface RawResult {
  ok: boolean;
  isError?: boolean;
  code?: unknown;
  message?: string;
  stage?: string;
}

export interface ChildRun<R> {
  status: number | null;
  signal: string | null;
  result?: R;
  stderr: string;
}

/** Runs `src` with `node -e` (so a native crash shows as a signal, not a dead test runner) and parses its stdout as JSON. */
export function runInChild<R = RawResult>(src: string): ChildRun<R> {
  const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8', timeout: 30_000 });
  let result: R | undefined;
  try {
    result = JSON.parse(r.stdout);
  } catch {
    result = undefined;
  }
  return { status: r.status, signal: r.signal, result, stderr: r.stderr };
}

/** Asserts a raw-addon child run ended cleanly with an Error whose .code is one of `codes` ('A|B'). */
export function expectRawFailure(r: ChildRun<RawResult>, codes: string): void {
  expect(r.signal, `child process killed by ${r.signal} (a crash): ${r.stderr.slice(0, 500)}`).toBeNull();
  expect(r.status, r.stderr.slice(0, 500)).toBe(0);
  expect(r.result, `no result: ${r.stderr.slice(0, 500)}`).toBeDefined();
  const res = r.result!;
  expect(res.ok, 'expected an error, the call succeeded').toBe(false);
  expect(res.isError, `thrown value is an Error (${res.message})`).toBe(true);
  expect(codes.split('|'), `code of "${res.message}"`).toContain(res.code);
}

// ---- the `out` option tests (attention-out, delta-out)

/** A tensor of `shape` and `dtype` full of garbage: random values with every third element NaN (never zeros). */
export function garbage(shape: number[], dtype: DType, seed: number): Tensor {
  const vals = randn(shape, { seed, std: 100 }).toFloat64();
  for (let i = 0; i < vals.length; i += 3) vals[i] = NaN;
  return tensor(vals, shape, dtype);
}

/** Bit-for-bit equality of two tensors' data, with the first differing element in the message. */
export function expectSameBits(got: Tensor, want: Tensor, what: string): void {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  expect(got.dtype, `${what}: dtype`).toBe(want.dtype);
  if (sameBytes(got, snapshot(want))) return;
  const g = got.data;
  const w = want.data;
  let i = 0;
  while (i < w.length && (Object.is(g[i], w[i]) || g[i] === w[i])) i++;
  expect.fail(`${what}: element ${i} differs: got ${g[i]}, want ${w[i]}`);
}

/** result.o is out itself (compared by identity: on failure vitest would diff two large tensors for minutes). */
export function expectIsOut(o: Tensor, out: Tensor): void {
  expect(o === out, `result.o is out itself (got a tensor of shape [${o.shape}], dtype ${o.dtype})`).toBe(true);
}

/** out now holds either its old bytes or (SEQKERN_POISON) the poison pattern everywhere: nothing of an answer. */
export function untouchedOrPoisoned(out: Tensor, before: Uint8Array): boolean {
  if (sameBytes(out, before)) return true;
  return out.toFloat64().every(Number.isNaN);
}

/** What f throws (undefined if nothing). */
export function catchError(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** What f's promise rejects with (undefined if it resolves). */
export async function catchRejection(f: () => Promise<unknown>): Promise<unknown> {
  try {
    await f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/**
 * A bad `out` was refused before anything was written: e is a SeqkernError with `code`, naming out, whose
 * `got` contains `got`; out's bytes (when it has data; outBefore from before the call) and every input's
 * (inputsBefore, named by `names` in messages) are unchanged.
 */
export function expectOutRefused(
  e: unknown, code: string, got: string, what: string, out: { data?: ArrayBufferView } | null,
  outBefore: Uint8Array | undefined, inputs: Tensor[], inputsBefore: Uint8Array[], names?: string[],
): void {
  checkSeqkernError(e, code, 'out', what);
  const err = e as SeqkernError;
  expect(err.argument, `${what}: argument`).toBe('out');
  expect(err.got, `${what}: got`).toContain(got);
  expect(err.expected, `${what}: expected`).toBeTruthy();
  if (outBefore) expect(sameBytes({ data: out!.data as Float32Array }, outBefore), `${what}: out's bytes`).toBe(true);
  inputs.forEach((t, i) => expect(sameBytes(t, inputsBefore[i]), `${what}: input ${names?.[i] ?? i}`).toBe(true));
}

/**
 * Waits (yielding to the event loop) until `written()` says the kernel has started writing or the call p
 * has settled, then aborts; returns whether p was still running then.
 */
export async function abortOnceWritten(p: Promise<unknown>, written: () => boolean, ac: AbortController): Promise<boolean> {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  while (!settled && !written()) await new Promise((r) => setImmediate(r));
  const running = !settled;
  ac.abort();
  return running;
}
