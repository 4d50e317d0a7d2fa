// HyperAttention (Han et al. 2023; DESIGN.md 6.4): public op. Validates in TypeScript, then runs the native
// CPU driver (native/cpu/hyper.cc, on the flash attention kernel) or the float64 reference (when asked, for
// float64 inputs, or when the addon is missing).
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend, type NativeHyperArgs } from '../backend.js';
import { hyperAttentionReference } from '../reference/hyper.js';
import { numel, Tensor, tensor, zeros, type DType } from '../tensor.js';
import type { AsyncOptions, HyperAttentionOptions, HyperAttentionResult, HyperAttentionResultWithLse } from '../types.js';
import type { TensorInput } from '../tensor.js';
import { checkFinite, checkInt, checkOptions, checkShape, checkTensor, overlaps } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_HEAD_DIM = 1024;
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays
const MAX_LSH_BITS = 16;
/** Leaves of the causal recursion (each costs a few words of plan; native/binding/hyper.cc kMaxLeaves). */
const MAX_LEAVES = 2 ** 20;

/** Set by the tests (SEQKERN_POISON=1): outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

/** One non-causal problem of a call: queries [q0, q0 + nq) against keys [k0, k0 + nk) of each sequence. */
export interface HyperProblem {
  q0: number; nq: number; k0: number; nk: number;
  /** Recursion depth (0: the whole call); problems are merged deepest first. */
  depth: number;
  /** nk < minSeqLen: exact attention (one block, no samples). */
  exact: boolean;
  /** Key blocks, keys per block, queries per block, samples (0 when exact or one block). */
  nb: number; bs: number; qbs: number; m: number;
}

export interface HyperPlan {
  /** The whole call is exact attention (non-causal S < minSeqLen; causal T <= minSeqLen). */
  direct: boolean;
  /** Causal: offsets of the exact causal leaves (0 first, T last). */
  leaves: number[];
  problems: HyperProblem[];
  /**
   * Per batch row and kv head: gathered query rows (each of Hq/Hk heads), block keys, sampled keys (each
   * problem's samples twice: native/cpu/hyper.cc), sequences.
   */
  qrows: number; krows: number; srows: number; seqs: number;
}

/** The plan of a call, as native/cpu/hyper.cc hyper_plan makes it (sizes per batch row and kv head). */
export function hyperPlan(T: number, S: number, causal: boolean, minSeqLen = 4096, blockSize = 256, sampleSize = 256): HyperPlan {
  const plan: HyperPlan = { direct: true, leaves: [], problems: [], qrows: 0, krows: 0, srows: 0, seqs: 0 };
  const add = (q0: number, nq: number, k0: number, nk: number, depth: number) => {
    const exact = nk < minSeqLen;
    const bs = exact ? nk : Math.min(blockSize, nk);
    const nb = exact ? 1 : Math.ceil(nk / bs);
    const qbs = exact ? nq : Number((BigInt(nq) * BigInt(bs) + BigInt(nk) - 1n) / BigInt(nk));
    plan.problems.push({ q0, nq, k0, nk, depth, exact, nb, bs, qbs, m: !exact && nb > 1 ? sampleSize : 0 });
  };
  const build = (a: number, n: number, depth: number): void => {
    if (n <= minSeqLen || n < 2) {
      plan.leaves.push(a);
      return;
    }
    const n1 = n - Math.floor(n / 2);
    build(a, n1, depth + 1);
    build(a + n1, n - n1, depth + 1);
    add(a + n1, n - n1, a, n1, depth);
  };
  if (!causal) {
    if (T >= 1 && S >= 1 && S >= minSeqLen) {
      plan.direct = false;
      add(0, T, 0, S, 0);
    }
  } else if (T >= 2 && T > minSeqLen) {
    plan.direct = false;
    build(0, T, 0);
    plan.leaves.push(T);
  }
  for (const p of plan.problems) {
    plan.qrows += p.nq;
    plan.krows += p.nk;
    plan.srows += 2 * p.m;
    plan.seqs += p.nb;
  }
  return plan;
}

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeHyperArgs;
  q: Tensor; k: Tensor; v: Tensor;
  oShape: number[];
  oDtype: DType;
  lseShape: number[];
  wantLse: boolean;
  refOpts: HyperAttentionOptions;
  out?: Tensor;
}

