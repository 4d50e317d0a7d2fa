// RMSNorm and gated RMSNorm (fla's FusedRMSNormGated; issue 14 part 4): public ops. Validates in TypeScript,
// then runs the native CPU driver (native/cpu/norm.cc) or the float64 reference.
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend } from '../backend.js';
import { rmsNormReference } from '../reference/norm.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorInput } from '../tensor.js';
import type { AsyncOptions, CommonOptions } from '../types.js';
import { checkFinite, checkInt, checkOptions, checkShape, checkTensor, overlaps, rankOf } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Options of rmsNorm and rmsNormGated. */
export interface RmsNormOptions extends CommonOptions {
  /** Added to the mean square (default 1e-6). */
  eps?: number | undefined;
  /** Normalise each group of this many consecutive channels of the last axis (default: the whole axis). */
  groupSize?: number | undefined;
  /** A tensor of x's shape (float32, float16 or bfloat16; default x's dtype); may be x itself (in place). */
  out?: TensorInput | undefined;
}

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_ELEMENTS = 2 ** 31 - 1;
const poison = process.env.SEQKERN_POISON === '1';
const NORM_OPTIONS = ['backend', 'eps', 'groupSize', 'out'] as const;

interface Prepared {
  backend: 'cpu' | 'reference';
  x: Tensor; gate?: Tensor | undefined; weight: Tensor;
  rows: number; H: number; G: number; eps: number; out?: Tensor | undefined;
}

function prepare(op: string, xIn: unknown, gIn: unknown, wIn: unknown, gated: boolean, o: RmsNormOptions): Prepared {
  checkOptions(op, o, NORM_OPTIONS);
  const rank = Math.max(1, rankOf(xIn, 1));
  const x = checkTensor(op, 'x', xIn, IN_DTYPES, rank);
  const H = x.shape[rank - 1];
  if (H < 1) fail('SHAPE_MISMATCH', op, 'x', 'with a non-empty last axis', `[${x.shape.join(',')}]`);
  if (numel(x.shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, 'x', `of at most ${MAX_ELEMENTS} elements`, `[${x.shape.join(',')}]`);
  let gate: Tensor | undefined;
  if (gated) {
    gate = checkTensor(op, 'gate', gIn, IN_DTYPES, rank);
    checkShape(op, 'gate', gate, x.shape);
  }
  const weight = checkTensor(op, 'weight', wIn, IN_DTYPES, 1);
  checkShape(op, 'weight', weight, [H]);
  const eps = o.eps === undefined ? 1e-6 : checkFinite(op, 'eps', o.eps);
  if (eps < 0) fail('OUT_OF_RANGE', op, 'eps', '>= 0', String(eps));
  const G = o.groupSize === undefined ? H : checkInt(op, 'groupSize', o.groupSize, 1, H);
  if (H % G !== 0) fail('OUT_OF_RANGE', op, 'groupSize', `dividing the last axis H=${H}`, String(G));
  let out: Tensor | undefined;
  if (o.out !== undefined) {
    out = checkTensor(op, 'out', o.out, IN_DTYPES, rank);
    checkShape(op, 'out', out, x.shape);
    if (overlaps(out.data, weight.data)) fail('BAD_ARGUMENT', op, 'out', 'memory apart from weight', 'a view overlapping weight');
    for (const [name, t] of [['x', x], ['gate', gate]] as [string, Tensor | undefined][]) {
      if (!t || !overlaps(out.data, t.data)) continue;
      const same = out.data.byteOffset === t.data.byteOffset && out.dtype === t.dtype;
      if (!same) fail('BAD_ARGUMENT', op, 'out', `${name} itself or memory apart from it`, `a view partly overlapping ${name}`);
    }
  }
  const f64 = [x, gate, weight, out].some((t) => t?.dtype === 'float64');
  const backend = resolveBackend(op, o.backend as CommonOptions["backend"], f64);
  return { backend, x, gate, weight, rows: numel(x.shape) / H, H, G, eps, out };
}

function runReference(p: Prepared): Tensor {
  const y = rmsNormReference(p.x, p.weight, { gate: p.gate, eps: p.eps, groupSize: p.G });
  const dt = p.out?.dtype ?? p.x.dtype;
  const r = tensor(y.data, p.x.shape, dt);
  if (p.out) {
    p.out.data.set(r.data as Float64Array);
    return p.out;
  }
  return r;
}

function nativeArgs(p: Prepared, y: Tensor): Record<string, unknown> {
  return {
    rows: p.rows, H: p.H, groupSize: p.G, eps: p.eps, x: p.x.data, dtype: p.x.dtype,
    gate: p.gate?.data, gateDtype: p.gate?.dtype, weight: p.weight.data, wDtype: p.weight.dtype,
    y: y.data, yDtype: y.dtype, callerOut: p.out !== undefined,
  };
}

function output(p: Prepared): Tensor {
  if (p.out) return p.out;
  const y = zeros(p.x.shape, p.x.dtype);
  if (poison) (y.data as Float32Array | Uint16Array).fill(p.x.dtype === 'float32' ? NaN : 0x7fc0);
  return y;
}

type Raw = Record<string, (a: unknown) => unknown>;

function runSync(op: string, p: Prepared): Tensor {
  if (p.backend === 'reference') return runReference(p);
  const y = output(p);
  callNative(op, () => (native()! as unknown as Raw).rmsNorm(nativeArgs(p, y)));
  return y;
}

async function runAsync(op: string, p: Prepared, signal?: AbortSignal): Promise<Tensor> {
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const y = output(p);
  const args = nativeArgs(p, y);
  await callNativeAsync(op, args, signal, () => ((native()! as unknown as Raw).rmsNormAsync(args) as Promise<void>));
  if (!p.out && signal?.aborted) throw abortError(signal);
  return y;
}

/**
 * RMSNorm over the last axis of x [..., H]: y = x / sqrt(mean(x^2) + eps) * weight (weight [H]), in groups of
 * `groupSize` channels when given. float32/float16/bfloat16 in (each its own dtype), float32 compute, y in
 * x's dtype or out's (out may be x itself).
 */
export function rmsNorm(x: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}): Tensor {
  const op = 'rmsNorm';
  return runSync(op, prepare(op, x, undefined, weight, false, opts));
}

