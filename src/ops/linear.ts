// linear (a projection): y = x W^T + b. Validates in TypeScript, then runs the native CPU kernels (GEMV for
// a few rows, packed-panel GEMM for many; native/cpu/linear.h) or the float64 reference when asked, for
// float64 inputs, or when the addon is missing.
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend } from '../backend.js';
import { linearReference } from '../reference/linear.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorInput } from '../tensor.js';
import type { AsyncOptions, CommonOptions } from '../types.js';
import { checkOneOf, checkOptions, checkShape, checkTensor, overlaps, rankOf } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Options of linear / linearAsync. */
export interface LinearOptions extends CommonOptions {
  /** [out], any dtype; added to every row. */
  bias?: TensorInput | undefined;
  /**
   * The result's dtype: 'float32' (default) or x's own dtype (rounded once from the float32 result). With
   * `out`, out's dtype decides and this must agree with it when given.
   */
  outDtype?: DType | undefined;
  /** Write y into this tensor [..., out] (float32 or x's dtype), memory apart from x, weight and bias. */
  out?: TensorInput | undefined;
  /**
   * Each row's result independent of how many rows the call has, bit for bit: every row takes the GEMV path
   * (blocks of up to 8 rows), never the packed-panel GEMM, whose sums run in another order. What a server
   * batching requests needs for a request's tokens not to depend on who it was batched with; slower for many
   * rows (a prefill). Default false.
   */
  batchInvariant?: boolean | undefined;
}

/** The raw addon's linear arguments (native/binding/linear.cc). */
export interface NativeLinearArgs {
  M: number; K: number; N: number;
  x: ArrayBufferView; xDtype: string; weight: ArrayBufferView; weightDtype: string;
  bias?: ArrayBufferView; biasDtype?: string;
  out: ArrayBufferView; outDtype: string; callerOut?: boolean; rowWise?: boolean; cancel?: Int32Array;
}

const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays
const LINEAR_OPTIONS = ['backend', 'bias', 'outDtype', 'out', 'batchInvariant'] as const;

