// Argument checks shared by every op. Messages read "<op>: expected <arg> <what>, got <what>" and carry a
// code, so a caller can both read and branch on them.
import { fail, SeqkernError } from './errors.js';
import { numel, Tensor, toFloat64Array, type DType } from './tensor.js';

const fmt = (s: readonly number[]) => `[${s.join(',')}]`;

function describe(x: unknown): string {
  if (x === undefined) return 'undefined';
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (ArrayBuffer.isView(x)) return x.constructor.name;
  return typeof x === 'object' ? (x as object).constructor?.name ?? 'object' : `${typeof x} ${String(x)}`;
}

/** Checks that `t` is a well-formed Tensor of one of `dtypes`, with `rank` dimensions; returns it. */
export function checkTensor(op: string, name: string, t: unknown, dtypes: readonly DType[], rank: number): Tensor {
  if (!(t instanceof Tensor)) {
    fail('BAD_ARGUMENT', op, name, 'to be a Tensor (see tensor())', describe(t));
  }
  if (!dtypes.includes(t.dtype)) fail('BAD_DTYPE', op, name, `of dtype ${dtypes.join(' | ')}`, t.dtype);
  const storageOk =
    (t.dtype === 'float32' && t.data instanceof Float32Array) ||
    (t.dtype === 'float64' && t.data instanceof Float64Array) ||
    ((t.dtype === 'float16' || t.dtype === 'bfloat16') && t.data instanceof Uint16Array);
  if (!storageOk) fail('BAD_DTYPE', op, name, `data of the storage type of ${t.dtype}`, describe(t.data));
  if (t.shape.length !== rank) fail('SHAPE_MISMATCH', op, name, `of rank ${rank}`, `shape ${fmt(t.shape)}`);
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) fail('SHAPE_MISMATCH', op, name, 'shape of non-negative integers', fmt(t.shape));
  }
  if (t.data.byteLength === 0 && numel(t.shape) > 0 && t.data.buffer.byteLength === 0) {
    fail('BAD_ARGUMENT', op, name, 'data in a live buffer', 'a detached (or empty) buffer');
  }
  if (t.data.length !== numel(t.shape)) {
    fail('SHAPE_MISMATCH', op, name, `data of ${numel(t.shape)} elements for shape ${fmt(t.shape)}`, `${t.data.length}`);
  }
  return t;
}

/** Checks an exact shape. */
export function checkShape(op: string, name: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    fail('SHAPE_MISMATCH', op, name, `of shape ${fmt(shape)}`, fmt(t.shape));
  }
}

/** Checks every value is finite and inside [lo, hi]. */
export function checkValues(op: string, name: string, t: Tensor, lo: number, hi: number): void {
  const vals = t.dtype === 'float32' || t.dtype === 'float64' ? t.data : toFloat64Array(t.data, t.dtype);
  for (let i = 0; i < vals.length; i++) {
    const x = vals[i];
    if (!Number.isFinite(x)) fail('NON_FINITE', op, name, 'to be finite', `${x} at index ${i}`);
    if (x < lo || x > hi) fail('OUT_OF_RANGE', op, name, `in [${lo}, ${hi}]`, `${x} at index ${i}`);
  }
}

export function checkInt(op: string, name: string, x: unknown, lo: number, hi: number): number {
  if (typeof x !== 'number' || !Number.isInteger(x)) fail('BAD_ARGUMENT', op, name, 'to be an integer', describe(x));
  if (x < lo || x > hi) fail('OUT_OF_RANGE', op, name, `in [${lo}, ${hi}]`, String(x));
  return x;
}

export function checkFinite(op: string, name: string, x: unknown): number {
  if (typeof x !== 'number') fail('BAD_ARGUMENT', op, name, 'to be a number', describe(x));
  if (!Number.isFinite(x)) fail('NON_FINITE', op, name, 'to be finite', String(x));
  return x;
}

export function checkOneOf<T extends string>(op: string, name: string, x: unknown, allowed: readonly T[]): T {
  if (typeof x !== 'string' || !allowed.includes(x as T)) {
    fail('BAD_ARGUMENT', op, name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, describe(x));
  }
  return x as T;
}

/** cuSeqlens: N + 1 int32 offsets, 0 first, `T` last, non-decreasing. Returns an Int32Array (no copy if it is one). */
export function checkCuSeqlens(op: string, cu: unknown, T: number): Int32Array {
  let arr: Int32Array;
  if (cu instanceof Int32Array) arr = cu;
  else if (Array.isArray(cu)) {
    for (const x of cu) {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 2147483647) {
        fail('BAD_ARGUMENT', op, 'cuSeqlens', 'of non-negative int32 offsets', String(x));
      }
    }
    arr = Int32Array.from(cu as number[]);
  } else {
    fail('BAD_DTYPE', op, 'cuSeqlens', 'to be an Int32Array or number[]', describe(cu));
  }
  if (arr.length < 2) fail('SHAPE_MISMATCH', op, 'cuSeqlens', 'of at least 2 offsets (N + 1)', `${arr.length}`);
  if (arr[0] !== 0) fail('OUT_OF_RANGE', op, 'cuSeqlens', 'to start at 0', `${arr[0]}`);
  for (let i = 1; i < arr.length; i++) {
    if (arr[i] < arr[i - 1]) fail('OUT_OF_RANGE', op, 'cuSeqlens', 'non-decreasing', `${arr[i - 1]} then ${arr[i]} at index ${i}`);
  }
  if (arr[arr.length - 1] !== T) fail('OUT_OF_RANGE', op, 'cuSeqlens', `to end at T=${T}`, `${arr[arr.length - 1]}`);
  return arr;
}

/** Two views share at least one byte (views of one SharedArrayBuffer included: same buffer object). */
export const overlaps = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  a.byteLength > 0 && b.byteLength > 0 && a.buffer === b.buffer &&
  a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;

export function checkOptions(op: string, opts: unknown): asserts opts is Record<string, unknown> {
  if (typeof opts !== 'object' || opts === null) {
    throw new SeqkernError('BAD_ARGUMENT', `${op}: expected an options object, got ${describe(opts)}`, {
      argument: 'options', expected: 'object', got: describe(opts),
    });
  }
}
