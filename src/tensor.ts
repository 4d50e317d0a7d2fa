import { SeqkernError } from './errors.js';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'float64';
export type Device = 'cpu';
export type TensorData = Float32Array | Float64Array | Uint16Array;

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

  /** A copy converted to another dtype. */
  astype(dtype: DType): Tensor {
    return tensor(this.toFloat64(), this.shape, dtype);
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(',')}])`;
  }
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