function describe(x: unknown): string {
  if (x === undefined || x === null) return String(x);
  if (ArrayBuffer.isView(x)) return x.constructor.name;
  return Array.isArray(x) ? 'an array' : typeof x;
}

/** Every option hyperAttention knows (strict options: anything else is a BAD_ARGUMENT). */
const HYPER_OPTIONS = ['backend', 'causal', 'scale', 'lshBits', 'blockSize', 'sampleSize', 'minSeqLen', 'seed', 'returnLse', 'out'] as const;

function prepare(op: string, q: unknown, k: unknown, v: unknown, o: HyperAttentionOptions): Prepared {
  checkOptions(op, o, HYPER_OPTIONS);
  const qT = checkTensor(op, 'q', q, IN_DTYPES, 4);
  const kT = checkTensor(op, 'k', k, IN_DTYPES, 4);
  const vT = checkTensor(op, 'v', v, IN_DTYPES, 4);
  const [B, T, Hq, D] = qT.shape;
  const [, S, Hk] = kT.shape;
  const Dv = vT.shape[3];
  if (Hq < 1 || D < 1) fail('SHAPE_MISMATCH', op, 'q', 'with Hq >= 1 and D >= 1', `[${qT.shape.join(',')}]`);
  if (Hk < 1) fail('SHAPE_MISMATCH', op, 'k', 'with Hk >= 1', `[${kT.shape.join(',')}]`);
  checkShape(op, 'k', kT, [B, S, Hk, D]);
  checkShape(op, 'v', vT, [B, S, Hk, Dv]);
  if (Dv < 1) fail('SHAPE_MISMATCH', op, 'v', 'with Dv >= 1', `[${vT.shape.join(',')}]`);
  if (Hq % Hk !== 0) fail('SHAPE_MISMATCH', op, 'k', `with Hk dividing Hq=${Hq} (grouped heads)`, `Hk=${Hk}`);
  if (kT.dtype !== qT.dtype) fail('BAD_DTYPE', op, 'k', `of dtype ${qT.dtype} (as q)`, kT.dtype);
  if (vT.dtype !== qT.dtype) fail('BAD_DTYPE', op, 'v', `of dtype ${qT.dtype} (as q)`, vT.dtype);
  if (D > MAX_HEAD_DIM || Dv > MAX_HEAD_DIM) fail('TOO_LARGE', op, 'q/v', `head dims D, Dv <= ${MAX_HEAD_DIM}`, `D=${D}, Dv=${Dv}`);

  if (o.causal !== undefined && typeof o.causal !== 'boolean') fail('BAD_ARGUMENT', op, 'causal', 'to be a boolean', describe(o.causal));
  if (o.returnLse !== undefined && typeof o.returnLse !== 'boolean') fail('BAD_ARGUMENT', op, 'returnLse', 'to be a boolean', describe(o.returnLse));
  const causal = o.causal === true;
  if (causal && S !== T) fail('SHAPE_MISMATCH', op, 'k', `with S = T = ${T} when causal (the authors' recursion)`, `S=${S}`);
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFinite(op, 'scale', o.scale);
  const lshBits = o.lshBits === undefined ? 7 : checkInt(op, 'lshBits', o.lshBits, 0, MAX_LSH_BITS);
  const blockSize = o.blockSize === undefined ? 256 : checkInt(op, 'blockSize', o.blockSize, 1, MAX_ELEMENTS);
  const sampleSize = o.sampleSize === undefined ? 256 : checkInt(op, 'sampleSize', o.sampleSize, 0, MAX_ELEMENTS);
  const minSeqLen = o.minSeqLen === undefined ? 4096 : checkInt(op, 'minSeqLen', o.minSeqLen, 0, MAX_ELEMENTS);
  const seed = o.seed === undefined ? 0 : checkInt(op, 'seed', o.seed, 0, Number.MAX_SAFE_INTEGER);

  const oShape = [B, T, Hq, Dv];
  const lseShape = [B, Hq, T];
  for (const [name, shape] of [['q', qT.shape], ['k', kT.shape], ['v', vT.shape], ['o', oShape], ['lse', lseShape]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }
  // The native driver's gathered copies (queries and block keys: about as many floats as q, k and v; the
  // sampled keys: 2 * sampleSize rows per problem) must fit the element cap too.
  // Causal: every leaf of the recursion is longer than floor((minSeqLen + 1) / 2), so this bounds the leaves
  // (and the problems, one fewer) before the plan enumerates them.
  if (causal && T > minSeqLen && Math.floor(T / Math.max(1, Math.floor((minSeqLen + 1) / 2))) > MAX_LEAVES) {
    fail('TOO_LARGE', op, 'minSeqLen', `at least ${Math.ceil((2 * T) / MAX_LEAVES)} for T=${T} (at most ${MAX_LEAVES} leaves of the causal recursion)`, `${minSeqLen}`);
  }
  if (B > 0) {
    const plan = hyperPlan(T, S, causal, minSeqLen, blockSize, sampleSize);
    const bh = B * Hk;
    const width = Math.max(D, Dv);
    const bufs: [string, number][] = [
      ['queries', plan.qrows * bh * (Hq / Hk) * width], ['keys', plan.krows * bh * width], ['sampled keys', plan.srows * bh * width],
      ['sequences', plan.seqs * bh + 1],
    ];
    for (const [what, n] of bufs) {
      if (n > MAX_ELEMENTS) fail('TOO_LARGE', op, 'sampleSize', `gathered ${what} of at most ${MAX_ELEMENTS} elements (lower sampleSize)`, `${n}`);
    }
  }

  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [vT.dtype], 4);
    checkShape(op, 'out', outT, oShape);
    for (const [name, data] of [['q', qT.data], ['k', kT.data], ['v', vT.data]] as const) {
      if (overlaps(outT.data, data)) fail('BAD_ARGUMENT', op, 'out', 'memory apart from the inputs (q, k, v)', `a view overlapping ${name}`);
    }
  }

  const backend = resolveBackend(op, o.backend as HyperAttentionOptions['backend'], qT.dtype === 'float64');
  const args: NativeHyperArgs = {
    B, T, S, Hq, Hk, D, Dv,
    q: qT.data, k: kT.data, v: vT.data, dtype: qT.dtype,
    o: undefined as unknown as ArrayBufferView,
    causal, scale, lshBits, blockSize, sampleSize, minSeqLen, seed,
  };
  const refOpts: HyperAttentionOptions = { causal, scale, lshBits, blockSize, sampleSize, minSeqLen, seed };
  return { backend, args, q: qT, k: kT, v: vT, oShape, oDtype: vT.dtype, lseShape, wantLse: o.returnLse === true, refOpts, out: outT };
}

