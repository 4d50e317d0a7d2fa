// Softmax over the last axis (DESIGN.md 6.2): public ops. Validates in TypeScript, then runs the native CPU
// kernels (or the float64 reference when asked, for float64 inputs, or when the addon is missing).
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend, simdLevelNow, type NativeSoftmaxArgs } from '../backend.js';
import { softmaxReference } from '../reference/softmax.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData, type TensorInput } from '../tensor.js';
import type { AsyncOptions, SoftmaxOptions } from '../types.js';
import { checkOneOf, checkOptions, checkShape, checkTensor, rankOf } from '../validate.js';
import { softmaxCuda, wantsCuda } from '../cuda.js';
import { chainBackend, registerChainOp } from '../runtime.js';

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays

/** Set by the tests (SEQKERN_POISON=1): fresh outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  x: Tensor;
  rows: number;
  cols: number;
  algorithm: 'two-pass' | 'three-pass';
  strict: boolean;
  /** out is x's own memory (softmaxInto in place). */
  inPlace: boolean;
}

const sameRange = (a: TensorData, b: TensorData) => a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.byteLength === b.byteLength;
const overlaps = (a: TensorData, b: TensorData) =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;

const SOFTMAX_OPTIONS = ['backend', 'algorithm', 'strict'] as const;

/**
 * `algorithm: 'auto'` (the default). A batch whose input and output together exceed STREAM_BYTES streams from
 * memory, where the two-pass's saved pass over x is what matters (Dukhan & Ablavatski's result): two-pass.
 * Rows in cache are compute-bound, and there the three-pass can be faster (on AVX2 the two-pass's exp per
 * element in each pass costs more than the max pass saves): the faster of the two, measured once per process
 * and SIMD level on a hot 64 x 1024 batch (calibrateSoftmax; softmaxAutoChoice says what it chose).
 */
export const SOFTMAX_STREAM_BYTES = 16 << 20;
const inCacheChoice = new Map<string, 'two-pass' | 'three-pass'>();

/**
 * Times both algorithms on rows in cache and remembers the faster for this SIMD level; returns it. Each side's
 * best of 25 interleaved calls is compared (not the median): on a shared machine a call is only ever slowed
 * down, by preemption, so the fastest call is the kernel's own time; interleaving puts any drift on both.
 */
export function calibrateSoftmax(): 'two-pass' | 'three-pass' {
  const a = native();
  if (!a) return 'two-pass';
  const level = simdLevelNow();
  const known = inCacheChoice.get(level);
  if (known) return known;
  const rows = 64, cols = 1024;
  const x = new Float32Array(rows * cols);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 4;
  const y = new Float32Array(rows * cols);
  const time = (algorithm: 'two-pass' | 'three-pass') => {
    const t0 = process.hrtime.bigint();
    a.softmax({ x, out: y, dtype: 'float32', rows, cols, algorithm, strict: false });
    return Number(process.hrtime.bigint() - t0);
  };
  for (let i = 0; i < 3; i++) time('two-pass'), time('three-pass');
  let two = Infinity, three = Infinity;
  for (let i = 0; i < 25; i++) two = Math.min(two, time('two-pass')), three = Math.min(three, time('three-pass'));
  const choice = three < 0.97 * two ? 'three-pass' : 'two-pass';
  inCacheChoice.set(level, choice);
  return choice;
}

/** What 'auto' picks: per SIMD level, the in-cache choice (undefined until measured) and the streaming threshold. */
export function softmaxAutoChoice(): { inCache: 'two-pass' | 'three-pass' | undefined; streaming: 'two-pass'; streamAboveBytes: number } {
  const a = native();
  return { inCache: a ? inCacheChoice.get(simdLevelNow()) : undefined, streaming: 'two-pass', streamAboveBytes: SOFTMAX_STREAM_BYTES };
}

function autoAlgorithm(bytes: number): 'two-pass' | 'three-pass' {
  return bytes > SOFTMAX_STREAM_BYTES ? 'two-pass' : calibrateSoftmax();
}

