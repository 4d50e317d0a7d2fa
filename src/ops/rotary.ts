// Rotary position embedding (RoPE; DESIGN.md 6.6, issue 14 part 4): public op. Validates in TypeScript, then
// runs the native row kernel (native/cpu/rotary.cc) or the float64 reference.
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend } from '../backend.js';
import { rotaryReference } from '../reference/rotary.js';
import { numel, Tensor, tensor, zeros, type DType } from '../tensor.js';
import type { AsyncOptions, Backend, CommonOptions } from '../types.js';
import { callerInt32, checkInt, checkOffsets, checkOptions, checkShape, checkTensor, copyInt32, overlaps } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Options of rotary (one type for the op and its reference). */
export interface RotaryOptions extends CommonOptions {
  /** cos, sin [maxPos, rotaryDim/2] (float32; float64 runs the reference). */
  cos: Tensor;
  sin: Tensor;
  /** Int32Array [B × T]: each token's position. Default: t (its index along T). */
  positions?: Int32Array | readonly number[];
  /** Packed sequences (B = 1): N + 1 offsets in T; a token's position is its index within its sequence. */
  cuSeqlens?: Int32Array | readonly number[];
  /** Values of each head row rotated, even, <= D; default 2 × cos columns (it must equal that when given). */
  rotaryDim?: number;
  /** GPT-J pairs (x[2i], x[2i+1]) instead of GPT-NeoX halves (x[i], x[i + rotaryDim/2]); default false. */
  interleaved?: boolean;
  /** Write here ([B, T, H, D], x's dtype): x itself to rotate in place, or memory apart from x and the tables. */
  out?: Tensor;
}

/** The raw addon's arguments (native/binding/rotary.cc). */
export interface NativeRotaryArgs {
  tokens: number; T: number; H: number; D: number; rotaryDim: number; maxPos: number; interleaved: boolean;
  x: ArrayBufferView; out: ArrayBufferView; dtype: string; cos: Float32Array; sin: Float32Array;
  positions?: Int32Array; cuSeqlens?: Int32Array; cancel?: Int32Array;
}

interface RotaryAddon {
  rotary(args: NativeRotaryArgs): void;
  rotaryAsync(args: NativeRotaryArgs): Promise<void>;
}

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_HEAD_DIM = 1024;
const MAX_ELEMENTS = 2 ** 31 - 1;
const ROTARY_OPTIONS = ['backend', 'cos', 'sin', 'positions', 'cuSeqlens', 'rotaryDim', 'interleaved', 'out'] as const;
const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeRotaryArgs;
  x: Tensor;
  ref: Parameters<typeof rotaryReference>[1];
  out?: Tensor;
}