/** Set by the tests (SEQKERN_POISON=1): fresh outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  x: Tensor;
  weight: Tensor;
  bias: Tensor | undefined;
  out: Tensor | undefined;
  yShape: number[];
  yDtype: DType;
  M: number;
  K: number;
  N: number;
  rowWise: boolean;
}

const fmt = (s: readonly number[]) => `[${s.join(',')}]`;

function prepare(op: string, x: unknown, weight: unknown, opts: unknown): Prepared {
  checkOptions(op, opts, LINEAR_OPTIONS);
  const o = opts as LinearOptions;
  const rank = rankOf(x, 1);
  if (rank === 0) fail('SHAPE_MISMATCH', op, 'x', 'of rank >= 1 ([..., in])', 'a scalar, shape []');
  const xt = checkTensor(op, 'x', x, DTYPES, rank);
  const wt = checkTensor(op, 'weight', weight, DTYPES, 2);
  const [N, K] = wt.shape;
  if (xt.shape[rank - 1] !== K) fail('SHAPE_MISMATCH', op, 'x', `with last axis in=${K} (weight [out, in] is ${fmt(wt.shape)})`, `shape ${fmt(xt.shape)}`);
  const M = numel(xt.shape.slice(0, -1));
  const yShape = [...xt.shape.slice(0, -1), N];
  for (const [name, n] of [['x', M * K], ['weight', N * K], ['out', M * N]] as const) {
    if (n > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `${n}`);
  }
  let bt: Tensor | undefined;
  if (o.bias !== undefined) {
    bt = checkTensor(op, 'bias', o.bias, DTYPES, 1);
    checkShape(op, 'bias', bt, [N]);
  }
  const allowed: DType[] = xt.dtype === 'float32' ? ['float32'] : ['float32', xt.dtype];
  if (o.outDtype !== undefined) checkOneOf(op, 'outDtype', o.outDtype, allowed);
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, allowed, yShape.length);
    checkShape(op, 'out', outT, yShape);
    if (o.outDtype !== undefined && o.outDtype !== outT.dtype) fail('BAD_DTYPE', op, 'out', `of dtype outDtype=${o.outDtype}`, outT.dtype);
    for (const [name, t] of [['x', xt], ['weight', wt], ['bias', bt]] as const) {
      if (t && overlaps(outT.data, t.data)) fail('BAD_ARGUMENT', op, 'out', 'memory apart from the inputs (x, weight, bias)', `a view overlapping ${name}`);
    }
  }
  if (o.batchInvariant !== undefined && typeof o.batchInvariant !== 'boolean') fail('BAD_ARGUMENT', op, 'batchInvariant', 'to be a boolean', typeof o.batchInvariant);
  const yDtype = outT?.dtype ?? o.outDtype ?? (xt.dtype === 'float64' ? 'float64' : 'float32');
  const f64 = xt.dtype === 'float64' || wt.dtype === 'float64' || bt?.dtype === 'float64' || yDtype === 'float64';
  const backend = resolveBackend(op, o.backend, f64);
  return { backend, x: xt, weight: wt, bias: bt, out: outT, yShape, yDtype, M, K, N, rowWise: o.batchInvariant === true };
}

function runReference(p: Prepared): Tensor {
  const r = linearReference(p.x, p.weight, { bias: p.bias });
  const y = p.yDtype === 'float64' ? new Tensor(r.data, p.yShape, 'float64') : tensor(r.data, p.yShape, p.yDtype);
  if (!p.out) return y;
  p.out.data.set(y.data);
  return p.out;
}

function allocate(p: Prepared): { y: Tensor; args: NativeLinearArgs } {
  const y = p.out ?? zeros(p.yShape, p.yDtype);
  if (poison && !p.out) (y.data as Float32Array | Uint16Array).fill(p.yDtype === 'float32' ? NaN : 0x7fc0);
  const args: NativeLinearArgs = {
    M: p.M, K: p.K, N: p.N, x: p.x.data, xDtype: p.x.dtype, weight: p.weight.data, weightDtype: p.weight.dtype,
    out: y.data, outDtype: p.yDtype, callerOut: p.out !== undefined, rowWise: p.rowWise,
  };
  if (p.bias) {
    args.bias = p.bias.data;
    args.biasDtype = p.bias.dtype;
  }
  return { y, args };
}

const addon = () => native()!;

/**
 * A linear layer (PyTorch's F.linear): y[..., n] = sum_k x[..., k] weight[n, k] + bias[n], for x [..., in]
 * and weight [out, in]. x, weight and bias each float32, float16 or bfloat16 (widened to float32 as they
 * load; float64 runs on the reference); float32 accumulation. Returns y [..., out], float32 or (outDtype)
 * x's dtype. Up to 8 rows (decode) stream the weights once for all rows; more rows run a packed-panel GEMM
 * (unless `batchInvariant`). Options: `bias`, `outDtype`, `out`, `batchInvariant` (see LinearOptions), `backend`. Bad arguments: SeqkernError
 * BAD_ARGUMENT, BAD_DTYPE, SHAPE_MISMATCH, TOO_LARGE, before anything is written.
 */
export function linear(x: TensorInput, weight: TensorInput, opts: LinearOptions = {}): Tensor {
  const op = 'linear';
  const p = prepare(op, x, weight, opts);
  if (p.backend === 'reference') return runReference(p);
  const { y, args } = allocate(p);
  callNative(op, () => addon().linear(args));
  return y;
}

/**
 * Promise form of linear: runs off the event loop; the signal is checked before the start and between
 * blocks of output features (rejecting with an AbortError). With `out`, the abort is honoured only until the
 * kernel starts, so `out` is never left half-written.
 */
export async function linearAsync(x: TensorInput, weight: TensorInput, opts: LinearOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  const op = 'linearAsync';
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  const p = prepare(op, x, weight, opts);
  if (p.backend === 'reference') return runReference(p);
  const { y, args } = allocate(p);
  await callNativeAsync(op, args, signal, () => addon().linearAsync(args));
  if (!p.out && signal?.aborted) throw abortError(signal);
  return y;
}

// Chained ops (src/runtime.ts): validated as the sync form does, y allocated now (or the caller's out).
registerChainOp('linear', (op: string, x: TensorInput, weight: TensorInput, opts: LinearOptions = {}) => {
  const p = prepare(op, x, weight, opts);
  chainBackend(op, p.backend);
  const { y, args } = allocate(p);
  return { fn: 'linear', args: args as unknown as Record<string, unknown>, result: y };
});
