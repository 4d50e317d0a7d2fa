// Causal depthwise convolution (Mamba's causal_conv1d / fla's ShortConvolution; issue 14 part 3): public ops.
// Validates in TypeScript, then runs the native CPU driver (native/cpu/conv.cc) or the float64 reference.
// Both the prefill and the decode update read and write a conv-state pool [slots, D, W - 1] in place.
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend } from '../backend.js';
import { causalConv1dReference } from '../reference/conv.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorInput } from '../tensor.js';
import type { AsyncOptions, CommonOptions } from '../types.js';
import { checkCuSeqlens, checkOneOf, checkOptions, checkShape, checkTensor, copyInt32, overlaps } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Options of causalConv1d (the prefill). */
export interface CausalConv1dOptions extends CommonOptions {
  /** [D]. */
  bias?: TensorInput | undefined;
  /** 'none' (default) or 'silu' (Qwen3-Next, fla's ShortConvolution). */
  activation?: 'silu' | 'none' | undefined;
  /** N + 1 offsets of the sequences packed in x [1, T, D] (varlen; zero-length sequences allowed). */
  cuSeqlens?: Int32Array | readonly number[] | undefined;
  /**
   * The conv-state pool [slots, D, W - 1] (float32, float16 or bfloat16): sequence n's initial state is read
   * from slot stateIndices[n] and its final state (the last W - 1 inputs) written back there, in place.
   */
  convState?: TensorInput | undefined;
  /** [N] slot of each sequence (-1: padding, skipped, its y rows 0); default slot n = n. */
  stateIndices?: Int32Array | readonly number[] | undefined;
  /** [N]: 0 = start from zeros (a new sequence), else read the slot (default: every sequence reads). */
  hasInitialState?: Uint8Array | readonly (number | boolean)[] | undefined;
  /** A tensor of x's shape and dtype for y, apart from every input. */
  out?: TensorInput | undefined;
}

/** Options of causalConv1dUpdate (the decode step). */
export interface CausalConv1dUpdateOptions extends CommonOptions {
  bias?: TensorInput | undefined;
  activation?: 'silu' | 'none' | undefined;
  /** [N] slot of each sequence (-1: padding); default slot n = n. */
  stateIndices?: Int32Array | readonly number[] | undefined;
  out?: TensorInput | undefined;
}

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_WIDTH = 8;
const MAX_ELEMENTS = 2 ** 31 - 1;
const poison = process.env.SEQKERN_POISON === '1';
const PREFILL_OPTIONS = ['backend', 'bias', 'activation', 'cuSeqlens', 'convState', 'stateIndices', 'hasInitialState', 'out'] as const;
const UPDATE_OPTIONS = ['backend', 'bias', 'activation', 'stateIndices', 'out'] as const;

interface Prepared {
  backend: 'cpu' | 'reference';
  x: Tensor; weight: Tensor; bias?: Tensor | undefined; state?: Tensor | undefined;
  D: number; W: number; rows: number; N: number;
  cu: Int32Array; slots?: Int32Array | undefined; init?: Uint8Array | undefined;
  silu: boolean; out?: Tensor | undefined;
}

function checkSlots(op: string, idx: unknown, N: number, nslots: number): Int32Array {
  const s = copyInt32(op, 'stateIndices', idx);
  if (s.length !== N) fail('SHAPE_MISMATCH', op, 'stateIndices', `of N=${N} entries`, `${s.length}`);
  const seen = new Map<number, number>();
  for (let n = 0; n < N; n++) {
    if (s[n] < -1 || s[n] >= nslots) fail('OUT_OF_RANGE', op, 'stateIndices', `in [-1, ${nslots}) (a slot of convState or -1)`, `${s[n]} at index ${n}`);
    if (s[n] >= 0) {
      const prev = seen.get(s[n]);
      if (prev !== undefined) fail('BAD_ARGUMENT', op, 'stateIndices', 'distinct slots among live sequences', `slot ${s[n]} at indices ${prev} and ${n}`);
      seen.set(s[n], n);
    }
  }
  return s;
}

