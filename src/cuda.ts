// The ops on backend 'cuda' (cuda/*.cu through cuda/binding.cc): taken when an input is a device tensor or
// `backend: 'cuda'` is asked. Device inputs give device outputs; CPU inputs with backend 'cuda' are copied
// to the GPU and their results back. Ops without a CUDA kernel say so (a SeqkernError naming the op).
import { abortError, fail } from './errors.js';
import { CudaTensor, checkSameDevice, cudaCall, emptyCuda, fromCuda, requireCuda, toCpu, toCuda } from './device.js';
import { numel, Tensor, type DType } from './tensor.js';
import type { AsyncOptions, SoftmaxOptions } from './types.js';
import { checkOneOf, checkOptions, checkShape, checkTensor } from './validate.js';

const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** True when an op should run on CUDA: a device tensor among its inputs, or backend 'cuda'. */
export function wantsCuda(backend: unknown, ...tensors: unknown[]): boolean {
  return backend === 'cuda' || tensors.some((t) => t instanceof CudaTensor);
}

/** A tensor argument checked like checkTensor, for either device. */
export function checkAny(op: string, name: string, arg: unknown, dtypes: readonly DType[], rank: number): Tensor {
  if (!(arg instanceof CudaTensor)) return checkTensor(op, name, arg, dtypes, rank);
  arg.handleFor(op, name);
  if (!dtypes.includes(arg.dtype)) fail('BAD_DTYPE', op, name, `of dtype ${dtypes.join(' | ')}`, arg.dtype);
  if (arg.shape.length !== rank) fail('SHAPE_MISMATCH', op, name, `of rank ${rank}`, `shape [${arg.shape.join(',')}]`);
  return arg;
}

/** Backend asked for device inputs: only 'cuda' (or none). */
function checkBackend(op: string, backend: unknown, device: 'cuda' | 'cpu'): void {
  if (device === 'cuda' && backend !== undefined && backend !== 'cuda') {
    fail('BAD_ARGUMENT', op, 'backend', "'cuda' (or none) for device tensors", `'${String(backend)}'`);
  }
}

/** Device copies of CPU inputs made for one call, freed at its end. */
class Staging {
  readonly temps: CudaTensor[] = [];
  constructor(readonly op: string) {}
  dev(t: Tensor): CudaTensor {
    if (t instanceof CudaTensor) return t;
    const d = toCuda(t, this.op);
    this.temps.push(d);
    return d;
  }
  fresh(shape: readonly number[], dtype: DType): CudaTensor {
    const d = emptyCuda(this.op, shape, dtype);
    this.temps.push(d);
    return d;
  }
  keep(t: CudaTensor): CudaTensor {
    const i = this.temps.indexOf(t);
    if (i >= 0) this.temps.splice(i, 1);
    return t;
  }
  end(): void {
    for (const t of this.temps) t.dispose();
    this.temps.length = 0;
  }
}

/** Runs the addon call sync or async, then maps the outputs; frees the staging either way. */
async function settle<R>(op: string, st: Staging, call: Promise<void>, signal: AbortSignal | undefined, done: () => R): Promise<R> {
  try {
    await call;
  } catch (e) {
    st.end();
    throw fromCuda(op, e);
  }
  if (signal?.aborted) {
    st.end();
    throw abortError(signal);
  }
  try {
    return done();
  } finally {
    st.end();
  }
}

// ---- softmax ----

const SOFTMAX_OPTIONS = ['backend', 'algorithm', 'strict'] as const;

export function softmaxCuda(op: string, x: unknown, out: unknown, opts: unknown, async: false): Tensor;
export function softmaxCuda(op: string, x: unknown, out: unknown, opts: unknown, async: true, a?: AsyncOptions): Promise<Tensor>;
export function softmaxCuda(op: string, x: unknown, out: unknown, opts: unknown, async: boolean, as?: AsyncOptions): Tensor | Promise<Tensor> {
  checkOptions(op, opts, SOFTMAX_OPTIONS);
  const o = (opts ?? {}) as SoftmaxOptions;
  const rank = x instanceof Tensor ? x.shape.length : 1;
  if (rank === 0) fail('SHAPE_MISMATCH', op, 'x', 'of rank >= 1 (softmax runs over the last axis)', 'a scalar, shape []');
  const xt = checkAny(op, 'x', x, DTYPES, rank);
  const device = xt instanceof CudaTensor ? 'cuda' : 'cpu';
  checkBackend(op, o.backend, device);
  const cols = xt.shape[rank - 1];
  if (cols === 0) fail('SHAPE_MISMATCH', op, 'x', 'with a non-empty last axis (a row of length 0 has no softmax)', `shape [${xt.shape.join(',')}]`);
  let ot: Tensor | undefined;
  if (out !== undefined) {
    ot = checkAny(op, 'out', out, [xt.dtype], rank);
    checkShape(op, 'out', ot, xt.shape);
    checkSameDevice(op, device, { out: ot });
  }
  const algorithm = checkOneOf(op, 'algorithm', o.algorithm ?? 'two-pass', ['two-pass', 'three-pass'] as const);
  if (o.strict !== undefined && typeof o.strict !== 'boolean') fail('BAD_ARGUMENT', op, 'strict', 'to be a boolean', typeof o.strict);
  if (o.strict) fail('BAD_ARGUMENT', op, 'strict', "false on backend 'cuda' (strict checks run on the CPU backends)", 'true');
  const a = requireCuda(op);
  if (as?.signal?.aborted) return Promise.reject(abortError(as.signal));
  const st = new Staging(op);
  let xd: CudaTensor, yd: CudaTensor;
  try {
    xd = st.dev(xt);
    yd = ot ? st.dev(ot) : st.fresh(xt.shape, xt.dtype);
  } catch (e) {
    st.end();
    throw e;
  }
  const args = { x: xd.handleFor(op, 'x'), out: yd.handleFor(op, 'out'), dtype: xt.dtype, rows: numel(xt.shape) / cols, cols, algorithm };
  const result = (): Tensor => {
    if (device === 'cuda') return ot ?? st.keep(yd);
    const y = toCpu(yd, op);
    if (ot) {
      ot.data.set(y.data as never);
      return ot;
    }
    return y;
  };
  if (!async) {
    try {
      cudaCall(op, () => a.cudaSoftmax(args));
      return result();
    } finally {
      st.end();
    }
  }
  return settle(op, st, a.cudaSoftmaxAsync(args), as?.signal, result);
}