/** Promise form of rmsNorm (abortable between row blocks; with `out`, only until it starts). */
export async function rmsNormAsync(x: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  const op = 'rmsNormAsync';
  if (a.signal?.aborted) throw abortError(a.signal);
  return runAsync(op, prepare(op, x, undefined, weight, false, opts), a.signal);
}

/**
 * Gated RMSNorm (fla's FusedRMSNormGated, Qwen3-Next's output norm): rmsNorm(x) * weight * silu(gate), gate of
 * x's shape, silu(g) = g / (1 + e^-g), in one pass.
 */
export function rmsNormGated(x: TensorInput, gate: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}): Tensor {
  const op = 'rmsNormGated';
  return runSync(op, prepare(op, x, gate, weight, true, opts));
}

/** Promise form of rmsNormGated. */
export async function rmsNormGatedAsync(
  x: TensorInput, gate: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}, a: AsyncOptions = {},
): Promise<Tensor> {
  const op = 'rmsNormGatedAsync';
  if (a.signal?.aborted) throw abortError(a.signal);
  return runAsync(op, prepare(op, x, gate, weight, true, opts), a.signal);
}

// Chained ops (src/runtime.ts): validated as the sync forms do, y allocated now (or the caller's out).
registerChainOp('rmsNorm', (op: string, x: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}) => {
  const p = prepare(op, x, undefined, weight, false, opts);
  chainBackend(op, p.backend);
  const y = output(p);
  return { fn: 'rmsNorm', args: nativeArgs(p, y), result: y };
});
registerChainOp('rmsNormGated', (op: string, x: TensorInput, gate: TensorInput, weight: TensorInput, opts: RmsNormOptions = {}) => {
  const p = prepare(op, x, gate, weight, true, opts);
  chainBackend(op, p.backend);
  const y = output(p);
  return { fn: 'rmsNorm', args: nativeArgs(p, y), result: y };
});