function checkFlags(op: string, x: unknown, N: number): Uint8Array {
  let a: Uint8Array;
  if (x instanceof Uint8Array) a = x.slice();
  else if (Array.isArray(x)) a = Uint8Array.from(x as (number | boolean)[], (v) => (v ? 1 : 0));
  else return fail('BAD_DTYPE', op, 'hasInitialState', 'to be a Uint8Array or an array of booleans', typeof x);
  if (a.length !== N) fail('SHAPE_MISMATCH', op, 'hasInitialState', `of N=${N} entries`, `${a.length}`);
  return a;
}

function prepare(op: string, update: boolean, xIn: unknown, stateIn: unknown, wIn: unknown, o: CausalConv1dOptions): Prepared {
  checkOptions(op, o, update ? UPDATE_OPTIONS : PREFILL_OPTIONS);
  const xRank = update && typeof xIn === 'object' && xIn !== null && Array.isArray((xIn as Tensor).shape) && (xIn as Tensor).shape.length === 2 ? 2 : 3;
  const x = checkTensor(op, 'x', xIn, IN_DTYPES, xRank);
  const weight = checkTensor(op, 'weight', wIn, IN_DTYPES, 2);
  const D = x.shape[xRank - 1];
  const W = weight.shape[1];
  if (W < 1 || W > MAX_WIDTH) fail('OUT_OF_RANGE', op, 'weight', `of width W in [1, ${MAX_WIDTH}] (shape [D, W])`, `W=${W}`);
  checkShape(op, 'weight', weight, [D, W]);
  const bias = o.bias === undefined ? undefined : checkTensor(op, 'bias', o.bias, IN_DTYPES, 1);
  if (bias) checkShape(op, 'bias', bias, [D]);
  const silu = (o.activation === undefined ? 'none' : checkOneOf(op, 'activation', o.activation, ['silu', 'none'] as const)) === 'silu';
  if (numel(x.shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, 'x', `of at most ${MAX_ELEMENTS} elements`, `[${x.shape.join(',')}]`);

  let N: number, rows: number, cu: Int32Array;
  if (update) {
    const Tq = xRank === 2 ? 1 : x.shape[1];
    N = x.shape[0];
    rows = N * Tq;
    cu = Int32Array.from({ length: N + 1 }, (_, n) => n * Tq);
  } else {
    const [B, T] = x.shape;
    rows = B * T;
    if (o.cuSeqlens !== undefined) {
      if (B !== 1) fail('SHAPE_MISMATCH', op, 'x', 'with B = 1 when cuSeqlens is given (packed sequences)', `B=${B}`);
      cu = checkCuSeqlens(op, o.cuSeqlens, T);
      N = cu.length - 1;
    } else {
      N = B;
      cu = Int32Array.from({ length: B + 1 }, (_, b) => b * T);
    }
  }

  const stateArg = update ? stateIn : o.convState;
  let state: Tensor | undefined;
  let slots: Int32Array | undefined;
  let init: Uint8Array | undefined;
  if (stateArg !== undefined) {
    state = checkTensor(op, 'convState', stateArg, IN_DTYPES, 3);
    const nslots = state.shape[0];
    checkShape(op, 'convState', state, [nslots, D, W - 1]);
    if (state.dtype === 'float64' && x.dtype !== 'float64') fail('BAD_DTYPE', op, 'convState', 'float32, float16 or bfloat16 (float64 with float64 x)', 'float64');
    if (o.stateIndices !== undefined) slots = checkSlots(op, o.stateIndices, N, nslots);
    else if (N > nslots) fail('SHAPE_MISMATCH', op, 'convState', `with at least N=${N} slots (no stateIndices: slot n = n)`, `${nslots} slots`);
    if (!update && o.hasInitialState !== undefined) init = checkFlags(op, o.hasInitialState, N);
  } else if (o.stateIndices !== undefined || o.hasInitialState !== undefined) {
    fail('BAD_ARGUMENT', op, 'convState', 'the conv-state pool when stateIndices or hasInitialState is given', 'undefined');
  }

  let out: Tensor | undefined;
  if (o.out !== undefined) {
    out = checkTensor(op, 'out', o.out, [x.dtype], xRank);
    checkShape(op, 'out', out, x.shape);
    const ins: [string, Tensor | undefined][] = [['x', x], ['weight', weight], ['bias', bias], ['convState', state]];
    for (const [name, t] of ins) if (t && overlaps(out.data, t.data)) fail('BAD_ARGUMENT', op, 'out', 'memory apart from the inputs', `a view overlapping ${name}`);
  }
  if (state) {
    for (const [name, t] of [['x', x], ['weight', weight], ['bias', bias]] as [string, Tensor | undefined][]) {
      if (t && overlaps(state.data, t.data)) fail('BAD_ARGUMENT', op, 'convState', 'memory apart from the inputs', `a view overlapping ${name}`);
    }
  }
  const f64 = [x, weight, bias, state].some((t) => t?.dtype === 'float64');
  const backend = resolveBackend(op, o.backend as CommonOptions["backend"], f64);
  return { backend, x, weight, bias, state, D, W, rows, N, cu, slots, init, silu, out };
}

/** Writes float64 values into t[off ..] rounded to t's dtype. */
function writeRounded(t: Tensor, off: number, vals: Float64Array): void {
  const r = tensor(vals, [vals.length], t.dtype === 'float64' ? 'float64' : t.dtype);
  (t.data as Float64Array).set(r.data as Float64Array, off);
}

function runReference(p: Prepared): Tensor {
  const P = p.W - 1;
  const x3 = new Tensor(p.x.data, [1, p.rows, p.D], p.x.dtype);
  let initial: Tensor | undefined;
  if (p.state) {
    const all = p.state.toFloat64();
    const init = new Float64Array(p.N * p.D * P);
    for (let n = 0; n < p.N; n++) {
      const s = p.slots ? p.slots[n] : n;
      if (s < 0 || (p.init && !p.init[n])) continue;
      init.set(all.subarray(s * p.D * P, (s + 1) * p.D * P), n * p.D * P);
    }
    initial = new Tensor(init, [p.N, p.D, P], 'float64');
  }
  const r = causalConv1dReference(x3, p.weight, { bias: p.bias, activation: p.silu ? 'silu' : 'none', cuSeqlens: p.cu, initialStates: initial });
  const y = r.y.data as Float64Array;
  if (p.state && p.slots) {
    for (let n = 0; n < p.N; n++) if (p.slots[n] < 0) y.fill(0, p.cu[n] * p.D, p.cu[n + 1] * p.D);
  }
  const yT = tensor(y, p.x.shape, p.x.dtype);
  if (p.state && P > 0) {
    const fin = r.finalStates.data as Float64Array;
    for (let n = 0; n < p.N; n++) {
      const s = p.slots ? p.slots[n] : n;
      if (s >= 0) writeRounded(p.state, s * p.D * P, fin.subarray(n * p.D * P, (n + 1) * p.D * P));
    }
  }
  if (p.out) {
    p.out.data.set(yT.data as Float64Array);
    return p.out;
  }
  return yT;
}

function nativeArgs(p: Prepared, y: Tensor): Record<string, unknown> {
  return {
    D: p.D, W: p.W, rows: p.rows, N: p.N, x: p.x.data, dtype: p.x.dtype, y: y.data,
    weight: p.weight.data, wDtype: p.weight.dtype, bias: p.bias?.data, biasDtype: p.bias?.dtype,
    activation: p.silu ? 'silu' : 'none', cuSeqlens: p.cu,
    state: p.state?.data, stateDtype: p.state?.dtype, slots: p.state?.shape[0] ?? 0,
    stateIndices: p.slots, hasInitialState: p.init, callerOut: p.out !== undefined,
  };
}

function output(p: Prepared): Tensor {
  const y = p.out ?? zeros(p.x.shape, p.x.dtype);
  if (poison && !p.out) (y.data as Float32Array | Uint16Array).fill(p.x.dtype === 'float32' ? NaN : 0x7fc0);
  return y;
}

function runSync(op: string, p: Prepared): Tensor {
  if (p.backend === 'reference') return runReference(p);
  const y = output(p);
  callNative(op, () => (native()! as unknown as Record<string, (a: unknown) => void>).causalConv1d(nativeArgs(p, y)));
  return y;
}

async function runAsync(op: string, p: Prepared, signal?: AbortSignal): Promise<Tensor> {
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const y = output(p);
  const args = nativeArgs(p, y);
  await callNativeAsync(op, args, signal, () => (native()! as unknown as Record<string, (a: unknown) => Promise<void>>).causalConv1dAsync(args));
  return y;
}

/**
 * Causal depthwise convolution over time (the prefill): x [B, T, D] channels last (or [1, T, D] packed with
 * `cuSeqlens`), weight [D, W] (W <= 8), y[t, d] = act(bias[d] + sum_j w[d, j] x[t - W + 1 + j, d]), earlier
 * positions from the sequence's initial conv state (zeros without a pool). With `convState` [slots, D, W - 1]
 * the initial states are read from slots `stateIndices` (where `hasInitialState`) and the final states (the
 * last W - 1 inputs) written back into the same slots in place. float32/float16/bfloat16 in (each tensor its
 * own dtype), float32 compute, y in x's dtype (float64 runs on the reference).
 */
export function causalConv1d(x: TensorInput, weight: TensorInput, opts: CausalConv1dOptions = {}): Tensor {
  const op = 'causalConv1d';
  return runSync(op, prepare(op, false, x, undefined, weight, opts));
}

/** Promise form of causalConv1d (off the event loop; with a pool or `out`, abortable only until it starts writing). */
export async function causalConv1dAsync(x: TensorInput, weight: TensorInput, opts: CausalConv1dOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  const op = 'causalConv1dAsync';
  if (a.signal?.aborted) throw abortError(a.signal);
  return runAsync(op, prepare(op, false, x, undefined, weight, opts), a.signal);
}

/**
 * The decode step of causalConv1d: x [N, D] (one token) or [N, Tq, D] (Tq tokens, e.g. speculative verify),
 * each sequence's window read from convState [slots, D, W - 1] at stateIndices[n] (default n; -1 = padding)
 * and shifted in place by its tokens. Equals causalConv1d over the same tokens with the pool.
 */
export function causalConv1dUpdate(x: TensorInput, convState: TensorInput, weight: TensorInput, opts: CausalConv1dUpdateOptions = {}): Tensor {
  const op = 'causalConv1dUpdate';
  return runSync(op, prepare(op, true, x, convState, weight, opts));
}

/** Promise form of causalConv1dUpdate (abortable until it starts writing the pool). */
export async function causalConv1dUpdateAsync(
  x: TensorInput, convState: TensorInput, weight: TensorInput, opts: CausalConv1dUpdateOptions = {}, a: AsyncOptions = {},
): Promise<Tensor> {
  const op = 'causalConv1dUpdateAsync';
  if (a.signal?.aborted) throw abortError(a.signal);
  return runAsync(op, prepare(op, true, x, convState, weight, opts), a.signal);
}

// Chained ops (src/runtime.ts): validated as the sync forms do (the pool's slots included), y allocated now;
// the conv-state pool is written when the chain runs.
registerChainOp('causalConv1d', (op: string, x: TensorInput, weight: TensorInput, opts: CausalConv1dOptions = {}) => {
  const p = prepare(op, false, x, undefined, weight, opts);
  chainBackend(op, p.backend);
  const y = output(p);
  return { fn: 'causalConv1d', args: nativeArgs(p, y), result: y };
});
registerChainOp('causalConv1dUpdate', (op: string, x: TensorInput, convState: TensorInput, weight: TensorInput, opts: CausalConv1dUpdateOptions = {}) => {
  const p = prepare(op, true, x, convState, weight, opts);
  chainBackend(op, p.backend);
  const y = output(p);
  return { fn: 'causalConv1d', args: nativeArgs(p, y), result: y };
});