function prepare(op: string, x: unknown, out: unknown, opts: unknown): Prepared {
  checkOptions(op, opts, SOFTMAX_OPTIONS);
  const o = opts as SoftmaxOptions;
  const rank = rankOf(x, 1);
  if (rank === 0) fail('SHAPE_MISMATCH', op, 'x', 'of rank >= 1 (softmax runs over the last axis)', 'a scalar, shape []');
  const xt = checkTensor(op, 'x', x, IN_DTYPES, rank);
  const cols = xt.shape[rank - 1];
  if (cols === 0) fail('SHAPE_MISMATCH', op, 'x', 'with a non-empty last axis (a row of length 0 has no softmax)', `shape [${xt.shape.join(',')}]`);
  const size = numel(xt.shape);
  if (size > MAX_ELEMENTS) fail('TOO_LARGE', op, 'x', `of at most ${MAX_ELEMENTS} elements`, `shape [${xt.shape.join(',')}]`);
  let inPlace = false;
  if (out !== undefined) {
    const ot = checkTensor(op, 'out', out, [xt.dtype], rank);
    checkShape(op, 'out', ot, xt.shape);
    inPlace = sameRange(ot.data, xt.data);
    if (!inPlace && size > 0 && overlaps(ot.data, xt.data)) {
      fail('BAD_ARGUMENT', op, 'out', 'to be x itself or memory apart from x', 'a view partly overlapping x');
    }
  }
  const requested = checkOneOf(op, 'algorithm', o.algorithm ?? 'auto', ['auto', 'two-pass', 'three-pass'] as const);
  if (o.strict !== undefined && typeof o.strict !== 'boolean') fail('BAD_ARGUMENT', op, 'strict', 'to be a boolean', typeof o.strict);
  const backend = resolveBackend(op, o.backend, xt.dtype === 'float64');
  const bytes = size * (xt.dtype === 'float32' ? 4 : 2) * (inPlace ? 1 : 2);
  const algorithm = requested !== 'auto' ? requested : backend === 'cpu' ? autoAlgorithm(bytes) : 'two-pass';
  return { backend, x: xt, rows: size / cols, cols, algorithm, strict: o.strict === true, inPlace };
}

/** Runs the reference and writes its answer into out (converted to out's dtype), or a fresh tensor. */
function runReference(p: Prepared, out: Tensor | undefined): Tensor {
  const r = softmaxReference(p.x, { strict: p.strict });
  if (!out) return p.x.dtype === 'float64' ? r : tensor(r.data, p.x.shape, p.x.dtype);
  out.data.set(p.x.dtype === 'float64' ? r.data : tensor(r.data, p.x.shape, p.x.dtype).data);
  return out;
}

function output(p: Prepared, out: Tensor | undefined): Tensor {
  if (out) return out;
  const y = zeros(p.x.shape, p.x.dtype);
  if (poison) (y.data as Float32Array | Uint16Array).fill(p.x.dtype === 'float32' ? NaN : 0x7fc0);
  return y;
}

function nativeArgs(p: Prepared, y: Tensor): NativeSoftmaxArgs {
  return { x: p.x.data, out: y.data, dtype: p.x.dtype, rows: p.rows, cols: p.cols, algorithm: p.algorithm, strict: p.strict };
}

function runSync(op: string, x: unknown, out: unknown, opts: unknown): Tensor {
  if (wantsCuda((opts as SoftmaxOptions | undefined)?.backend, x, out)) return softmaxCuda(op, x, out, opts, false);
  const p = prepare(op, x, out, opts);
  if (p.backend === 'reference') return runReference(p, out as Tensor | undefined);
  const y = output(p, out as Tensor | undefined);
  const a = native()!;
  callNative(op, () => a.softmax(nativeArgs(p, y)));
  return y;
}

async function runAsync(op: string, x: unknown, out: unknown, opts: unknown, as: AsyncOptions): Promise<Tensor> {
  const signal = as?.signal;
  if (signal?.aborted) throw abortError(signal);
  if (wantsCuda((opts as SoftmaxOptions | undefined)?.backend, x, out)) return softmaxCuda(op, x, out, opts, true, as);
  const p = prepare(op, x, out, opts);
  if (p.backend === 'reference') return runReference(p, out as Tensor | undefined);
  const y = output(p, out as Tensor | undefined);
  const args = nativeArgs(p, y);
  // The worker polls this flag between blocks of rows; setting it makes the call reject with an AbortError.
  await callNativeAsync(op, args, signal, () => native()!.softmaxAsync(args));
  // In place, x was rewritten completely (the abort came after the start): resolve with it, as the
  // in-place decode step does. Otherwise an abort that raced the last rows still rejects.
  if (!p.inPlace && signal?.aborted) throw abortError(signal);
  return y;
}