/** Allocates the outputs (or takes the caller's `out`), poisoned under test, and wires them into the arguments. */
function allocate(p: Prepared): HyperAttentionResult {
  const o = p.out ?? zeros(p.oShape, p.oDtype);
  if (poison) (o.data as Float32Array | Uint16Array).fill(p.oDtype === 'float32' ? NaN : 0x7fc0);
  p.args.o = o.data;
  p.args.callerOut = p.out !== undefined;
  if (!p.wantLse) return { o };
  const lse = zeros(p.lseShape, 'float32');
  if (poison) lse.data.fill(NaN);
  p.args.lse = lse.data as Float32Array;
  return { o, lse };
}

function runReference(p: Prepared): HyperAttentionResult {
  const r = hyperAttentionReference(p.q, p.k, p.v, p.refOpts);
  const o = tensor(r.o.data, p.oShape, p.oDtype);
  if (p.out) p.out.data.set(o.data);
  const out: HyperAttentionResult = { o: p.out ?? o };
  if (p.wantLse) out.lse = tensor(r.lse.data, p.lseShape, 'float32');
  return out;
}

const addon = () => native()!;

/**
 * HyperAttention (Han et al. 2023), an approximation of attention in near-linear time: rows hashed by the
 * signs of x·R (angular LSH, R [D, lshBits] Gaussian from `seed`), queries and keys sorted by the Gray-code
 * rank of their bucket, exact attention inside each diagonal block of the sorted order (`blockSize` keys),
 * plus `sampleSize` keys sampled uniformly per batch row and kv head (those of the query's own block left
 * out) weighted by S / sampleSize, the two merged by log-sum-exp. With `causal` (S = T), the authors'
 * recursion: both diagonal halves recursively, the lower-left block non-causal; at `minSeqLen` keys or fewer
 * (non-causal: fewer than minSeqLen keys) it is exact attention. q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv],
 * Hq a multiple of Hk; float32, float16, bfloat16 (float64 runs on the reference). Options: `lshBits` (7),
 * `blockSize` (256), `sampleSize` (256), `minSeqLen` (4096), `seed` (0), `scale` (1/√D), `causal`,
 * `returnLse`, `out` (a tensor of o's shape and v's dtype apart from q, k, v). Returns o [B,T,Hq,Dv] (v's
 * dtype) and, with returnLse, lse [B,Hq,T] float32. The same seed gives the same bits on any thread count.
 */
