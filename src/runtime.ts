// The async runtime's public side: warmup() (the one-time calibrations, off the event loop when awaited),
// the calibration cache the delta ops read, and chain() (several ops validated once and run on the worker
// as one job, one Promise). The queue and the dispatcher thread are native (native/binding/runtime.cc).
import { abortError, fail, SeqkernError } from './errors.js';
import { fromNative, native } from './backend.js';
import type { AsyncOptions } from './types.js';
import { checkInt, checkOptions } from './validate.js';
import type { attention } from './ops/attention.js';
import type { gatedDeltaRule, gatedDeltaRuleStep, kaczmarzDeltaRule, kaczmarzDeltaRuleStep } from './ops/delta.js';
import type { hyperAttention } from './ops/hyper.js';
import type { softmax, softmaxInto } from './ops/softmax.js';
import type { causalConv1d, causalConv1dUpdate } from './ops/conv.js';
import type { rmsNorm, rmsNormGated } from './ops/norm.js';
import type { rotary } from './ops/rotary.js';
import type { linear } from './ops/linear.js';
import type { attentionWithKVCache } from './ops/kvcache.js';
import type { nalaAttention, nalaAttentionStep } from './ops/nala.js';

// ---- calibrations ----

export type DeltaAlgorithm = 'chunk' | 'recurrent';

/** One chunk-vs-recurrent race: the head dims, the winner, the best time of each (ns). */
export interface DeltaCalibration {
  K: number;
  V: number;
  algorithm: DeltaAlgorithm;
  chunkNs: number;
  recurrentNs: number;
  /** The SIMD level and pool size it was measured at (a change of either measures again). */
  simd: string;
  threads: number;
}

export interface WarmupOptions {
  /** Head dims (K, V) of the delta ops whose `algorithm: 'auto'` to calibrate; default K = V = 64 and 128. */
  delta?: readonly { K: number; V: number }[] | undefined;
}

export interface WarmupResult {
  delta: DeltaCalibration[];
}

const calibrations = new Map<string, DeltaCalibration>();
const calibrating = new Map<string, Promise<DeltaCalibration>>();

function machineKey(): { simd: string; threads: number } {
  const i = native()!.info();
  return { simd: i.simd, threads: i.threads };
}
const keyOf = (m: { simd: string; threads: number }, K: number, V: number) => `${m.simd}:${m.threads}:${K}:${V}`;

function calibrationOf(m: { simd: string; threads: number }, K: number, V: number, result: Int32Array, times: Float64Array): DeltaCalibration {
  const c: DeltaCalibration = {
    K, V, algorithm: result[0] === 0 ? 'chunk' : 'recurrent', chunkNs: times[0], recurrentNs: times[1], simd: m.simd, threads: m.threads,
  };
  calibrations.set(keyOf(m, K, V), c);
  return c;
}

/** The winner already measured for these head dims at the current SIMD level and pool size, if any. */
export function cachedDeltaAlgorithm(K: number, V: number): DeltaAlgorithm | undefined {
  return calibrations.get(keyOf(machineKey(), K, V))?.algorithm;
}

/**
 * Times both delta algorithms once on a synthetic problem of these head dims (T = 512, two heads per pool
 * thread, ~10 ms in all; natively, so the timing excludes JS) and keeps the faster, on this thread (sync).
 */
export function calibrateDelta(K: number, V: number): DeltaCalibration {
  const m = machineKey();
  const hit = calibrations.get(keyOf(m, K, V));
  if (hit) return hit;
  const result = new Int32Array(1), times = new Float64Array(2);
  native()!.deltaCalibrate({ K, V, result, times });
  return calibrationOf(m, K, V, result, times);
}

/** calibrateDelta on the worker (the event loop keeps running); concurrent requests share one race. */
export function calibrateDeltaAsync(K: number, V: number): Promise<DeltaCalibration> {
  const m = machineKey();
  const key = keyOf(m, K, V);
  const hit = calibrations.get(key);
  if (hit) return Promise.resolve(hit);
  let p = calibrating.get(key);
  if (!p) {
    const result = new Int32Array(1), times = new Float64Array(2);
    p = native()!.deltaCalibrateAsync({ K, V, result, times }).then(
      () => calibrationOf(m, K, V, result, times),
      (e: unknown) => { throw fromNative('warmupAsync', e); },
    );
    const done = () => calibrating.delete(key);
    p.then(done, done);
    calibrating.set(key, p);
  }
  return p;
}

const WARMUP_OPTIONS = ['delta'] as const;
const DEFAULT_DELTA = [{ K: 64, V: 64 }, { K: 128, V: 128 }] as const;

function warmupDims(op: string, opts: unknown): { K: number; V: number }[] {
  checkOptions(op, opts, WARMUP_OPTIONS);
  const o = opts as WarmupOptions;
  if (o.delta === undefined) return DEFAULT_DELTA.map((d) => ({ ...d }));
  if (!Array.isArray(o.delta)) fail('BAD_ARGUMENT', op, 'delta', 'to be an array of { K, V }', typeof o.delta);
  return o.delta.map((d: unknown, i: number) => {
    checkOptions(`${op} delta[${i}]`, d, ['K', 'V']);
    const x = d as { K: unknown; V: unknown };
    return { K: checkInt(op, `delta[${i}].K`, x.K, 1, 1024), V: checkInt(op, `delta[${i}].V`, x.V, 1, 1024) };
  });
}