/**
 * Softmax over the last axis: y = exp(x - max) / sum(exp(x - max)) per row, for x [..., n] (rank >= 1,
 * n >= 1) of dtype float32, float16 or bfloat16 (computed in float32; the result has x's dtype) or float64
 * (reference backend). Returns a new tensor of x's shape; x is not modified.
 *
 * `algorithm`: 'two-pass' (default; Dukhan & Ablavatski 2020: one pass sums e^x as a (mantissa, exponent)
 * pair with no max pass, the second writes y) or 'three-pass' (max, sum, normalise). Both are exact to
 * float32 rounding (relative error <= 1e-6 per element against float64) for any finite input, ±1e30 and
 * all-equal rows included; one long row is split across threads.
 *
 * Edge cases: -Inf entries give 0. A row with NaN or +Inf gives a row of NaN, and so does a row of all -Inf
 * (it has no largest term). With `strict: true` these are errors instead, raised before anything is
 * written: NaN/+Inf -> SeqkernError NON_FINITE, a row of all -Inf -> OUT_OF_RANGE, both naming x and the
 * first such row (strict reads x once more to check). Bad arguments: SeqkernError BAD_ARGUMENT (not a
 * Tensor, unknown algorithm, strict not a boolean), BAD_DTYPE, SHAPE_MISMATCH (rank 0, a last axis of
 * length 0, data length not matching the shape), TOO_LARGE (over 2^31 - 1 elements).
 */
export function softmax(x: TensorInput, opts: SoftmaxOptions = {}): Tensor {
  return runSync('softmax', x, undefined, opts);
}

/**
 * softmax written into a caller's tensor `out` (same shape and dtype as x; SHAPE_MISMATCH / BAD_DTYPE
 * otherwise), for callers that reuse buffers. `out` may be x itself (in place); a view that only partly
 * overlaps x is BAD_ARGUMENT. Returns out. On an error nothing is written.
 */
export function softmaxInto(x: TensorInput, out: TensorInput, opts: SoftmaxOptions = {}): Tensor {
  if (out === undefined) fail('BAD_ARGUMENT', 'softmaxInto', 'out', 'to be a Tensor (see tensor())', 'undefined');
  return runSync('softmaxInto', x, out, opts);
}

/**
 * Promise form of softmax: runs off the event loop. The signal is checked before the start and between
 * blocks of rows; aborting rejects with an AbortError.
 */
export async function softmaxAsync(x: TensorInput, opts: SoftmaxOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  return runAsync('softmaxAsync', x, undefined, opts, a);
}

/**
 * Promise form of softmaxInto. An abort rejects with an AbortError; `out` then holds a mix of old and new
 * rows, except in place (out is x): there the signal is checked once, before the first write, so x is either
 * untouched (rejected) or completely replaced by its softmax (resolved, even if the signal fired meanwhile).
 */
export async function softmaxIntoAsync(x: TensorInput, out: TensorInput, opts: SoftmaxOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  if (out === undefined) fail('BAD_ARGUMENT', 'softmaxIntoAsync', 'out', 'to be a Tensor (see tensor())', 'undefined');
  return runAsync('softmaxIntoAsync', x, out, opts, a);
}

// Chained ops (src/runtime.ts): softmax and softmaxInto, validated as the sync forms do, y allocated now.
for (const name of ['softmax', 'softmaxInto'] as const) {
  registerChainOp(name, (op: string, x: Tensor, ...rest: unknown[]) => {
    const out = name === 'softmaxInto' ? rest[0] : undefined;
    if (name === 'softmaxInto' && out === undefined) fail('BAD_ARGUMENT', op, 'out', 'to be a Tensor (see tensor())', 'undefined');
    const p = prepare(op, x, out, (name === 'softmaxInto' ? rest[1] : rest[0]) ?? {});
    chainBackend(op, p.backend);
    const y = output(p, out as Tensor | undefined);
    return { fn: 'softmax', args: nativeArgs(p, y) as unknown as Record<string, unknown>, result: y };
  });
}
