// Bad input (DESIGN.md 4, 7): every argument of every delta op, sync and async, gives a SeqkernError with
// the right code and a message naming the argument, and leaves every input (state included) byte-identical.
// Then the raw addon's own checks (in a child process, so a crash is reported instead of killing vitest),
// and a fast-check fuzz of the public API: a SeqkernError or a correct answer, never anything else.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleReference, gatedDeltaRuleStep, gatedDeltaRuleStepAsync,
  gatedDeltaRuleStepReference, kaczmarzDeltaRule, kaczmarzDeltaRuleAsync, kaczmarzDeltaRuleStep,
  kaczmarzDeltaRuleStepAsync, numel, rand, randn, SeqkernError, Tensor, tensor, zeros,
  type DType, type TensorData,
} from '../src/index.js';
import {
  checkSeqkernError, detached, expectRawFailure, expectSeqkernRejection, firstNonFinite, mutateTensor, relErr, runInChild, sameBytes,
  seededUniform, snapshot, unitRows, type ChildRun, type RawResult, type TensorMutation,
} from './helpers.js';

type Opts = Record<string, unknown>;
type AnyOp = (o: never) => unknown;
type AnyAsync = (o: never, a?: { signal?: AbortSignal }) => Promise<unknown>;

interface OpForm { name: string; sync: AnyOp; async: AnyAsync; kla: boolean }
const PREFILL: OpForm[] = [
  { name: 'gatedDeltaRule', sync: gatedDeltaRule as AnyOp, async: gatedDeltaRuleAsync as AnyAsync, kla: false },
  { name: 'kaczmarzDeltaRule', sync: kaczmarzDeltaRule as AnyOp, async: kaczmarzDeltaRuleAsync as AnyAsync, kla: true },
];
const STEP: OpForm[] = [
  { name: 'gatedDeltaRuleStep', sync: gatedDeltaRuleStep as AnyOp, async: gatedDeltaRuleStepAsync as AnyAsync, kla: false },
  { name: 'kaczmarzDeltaRuleStep', sync: kaczmarzDeltaRuleStep as AnyOp, async: kaczmarzDeltaRuleStepAsync as AnyAsync, kla: true },
];

// B=2, T=5, H=2, HV=4, K=3, V=2 (N = B = 2).
function prefillBase(kla: boolean, B = 2, T = 5): Opts {
  const o: Opts = {
    q: randn([B, T, 2, 3], { seed: 1 }),
    k: unitRows(randn([B, T, 2, 3], { seed: 2 })),
    v: randn([B, T, 4, 2], { seed: 3 }),
    g: rand([B, T, 4], { seed: 5, low: -1, high: 0 }),
    initialState: randn([B, 4, 3, 2], { seed: 6 }),
    outputFinalState: true,
    backend: 'cpu',
  };
  o[kla ? 'eta' : 'beta'] = rand([B, T, 4], { seed: 4, low: 0, high: 1 });
  return o;
}

// N=2, H=2, HV=4, K=3, V=2.
function stepBase(kla: boolean): Opts {
  const o: Opts = {
    q: randn([2, 2, 3], { seed: 11 }),
    k: unitRows(randn([2, 2, 3], { seed: 12 })),
    v: randn([2, 4, 2], { seed: 13 }),
    g: rand([2, 4], { seed: 15, low: -1, high: 0 }),
    state: randn([2, 4, 3, 2], { seed: 16 }),
    backend: 'cpu',
  };
  o[kla ? 'eta' : 'beta'] = rand([2, 4], { seed: 14, low: 0, high: 1 });
  return o;
}

/** A tensor whose element `i` is set to x (same dtype). */
function withValue(t: Tensor, i: number, x: number): Tensor {
  const d = t.toFloat64();
  d[i] = x;
  return tensor(d, t.shape, t.dtype);
}

const f32 = (shape: number[], seed = 0) => randn(shape, { seed });

interface BadCase {
  name: string;
  /** Returns the bad options, from a fresh valid base (`b` is the name of beta, or eta for KLA). */
  make: (o: Opts, b: string) => Opts;
  code: string;
  /** A word the message must contain (the argument's name); '$b' stands for beta/eta. */
  arg?: string;
}