/**
 * Runs the one-time calibrations now, on this thread: the delta ops' chunk-vs-recurrent race (what
 * `algorithm: 'auto'` picks for prefills of at least 64 tokens per sequence) for each head-dim pair asked
 * (default K = V = 64 and 128). Later calls find them cached. Without the native addon: nothing to do.
 */
export function warmup(opts: WarmupOptions = {}): WarmupResult {
  const dims = warmupDims('warmup', opts);
  if (!native()) return { delta: [] };
  return { delta: dims.map((d) => calibrateDelta(d.K, d.V)) };
}

/** warmup on seqkern's worker: the event loop keeps running while the races are timed. */
export async function warmupAsync(opts: WarmupOptions = {}): Promise<WarmupResult> {
  const dims = warmupDims('warmupAsync', opts);
  if (!native()) return { delta: [] };
  const delta: DeltaCalibration[] = [];
  for (const d of dims) delta.push(await calibrateDeltaAsync(d.K, d.V)); // one at a time: each owns the pool
  return { delta };
}

/** Every calibration made so far in this process (seqkern info --calibrate prints them). */
export function calibrationsMade(): DeltaCalibration[] {
  return [...calibrations.values()];
}

// ---- chained ops ----

/**
 * What an op hands the chain for one call, built at validation time: the native function (its sync name in
 * the addon) and its argument object, the result the op returns (outputs already allocated, written when
 * the chain runs), and optionally a preparation to finish first (the delta 'auto' calibration), in a sync
 * and an async form.
 */
export interface ChainPlan {
  fn: string;
  args: Record<string, unknown>;
  result: unknown;
  before?: (() => void) | undefined;
  beforeAsync?: (() => Promise<void>) | undefined;
}

/** An op's planner: the op's own arguments in, a plan out (throws the op's SeqkernErrors). */
export type ChainPlanner = (op: string, ...args: never[]) => ChainPlan;

const planners = new Map<string, ChainPlanner>();

/**
 * Makes an op chainable (called once by the op's module). `name` is the public op name; the planner
 * validates the op's arguments exactly as its sync form does, allocates its outputs, and returns the native
 * call (see ChainPlan). Ops that need the native backend refuse others with chainBackend().
 */
export function registerChainOp(name: string, planner: ChainPlanner): void {
  planners.set(name, planner);
}

/** The names chain().op() accepts. */
export function chainOps(): string[] {
  return [...planners.keys()];
}

/** Refuses a backend other than the native one for a chained op. */
export function chainBackend(op: string, backend: 'cpu' | 'reference'): void {
  if (backend !== 'cpu') {
    fail('BAD_ARGUMENT', op, 'backend', "'cpu' (a chain runs on the native addon: float32, float16 or bfloat16 inputs)", `'${backend}'`);
  }
}

/** A SeqkernError of a chained op, naming it: message "chain op <i> (<name>): ...", plus opIndex and op. */
export class ChainError extends SeqkernError {
  readonly opIndex: number;
  readonly op: string;
  constructor(e: SeqkernError, opIndex: number, op: string, message: string) {
    super(e.code, message, { argument: e.argument, expected: e.expected, got: e.got });
    this.opIndex = opIndex;
    this.op = op;
  }
}

const wrap = (e: unknown, i: number, name: string): unknown => {
  if (!(e instanceof SeqkernError)) return e;
  const rest = e.message.startsWith(`${name}: `) ? e.message.slice(name.length + 2) : e.message;
  return new ChainError(e, i, name, `chain op ${i} (${name}): ${rest}`);
};

/** The public op an op's native function belongs to in this chain, from the native "op <i> (fn): ..." prefix. */
function fromChainNative(names: string[], e: unknown, signal?: AbortSignal): unknown {
  const err = fromNative('chain', e, signal);
  if (!(err instanceof SeqkernError)) return err;
  const m = /^chain: op (\d+) \([^)]*\): ([\s\S]*)$/.exec(err.message);
  if (!m) return err;
  const i = Number(m[1]);
  return new ChainError(err, i, names[i] ?? '?', `chain op ${i} (${names[i]}): ${m[2]}`);
}

/**
 * The chainable ops and their sync forms: op(name, ...args) takes that form's arguments and add() returns its
 * result type. An op made chainable with registerChainOp adds its entry here.
 */
export interface ChainOpMap {
  softmax: typeof softmax;
  softmaxInto: typeof softmaxInto;
  attention: typeof attention;
  hyperAttention: typeof hyperAttention;
  gatedDeltaRule: typeof gatedDeltaRule;
  kaczmarzDeltaRule: typeof kaczmarzDeltaRule;
  gatedDeltaRuleStep: typeof gatedDeltaRuleStep;
  kaczmarzDeltaRuleStep: typeof kaczmarzDeltaRuleStep;
  causalConv1d: typeof causalConv1d;
  causalConv1dUpdate: typeof causalConv1dUpdate;
  rmsNorm: typeof rmsNorm;
  rmsNormGated: typeof rmsNormGated;
  rotary: typeof rotary;
  linear: typeof linear;
  attentionWithKVCache: typeof attentionWithKVCache;
  nalaAttention: typeof nalaAttention;
  nalaAttentionStep: typeof nalaAttentionStep;
}
export type ChainOpName = keyof ChainOpMap;