function prepare(op: string, x: unknown, o: RotaryOptions): Prepared {
  checkOptions(op, o, ROTARY_OPTIONS);
  const xT = checkTensor(op, 'x', x, IN_DTYPES, 4);
  const [B, T, H, D] = xT.shape;
  if (D > MAX_HEAD_DIM) fail('TOO_LARGE', op, 'x', `head dim D <= ${MAX_HEAD_DIM}`, `D=${D}`);
  if (numel(xT.shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, 'x', `of at most ${MAX_ELEMENTS} elements`, `shape [${xT.shape.join(',')}]`);
  const cosT = checkTensor(op, 'cos', o.cos, ['float32', 'float64'], 2);
  const sinT = checkTensor(op, 'sin', o.sin, ['float32', 'float64'], 2);
  checkShape(op, 'sin', sinT, cosT.shape);
  const [maxPos, half] = cosT.shape;
  if (half < 1 || 2 * half > D) fail('SHAPE_MISMATCH', op, 'cos', `with rotaryDim/2 columns in [1, D/2 = ${Math.floor(D / 2)}]`, `[${cosT.shape.join(',')}]`);
  if (o.rotaryDim !== undefined) {
    checkInt(op, 'rotaryDim', o.rotaryDim, 2, D);
    if (o.rotaryDim !== 2 * half) fail('SHAPE_MISMATCH', op, 'rotaryDim', `= 2 × cos columns = ${2 * half}`, `${o.rotaryDim}`);
  }
  if (o.interleaved !== undefined && typeof o.interleaved !== 'boolean') fail('BAD_ARGUMENT', op, 'interleaved', 'to be a boolean', typeof o.interleaved);
  let positions: Int32Array | undefined;
  let cu: Int32Array | undefined;
  if (o.positions !== undefined && o.cuSeqlens !== undefined) fail('BAD_ARGUMENT', op, 'positions', 'or cuSeqlens, not both', 'both');
  if (o.positions !== undefined) {
    positions = copyInt32(op, 'positions', o.positions);
    if (positions.length !== B * T) fail('SHAPE_MISMATCH', op, 'positions', `of B × T = ${B * T} entries`, `${positions.length}`);
    for (let i = 0; i < positions.length; i++) {
      if (positions[i] < 0 || positions[i] >= maxPos) fail('OUT_OF_RANGE', op, 'positions', `in [0, maxPos=${maxPos}) (rotary tables too short)`, `${positions[i]} at index ${i}`);
    }
  } else if (o.cuSeqlens !== undefined) {
    if (B !== 1) fail('SHAPE_MISMATCH', op, 'x', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
    cu = checkOffsets(op, 'cuSeqlens', o.cuSeqlens, T, 'T');
    for (let n = 0; n + 1 < cu.length; n++) {
      if (cu[n + 1] - cu[n] > maxPos) fail('OUT_OF_RANGE', op, 'cos', `of at least ${cu[n + 1] - cu[n]} rows (the longest sequence)`, `${maxPos}`);
    }
  } else if (B * T > 0 && T > maxPos) {
    fail('OUT_OF_RANGE', op, 'cos', `of at least T = ${T} rows (rotary tables too short)`, `${maxPos}`);
  }
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [xT.dtype], 4);
    checkShape(op, 'out', outT, xT.shape);
    const same = outT.data.buffer === xT.data.buffer && outT.data.byteOffset === xT.data.byteOffset;
    if (!same && overlaps(outT.data, xT.data)) fail('BAD_ARGUMENT', op, 'out', 'to be x itself (in place) or apart from it', 'a view partly overlapping x');
    for (const [name, data] of [['cos', cosT.data], ['sin', sinT.data], ['positions', callerInt32(o.positions)], ['cuSeqlens', callerInt32(o.cuSeqlens)]] as const) {
      if (data && overlaps(outT.data, data)) fail('BAD_ARGUMENT', op, 'out', 'in memory apart from the tables and offsets', `a view overlapping ${name}`);
    }
  }
  const float64 = [xT, cosT, sinT].some((t) => t.dtype === 'float64');
  const backend = resolveBackend(op, o.backend as Backend | undefined, float64);
  const args: NativeRotaryArgs = {
    tokens: B * T, T, H, D, rotaryDim: 2 * half, maxPos, interleaved: o.interleaved === true,
    x: xT.data, out: undefined as unknown as ArrayBufferView, dtype: xT.dtype,
    cos: cosT.data as Float32Array, sin: sinT.data as Float32Array, positions, cuSeqlens: cu,
  };
  const ref = { cos: cosT, sin: sinT, positions, cuSeqlens: cu, rotaryDim: 2 * half, interleaved: o.interleaved === true };
  return { backend, args, x: xT, ref, out: outT };
}

function allocate(p: Prepared): Tensor {
  const out = p.out ?? zeros(p.x.shape, p.x.dtype);
  if (poison && !p.out) (out.data as Float32Array | Uint16Array).fill(p.x.dtype === 'float32' ? NaN : 0x7fc0);
  p.args.out = out.data;
  return out;
}

function runReference(p: Prepared): Tensor {
  const r = tensor(rotaryReference(p.x, p.ref).data, p.x.shape, p.x.dtype);
  if (p.out) {
    p.out.data.set(r.data);
    return p.out;
  }
  return r;
}

const addon = () => native() as unknown as RotaryAddon;

/**
 * Rotary position embedding of x [B, T, H, D] (FlashAttention's apply_rotary_emb): the first rotaryDim = 2 ×
 * cos columns values of each head row rotate by the angles of the token's position, the rest pass unchanged.
 * Non-interleaved (GPT-NeoX, default) pairs x[i] with x[i + rotaryDim/2]; `interleaved` (GPT-J) x[2i] with
 * x[2i+1]. Positions: `positions` (one per token), or `cuSeqlens` (packed, B = 1: index within the sequence),
 * else t. Returns a new tensor in x's dtype, or `out` (x itself rotates in place).
 */
export function rotary(x: Tensor, opts: RotaryOptions): Tensor {
  const op = 'rotary';
  const p = prepare(op, x, opts ?? ({} as RotaryOptions));
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  callNative(op, () => addon().rotary(p.args));
  return out;
}

/**
 * Promise form of rotary, off the event loop. Its output may be x itself, so the call is all or nothing: the
 * signal is checked before the call and on the worker before the first write; an abort after that is ignored.
 */
export async function rotaryAsync(x: Tensor, opts: RotaryOptions, a: AsyncOptions = {}): Promise<Tensor> {
  const op = 'rotaryAsync';
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  const p = prepare(op, x, opts ?? ({} as RotaryOptions));
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  await callNativeAsync(op, p.args, signal, () => addon().rotaryAsync(p.args));
  return out;
}

// Chained ops (src/runtime.ts): validated as the sync form does, the output allocated now (or out, x itself
// to rotate in place when the chain runs).
registerChainOp('rotary', (op: string, x: Tensor, opts: RotaryOptions) => {
  const p = prepare(op, x, opts ?? ({} as RotaryOptions));
  chainBackend(op, p.backend);
  const out = allocate(p);
  return { fn: 'rotary', args: p.args as unknown as Record<string, unknown>, result: out };
});
