import { native } from './backend.js';
import { fail, SeqkernError } from './errors.js';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'float64';
export type Device = 'cpu' | 'cuda';

/** Filled in by src/device.ts (device tensors): `to('cuda')` / `to('cpu')`. */
export const deviceHooks: { to?: (t: Tensor, device: Device) => Tensor } = {};
function toDevice(t: Tensor, device: Device): Tensor {
  if (device === t.device) return t;
  if (!deviceHooks.to) throw new SeqkernError('NO_CUDA', `to: expected the device layer to be loaded (import seqkern), got none`);
  return deviceHooks.to(t, device);
}
export type TensorData = Float32Array | Float64Array | Uint16Array;

/** What every op takes as a tensor argument: a Tensor, or any object with a tensor's three fields. */
export type TensorInput = Tensor | TensorLike;

/** Anything with a tensor's three fields (e.g. a Tensor from another copy of seqkern, or a plain object). */
export interface TensorLike {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };

/**
 * A dense row-major tensor over a TypedArray. float16 and bfloat16 hold raw bits in a Uint16Array; the
 * kernels convert to float32 as they load. The data is used in place: ops never copy or modify it unless
 * they say "in place".
 */
export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TensorData;
  readonly device: Device = 'cpu';

  constructor(data: TensorData, shape: readonly number[], dtype: DType) {
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Values as float64 (a copy), whatever the dtype. */
  toFloat64(): Float64Array {
    return toFloat64Array(this.data, this.dtype);
  }

  /** A copy converted to another dtype (same as `to(dtype)`, except that it always copies). */
  astype(dtype: DType): Tensor {
    return dtype === this.dtype ? new Tensor(this.data.slice(), this.shape, dtype) : this.to(dtype);
  }

  /**
   * This tensor in another dtype: `this` when it is already that dtype, else a new tensor converted natively
   * (round to nearest even, NaN kept; float64 through TypeScript).
   */
  to(dtype: DType | Device): Tensor {
    if (dtype === 'cuda' || dtype === 'cpu') return toDevice(this, dtype);
    if (dtype === this.dtype) return this;
    if (dtype === 'float32') return this.toFloat32();
    if (dtype === 'float16') return this.toFloat16();
    if (dtype === 'bfloat16') return this.toBFloat16();
    if (dtype === 'float64') return new Tensor(this.toFloat64(), this.shape, 'float64');
    return fail('BAD_DTYPE', 'to', 'dtype', 'float32 | float16 | bfloat16 | float64', String(dtype));
  }

  /** Frees a device tensor's memory (a CPU tensor has none to free); a second call does nothing. */
  dispose(): void {}

  /** Converted to float32, into a new tensor or into `out` (same shape, float32; returned). */
  toFloat32(out?: Tensor): Tensor {
    return castInto(this, 'float32', out, 'toFloat32');
  }

  /** Converted to float16 (raw bits), into a new tensor or into `out`. */
  toFloat16(out?: Tensor): Tensor {
    return castInto(this, 'float16', out, 'toFloat16');
  }

  /** Converted to bfloat16 (raw bits), into a new tensor or into `out`. */
  toBFloat16(out?: Tensor): Tensor {
    return castInto(this, 'bfloat16', out, 'toBFloat16');
  }

  /**
   * The same data under another shape of the same size (zero-copy: writes through either are seen by both).
   * One dimension may be -1, inferred from the others.
   */
  view(shape: readonly number[]): Tensor {
    return new Tensor(this.data, inferShape('view', shape, this.size), this.dtype);
  }

  /** Same as `view` (tensors here are always contiguous, so a reshape never copies). */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.data, inferShape('reshape', shape, this.size), this.dtype);
  }

  /**
   * Rows [start, end) of the leading axis, zero-copy (a subarray of the same buffer: writes are shared).
   * Negative indices count from the end, as Array.prototype.slice; end defaults to the axis length.
   */
  slice(start: number, end?: number): Tensor {
    if (this.shape.length === 0) fail('SHAPE_MISMATCH', 'slice', 'tensor', 'of rank >= 1', 'a scalar');
    const n = this.shape[0];
    const norm = (x: number, name: string) => {
      if (!Number.isInteger(x)) fail('BAD_ARGUMENT', 'slice', name, 'to be an integer', String(x));
      return x < 0 ? Math.max(0, n + x) : Math.min(n, x);
    };
    const a = norm(start, 'start');
    const b = Math.max(a, norm(end ?? n, 'end'));
    const row = n === 0 ? 0 : this.size / n;
    return new Tensor(this.data.subarray(a * row, b * row) as TensorData, [b - a, ...this.shape.slice(1)], this.dtype);
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(',')}])`;
  }
}

function inferShape(op: string, shape: readonly number[], size: number): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (free !== out.lastIndexOf(-1)) fail('SHAPE_MISMATCH', op, 'shape', 'at most one -1', `[${shape.join(',')}]`);
  for (const d of out) {
    if (!Number.isInteger(d) || (d < 0 && d !== -1)) fail('SHAPE_MISMATCH', op, 'shape', 'of non-negative integers (one may be -1)', `[${shape.join(',')}]`);
  }
  if (free >= 0) {
    const rest = numel(out.filter((_, i) => i !== free));
    if (rest === 0 || size % rest !== 0) fail('SHAPE_MISMATCH', op, 'shape', `that fits ${size} elements`, `[${shape.join(',')}]`);
    out[free] = size / rest;
  }
  if (numel(out) !== size) fail('SHAPE_MISMATCH', op, 'shape', `of ${size} elements`, `[${shape.join(',')}] (${numel(out)})`);
  return out;
}

const storageOf = (dtype: DType): string => (dtype === 'float32' ? 'Float32Array' : dtype === 'float64' ? 'Float64Array' : 'Uint16Array');

function hasStorage(data: unknown, dtype: DType): boolean {
  return (
    (dtype === 'float32' && data instanceof Float32Array) ||
    (dtype === 'float64' && data instanceof Float64Array) ||
    ((dtype === 'float16' || dtype === 'bfloat16') && data instanceof Uint16Array)
  );
}

/** Converts src into dtype: natively (float32/float16/bfloat16), else through float64 in TypeScript. */
function castInto(src: Tensor, dtype: 'float32' | 'float16' | 'bfloat16', out: Tensor | undefined, op: string): Tensor {
  let dst: Tensor;
  if (out === undefined) {
    dst = new Tensor(arrayFor(dtype, src.size), src.shape, dtype);
  } else {
    dst = asTensor(op, 'out', out);
    if (dst.dtype !== dtype) fail('BAD_DTYPE', op, 'out', `of dtype ${dtype}`, dst.dtype);
    if (dst.size !== src.size || dst.shape.length !== src.shape.length || dst.shape.some((d, i) => d !== src.shape[i])) {
      fail('SHAPE_MISMATCH', op, 'out', `of shape [${src.shape.join(',')}]`, `[${dst.shape.join(',')}]`);
    }
  }
  if (src.dtype === dtype) {
    if (dst.data !== src.data) (dst.data as Float32Array | Uint16Array).set(src.data as Float32Array | Uint16Array);
    return dst;
  }
  const a = native();
  if (a && src.dtype !== 'float64') {
    try {
      a.castArray({ src: src.data as Float32Array | Uint16Array, srcDtype: src.dtype, dst: dst.data as Float32Array | Uint16Array, dstDtype: dtype });
    } catch (e) {
      const err = e as { code?: string; message?: string };
      throw new SeqkernError((err.code ?? 'NATIVE_ERROR') as SeqkernError['code'], `${op}: ${err.message}`, { argument: 'out' });
    }
    return dst;
  }
  const n = src.size;
  const vals = src.dtype === 'float32' || src.dtype === 'float64' ? src.data : toFloat64Array(src.data, src.dtype);
  const d = dst.data;
  if (dtype === 'float16') for (let i = 0; i < n; i++) d[i] = f32ToF16Bits(vals[i]);
  else if (dtype === 'bfloat16') for (let i = 0; i < n; i++) d[i] = f32ToBf16Bits(vals[i]);
  else for (let i = 0; i < n; i++) d[i] = vals[i];
  return dst;
}

/**
 * A Tensor for anything with a tensor's fields ({ dtype, shape, data } with data of the dtype's storage
 * type), wrapping the same data without a copy; a Tensor is returned as it is. Anything else is a
 * SeqkernError naming `name`.
 */
export function asTensor(op: string, name: string, t: unknown): Tensor {
  if (t instanceof Tensor) return t;
  if (typeof t !== 'object' || t === null || !('dtype' in t) || !('shape' in t) || !('data' in t)) {
    const got = t === null ? 'null' : typeof t === 'object' ? (t as object).constructor?.name ?? 'object' : typeof t;
    return fail('BAD_ARGUMENT', op, name, 'to be a Tensor or { dtype, shape, data }', got);
  }
  const { dtype, shape, data } = t as { dtype: unknown; shape: unknown; data: unknown };
  if (dtype !== 'float32' && dtype !== 'float16' && dtype !== 'bfloat16' && dtype !== 'float64') {
    return fail('BAD_DTYPE', op, name, 'dtype float32 | float16 | bfloat16 | float64', String(dtype));
  }
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    return fail('SHAPE_MISMATCH', op, name, 'shape of non-negative integers', Array.isArray(shape) ? `[${shape.join(',')}]` : typeof shape);
  }
  if (!hasStorage(data, dtype)) return fail('BAD_DTYPE', op, name, `data ${storageOf(dtype)} for dtype ${dtype}`, ArrayBuffer.isView(data) ? data.constructor.name : typeof data);
  if ((data as TensorData).length !== numel(shape)) {
    return fail('SHAPE_MISMATCH', op, name, `data of ${numel(shape)} elements for shape [${shape.join(',')}]`, String((data as TensorData).length));
  }
  return new Tensor(data as TensorData, shape, dtype);
}

/** An options object with every tensor-like field as a Tensor. */
export type WithTensors<T> = { [K in keyof T]: T[K] extends TensorInput ? Tensor : T[K] extends TensorInput | undefined ? Tensor | undefined : T[K] };

/** The options with each tensor-like field wrapped as a Tensor (the same data; other fields as they are). */
export function withTensors<T extends object>(o: T): WithTensors<T> {
  const r = { ...o } as Record<string, unknown>;
  for (const [key, x] of Object.entries(r)) {
    if (x !== null && typeof x === 'object' && !(x instanceof Tensor) && 'dtype' in x && 'shape' in x && 'data' in x) r[key] = asTensor('options', key, x);
  }
  return r as WithTensors<T>;
}

/**
 * Concatenates tensors of one dtype along `axis` (default 0) into a new tensor; every other dimension must
 * agree. Tensor-likes are accepted.
 */
export function cat(tensors: readonly (Tensor | TensorLike)[], axis = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) fail('BAD_ARGUMENT', 'cat', 'tensors', 'a non-empty array of tensors', Array.isArray(tensors) ? 'an empty array' : typeof tensors);
  const ts = tensors.map((t, i) => asTensor('cat', `tensors[${i}]`, t));
  const first = ts[0];
  const rank = first.shape.length;
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) fail('OUT_OF_RANGE', 'cat', 'axis', `in [${-rank}, ${rank - 1}]`, String(axis));
  const ax = axis < 0 ? axis + rank : axis;
  let total = 0;
  ts.forEach((t, i) => {
    if (t.dtype !== first.dtype) fail('BAD_DTYPE', 'cat', `tensors[${i}]`, `of dtype ${first.dtype} (as tensors[0])`, t.dtype);
    if (t.shape.length !== rank || t.shape.some((d, j) => j !== ax && d !== first.shape[j])) {
      fail('SHAPE_MISMATCH', 'cat', `tensors[${i}]`, `of shape [${first.shape.map((d, j) => (j === ax ? '*' : d)).join(',')}]`, `[${t.shape.join(',')}]`);
    }
    total += t.shape[ax];
  });
  const shape = [...first.shape];
  shape[ax] = total;
  const out = arrayFor(first.dtype, numel(shape));
  const outer = numel(first.shape.slice(0, ax));
  const inner = numel(first.shape.slice(ax + 1));
  const outRow = total * inner;
  let at = 0;
  for (const t of ts) {
    const rowLen = t.shape[ax] * inner;
    for (let o = 0; o < outer; o++) {
      (out as Float32Array).set((t.data as Float32Array).subarray(o * rowLen, (o + 1) * rowLen), o * outRow + at);
    }
    at += rowLen;
  }
  return new Tensor(out, shape, first.dtype);
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function arrayFor(dtype: DType, n: number): TensorData {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'float16':
    case 'bfloat16': return new Uint16Array(n);
    default: throw new SeqkernError('BAD_DTYPE', `expected dtype float32, float16, bfloat16 or float64, got ${String(dtype)}`, { argument: 'dtype', expected: 'float32|float16|bfloat16|float64', got: String(dtype) });
  }
}

/**
 * Makes a tensor. `data` may be a TypedArray of the dtype's storage type (used in place, no copy) or any
 * array of numbers (converted; float16/bfloat16 are rounded to nearest even).
 */
export function tensor(data: TensorData | ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor {
  const dt: DType = dtype ?? (data instanceof Float64Array ? 'float64' : 'float32');
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new SeqkernError('SHAPE_MISMATCH', `tensor: expected shape of non-negative integers, got [${shape.join(',')}]`, { argument: 'shape', expected: 'non-negative integers', got: `[${shape.join(',')}]` });
    }
  }
  const n = numel(shape);
  if (data.length !== n) {
    throw new SeqkernError('SHAPE_MISMATCH', `tensor: expected data of length ${n} for shape [${shape.join(',')}], got ${data.length}`, { argument: 'data', expected: String(n), got: String(data.length) });
  }
  const storageMatches =
    (dt === 'float32' && data instanceof Float32Array) ||
    (dt === 'float64' && data instanceof Float64Array) ||
    ((dt === 'float16' || dt === 'bfloat16') && data instanceof Uint16Array);
  if (storageMatches) return new Tensor(data as TensorData, shape, dt);
  const out = arrayFor(dt, n);
  if (dt === 'float16') for (let i = 0; i < n; i++) out[i] = f32ToF16Bits(data[i]);
  else if (dt === 'bfloat16') for (let i = 0; i < n; i++) out[i] = f32ToBf16Bits(data[i]);
  else for (let i = 0; i < n; i++) out[i] = data[i];
  return new Tensor(out, shape, dt);
}

export function zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
  return new Tensor(arrayFor(dtype, numel(shape)), shape, dtype);
}

/** Fills with a value (e.g. NaN to poison an output before a call). */
export function full(shape: readonly number[], value: number, dtype: DType = 'float32'): Tensor {
  const n = numel(shape);
  return tensor(new Float64Array(n).fill(value), shape, dtype);
}

/** A small, fast, seedable generator (SplitMix32 mixed into Mulberry32); same seed, same numbers everywhere. */
export function rng(seed: number): () => number {
  let s = (seed >>> 0) ^ 0x9e3779b9;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller), times `std`, plus `mean`. */
export function randn(shape: readonly number[], opts: { seed?: number; dtype?: DType; std?: number; mean?: number } = {}): Tensor {
  const next = rng(opts.seed ?? 0);
  const n = numel(shape);
  const std = opts.std ?? 1;
  const mean = opts.mean ?? 0;
  const vals = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(next(), 1e-12);
    const u2 = next();
    const r = Math.sqrt(-2 * Math.log(u1));
    vals[i] = mean + std * r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) vals[i + 1] = mean + std * r * Math.sin(2 * Math.PI * u2);
  }
  return tensor(vals, shape, opts.dtype ?? 'float32');
}

/** Uniform samples in [low, high). */
export function rand(shape: readonly number[], opts: { seed?: number; dtype?: DType; low?: number; high?: number } = {}): Tensor {
  const next = rng(opts.seed ?? 0);
  const n = numel(shape);
  const lo = opts.low ?? 0;
  const hi = opts.high ?? 1;
  const vals = new Float64Array(n);
  for (let i = 0; i < n; i++) vals[i] = lo + (hi - lo) * next();
  return tensor(vals, shape, opts.dtype ?? 'float32');
}

// ---- float16 / bfloat16 bit conversions (round to nearest even) ----

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32buf[0] = (b & 0xffff) << 16;
  return f32buf[0];
}

export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let r = mant >>> shift;
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  const rem = mant & 0x1fff;
  let r = (e << 10) | (mant >>> 13);
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function toFloat64Array(data: TensorData, dtype: DType): Float64Array {
  const n = data.length;
  const out = new Float64Array(n);
  if (dtype === 'float16') for (let i = 0; i < n; i++) out[i] = f16BitsToF32(data[i]);
  else if (dtype === 'bfloat16') for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(data[i]);
  else for (let i = 0; i < n; i++) out[i] = data[i];
  return out;
}