/**
 * Several ops run as one unit on seqkern's worker: one queue hop and one Promise for all of them (a decode
 * step through every layer). Build it with op(name, ...args) — the op's own arguments, validated right
 * there exactly as its sync form would, its outputs allocated there — and run it with run({ signal }) (or
 * runSync()). An op's output tensor may be a later op's input (take it from result(i), or pass your own
 * `out` tensors and reuse them). A chain may be run again and again: each run rewrites the same outputs
 * (the inputs read at run time, so refill them between runs).
 */
export class Chain {
  private readonly plans: ChainPlan[] = [];
  private readonly names: string[] = [];
  private running = false;

  /**
   * Appends an op, validating its arguments now (a SeqkernError names the op's index and name: ChainError).
   * Returns the chain; the op's result (its output tensors, written when the chain runs) is result(i).
   */
  op<N extends ChainOpName>(name: N, ...args: Parameters<ChainOpMap[N]>): this;
  op(name: string, ...args: unknown[]): this {
    (this.add as (n: string, ...a: unknown[]) => unknown)(name, ...args);
    return this;
  }

  /** op() that returns the op's result (the output tensors it will write) instead of the chain. */
  add<N extends ChainOpName>(name: N, ...args: Parameters<ChainOpMap[N]>): ReturnType<ChainOpMap[N]>;
  add(name: string, ...args: unknown[]): unknown {
    const i = this.plans.length;
    const planner = planners.get(name);
    if (!planner) {
      fail('BAD_ARGUMENT', `chain op ${i}`, 'name', `one of ${chainOps().join(', ')}`, `'${String(name)}'`);
    }
    if (this.running) fail('BAD_ARGUMENT', 'chain', 'op', 'to be added while the chain is not running', 'a run in flight');
    let plan: ChainPlan;
    try {
      plan = (planner as (op: string, ...a: unknown[]) => ChainPlan)(name, ...args);
    } catch (e) {
      throw wrap(e, i, name);
    }
    this.plans.push(plan);
    this.names.push(name);
    return plan.result;
  }

  /** Number of ops. */
  get length(): number {
    return this.plans.length;
  }

  /** The result of op i (as the op itself returns it: a Tensor, or { o, finalState?, lse? }). */
  result(i: number): unknown {
    if (!Number.isInteger(i) || i < 0 || i >= this.plans.length) fail('OUT_OF_RANGE', 'chain.result', 'i', `in [0, ${this.plans.length})`, String(i));
    return this.plans[i].result;
  }

  private native(cancel?: Int32Array) {
    return { ops: this.plans.map((p) => ({ fn: p.fn, args: cancel ? { ...p.args, cancel } : p.args })), cancel };
  }

  /** Runs every op in order on this thread (one native call); returns their results. */
  runSync(): unknown[] {
    if (this.running) fail('BAD_ARGUMENT', 'chain.runSync', 'chain', 'not already running', 'a run in flight');
    const a = native();
    if (!a) fail('NATIVE_ERROR', 'chain.runSync', 'backend', 'the native addon', 'none loaded');
    for (const p of this.plans) p.before?.();
    try {
      a.chain(this.native());
    } catch (e) {
      throw fromChainNative(this.names, e);
    }
    return this.plans.map((p) => p.result);
  }

  /**
   * Runs every op in order on seqkern's worker, as one job; resolves with their results. The signal is
   * checked before the start, before each op, and inside each op at its usual cancellation points
   * (an in-place op — a decode step's state, a caller's `out` — reads it once before its first write and
   * then runs to the end). An abort rejects with an AbortError (cause: signal.reason); the ops that ran
   * before it keep their writes. One run at a time per chain.
   */
  async run(opts: AsyncOptions = {}): Promise<unknown[]> {
    const signal = opts?.signal;
    checkOptions('chain.run', opts, ['signal']);
    if (signal?.aborted) throw abortError(signal);
    if (this.running) fail('BAD_ARGUMENT', 'chain.run', 'chain', 'not already running', 'a run in flight');
    const a = native();
    if (!a) fail('NATIVE_ERROR', 'chain.run', 'backend', 'the native addon', 'none loaded');
    this.running = true;
    const cancel = new Int32Array(1);
    const onAbort = () => Atomics.store(cancel, 0, 1);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (const p of this.plans) if (p.beforeAsync) await p.beforeAsync();
      if (signal?.aborted) throw abortError(signal);
      try {
        await a.chainAsync(this.native(cancel));
      } catch (e) {
        throw fromChainNative(this.names, e, signal);
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.running = false;
    }
    return this.plans.map((p) => p.result);
  }
}

/** A new, empty chain of ops (see Chain). */
export function chain(): Chain {
  return new Chain();
}
