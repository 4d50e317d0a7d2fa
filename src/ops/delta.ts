// Gated delta rule family: public ops (DESIGN.md 6.1). Validates in TypeScript, then runs the native CPU
// kernels (or the float64 reference when asked or when the addon is missing).
import { abortError, fail } from '../errors.js';
import { callNative, fromNative, native, resolveBackend, type NativeDeltaArgs } from '../backend.js';
import { gatedDeltaRuleReference, gatedDeltaRuleStepReference } from '../reference/delta.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData } from '../tensor.js';
import type { AsyncOptions, DeltaRuleOptions, DeltaRuleResult, DeltaStepOptions, DeltaStepResult } from '../types.js';
import {
  callerInt32, checkCuSeqlens, checkFinite, checkInt, checkOneOf, checkOptions, checkShape, checkTensor, checkValues, overlaps,
} from '../validate.js';
import { deltaCuda, wantsCuda } from '../cuda.js';

const wantsCudaDelta = (o: DeltaRuleOptions | DeltaStepOptions): boolean =>
  wantsCuda(o?.backend, o?.q, o?.k, o?.v, o?.beta, o?.eta, o?.g, o?.decay, (o as DeltaStepOptions)?.state, (o as DeltaRuleOptions)?.initialState, o?.out);

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_DIM = 1024;
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays

/** Set by the tests (SEQKERN_POISON=1): outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeDeltaArgs;
  N: number;
  stateShape: number[];
  oShape: number[];
  oDtype: DType;
  wantFinal: boolean;
  /** The caller's output tensor (opts.out), checked; o is written into it. */
  out?: Tensor;
}

/** Winner of the chunk-vs-recurrent race per (SIMD level, threads, K, V), measured once per process. */
const crossover = new Map<string, 'chunk' | 'recurrent'>();

/**
 * Times both algorithms once on a synthetic problem of this head size (T = 512, a few heads per thread,
 * ~10 ms in all) and keeps the faster. Which one wins depends on K, V, the SIMD level and the machine's
 * caches (README, "Choosing the algorithm"), so it is measured here rather than hard-coded.
 */
function calibrate(K: number, V: number): 'chunk' | 'recurrent' {
  const a = native()!;
  const inf = a.info();
  const key = `${inf.simd}:${inf.threads}:${K}:${V}`;
  const hit = crossover.get(key);
  if (hit) return hit;
  const T = 512, HV = 2 * inf.threads;
  const rnd = (n: number, lo: number, hi: number, seed: number) => {
    const x = new Float32Array(n);
    let s = seed >>> 0;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      x[i] = lo + ((hi - lo) * s) / 4294967296;
    }
    return x;
  };
  const args: NativeDeltaArgs = {
    B: 1, T, H: HV, HV, K, V,
    q: rnd(T * HV * K, -1, 1, 1), k: rnd(T * HV * K, -1, 1, 2), v: rnd(T * HV * V, -1, 1, 3), dtype: 'float32',
    beta: rnd(T * HV, 0, 1, 4), betaDtype: 'float32', kaczmarz: false, eps: 1e-6,
    g: rnd(T * HV, -0.1, 0, 5), gDtype: 'float32', decayKind: 'log',
    o: new Float32Array(T * HV * V), qkL2Norm: true, scale: 1 / Math.sqrt(K), chunkSize: 64, algorithm: 'chunk',
  };
  const best = { chunk: Infinity, recurrent: Infinity };
  for (let rep = 0; rep < 4; rep++) {
    for (const alg of ['chunk', 'recurrent'] as const) {
      args.algorithm = alg;
      const t0 = process.hrtime.bigint();
      a.deltaRule(args);
      const dt = Number(process.hrtime.bigint() - t0);
      if (rep > 0) best[alg] = Math.min(best[alg], dt); // rep 0 warms caches and pages
    }
  }
  const win = best.chunk <= best.recurrent ? 'chunk' : 'recurrent';
  crossover.set(key, win);
  return win;
}