export function hyperAttention(q: TensorInput, k: TensorInput, v: TensorInput, opts: HyperAttentionOptions & { returnLse: true }): HyperAttentionResultWithLse;
export function hyperAttention(q: TensorInput, k: TensorInput, v: TensorInput, opts?: HyperAttentionOptions): HyperAttentionResult;
export function hyperAttention(q: TensorInput, k: TensorInput, v: TensorInput, opts: HyperAttentionOptions = {}): HyperAttentionResult {
  const op = 'hyperAttention';
  const p = prepare(op, q, k, v, opts);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  callNative(op, () => addon().hyperAttention(p.args));
  return out;
}

/**
 * Promise form of hyperAttention; runs off the event loop and can be aborted between phases and key tiles
 * (rejecting with an AbortError). With `out`, the abort is honoured only until the kernel starts, so `out`
 * is never left half-written (as attentionAsync).
 */
export async function hyperAttentionAsync(
  q: TensorInput, k: TensorInput, v: TensorInput, opts: HyperAttentionOptions & { returnLse: true }, a?: AsyncOptions,
): Promise<HyperAttentionResultWithLse>;
export async function hyperAttentionAsync(
  q: TensorInput, k: TensorInput, v: TensorInput, opts?: HyperAttentionOptions, a?: AsyncOptions,
): Promise<HyperAttentionResult>;
export async function hyperAttentionAsync(
  q: TensorInput, k: TensorInput, v: TensorInput, opts: HyperAttentionOptions = {}, a: AsyncOptions = {},
): Promise<HyperAttentionResult> {
  const op = 'hyperAttentionAsync';
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  const p = prepare(op, q, k, v, opts);
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  await callNativeAsync(op, p.args, signal, () => addon().hyperAttentionAsync(p.args));
  if (!p.out && signal?.aborted) throw abortError(signal);
  return out;
}

// Chained ops (src/runtime.ts): hyperAttention's arguments validated as the sync form does, outputs allocated now.
registerChainOp('hyperAttention', (op: string, q: TensorInput, k: TensorInput, v: TensorInput, opts: HyperAttentionOptions = {}) => {
  const p = prepare(op, q, k, v, opts);
  chainBackend(op, p.backend);
  const result = allocate(p);
  return { fn: 'hyperAttention', args: p.args as unknown as Record<string, unknown>, result };
});
