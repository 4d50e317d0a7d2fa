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
export function checkTensor(op: string, name: string, arg: unknown, dtypes: readonly DType[], rank: number): Tensor {
  let t: Tensor;
  if (arg instanceof Tensor) {
    t = arg;
  } else {
    // A tensor-like { dtype, shape, data } is wrapped (same data); the checks below then apply to it.
    const l = arg as Partial<Tensor> | null;
    if (typeof l !== 'object' || l === null || !('dtype' in l) || !('data' in l) || !Array.isArray(l.shape)) {
      return fail('BAD_ARGUMENT', op, name, 'to be a Tensor or { dtype, shape, data } (see tensor())', describe(arg));
    }
    if (!['float32', 'float16', 'bfloat16', 'float64'].includes(String(l.dtype))) fail('BAD_DTYPE', op, name, `of dtype ${dtypes.join(' | ')}`, String(l.dtype));
    if (!ArrayBuffer.isView(l.data)) fail('BAD_DTYPE', op, name, `data of the storage type of ${String(l.dtype)}`, describe(l.data));
    t = new Tensor(l.data as Tensor['data'], l.shape, l.dtype as DType);
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

/** The rank of a Tensor or tensor-like (dflt for anything else, which checkTensor then refuses). */
export function rankOf(x: unknown, dflt: number): number {
  const shape = typeof x === 'object' && x !== null ? (x as { shape?: unknown }).shape : undefined;
  return Array.isArray(shape) ? shape.length : dflt;
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

/**
 * N + 1 int32 offsets named `name` (cuSeqlens, cuSeqlensK): 0 first, `end` last, non-decreasing. Returns a
 * private copy (see copyInt32): the checks hold for what the kernel reads, whatever the caller does next.
 */
export function checkOffsets(op: string, name: string, cu: unknown, end: number, endName = 'T'): Int32Array {
  const arr = copyInt32(op, name, cu);
  if (arr.length < 2) fail('SHAPE_MISMATCH', op, name, 'of at least 2 offsets (N + 1)', `${arr.length}`);
  if (arr[0] !== 0) fail('OUT_OF_RANGE', op, name, 'to start at 0', `${arr[0]}`);
  for (let i = 1; i < arr.length; i++) {
    if (arr[i] < arr[i - 1]) fail('OUT_OF_RANGE', op, name, 'non-decreasing', `${arr[i - 1]} then ${arr[i]} at index ${i}`);
  }
  if (arr[arr.length - 1] !== end) fail('OUT_OF_RANGE', op, name, `to end at ${endName}=${end}`, `${arr[arr.length - 1]}`);
  return arr;
}

/** cuSeqlens of a [1, T, ...] packed batch: checkOffsets with the end T. */
export function checkCuSeqlens(op: string, cu: unknown, T: number): Int32Array {
  return checkOffsets(op, 'cuSeqlens', cu, T, 'T');
}

/** The caller's own Int32Array behind a metadata option (for overlap checks against outputs), if it is one. */
export const callerInt32 = (x: unknown): Int32Array | undefined => (x instanceof Int32Array ? x : undefined);

/** Two views share at least one byte (views of one SharedArrayBuffer included: same buffer object). */
export const overlaps = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  a.byteLength > 0 && b.byteLength > 0 && a.buffer === b.buffer &&
  a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;

/** Edit distance of two short strings (for "did you mean" hints). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, diag + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
      diag = up;
    }
  }
  return d[b.length];
}

/**
 * The known name closest to `name`: one that contains it or is contained in it (`state` → `initialState`),
 * else the nearest by edit distance (at most a third of its length, at least 2), if any.
 */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  if (lower.length >= 3) {
    for (const k of known) {
      const kl = k.toLowerCase();
      if ((kl.includes(lower) || lower.includes(kl)) && kl.length >= 3 &&
          (!best || Math.abs(k.length - name.length) < Math.abs(best.length - name.length))) best = k;
    }
    if (best) return best;
  }
  let bestD = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const k of known) {
    const dist = editDistance(name, k);
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return best;
}

/**
 * Checks that `opts` is an options object and, when `known` is given, that it has no key outside that list
 * (own enumerable keys whose value is not undefined: `{ scale: undefined }` is as good as absent). An unknown
 * option is a BAD_ARGUMENT naming it and the closest known name, so `{ cacheSeqlen: ... }` cannot run silently
 * as a call without it.
 */
export function checkOptions(op: string, opts: unknown, known?: readonly string[]): asserts opts is Record<string, unknown> {
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw new SeqkernError('BAD_ARGUMENT', `${op}: expected an options object, got ${describe(opts)}`, {
      argument: 'options', expected: 'object', got: describe(opts),
    });
  }
  if (!known) return;
  for (const key of Object.keys(opts)) {
    if ((opts as Record<string, unknown>)[key] === undefined || known.includes(key)) continue;
    const near = closestName(key, known);
    const hint = near ? ` (did you mean '${near}'?)` : '';
    throw new SeqkernError('BAD_ARGUMENT', `${op}: unknown option '${key}'${hint}; expected one of ${known.join(', ')}`, {
      argument: key, expected: near ?? `one of ${known.join(', ')}`, got: 'an unknown option',
    });
  }
}

/**
 * A private Int32Array copy of a small metadata array (offsets, block tables, slot indices, lengths), taken
 * at the call: the kernels read only this copy, so a caller that reuses or changes its array while an async
 * call runs (or another thread changes a SharedArrayBuffer-backed one) cannot make them read out of bounds.
 */
export function copyInt32(op: string, name: string, x: unknown): Int32Array {
  if (x instanceof Int32Array) return x.slice();
  if (Array.isArray(x)) {
    for (const e of x) {
      if (typeof e !== 'number' || !Number.isInteger(e) || e < -2147483648 || e > 2147483647) {
        fail('BAD_ARGUMENT', op, name, 'of int32 values', String(e));
      }
    }
    return Int32Array.from(x as number[]);
  }
  fail('BAD_DTYPE', op, name, 'to be an Int32Array or number[]', describe(x));
}