/**
 * What 'auto' runs: the recurrence for sequences shorter than one chunk (the chunk form only adds work
 * there), otherwise the winner of a one-time measurement on this machine (calibrate above), or the
 * SEQKERN_DELTA_ALGORITHM environment variable when it names one.
 */
export function autoAlgorithm(avgLen: number, K: number, V: number): 'chunk' | 'recurrent' {
  const forced = process.env.SEQKERN_DELTA_ALGORITHM;
  if (forced === 'chunk' || forced === 'recurrent') return forced;
  if (avgLen < 64) return 'recurrent';
  return calibrate(K, V);
}

/** Every option the prefill and the step know (strict options: anything else is a BAD_ARGUMENT). */
const STEP_OPTIONS = ['backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'state', 'qkL2Norm', 'scale', 'eps', 'out'] as const;
const PREFILL_OPTIONS = [
  'backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'initialState', 'outputFinalState', 'cuSeqlens', 'qkL2Norm',
  'scale', 'eps', 'algorithm', 'chunkSize', 'out',
] as const;

function prepare(op: string, o: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean): Prepared {
  checkOptions(op, o, step ? STEP_OPTIONS : PREFILL_OPTIONS);
  const rank = step ? 3 : 4;
  const q = checkTensor(op, 'q', o.q, IN_DTYPES, rank);
  const k = checkTensor(op, 'k', o.k, IN_DTYPES, rank);
  const v = checkTensor(op, 'v', o.v, IN_DTYPES, rank);
  const B = q.shape[0];
  const T = step ? 1 : q.shape[1];
  const [H, K] = q.shape.slice(-2);
  const [HV, V] = v.shape.slice(-2);
  checkShape(op, 'k', k, q.shape);
  if (k.dtype !== q.dtype) fail('BAD_DTYPE', op, 'k', `of dtype ${q.dtype} (as q)`, k.dtype);
  if (v.dtype !== q.dtype) fail('BAD_DTYPE', op, 'v', `of dtype ${q.dtype} (as q)`, v.dtype);
  const lead = step ? [B] : [B, T];
  checkShape(op, 'v', v, [...lead, HV, V]);
  if (H < 1 || K < 1) fail('SHAPE_MISMATCH', op, 'q', 'with H >= 1 and K >= 1', `[${q.shape.join(',')}]`);
  if (HV < 1 || V < 1) fail('SHAPE_MISMATCH', op, 'v', 'with HV >= 1 and V >= 1', `[${v.shape.join(',')}]`);
  if (HV % H !== 0) fail('SHAPE_MISMATCH', op, 'v', `with HV a multiple of H=${H} (grouped value heads)`, `HV=${HV}`);
  if (K > MAX_DIM || V > MAX_DIM) fail('TOO_LARGE', op, 'q/v', `head dims K, V <= ${MAX_DIM}`, `K=${K}, V=${V}`);

  // beta or eta (KLA), exactly one.
  const betaName = kla ? 'eta' : 'beta';
  const other = kla ? o.beta : o.eta;
  if (other !== undefined) fail('BAD_ARGUMENT', op, kla ? 'beta' : 'eta', `to be absent (${op} takes ${betaName})`, 'a tensor');
  const betaT = checkTensor(op, betaName, kla ? o.eta : o.beta, IN_DTYPES, lead.length + 1);
  checkShape(op, betaName, betaT, [...lead, HV]);
  checkValues(op, betaName, betaT, 0, 2);

  if (o.g !== undefined && o.decay !== undefined) fail('BAD_ARGUMENT', op, 'g', 'or decay, not both', 'both');
  let decayKind: 'none' | 'log' | 'sign' = 'none';
  let gT: Tensor | undefined;
  if (o.g !== undefined) {
    gT = checkTensor(op, 'g', o.g, IN_DTYPES, lead.length + 1);
    checkShape(op, 'g', gT, [...lead, HV]);
    checkValues(op, 'g', gT, -Infinity, 0);
    decayKind = 'log';
  } else if (o.decay !== undefined) {
    gT = checkTensor(op, 'decay', o.decay, IN_DTYPES, lead.length + 1);
    checkShape(op, 'decay', gT, [...lead, HV]);
    checkValues(op, 'decay', gT, -1, 1);
    decayKind = 'sign';
  }

  const scale = o.scale === undefined ? 1 / Math.sqrt(K) : checkFinite(op, 'scale', o.scale);
  const eps = o.eps === undefined ? 1e-6 : checkFinite(op, 'eps', o.eps);
  if (eps <= 0) fail('OUT_OF_RANGE', op, 'eps', '> 0', String(eps));
  if (o.qkL2Norm !== undefined && typeof o.qkL2Norm !== 'boolean') fail('BAD_ARGUMENT', op, 'qkL2Norm', 'to be a boolean', typeof o.qkL2Norm);

  let N = B;
  let cu: Int32Array | undefined;
  let requested: 'auto' | 'chunk' | 'recurrent' = 'recurrent'; // a decode step is one token: the recurrence
  let chunkSize = 64;
  let wantFinal = false;
  let initial: Tensor | undefined;
  if (!step) {
    const po = o as DeltaRuleOptions;
    if (po.cuSeqlens !== undefined) {
      cu = checkCuSeqlens(op, po.cuSeqlens, T);
      if (B !== 1) fail('SHAPE_MISMATCH', op, 'q', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
      N = cu.length - 1;
    }
    requested = checkOneOf(op, 'algorithm', po.algorithm ?? 'auto', ['auto', 'chunk', 'recurrent'] as const);
    chunkSize = po.chunkSize === undefined ? 64 : checkInt(op, 'chunkSize', po.chunkSize, 1, 256);
    wantFinal = po.outputFinalState === true;
    if (po.initialState !== undefined) initial = checkTensor(op, 'initialState', po.initialState, ['float32'], 4);
  } else {
    initial = checkTensor(op, 'state', (o as DeltaStepOptions).state, ['float32'], 4);
    wantFinal = true;
  }
  const stateShape = [N, HV, K, V];
  // Outputs are allocated here: refuse sizes past the int32 element cap before allocating (an empty input
  // can declare any B, and finalState grows with it).
  for (const [name, shape] of [['v', v.shape], ['q', q.shape], [step ? 'state' : 'finalState', stateShape]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }
  const stateName = step ? 'state' : 'initialState';
  if (initial) checkShape(op, stateName, initial, stateShape);
  const oShape = step ? [B, HV, V] : [B, T, HV, V];

  // A caller's output: o's shape and dtype (v's), and memory apart from every input and the state. The
  // kernel reads them while other threads already write o, so no overlap is safe. (The prefill's finalState
  // is always a fresh tensor; the step's is the state itself, checked here.)
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [v.dtype], rank);
    checkShape(op, 'out', outT, oShape);
    const decayName = o.decay !== undefined ? 'decay' : 'g';
    const inputs: [string, TensorData | Int32Array | undefined][] = [
      ['q', q.data], ['k', k.data], ['v', v.data], [betaName, betaT.data], [decayName, gT?.data], [stateName, initial?.data],
      ['cuSeqlens', callerInt32((o as DeltaRuleOptions).cuSeqlens)],
    ];
    for (const [name, data] of inputs) {
      if (data && overlaps(outT.data, data)) {
        const apart = step ? `q, k, v, ${betaName}, ${decayName}, state` : `q, k, v, ${betaName}, ${decayName}, initialState, cuSeqlens`;
        fail('BAD_ARGUMENT', op, 'out', `memory apart from the inputs (${apart})`, `a view overlapping ${name}`);
      }
    }
  }

  const float64 = q.dtype === 'float64' || betaT.dtype === 'float64' || gT?.dtype === 'float64';
  const backend = resolveBackend(op, o.backend, float64);
  const algorithm = requested !== 'auto' ? requested : backend === 'cpu' ? autoAlgorithm(N > 0 ? (B * T) / N : 0, K, V) : 'recurrent';
  const args: NativeDeltaArgs = {
    B, T, H, HV, K, V,
    q: q.data, k: k.data, v: v.data, dtype: q.dtype,
    beta: betaT.data, betaDtype: betaT.dtype, kaczmarz: kla, eps,
    g: gT?.data, gDtype: gT?.dtype, decayKind,
    initialState: initial?.data as Float32Array | undefined,
    o: undefined as unknown as ArrayBufferView,
    cuSeqlens: cu, qkL2Norm: o.qkL2Norm === true, scale, chunkSize, algorithm,
  };
  return { backend, args, N, stateShape, oShape, oDtype: v.dtype, wantFinal, out: outT };
}

/**
 * Allocates the outputs, or takes the caller's `out` for o (the kernel writes straight into it), poisoned
 * under test either way, and wires them into the native arguments. (Under test an abort the worker honours
 * before its first write therefore leaves the poison in out, where normally out is untouched.)
 */
function allocate(p: Prepared, step: boolean): { o: Tensor; finalState?: Tensor } {
  const o = p.out ?? zeros(p.oShape, p.oDtype);
  if (poison) (o.data as Float32Array | Uint16Array).fill(p.oDtype === 'float32' ? NaN : 0x7fc0);
  p.args.o = o.data;
  p.args.callerOut = p.out !== undefined;
  let finalState: Tensor | undefined;
  if (step) {
    p.args.finalState = p.args.initialState; // in place
  } else if (p.wantFinal) {
    finalState = zeros(p.stateShape, 'float32');
    if (poison) finalState.data.fill(NaN);
    p.args.finalState = finalState.data as Float32Array;
  }
  return { o, finalState };
}

/** o in the reference's answer rounded to v's dtype, copied into the caller's `out` when given. */
function referenceO(r: { o: Tensor }, p: Prepared): Tensor {
  const o = tensor(r.o.data, p.oShape, p.oDtype);
  if (!p.out) return o;
  p.out.data.set(o.data);
  return p.out;
}

function runReference(op: string, opts: DeltaRuleOptions | DeltaStepOptions, p: Prepared, step: boolean, kla: boolean) {
  void op;
  const ref = { ...opts, beta: kla ? undefined : opts.beta, eta: kla ? opts.eta : undefined };
  if (step) {
    const r = gatedDeltaRuleStepReference(ref as DeltaStepOptions);
    (opts as DeltaStepOptions).state.data.set(r.state.data); // in place, as the native step
    return { o: referenceO(r, p) };
  }
  const r = gatedDeltaRuleReference(ref as DeltaRuleOptions);
  const out: DeltaRuleResult = { o: referenceO(r, p) };
  if (p.wantFinal) out.finalState = tensor(r.finalState.data, p.stateShape, 'float32');
  return out;
}

function runSync(op: string, opts: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean) {
  if (wantsCudaDelta(opts)) return deltaCuda(op, opts, step, kla, false) as DeltaRuleResult;
  const p = prepare(op, opts, step, kla);
  if (p.backend === 'reference') return runReference(op, opts, p, step, kla);
  const out = allocate(p, step);
  callNative(op, () => native()!.deltaRule(p.args));
  return step ? { o: out.o } : out.finalState ? { o: out.o, finalState: out.finalState } : { o: out.o };
}

async function runAsync(op: string, opts: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean, a: AsyncOptions = {}) {
  const signal = a.signal;
  if (signal?.aborted) throw abortError(signal);
  if (wantsCudaDelta(opts)) return deltaCuda(op, opts, step, kla, true, a);
  const p = prepare(op, opts, step, kla);
  // Again after prepare, which may run caller code (option getters), and before out or the state is touched.
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(op, opts, p, step, kla);
  const out = allocate(p, step);
  // The worker polls this flag between chunks; setting it makes the call reject with an AbortError. With an
  // in-place state (the step) or a caller's out, the worker reads it once before its first write and then
  // drops it.
  const cancel = new Int32Array(1);
  p.args.cancel = cancel;
  const onAbort = () => Atomics.store(cancel, 0, 1);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await native()!.deltaRuleAsync(p.args);
  } catch (e) {
    throw fromNative(op, e, signal);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  // A prefill with fresh outputs only: an abort that raced the last chunk still rejects (finalState included).
  // A caller's out is now completely written (the abort came after the start), so resolve with it, as the
  // step does with its state.
  if (!step && !p.out && signal?.aborted) throw abortError(signal);
  return step ? { o: out.o } : out.finalState ? { o: out.o, finalState: out.finalState } : { o: out.o };
}

/**
 * Gated delta rule prefill (Gated DeltaNet; DeltaNet without g; negative eigenvalues with beta in [0, 2];
 * signed decay with `decay`). q, k [B,T,H,K]; v [B,T,HV,V]; beta, g [B,T,HV] → o [B,T,HV,V] in v's dtype,
 * and finalState [N,HV,K,V] when `outputFinalState`. `out`: a Tensor of o's shape and v's dtype to write o
 * into (the result's `o` is `out` itself), for callers that reuse buffers; it must not overlap the inputs or
 * initialState: SHAPE_MISMATCH / BAD_DTYPE / BAD_ARGUMENT otherwise, raised before anything is written.
 */
export function gatedDeltaRule(opts: DeltaRuleOptions): DeltaRuleResult {
  return runSync('gatedDeltaRule', opts, false, false) as DeltaRuleResult;
}

/**
 * Promise form of gatedDeltaRule; runs off the event loop and can be aborted between chunks (rejecting with
 * an AbortError). With `out`, the abort is honoured only until the kernel starts, so `out` is never left
 * half-written: the signal is checked before the call and once more on the worker before the first write;
 * an abort by then rejects with `out` untouched, and an abort after that is ignored: the call runs to the
 * end and resolves with `out` (and finalState) completely written.
 */
export function gatedDeltaRuleAsync(opts: DeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult> {
  return runAsync('gatedDeltaRuleAsync', opts, false, false, a) as Promise<DeltaRuleResult>;
}

/** Kaczmarz linear attention: `eta` in place of beta, beta_t = eta_t / (|k_t|^2 + eps) in the kernel. */
export function kaczmarzDeltaRule(opts: DeltaRuleOptions): DeltaRuleResult {
  return runSync('kaczmarzDeltaRule', opts, false, true) as DeltaRuleResult;
}

export function kaczmarzDeltaRuleAsync(opts: DeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult> {
  return runAsync('kaczmarzDeltaRuleAsync', opts, false, true, a) as Promise<DeltaRuleResult>;
}

/**
 * One decode step: q, k [N,H,K]; v [N,HV,V]; beta, g [N,HV]; state [N,HV,K,V] float32, updated in place
 * (read and written once). Returns o [N,HV,V] in v's dtype, written into `out` when given (a Tensor of that
 * shape and dtype apart from the inputs and the state; the result's `o` is `out` itself).
 */
export function gatedDeltaRuleStep(opts: DeltaStepOptions): DeltaStepResult {
  return runSync('gatedDeltaRuleStep', opts, true, false) as DeltaStepResult;
}

/**
 * Promise form of the decode step. The signal is checked once, before the first write: an abort seen by then
 * leaves the state (and `out`) untouched; one after that is ignored (both completely written).
 */
export function gatedDeltaRuleStepAsync(opts: DeltaStepOptions, a?: AsyncOptions): Promise<DeltaStepResult> {
  return runAsync('gatedDeltaRuleStepAsync', opts, true, false, a) as Promise<DeltaStepResult>;
}

/** Decode step of Kaczmarz linear attention (eta in place of beta). */
export function kaczmarzDeltaRuleStep(opts: DeltaStepOptions): DeltaStepResult {
  return runSync('kaczmarzDeltaRuleStep', opts, true, true) as DeltaStepResult;
}

export function kaczmarzDeltaRuleStepAsync(opts: DeltaStepOptions, a?: AsyncOptions): Promise<DeltaStepResult> {
  return runAsync('kaczmarzDeltaRuleStepAsync', opts, true, true, a) as Promise<DeltaStepResult>;
}