const PREFILL_CASES: BadCase[] = [
  // shapes
  { name: 'q of rank 3', make: (o) => ({ ...o, q: f32([2, 5, 6]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k with another K', make: (o) => ({ ...o, k: f32([2, 5, 2, 4]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'k with another T', make: (o) => ({ ...o, k: f32([2, 4, 2, 3]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v with another T', make: (o) => ({ ...o, v: f32([2, 4, 4, 2]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v with another B', make: (o) => ({ ...o, v: f32([1, 5, 4, 2]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v of rank 5', make: (o) => ({ ...o, v: f32([2, 5, 4, 2, 1]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'beta of rank 2', make: (o, b) => ({ ...o, [b]: f32([2, 5]) }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'beta with another HV', make: (o, b) => ({ ...o, [b]: f32([2, 5, 3]) }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'g with another HV', make: (o) => ({ ...o, g: f32([2, 5, 3]) }), code: 'SHAPE_MISMATCH', arg: 'g' },
  { name: 'g of rank 4', make: (o) => ({ ...o, g: f32([2, 5, 4, 1]) }), code: 'SHAPE_MISMATCH', arg: 'g' },
  { name: 'decay with another T', make: (o) => ({ ...o, g: undefined, decay: f32([2, 6, 4]) }), code: 'SHAPE_MISMATCH', arg: 'decay' },
  { name: 'eta (KLA) / beta of the wrong shape', make: (o, b) => ({ ...o, [b]: f32([5, 2, 4]) }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'initialState with another V', make: (o) => ({ ...o, initialState: f32([2, 4, 3, 3]) }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'initialState with another N', make: (o) => ({ ...o, initialState: f32([1, 4, 3, 2]) }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'initialState of rank 3', make: (o) => ({ ...o, initialState: f32([2, 4, 6]) }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'a negative dimension', make: (o) => ({ ...o, q: new Tensor(new Float32Array(0), [2, 5, 2, -3], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'a fractional dimension', make: (o) => ({ ...o, q: new Tensor(new Float32Array(30), [2, 5, 2, 1.5], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'H = 0', make: (o) => ({ ...o, q: f32([2, 5, 0, 3]), k: f32([2, 5, 0, 3]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'K = 0', make: (o) => ({ ...o, q: f32([2, 5, 2, 0]), k: f32([2, 5, 2, 0]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'V = 0', make: (o) => ({ ...o, v: f32([2, 5, 4, 0]), initialState: undefined }), code: 'SHAPE_MISMATCH', arg: 'v' },
  {
    name: 'HV not a multiple of H',
    make: (o, b) => ({ ...o, v: f32([2, 5, 3, 2]), [b]: rand([2, 5, 3], { high: 1 }), g: rand([2, 5, 3], { low: -1, high: 0 }), initialState: f32([2, 3, 3, 2]) }),
    code: 'SHAPE_MISMATCH',
    arg: 'HV',
  },
  {
    name: 'K > 1024',
    make: (o, b) => ({ ...o, q: f32([2, 1, 2, 1025]), k: f32([2, 1, 2, 1025]), v: f32([2, 1, 4, 2]), [b]: rand([2, 1, 4], { high: 1 }), initialState: undefined, g: undefined }),
    code: 'TOO_LARGE',
    arg: 'K=1025',
  },
  // storage and types
  { name: 'Float64Array data in a float32 q', make: (o) => ({ ...o, q: new Tensor(new Float64Array(60), [2, 5, 2, 3], 'float32') }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'Float32Array data in a float16 k', make: (o) => ({ ...o, k: new Tensor(new Float32Array(60), [2, 5, 2, 3], 'float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'Uint16Array data in a float32 v', make: (o) => ({ ...o, v: new Tensor(new Uint16Array(80), [2, 5, 4, 2], 'float32') }), code: 'BAD_DTYPE', arg: 'v' },
  { name: 'Float64Array data in a float32 beta', make: (o, b) => ({ ...o, [b]: new Tensor(new Float64Array(40), [2, 5, 4], 'float32') }), code: 'BAD_DTYPE', arg: '$b' },
  { name: 'Int32Array data in a float32 g', make: (o) => ({ ...o, g: new Tensor(new Int32Array(40) as unknown as TensorData, [2, 5, 4], 'float32') }), code: 'BAD_DTYPE', arg: 'g' },
  { name: 'Float64Array data in a float32 initialState', make: (o) => ({ ...o, initialState: new Tensor(new Float64Array(48), [2, 4, 3, 2], 'float32') }), code: 'BAD_DTYPE', arg: 'initialState' },
  { name: 'an unknown dtype', make: (o) => ({ ...o, q: new Tensor(new Float32Array(60), [2, 5, 2, 3], 'int8' as DType) }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'k float16 while q is float32', make: (o) => ({ ...o, k: (o.k as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'v bfloat16 while q is float32', make: (o) => ({ ...o, v: (o.v as Tensor).astype('bfloat16') }), code: 'BAD_DTYPE', arg: 'v' },
  { name: 'a float16 initialState', make: (o) => ({ ...o, initialState: (o.initialState as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'initialState' },
  {
    name: 'float64 inputs with backend cpu',
    make: (o) => ({ ...o, q: (o.q as Tensor).astype('float64'), k: (o.k as Tensor).astype('float64'), v: (o.v as Tensor).astype('float64') }),
    code: 'BAD_DTYPE',
    arg: 'float64',
  },
  // not tensors
  { name: 'q a tensor-like without dtype', make: (o) => ({ ...o, q: { shape: [2, 5, 2, 3], data: new Float32Array(60) } }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'q a tensor-like of a short array', make: (o) => ({ ...o, q: { dtype: 'float32', shape: [2, 5, 2, 3], data: new Float32Array(59) } }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k a Float32Array', make: (o) => ({ ...o, k: new Float32Array(60) }), code: 'BAD_ARGUMENT', arg: 'k' },
  { name: 'v a number[]', make: (o) => ({ ...o, v: [1, 2, 3] }), code: 'BAD_ARGUMENT', arg: 'v' },
  { name: 'q missing', make: (o) => ({ ...o, q: undefined }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'g null', make: (o) => ({ ...o, g: null }), code: 'BAD_ARGUMENT', arg: 'g' },
  { name: 'decay a string', make: (o) => ({ ...o, g: undefined, decay: 'x' }), code: 'BAD_ARGUMENT', arg: 'decay' },
  { name: 'initialState a number', make: (o) => ({ ...o, initialState: 3 }), code: 'BAD_ARGUMENT', arg: 'initialState' },
  { name: 'beta a number', make: (o, b) => ({ ...o, [b]: 0.5 }), code: 'BAD_ARGUMENT', arg: '$b' },
  // short and detached buffers
  { name: 'q with a short buffer', make: (o) => ({ ...o, q: new Tensor(new Float32Array(59), [2, 5, 2, 3], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'v with a long buffer', make: (o) => ({ ...o, v: new Tensor(new Float32Array(81), [2, 5, 4, 2], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'beta with a short buffer', make: (o, b) => ({ ...o, [b]: new Tensor(new Float32Array(39), [2, 5, 4], 'float32') }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'g with a short buffer', make: (o) => ({ ...o, g: new Tensor(new Float32Array(39), [2, 5, 4], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'g' },
  { name: 'initialState with a short buffer', make: (o) => ({ ...o, initialState: new Tensor(new Float32Array(47), [2, 4, 3, 2], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'a float16 q with a short buffer', make: (o) => ({ ...o, q: new Tensor(new Uint16Array(59), [2, 5, 2, 3], 'float16') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'a huge declared shape over a short buffer', make: (o) => ({ ...o, q: new Tensor(new Float32Array(60), [2e6, 5e6, 2, 3], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'a huge declared state over a short buffer', make: (o) => ({ ...o, initialState: new Tensor(new Float32Array(48), [2, 4e6, 3e6, 2], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'q on a detached buffer', make: (o) => ({ ...o, q: detached([2, 5, 2, 3]) }), code: 'BAD_ARGUMENT', arg: 'q' },
  // values
  { name: 'NaN beta', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 7, NaN) }), code: 'NON_FINITE', arg: '$b' },
  { name: 'Infinity beta', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 0, Infinity) }), code: 'NON_FINITE', arg: '$b' },
  { name: 'NaN beta in float16', make: (o, b) => ({ ...o, [b]: withValue((o[b] as Tensor).astype('float16'), 39, NaN) }), code: 'NON_FINITE', arg: '$b' },
  { name: 'beta 2.5 (above 2)', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 3, 2.5) }), code: 'OUT_OF_RANGE', arg: '$b' },
  { name: 'beta -0.1', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 39, -0.1) }), code: 'OUT_OF_RANGE', arg: '$b' },
  { name: 'g > 0', make: (o) => ({ ...o, g: withValue(o.g as Tensor, 5, 0.01) }), code: 'OUT_OF_RANGE', arg: 'g' },
  { name: 'g NaN', make: (o) => ({ ...o, g: withValue(o.g as Tensor, 5, NaN) }), code: 'NON_FINITE', arg: 'g' },
  { name: 'g -Infinity', make: (o) => ({ ...o, g: withValue(o.g as Tensor, 5, -Infinity) }), code: 'NON_FINITE', arg: 'g' },
  { name: 'g > 0 in bfloat16', make: (o) => ({ ...o, g: withValue((o.g as Tensor).astype('bfloat16'), 5, 1) }), code: 'OUT_OF_RANGE', arg: 'g' },
  { name: 'decay 1.5', make: (o) => ({ ...o, g: undefined, decay: withValue(rand([2, 5, 4], { low: -1, high: 1 }), 9, 1.5) }), code: 'OUT_OF_RANGE', arg: 'decay' },
  { name: 'decay -1.01', make: (o) => ({ ...o, g: undefined, decay: withValue(rand([2, 5, 4], { low: -1, high: 1 }), 0, -1.01) }), code: 'OUT_OF_RANGE', arg: 'decay' },
  { name: 'decay NaN', make: (o) => ({ ...o, g: undefined, decay: withValue(rand([2, 5, 4], { low: -1, high: 1 }), 0, NaN) }), code: 'NON_FINITE', arg: 'decay' },
  // combinations
  { name: 'both g and decay', make: (o) => ({ ...o, decay: rand([2, 5, 4], { low: -1, high: 1 }) }), code: 'BAD_ARGUMENT', arg: 'decay' },
  { name: 'beta and eta both', make: (o, b) => ({ ...o, [b === 'beta' ? 'eta' : 'beta']: rand([2, 5, 4], { high: 1 }) }), code: 'BAD_ARGUMENT' },
  { name: 'neither beta nor eta', make: (o, b) => ({ ...o, [b]: undefined }), code: 'BAD_ARGUMENT', arg: '$b' },
  // cuSeqlens (B = 1, T = 5)
  { name: 'cuSeqlens not increasing', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [0, 3, 2, 5] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens not ending at T', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [0, 2, 4] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens past T', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: Int32Array.from([0, 2, 6]) }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens not starting at 0', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [1, 3, 5] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with B = 2', make: (o) => ({ ...o, initialState: undefined, cuSeqlens: [0, 5] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlens' },
  { name: 'cuSeqlens of one offset', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [0] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlens' },
  { name: 'cuSeqlens a Float32Array', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: Float32Array.from([0, 5]) }), code: 'BAD_DTYPE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with a fraction', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [0, 2.5, 5] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with NaN', make: (o) => ({ ...prefillBase(isKla(o), 1, 5), initialState: undefined, cuSeqlens: [0, NaN, 5] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlens' },
  {
    name: 'initialState of N = B while cuSeqlens packs 3 sequences',
    make: (o) => ({ ...prefillBase(isKla(o), 1, 5), cuSeqlens: [0, 1, 3, 5] }),
    code: 'SHAPE_MISMATCH',
    arg: 'initialState',
  },
  // options
  { name: 'chunkSize 0', make: (o) => ({ ...o, chunkSize: 0 }), code: 'OUT_OF_RANGE', arg: 'chunkSize' },
  { name: 'chunkSize 1000', make: (o) => ({ ...o, chunkSize: 1000 }), code: 'OUT_OF_RANGE', arg: 'chunkSize' },
  { name: 'chunkSize 16.5', make: (o) => ({ ...o, chunkSize: 16.5 }), code: 'BAD_ARGUMENT', arg: 'chunkSize' },
  { name: 'chunkSize NaN', make: (o) => ({ ...o, chunkSize: NaN }), code: 'BAD_ARGUMENT', arg: 'chunkSize' },
  { name: "algorithm 'fast'", make: (o) => ({ ...o, algorithm: 'fast' }), code: 'BAD_ARGUMENT', arg: 'algorithm' },
  { name: 'algorithm a number', make: (o) => ({ ...o, algorithm: 1 }), code: 'BAD_ARGUMENT', arg: 'algorithm' },
  { name: 'scale NaN', make: (o) => ({ ...o, scale: NaN }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale Infinity', make: (o) => ({ ...o, scale: Infinity }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale a string', make: (o) => ({ ...o, scale: '0.5' }), code: 'BAD_ARGUMENT', arg: 'scale' },
  { name: 'eps 0', make: (o) => ({ ...o, eps: 0 }), code: 'OUT_OF_RANGE', arg: 'eps' },
  { name: 'eps NaN', make: (o) => ({ ...o, eps: NaN }), code: 'NON_FINITE', arg: 'eps' },
  { name: "qkL2Norm 'yes'", make: (o) => ({ ...o, qkL2Norm: 'yes' }), code: 'BAD_ARGUMENT', arg: 'qkL2Norm' },
  { name: "backend 'cuda'", make: (o) => ({ ...o, backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
  { name: "backend 'gpu'", make: (o) => ({ ...o, backend: 'gpu' }), code: 'BAD_ARGUMENT', arg: 'backend' },
];

function isKla(o: Opts): boolean {
  return o.eta !== undefined;
}

const STEP_CASES: BadCase[] = [
  { name: 'q of rank 5 (rank 4 is a speculative verify)', make: (o) => ({ ...o, q: f32([2, 1, 1, 2, 3]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k with another K', make: (o) => ({ ...o, k: f32([2, 2, 4]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v with another N', make: (o) => ({ ...o, v: f32([3, 4, 2]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'beta with another HV', make: (o, b) => ({ ...o, [b]: f32([2, 3]) }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'beta of rank 3 (a prefill shape)', make: (o, b) => ({ ...o, [b]: rand([2, 1, 4], { high: 1 }) }), code: 'SHAPE_MISMATCH', arg: '$b' },
  { name: 'g with another N', make: (o) => ({ ...o, g: f32([1, 4]) }), code: 'SHAPE_MISMATCH', arg: 'g' },
  { name: 'decay of rank 1', make: (o) => ({ ...o, g: undefined, decay: f32([8]) }), code: 'SHAPE_MISMATCH', arg: 'decay' },
  { name: 'state with another K', make: (o) => ({ ...o, state: f32([2, 4, 4, 2]) }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state with another N', make: (o) => ({ ...o, state: f32([1, 4, 3, 2]) }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state of rank 3', make: (o) => ({ ...o, state: f32([2, 4, 6]) }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state with a short buffer', make: (o) => ({ ...o, state: new Tensor(new Float32Array(47), [2, 4, 3, 2], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state huge over a short buffer', make: (o) => ({ ...o, state: new Tensor(new Float32Array(48), [2e5, 4e5, 3e5, 2], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state missing', make: (o) => ({ ...o, state: undefined }), code: 'BAD_ARGUMENT', arg: 'state' },
  { name: 'state a Float32Array', make: (o) => ({ ...o, state: new Float32Array(48) }), code: 'BAD_ARGUMENT', arg: 'state' },
  { name: 'state float16', make: (o) => ({ ...o, state: (o.state as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'state' },
  { name: 'Float64Array data in a float32 state', make: (o) => ({ ...o, state: new Tensor(new Float64Array(48), [2, 4, 3, 2], 'float32') }), code: 'BAD_DTYPE', arg: 'state' },
  { name: 'Float64Array data in a float32 q', make: (o) => ({ ...o, q: new Tensor(new Float64Array(12), [2, 2, 3], 'float32') }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'q with a short buffer', make: (o) => ({ ...o, q: new Tensor(new Float32Array(11), [2, 2, 3], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'v not a Tensor', make: (o) => ({ ...o, v: { shape: [2, 4, 2] } }), code: 'BAD_ARGUMENT', arg: 'v' },
  { name: 'HV not a multiple of H', make: (o, b) => ({ ...o, v: f32([2, 3, 2]), [b]: rand([2, 3], { high: 1 }), g: undefined, state: f32([2, 3, 3, 2]) }), code: 'SHAPE_MISMATCH', arg: 'HV' },
  { name: 'NaN beta', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 2, NaN) }), code: 'NON_FINITE', arg: '$b' },
  { name: 'beta 2.001', make: (o, b) => ({ ...o, [b]: withValue(o[b] as Tensor, 7, 2.001) }), code: 'OUT_OF_RANGE', arg: '$b' },
  { name: 'g 0.5', make: (o) => ({ ...o, g: withValue(o.g as Tensor, 1, 0.5) }), code: 'OUT_OF_RANGE', arg: 'g' },
  { name: 'decay -2', make: (o) => ({ ...o, g: undefined, decay: withValue(rand([2, 4], { low: -1, high: 1 }), 1, -2) }), code: 'OUT_OF_RANGE', arg: 'decay' },
  { name: 'both g and decay', make: (o) => ({ ...o, decay: rand([2, 4], { low: -1, high: 1 }) }), code: 'BAD_ARGUMENT', arg: 'decay' },
  { name: 'beta and eta both', make: (o, b) => ({ ...o, [b === 'beta' ? 'eta' : 'beta']: rand([2, 4], { high: 1 }) }), code: 'BAD_ARGUMENT' },
  { name: 'neither beta nor eta', make: (o, b) => ({ ...o, [b]: undefined }), code: 'BAD_ARGUMENT', arg: '$b' },
  { name: 'scale -Infinity', make: (o) => ({ ...o, scale: -Infinity }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'eps -1', make: (o) => ({ ...o, eps: -1 }), code: 'OUT_OF_RANGE', arg: 'eps' },
  { name: "backend 'cuda'", make: (o) => ({ ...o, backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
];

/** Byte snapshots of every tensor in the options (state and initialState included). */
function snapAll(o: Opts): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  for (const [key, val] of Object.entries(o)) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

function expectUntouched(snaps: [Tensor, Uint8Array, string][], what: string): void {
  for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${what}: ${key} was modified`).toBe(true);
}

function runCases(forms: OpForm[], cases: BadCase[], base: (kla: boolean) => Opts) {
  for (const form of forms) {
    const b = form.kla ? 'eta' : 'beta';
    describe(form.name, () => {
      it('the valid base call succeeds (so each case below fails for its own reason)', async () => {
        expect(() => form.sync(base(form.kla) as never)).not.toThrow();
        await expect(form.async(base(form.kla) as never)).resolves.toBeDefined();
      });
      for (const c of cases) {
        const arg = c.arg === '$b' ? b : c.arg;
        const name = c.name.replace(/\bbeta\b/, b);
        it(`${name} -> ${c.code} (sync)`, () => {
          const o = c.make(base(form.kla), b);
          const snaps = snapAll(o);
          let err: unknown;
          try {
            form.sync(o as never);
          } catch (e) {
            err = e;
          }
          checkSeqkernError(err, c.code, arg, `${form.name}: ${name}`);
          expectUntouched(snaps, `${form.name}: ${name}`);
        });
        it(`${name} -> ${c.code} (async rejects alike)`, async () => {
          const o = c.make(base(form.kla), b);
          const snaps = snapAll(o);
          await expectSeqkernRejection(() => form.async(o as never), c.code, arg, `${form.name}Async: ${name}`);
          expectUntouched(snaps, `${form.name}Async: ${name}`);
        });
      }
      it('options not an object -> BAD_ARGUMENT', async () => {
        for (const bad of [undefined, null, 3, 'q']) {
          expect(() => form.sync(bad as never), String(bad)).toThrow(SeqkernError);
          await expect(form.async(bad as never), String(bad)).rejects.toBeInstanceOf(SeqkernError);
        }
      });
      if (forms === PREFILL) {
        it(`${b} given to the other op's name is refused (gatedDeltaRule takes beta, kaczmarzDeltaRule eta)`, () => {
          const o = base(form.kla);
          const swapped = { ...o, [b === 'beta' ? 'eta' : 'beta']: o[b], [b]: undefined };
          expect(() => form.sync(swapped as never)).toThrow(SeqkernError);
        });
      }
    });
  }
}

describe('bad input to the prefill ops', () => runCases(PREFILL, PREFILL_CASES, (kla) => prefillBase(kla)));
describe('bad input to the decode steps', () => runCases(STEP, STEP_CASES, stepBase));

describe('huge sizes are refused before anything is allocated', () => {
  // A zero-length axis makes every input empty, so the shapes agree, but the outputs (here finalState,
  // [2^24, 1, 64, 64] = 2^36 floats) would be enormous: the op must refuse with a SeqkernError (DESIGN.md 4:
  // "element counts checked against caps"), not throw a RangeError from the allocator or try to allocate.
  for (const form of PREFILL) {
    it(`${form.name}: q [2^24, 0, 1, 64] with outputFinalState -> SeqkernError TOO_LARGE`, () => {
      const B = 2 ** 24;
      const b = form.kla ? 'eta' : 'beta';
      const o = { q: zeros([B, 0, 1, 64]), k: zeros([B, 0, 1, 64]), v: zeros([B, 0, 1, 64]), [b]: zeros([B, 0, 1]), outputFinalState: true, backend: 'cpu' };
      let err: unknown;
      try {
        form.sync(o as never);
      } catch (e) {
        err = e;
      }
      expect(err, `got ${String(err)}`).toBeInstanceOf(SeqkernError);
      expect((err as SeqkernError).code).toBe('TOO_LARGE');
    });
  }
});

// ---- the raw addon re-checks everything (anything may call it directly) ----

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonPath = path.join(root, 'build', 'Release', 'seqkern.node');

/**
 * Runs `mutate(base)` against the raw addon in a child process (so a crash shows as a signal, not a dead
 * test runner). Base: B=1, T=4, H=1, HV=2, K=3, V=2, float32, g log decay.
 */
function rawCall(mutate: string, asyncForm: boolean): ChildRun<RawResult> {
  const src = `
    const a = require(${JSON.stringify(addonPath)});
    const F = (n, x = 0.5) => new Float32Array(n).fill(x);
    const base = { B: 1, T: 4, H: 1, HV: 2, K: 3, V: 2, q: F(12), k: F(12, 0.3), v: F(16), dtype: 'float32',
      beta: F(8), betaDtype: 'float32', kaczmarz: false, eps: 1e-6, g: F(8, -0.1), gDtype: 'float32', decayKind: 'log',
      initialState: F(12), finalState: F(12), o: F(16, NaN), qkL2Norm: false, scale: 0.5, chunkSize: 64, algorithm: 'chunk' };
    const args = (${mutate})(base);
    const done = (r) => { process.stdout.write(JSON.stringify(r)); };
    const fromErr = (e, stage) => ({ ok: false, stage, isError: e instanceof Error, code: e && e.code, message: e && e.message });
    try {
      const r = ${asyncForm ? 'a.deltaRuleAsync(...(Array.isArray(args) ? args : [args]))' : 'a.deltaRule(...(Array.isArray(args) ? args : [args]))'};
      if (r && typeof r.then === 'function') r.then(() => done({ ok: true }), (e) => done(fromErr(e, 'rejected')));
      else done({ ok: true });
    } catch (e) { done(fromErr(e, 'threw')); }
  `;
  return runInChild(src);
}

const RAW_CASES: { name: string; mutate: string; code: string }[] = [
  { name: 'q shorter than B*T*H*K', mutate: '(b) => ({ ...b, q: F(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'k longer than B*T*H*K', mutate: '(b) => ({ ...b, k: F(13) })', code: 'SHAPE_MISMATCH' },
  { name: 'v shorter than B*T*HV*V', mutate: '(b) => ({ ...b, v: F(15) })', code: 'SHAPE_MISMATCH' },
  { name: 'o shorter than B*T*HV*V', mutate: '(b) => ({ ...b, o: F(8) })', code: 'SHAPE_MISMATCH' },
  { name: 'beta shorter than B*T*HV', mutate: '(b) => ({ ...b, beta: F(7) })', code: 'SHAPE_MISMATCH' },
  { name: 'g shorter than B*T*HV', mutate: '(b) => ({ ...b, g: F(2, -1) })', code: 'SHAPE_MISMATCH' },
  { name: 'initialState short', mutate: '(b) => ({ ...b, initialState: F(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'finalState short', mutate: '(b) => ({ ...b, finalState: F(1) })', code: 'SHAPE_MISMATCH' },
  { name: 'T larger than the data', mutate: '(b) => ({ ...b, T: 1000 })', code: 'SHAPE_MISMATCH' },
  { name: 'NaN beta', mutate: '(b) => { const beta = F(8); beta[5] = NaN; return { ...b, beta }; }', code: 'NON_FINITE' },
  { name: 'beta 3', mutate: '(b) => ({ ...b, beta: F(8, 3) })', code: 'OUT_OF_RANGE' },
  { name: 'float16 beta holding NaN bits', mutate: "(b) => ({ ...b, beta: new Uint16Array(8).fill(0x7e00), betaDtype: 'float16' })", code: 'NON_FINITE' },
  { name: 'g > 0', mutate: '(b) => ({ ...b, g: F(8, 0.5) })', code: 'OUT_OF_RANGE' },
  { name: 'g -Infinity', mutate: '(b) => ({ ...b, g: F(8, -Infinity) })', code: 'NON_FINITE' },
  { name: 'signed decay 2', mutate: "(b) => ({ ...b, decayKind: 'sign', g: F(8, 2) })", code: 'OUT_OF_RANGE' },
  { name: "decayKind 'log' without g", mutate: '(b) => ({ ...b, g: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'an unknown decayKind', mutate: "(b) => ({ ...b, decayKind: 'exp' })", code: 'BAD_ARGUMENT' },
  { name: 'q a Float64Array', mutate: '(b) => ({ ...b, q: new Float64Array(12) })', code: 'BAD_DTYPE' },
  { name: 'q a plain array', mutate: '(b) => ({ ...b, q: [1, 2, 3] })', code: 'BAD_DTYPE' },
  { name: 'dtype float64', mutate: "(b) => ({ ...b, dtype: 'float64' })", code: 'BAD_DTYPE' },
  { name: 'dtype float16 over Float32Arrays', mutate: "(b) => ({ ...b, dtype: 'float16' })", code: 'BAD_DTYPE' },
  { name: 'initialState a Uint16Array', mutate: '(b) => ({ ...b, initialState: new Uint16Array(12) })', code: 'BAD_DTYPE' },
  { name: 'HV not a multiple of H', mutate: '(b) => ({ ...b, H: 2, q: F(24), k: F(24), HV: 3, v: F(24), beta: F(12), g: F(12, -1), o: F(24), initialState: undefined, finalState: undefined })', code: 'SHAPE_MISMATCH' },
  { name: 'H = 0', mutate: '(b) => ({ ...b, H: 0 })', code: 'SHAPE_MISMATCH' },
  { name: 'K = 2000', mutate: '(b) => ({ ...b, K: 2000 })', code: 'TOO_LARGE' },
  { name: 'B negative', mutate: '(b) => ({ ...b, B: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'T fractional', mutate: '(b) => ({ ...b, T: 1.5 })', code: 'OUT_OF_RANGE' },
  { name: 'T = 2^31', mutate: '(b) => ({ ...b, T: 2 ** 31 })', code: 'OUT_OF_RANGE' },
  { name: 'B a string', mutate: "(b) => ({ ...b, B: '1' })", code: 'BAD_ARGUMENT' },
  { name: 'q missing', mutate: '(b) => ({ ...b, q: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'o missing', mutate: '(b) => ({ ...b, o: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'cuSeqlens ending past T', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 2, 5]), initialState: undefined, finalState: undefined })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens decreasing', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 3, 1, 4]), initialState: undefined, finalState: undefined })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens negative start', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([-4, 4]), initialState: undefined, finalState: undefined })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens a Float32Array', mutate: '(b) => ({ ...b, cuSeqlens: Float32Array.from([0, 4]) })', code: 'BAD_DTYPE' },
  { name: 'cuSeqlens of one offset', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlens with B = 2', mutate: '(b) => ({ ...b, B: 2, T: 2, cuSeqlens: Int32Array.from([0, 2]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlens N disagreeing with initialState', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 1, 4]) })', code: 'SHAPE_MISMATCH' },
  { name: 'chunkSize 0', mutate: '(b) => ({ ...b, chunkSize: 0 })', code: 'OUT_OF_RANGE' },
  { name: 'chunkSize 1e9', mutate: '(b) => ({ ...b, chunkSize: 1e9 })', code: 'OUT_OF_RANGE' },
  { name: "algorithm 'fast'", mutate: "(b) => ({ ...b, algorithm: 'fast' })", code: 'BAD_ARGUMENT' },
  { name: 'scale NaN', mutate: '(b) => ({ ...b, scale: NaN })', code: 'NON_FINITE' },
  { name: 'eps 0', mutate: '(b) => ({ ...b, eps: 0 })', code: 'OUT_OF_RANGE' },
  { name: 'cancel a Float32Array', mutate: '(b) => ({ ...b, cancel: new Float32Array(1) })', code: 'BAD_DTYPE' },
  { name: 'no argument', mutate: '(b) => []', code: 'BAD_ARGUMENT' },
  { name: 'a number for the argument object', mutate: '(b) => [5]', code: 'BAD_ARGUMENT' },
  {
    // B*T*H*K = 2^20 * 2^22 * 2^22 * 1 = 2^64: wraps to 0 in int64, the length of the empty arrays given.
    name: 'dimension products that overflow int64 (B=2^20, T=2^22, H=HV=2^22, K=V=1, empty arrays)',
    mutate: "(b) => ({ B: 2 ** 20, T: 2 ** 22, H: 2 ** 22, HV: 2 ** 22, K: 1, V: 1, q: F(0), k: F(0), v: F(0), dtype: 'float32', beta: F(0), betaDtype: 'float32', o: F(0), decayKind: 'none', algorithm: 'recurrent', chunkSize: 64, scale: 1, eps: 1e-6, kaczmarz: false, qkL2Norm: false })",
    code: 'TOO_LARGE|SHAPE_MISMATCH',
  },
];

describe('raw addon: the C++ re-check', () => {
  it('in process: inconsistent lengths and NaN beta throw an Error with a .code (deltaRule and deltaRuleAsync)', async () => {
    const raw = createRequire(import.meta.url)('../build/Release/seqkern.node') as {
      deltaRule(a: object): void;
      deltaRuleAsync(a: object): Promise<void>;
    };
    const F = (n: number, x = 0.5) => new Float32Array(n).fill(x);
    const base = {
      B: 1, T: 4, H: 1, HV: 2, K: 3, V: 2, q: F(12), k: F(12, 0.3), v: F(16), dtype: 'float32', beta: F(8), betaDtype: 'float32',
      kaczmarz: false, eps: 1e-6, decayKind: 'none', o: F(16, NaN), qkL2Norm: false, scale: 0.5, chunkSize: 64, algorithm: 'chunk',
    };
    const nanBeta = F(8);
    nanBeta[3] = NaN;
    const bad: [string, object, string][] = [
      ['short q', { ...base, q: F(5) }, 'SHAPE_MISMATCH'],
      ['long v', { ...base, v: F(17) }, 'SHAPE_MISMATCH'],
      ['NaN beta', { ...base, beta: nanBeta }, 'NON_FINITE'],
    ];
    for (const [name, args, code] of bad) {
      for (const [fname, f] of [['deltaRule', raw.deltaRule], ['deltaRuleAsync', raw.deltaRuleAsync]] as const) {
        let err: unknown;
        try {
          const p = (f as (a: object) => unknown)(args);
          if (p instanceof Promise) await p; // a rejection is as good as a throw
        } catch (e) {
          err = e;
        }
        expect(err, `${fname}: ${name}`).toBeInstanceOf(Error);
        expect((err as { code?: string }).code, name).toBe(code);
      }
    }
    const o = F(16, NaN);
    raw.deltaRule({ ...base, o });
    expect(Array.from(o).every(Number.isFinite), 'the valid base call writes every output').toBe(true);
  });

  it('the base call is valid and writes every output', () => {
    const r = rawCall('(b) => b', false);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.result, r.stderr).toEqual({ ok: true });
  });
  for (const c of RAW_CASES) {
    for (const asyncForm of [false, true]) {
      it(`${asyncForm ? 'deltaRuleAsync' : 'deltaRule'}: ${c.name} -> Error with .code ${c.code}, no crash`, () => {
        expectRawFailure(rawCall(c.mutate, asyncForm), c.code);
      });
    }
  }
});

// ---- fuzzing the public API ----

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20251125);

type Kind = 'prefill' | 'kla' | 'step';

interface Mutation {
  target: number; // index into the tensor list
  how: 'dim' | 'value' | TensorMutation;
  pick: number; // which dim / junk / value
}

const specArb = fc.record({
  kind: fc.constantFrom<Kind>('prefill', 'kla', 'step'),
  B: fc.integer({ min: 0, max: 3 }),
  T: fc.integer({ min: 0, max: 7 }),
  H: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 12 }, { arbitrary: fc.constant(0), weight: 1 }),
  group: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 12 }, { arbitrary: fc.constant(0), weight: 1 }),
  hvExtra: fc.oneof({ arbitrary: fc.constant(0), weight: 12 }, { arbitrary: fc.integer({ min: 1, max: 2 }), weight: 1 }),
  K: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 6 }), weight: 20 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  V: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 6 }), weight: 20 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  dtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  gateDtype: fc.constantFrom<DType>('float32', 'float32', 'float16', 'bfloat16', 'float64'),
  gate: fc.constantFrom('g', 'decay', 'none'),
  init: fc.boolean(),
  lens: fc.option(fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 4 }), { freq: 3 }),
  cuBad: fc.oneof({ arbitrary: fc.constant('none'), weight: 8 }, { arbitrary: fc.constantFrom('start', 'end', 'decreasing', 'B2', 'float', 'short'), weight: 1 }),
  backend: fc.constantFrom<unknown>(undefined, 'cpu', 'cpu', 'cpu', 'reference', 'cuda', 'gpu'),
  algorithm: fc.constantFrom<unknown>(undefined, 'auto', 'chunk', 'chunk', 'recurrent', 'recurrent', 'bogus'),
  chunkSize: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.integer({ min: 1, max: 80 }), weight: 4 },
    { arbitrary: fc.constantFrom<unknown>(0, 257, 1000, -1, 2.5, NaN, '16'), weight: 1 },
  ),
  scale: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.double({ min: 0.1, max: 2, noNaN: true }), weight: 4 },
    { arbitrary: fc.constantFrom<unknown>(NaN, Infinity, -Infinity, '1'), weight: 1 },
  ),
  eps: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 6 },
    { arbitrary: fc.double({ min: 1e-6, max: 1, noNaN: true }), weight: 3 },
    { arbitrary: fc.constantFrom<unknown>(0, -1, NaN), weight: 1 },
  ),
  qkL2Norm: fc.constantFrom<unknown>(undefined, true, false, false, 'yes'),
  mutations: fc.array(
    fc.record({
      target: fc.integer({ min: 0, max: 5 }),
      how: fc.constantFrom<Mutation['how']>('dim', 'rank', 'huge', 'short', 'storage', 'junk', 'detach', 'value'),
      pick: fc.nat({ max: 1000 }),
    }),
    { maxLength: 2 },
  ),
  noMutation: fc.boolean(),
  seed: fc.nat(),
});
type Spec = typeof specArb extends fc.Arbitrary<infer S> ? S : never;

/** Builds the call of a spec, and says which of its parts are invalid (so the op must throw). */
function build(spec: Spec) {
  const invalid: string[] = [];
  const step = spec.kind === 'step';
  const kla = spec.kind === 'kla';
  let { B, T } = spec;
  const { H, K, V } = spec;
  const HV = H * spec.group + spec.hvExtra;
  let cu: unknown;
  if (!step && spec.lens) {
    B = 1;
    T = spec.lens.reduce((a, b) => a + b, 0);
    const off = [0];
    for (const l of spec.lens) off.push(off[off.length - 1] + l);
    cu = off;
    if (spec.cuBad !== 'none') {
      invalid.push(`cuSeqlens ${spec.cuBad}`);
      if (spec.cuBad === 'start') cu = [1, ...off.slice(1)];
      else if (spec.cuBad === 'end') cu = [...off.slice(0, -1), T + 1];
      else if (spec.cuBad === 'decreasing') cu = [...off.slice(0, -1), T + 3, T];
      else if (spec.cuBad === 'B2') B = 2;
      else if (spec.cuBad === 'float') cu = Float32Array.from(off);
      else cu = [0];
    }
  }
  if (H < 1 || K < 1 || V < 1 || HV < 1) invalid.push('a zero head count or size');
  if (H >= 1 && HV % H !== 0) invalid.push('HV not a multiple of H');
  if (K > 1024 || V > 1024) invalid.push('K or V > 1024');
  const N = cu && Array.isArray(cu) && spec.cuBad === 'none' ? (cu as number[]).length - 1 : B;
  const lead = step ? [B] : [B, T];
  // Keep big K/V cases cheap: their data is never read (the shape check throws first).
  const next = seededUniform(spec.seed);
  const mk = (shape: number[], dt: DType, f: () => number) => tensor(Float64Array.from({ length: numel(shape) }, f), shape, dt);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const q = mk([...lead, H, K], spec.dtype, normal);
  const k = tensor(unitRows(mk([...lead, H, K], 'float64', normal)).toFloat64(), [...lead, H, K], spec.dtype);
  const v = mk([...lead, HV, V], spec.dtype, normal);
  const beta = mk([...lead, HV], spec.gateDtype, () => 2 * next());
  const gate =
    spec.gate === 'g' ? mk([...lead, HV], spec.gateDtype, () => -2 * next()) : spec.gate === 'decay' ? mk([...lead, HV], spec.gateDtype, () => 2 * next() - 1) : undefined;
  const state = step || spec.init ? mk([N, HV, K, V], 'float32', () => 0.5 * normal()) : undefined;
  const slots: (unknown | undefined)[] = [q, k, v, beta, gate, state];
  const names = ['q', 'k', 'v', kla ? 'eta' : 'beta', spec.gate === 'decay' ? 'decay' : 'g', step ? 'state' : 'initialState'];

  const mutated = new Set<number>();
  for (const m of spec.noMutation ? [] : spec.mutations) {
    const t = slots[m.target];
    // One mutation per tensor: a second one could undo the first (a rebuilt tensor has proper storage).
    if (!(t instanceof Tensor) || mutated.has(m.target)) continue;
    mutated.add(m.target);
    const name = names[m.target];
    const n = t.size;
    if (m.how === 'dim') {
      // For v, only its B/T/HV dims: V appears in no other tensor when there is no state.
      const rank = t.shape.length;
      const dimCount = m.target === 2 && !state ? rank - 1 : rank;
      if (dimCount === 0) continue;
      const shape = [...t.shape];
      shape[m.pick % dimCount] += 1;
      slots[m.target] = zeros(shape, t.dtype);
      invalid.push(`${name} dim changed`);
    } else if (m.how === 'value') {
      if ((m.target === 3 || m.target === 4) && n > 0) {
        const bad = [NaN, Infinity, -Infinity, 2.5, -0.5, 1.5][m.pick % 6];
        slots[m.target] = withValue(t, m.pick % n, bad);
        // 1.5 is a fine beta or eta ([0, 2]); -0.5 a fine g (<= 0) or decay ([-1, 1]).
        if (!((m.target === 3 && bad === 1.5) || (m.target === 4 && bad === -0.5))) invalid.push(`${name} = ${bad}`);
      }
    } else {
      const r = mutateTensor(t, m.how, m.pick, name);
      if (r) {
        slots[m.target] = r.value;
        invalid.push(r.invalid);
      }
    }
  }

  const opts: Opts = {
    q: slots[0], k: slots[1], v: slots[2], [names[3]]: slots[3], [names[5]]: slots[5],
    backend: spec.backend, qkL2Norm: spec.qkL2Norm, scale: spec.scale, eps: spec.eps,
  };
  if (slots[4] !== undefined) opts[names[4]] = slots[4];
  if (!step) {
    opts.algorithm = spec.algorithm;
    opts.chunkSize = spec.chunkSize;
    opts.outputFinalState = true;
    if (cu !== undefined) opts.cuSeqlens = cu;
  }
  if (spec.backend === 'cuda' || spec.backend === 'gpu') invalid.push(`backend ${String(spec.backend)}`);
  const f64 = [slots[0], slots[3], slots[4]].some((t) => t instanceof Tensor && t.dtype === 'float64');
  if (f64 && spec.backend === 'cpu') invalid.push('float64 inputs on cpu');
  if (spec.scale !== undefined && !(typeof spec.scale === 'number' && Number.isFinite(spec.scale))) invalid.push('scale');
  if (spec.eps !== undefined && !(typeof spec.eps === 'number' && spec.eps > 0)) invalid.push('eps');
  if (spec.qkL2Norm !== undefined && typeof spec.qkL2Norm !== 'boolean') invalid.push('qkL2Norm');
  if (!step) {
    if (spec.algorithm === 'bogus') invalid.push('algorithm');
    const c = spec.chunkSize;
    if (c !== undefined && !(typeof c === 'number' && Number.isInteger(c) && c >= 1 && c <= 256)) invalid.push('chunkSize');
  }
  return { opts, invalid, step, kla };
}

describe('fuzz: random bad (and good) calls give a SeqkernError or the right answer', () => {
  it(`1200 random calls at gatedDeltaRule / kaczmarzDeltaRule / gatedDeltaRuleStep / kaczmarzDeltaRuleStep (fast-check seed ${FC_SEED})`, () => {
    let valid = 0;
    let thrown = 0;
    fc.assert(
      fc.property(specArb, (spec) => {
        const { opts, invalid, step, kla } = build(spec);
        const stateT = opts[step ? 'state' : 'initialState'];
        const stateSnap = stateT instanceof Tensor && stateT.data.buffer.byteLength > 0 ? snapshot(stateT) : undefined;
        // The reference sees the inputs before the call (a step updates the state in place).
        let ref: { o: Tensor; s: Tensor } | undefined;
        if (invalid.length === 0) {
          if (step) {
            const r = gatedDeltaRuleStepReference(opts as never);
            ref = { o: r.o, s: r.state };
          } else {
            const r = gatedDeltaRuleReference(opts as never);
            ref = { o: r.o, s: r.finalState };
          }
        }
        const op = (step ? (kla ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep) : kla ? kaczmarzDeltaRule : gatedDeltaRule) as AnyOp;
        let result: unknown;
        let err: unknown;
        try {
          result = op(opts as never);
        } catch (e) {
          err = e;
        }
        const what = `spec ${JSON.stringify(spec)} invalid=[${invalid.join('; ')}]`;
        if (err !== undefined) {
          thrown++;
          if (!(err instanceof SeqkernError)) throw new Error(`${what}: threw a non-SeqkernError: ${String(err)}`);
          if (invalid.length === 0) throw new Error(`${what}: valid call threw ${err.code}: ${err.message}`);
          if (stateSnap && !sameBytes(stateT as Tensor, stateSnap)) throw new Error(`${what}: a failed call modified the state`);
          return;
        }
        if (invalid.length > 0) throw new Error(`${what}: an invalid call returned instead of throwing`);
        valid++;
        const r = result as { o: Tensor; finalState?: Tensor };
        const low = (opts.v as Tensor).dtype === 'float16' || (opts.v as Tensor).dtype === 'bfloat16';
        const tol = low ? 2e-2 : 1e-4;
        const checks: [string, Tensor, Tensor][] = [['o', r.o, ref!.o], [step ? 'state' : 'finalState', step ? (stateT as Tensor) : r.finalState!, ref!.s]];
        for (const [name, got, want] of checks) {
          if (got.size !== want.size) throw new Error(`${what}: ${name} has ${got.size} elements, want ${want.size}`);
          const bad = firstNonFinite(got);
          if (bad >= 0) throw new Error(`${what}: ${name}[${bad}] is not finite`);
          const e = relErr(got, want);
          if (!(e <= tol)) throw new Error(`${what}: ${name} relative error ${e} > ${tol}`);
        }
      }),
      { numRuns: 1200, seed: FC_SEED, endOnFailure: true },
    );
    // The generator should produce both kinds in fair numbers.
    expect(valid, 'valid calls').toBeGreaterThan(100);
    expect(thrown, 'refused calls').toBeGreaterThan(100);
  });
});
