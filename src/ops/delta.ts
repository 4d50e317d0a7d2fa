// Gated delta rule family: public ops (DESIGN.md 6.1). Validates in TypeScript, then runs the native CPU
// kernels (or the float64 reference when asked or when the addon is missing).
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend, type NativeDeltaArgs } from '../backend.js';
import { gatedDeltaRuleReference, gatedDeltaRuleStepReference } from '../reference/delta.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData, type TensorInput } from '../tensor.js';
import type {
  AsyncOptions, DeltaRuleOptions, DeltaRuleResult, DeltaRuleResultWithState, DeltaStepOptions, DeltaStepResult, GatedDeltaRuleOptions,
  GatedDeltaStepOptions, KaczmarzDeltaRuleOptions, KaczmarzDeltaStepOptions,
} from '../types.js';
import {
  callerInt32, checkCuSeqlens, checkFinite, checkInt, checkOneOf, checkOptions, checkShape, checkTensor, checkValues, copyInt32,
  overlaps, rankOf,
} from '../validate.js';
import { cachedDeltaAlgorithm, calibrateDelta, calibrateDeltaAsync, chainBackend, registerChainOp } from '../runtime.js';
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
  /** 'auto' needs a calibration not made yet (prepare with defer): run it, then set args.algorithm. */
  calibrate?: { K: number; V: number };
  /** The delta-state pool and what goes with it (README "Serving: the delta-state pool"), checked. */
  pool?: PoolPrepared;
}

interface PoolPrepared {
  state?: Tensor;
  stateIndices?: Int32Array;
  hasInitialState?: Uint8Array;
  updateState: boolean;
  /** checkpoints (prefill) or intermediateStates (step), and the layout of their rows. */
  snaps?: Tensor;
  layout?: DeltaCheckpointLayout;
}

/** Which row of a `checkpoints` tensor is which: row r holds sequence[r]'s state after position[r] tokens. */
export interface DeltaCheckpointLayout {
  count: number;
  sequence: Int32Array;
  position: Int32Array;
}

/**
 * The rows of `checkpoints` for a prefill: sequence n (of cuSeqlens, or the B rows of length T) has
 * floor(len_n / checkpointEvery) rows, at positions checkpointEvery, 2 * checkpointEvery, ... (its length
 * included when a multiple), in sequence order; padding sequences (slot -1) keep their rows, unwritten.
 * Positions count this call's tokens of the sequence. Size `checkpoints` as [count, HV, K, V].
 */
export function deltaCheckpointLayout(opts: { T: number; B?: number; cuSeqlens?: Int32Array | readonly number[]; checkpointEvery: number }): DeltaCheckpointLayout {
  const op = 'deltaCheckpointLayout';
  checkOptions(op, opts, ['T', 'B', 'cuSeqlens', 'checkpointEvery']);
  const T = checkInt(op, 'T', opts.T, 0, MAX_ELEMENTS);
  const every = checkInt(op, 'checkpointEvery', opts.checkpointEvery, 1, MAX_ELEMENTS);
  const lens: number[] = [];
  if (opts.cuSeqlens !== undefined) {
    const cu = checkCuSeqlens(op, opts.cuSeqlens, T);
    for (let n = 0; n + 1 < cu.length; n++) lens.push(cu[n + 1] - cu[n]);
  } else {
    const B = opts.B === undefined ? 1 : checkInt(op, 'B', opts.B, 0, MAX_ELEMENTS);
    for (let n = 0; n < B; n++) lens.push(T);
  }
  const seq: number[] = [], pos: number[] = [];
  lens.forEach((len, n) => {
    for (let j = 1; j * every <= len; j++) {
      seq.push(n);
      pos.push(j * every);
    }
  });
  return { count: seq.length, sequence: Int32Array.from(seq), position: Int32Array.from(pos) };
}

/**
 * The winner of a one-time race of both algorithms on a synthetic problem of this head size, per (SIMD
 * level, threads, K, V): src/runtime.ts calibrateDelta (timed natively; warmup() runs it ahead of time).
 * Which one wins depends on K, V, the SIMD level and the machine's caches (README, "Choosing the
 * algorithm"), so it is measured rather than hard-coded.
 */
function calibrate(K: number, V: number): 'chunk' | 'recurrent' {
  return calibrateDelta(K, V).algorithm;
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

/** autoAlgorithm without measuring: undefined when the calibration it needs has not run yet. */
function autoAlgorithmCached(avgLen: number, K: number, V: number): 'chunk' | 'recurrent' | undefined {
  const forced = process.env.SEQKERN_DELTA_ALGORITHM;
  if (forced === 'chunk' || forced === 'recurrent') return forced;
  if (avgLen < 64) return 'recurrent';
  return cachedDeltaAlgorithm(K, V);
}

/** Every option the prefill and the step know (strict options: anything else is a BAD_ARGUMENT). */
const GATING_OPTIONS = ['aLog', 'dtBias', 'betaSigmoid', 'betaScale'] as const;
const STEP_OPTIONS = [
  'backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'state', 'qkL2Norm', 'scale', 'eps', 'out',
  'stateIndices', 'stateDtype', 'intermediateStates', 'updateState', ...GATING_OPTIONS,
] as const;
const PREFILL_OPTIONS = [
  'backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'initialState', 'outputFinalState', 'cuSeqlens', 'qkL2Norm',
  'scale', 'eps', 'algorithm', 'chunkSize', 'out',
  'state', 'stateIndices', 'hasInitialState', 'stateDtype', 'checkpointEvery', 'checkpoints', ...GATING_OPTIONS,
] as const;
const STATE_DTYPES: readonly DType[] = ['float32', 'bfloat16'];

/** aLog / dtBias (float32 [HV], finite), betaSigmoid, betaScale ([0, 2], only with betaSigmoid). */
function checkGating(op: string, o: DeltaRuleOptions | DeltaStepOptions, HV: number, hasG: boolean) {
  const vec = (name: 'aLog' | 'dtBias') => {
    if (o[name] === undefined) return undefined;
    const t = checkTensor(op, name, o[name], ['float32'], 1);
    checkShape(op, name, t, [HV]);
    checkValues(op, name, t, -Infinity, Infinity);
    return t.data.slice() as Float32Array; // a private copy, as the other metadata
  };
  const aLog = vec('aLog'), dtBias = vec('dtBias');
  if (dtBias && !aLog) fail('BAD_ARGUMENT', op, 'dtBias', 'only with aLog', 'dtBias without aLog');
  if (aLog && !hasG) fail('BAD_ARGUMENT', op, 'aLog', 'with g (the raw gate projection)', 'no g');
  if (o.betaSigmoid !== undefined && typeof o.betaSigmoid !== 'boolean') fail('BAD_ARGUMENT', op, 'betaSigmoid', 'to be a boolean', typeof o.betaSigmoid);
  const betaSigmoid = o.betaSigmoid === true;
  let betaScale = 1;
  if (o.betaScale !== undefined) {
    betaScale = checkFinite(op, 'betaScale', o.betaScale);
    if (betaScale < 0 || betaScale > 2) fail('OUT_OF_RANGE', op, 'betaScale', 'in [0, 2]', String(betaScale));
    if (!betaSigmoid) fail('BAD_ARGUMENT', op, 'betaScale', 'only with betaSigmoid: true', 'betaScale without betaSigmoid');
  }
  return { aLog, dtBias, betaSigmoid, betaScale };
}

/** stateIndices: N slots in [-1, slots), the live ones distinct when the pool is written. */
function checkStateIndices(op: string, x: unknown, N: number, slots: number, distinct: boolean): Int32Array {
  const idx = copyInt32(op, 'stateIndices', x);
  if (idx.length !== N) fail('SHAPE_MISMATCH', op, 'stateIndices', `of N=${N} slots`, `${idx.length}`);
  const owner = new Map<number, number>();
  for (let n = 0; n < N; n++) {
    const s = idx[n];
    if (s < -1 || s >= slots) fail('OUT_OF_RANGE', op, 'stateIndices', `in [-1, ${slots}) (the pool's slots)`, `${s} at index ${n}`);
    if (s < 0) continue;
    const prev = owner.get(s);
    if (distinct && prev !== undefined) fail('BAD_ARGUMENT', op, 'stateIndices', 'distinct among live sequences', `slot ${s} at indices ${prev} and ${n}`);
    owner.set(s, n);
  }
  return idx;
}

/** The pool `state` [slots, HV, K, V] (float32 | bfloat16, as stateDtype when given). */
function checkPool(op: string, o: DeltaRuleOptions | DeltaStepOptions, HV: number, K: number, V: number): Tensor {
  const t = checkTensor(op, 'state', o.state, STATE_DTYPES, 4);
  if (o.stateDtype !== undefined) {
    const want = checkOneOf(op, 'stateDtype', o.stateDtype, ['float32', 'bfloat16'] as const);
    if (t.dtype !== want) fail('BAD_DTYPE', op, 'state', `of dtype ${want} (stateDtype)`, t.dtype);
  }
  checkShape(op, 'state', t, [t.shape[0], HV, K, V]);
  return t;
}

/**
 * `chained`: a chain's op, whose beta/eta and g may be outputs of earlier ops not yet run; their value checks
 * are left to the native side, which makes them when the op's turn comes (before it writes anything).
 */
function prepare(op: string, o: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean, defer = false, chained = false): Prepared {
  checkOptions(op, o, step ? STEP_OPTIONS : PREFILL_OPTIONS);
  // A step over Tq tokens per sequence (speculative verify) takes q [N, Tq, H, K].
  const multi = step && rankOf(o.q, 3) === 4;
  const rank = step && !multi ? 3 : 4;
  const q = checkTensor(op, 'q', o.q, IN_DTYPES, rank);
  const k = checkTensor(op, 'k', o.k, IN_DTYPES, rank);
  const v = checkTensor(op, 'v', o.v, IN_DTYPES, rank);
  const B = q.shape[0];
  const T = step && !multi ? 1 : q.shape[1];
  const [H, K] = q.shape.slice(-2);
  const [HV, V] = v.shape.slice(-2);
  checkShape(op, 'k', k, q.shape);
  if (k.dtype !== q.dtype) fail('BAD_DTYPE', op, 'k', `of dtype ${q.dtype} (as q)`, k.dtype);
  if (v.dtype !== q.dtype) fail('BAD_DTYPE', op, 'v', `of dtype ${q.dtype} (as q)`, v.dtype);
  const lead = step && !multi ? [B] : [B, T];
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
  const gating = checkGating(op, o, HV, o.g !== undefined);
  if (chained) { /* checked natively at run time */ }
  else if (gating.betaSigmoid) checkValues(op, betaName, betaT, -Infinity, Infinity); // logits
  else checkValues(op, betaName, betaT, 0, 2);

  if (o.g !== undefined && o.decay !== undefined) fail('BAD_ARGUMENT', op, 'g', 'or decay, not both', 'both');
  let decayKind: 'none' | 'log' | 'sign' = 'none';
  let gT: Tensor | undefined;
  if (o.g !== undefined) {
    gT = checkTensor(op, 'g', o.g, IN_DTYPES, lead.length + 1);
    checkShape(op, 'g', gT, [...lead, HV]);
    if (!chained) checkValues(op, 'g', gT, -Infinity, gating.aLog ? Infinity : 0); // with aLog: the raw projection
    decayKind = 'log';
  } else if (o.decay !== undefined) {
    gT = checkTensor(op, 'decay', o.decay, IN_DTYPES, lead.length + 1);
    checkShape(op, 'decay', gT, [...lead, HV]);
    if (!chained) checkValues(op, 'decay', gT, -1, 1);
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
  }
  // The pool: the step's state always (in place), the prefill's when `state` is given.
  let pool: PoolPrepared | undefined;
  if (step) {
    const so = o as DeltaStepOptions;
    const state = checkPool(op, so, HV, K, V);
    if (so.updateState !== undefined && typeof so.updateState !== 'boolean') fail('BAD_ARGUMENT', op, 'updateState', 'to be a boolean', typeof so.updateState);
    pool = { state, updateState: so.updateState !== false };
    if (so.stateIndices !== undefined) pool.stateIndices = checkStateIndices(op, so.stateIndices, N, state.shape[0], pool.updateState);
    else checkShape(op, 'state', state, [N, HV, K, V]);
    if (so.intermediateStates !== undefined) {
      const it = checkTensor(op, 'intermediateStates', so.intermediateStates, STATE_DTYPES, 5);
      checkShape(op, 'intermediateStates', it, [N, T, HV, K, V]);
      pool.snaps = it;
    }
  } else {
    const po = o as DeltaRuleOptions;
    if (po.state !== undefined) {
      if (po.initialState !== undefined) fail('BAD_ARGUMENT', op, 'initialState', 'absent with state (the pool holds the initial states)', 'a tensor');
      if (po.outputFinalState === true) fail('BAD_ARGUMENT', op, 'outputFinalState', 'absent with state (final states go back to the pool)', 'true');
      const state = checkPool(op, po, HV, K, V);
      pool = { state, updateState: true };
      if (po.stateIndices !== undefined) pool.stateIndices = checkStateIndices(op, po.stateIndices, N, state.shape[0], true);
      else if (state.shape[0] < N) fail('SHAPE_MISMATCH', op, 'state', `of at least N=${N} slots without stateIndices`, `[${state.shape.join(',')}]`);
      if (po.hasInitialState !== undefined) {
        const h = po.hasInitialState as unknown;
        if (!(h instanceof Uint8Array) && !Array.isArray(h)) fail('BAD_DTYPE', op, 'hasInitialState', 'to be a Uint8Array or an array of booleans', typeof h);
        const arr = Uint8Array.from(h as ArrayLike<number>, (x) => (x ? 1 : 0));
        if (arr.length !== N) fail('SHAPE_MISMATCH', op, 'hasInitialState', `of N=${N} values`, `${arr.length}`);
        pool.hasInitialState = arr;
      }
    } else {
      for (const name of ['stateIndices', 'hasInitialState', 'stateDtype'] as const) {
        if (po[name] !== undefined) fail('BAD_ARGUMENT', op, name, 'only with state (the pool)', 'no state');
      }
    }
    if ((po.checkpointEvery === undefined) !== (po.checkpoints === undefined)) {
      fail('BAD_ARGUMENT', op, po.checkpoints === undefined ? 'checkpoints' : 'checkpointEvery', 'with checkpointEvery and checkpoints both', 'one of them');
    }
    if (po.checkpointEvery !== undefined) {
      const every = checkInt(op, 'checkpointEvery', po.checkpointEvery, 1, MAX_ELEMENTS);
      if (every % chunkSize !== 0) fail('BAD_ARGUMENT', op, 'checkpointEvery', `a multiple of chunkSize=${chunkSize}`, String(every));
      const layout = deltaCheckpointLayout(cu ? { T, cuSeqlens: cu, checkpointEvery: every } : { T, B, checkpointEvery: every });
      const ck = checkTensor(op, 'checkpoints', po.checkpoints, STATE_DTYPES, 4);
      checkShape(op, 'checkpoints', ck, [layout.count, HV, K, V]);
      pool = pool ?? { updateState: true };
      pool.snaps = ck;
      pool.layout = layout;
    }
  }
  const stateShape = [N, HV, K, V];
  // Outputs are allocated here: refuse sizes past the int32 element cap before allocating (an empty input
  // can declare any B, and finalState grows with it).
  for (const [name, shape] of [['v', v.shape], ['q', q.shape], [step ? 'state' : 'finalState', wantFinal ? stateShape : []]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }
  const stateName = step ? 'state' : 'initialState';
  if (initial) checkShape(op, stateName, initial, stateShape);
  const oShape = step && !multi ? [B, HV, V] : [B, T, HV, V];

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
      ['cuSeqlens', callerInt32((o as DeltaRuleOptions).cuSeqlens)], ['state', pool?.state?.data],
      [step ? 'intermediateStates' : 'checkpoints', pool?.snaps?.data],
    ];
    for (const [name, data] of inputs) {
      if (data && overlaps(outT.data, data)) {
        const apart = step ? `q, k, v, ${betaName}, ${decayName}, state, intermediateStates` : `q, k, v, ${betaName}, ${decayName}, initialState, cuSeqlens, state, checkpoints`;
        fail('BAD_ARGUMENT', op, 'out', `memory apart from the inputs (${apart})`, `a view overlapping ${name}`);
      }
    }
  }

  // The pool and the snapshots are written while every input is read: apart from the inputs and each other.
  if (pool) {
    const snapName = step ? 'intermediateStates' : 'checkpoints';
    const inputs: [string, ArrayBufferView | undefined][] = [
      ['q', q.data], ['k', k.data], ['v', v.data], [betaName, betaT.data], ['g', gT?.data],
      ['cuSeqlens', callerInt32((o as DeltaRuleOptions).cuSeqlens)], ['stateIndices', callerInt32(o.stateIndices)],
    ];
    for (const [wname, w] of [['state', pool.state?.data], [snapName, pool.snaps?.data]] as const) {
      if (!w) continue;
      for (const [name, data] of inputs) {
        if (data && overlaps(w, data)) fail('BAD_ARGUMENT', op, wname, 'memory apart from the inputs', `a view overlapping ${name}`);
      }
    }
    if (pool.state && pool.snaps && overlaps(pool.state.data, pool.snaps.data)) fail('BAD_ARGUMENT', op, snapName, 'memory apart from state (the pool)', 'a view overlapping state');
  }

  const float64 = q.dtype === 'float64' || betaT.dtype === 'float64' || gT?.dtype === 'float64';
  const backend = resolveBackend(op, o.backend, float64);
  const avgLen = N > 0 ? (B * T) / N : 0;
  // Deferred (async forms, chains): an 'auto' that needs the race leaves it to the caller, to run on the worker.
  const cached = requested === 'auto' && backend === 'cpu' && defer ? autoAlgorithmCached(avgLen, K, V) : undefined;
  const pending = requested === 'auto' && backend === 'cpu' && defer && cached === undefined;
  const algorithm = requested !== 'auto' ? requested : backend !== 'cpu' ? 'recurrent' : defer ? cached ?? 'chunk' : autoAlgorithm(avgLen, K, V);
  const args: NativeDeltaArgs = {
    B, T, H, HV, K, V,
    q: q.data, k: k.data, v: v.data, dtype: q.dtype,
    beta: betaT.data, betaDtype: betaT.dtype, kaczmarz: kla, eps,
    g: gT?.data, gDtype: gT?.dtype, decayKind,
    initialState: initial?.data as Float32Array | undefined,
    o: undefined as unknown as ArrayBufferView,
    cuSeqlens: cu, qkL2Norm: o.qkL2Norm === true, scale, chunkSize, algorithm,
  };
  if (gating.aLog) args.aLog = gating.aLog;
  if (gating.dtBias) args.dtBias = gating.dtBias;
  if (gating.betaSigmoid) args.betaSigmoid = true;
  if (gating.betaScale !== 1) args.betaScale = gating.betaScale;
  if (pool?.state) {
    args.initialState = undefined;
    args.pool = pool.state.data as Float32Array | Uint16Array;
    args.poolDtype = pool.state.dtype;
    args.slots = pool.state.shape[0];
    if (pool.stateIndices) args.stateIndices = pool.stateIndices;
    if (pool.hasInitialState) args.hasInitialState = pool.hasInitialState;
    if (!pool.updateState) args.updateState = false;
  }
  if (pool?.snaps) {
    args.snaps = pool.snaps.data as Float32Array | Uint16Array;
    args.snapDtype = pool.snaps.dtype;
    args.snapEvery = step ? 1 : (o as DeltaRuleOptions).checkpointEvery!;
  }
  const prepared: Prepared = { backend, args, N, stateShape, oShape, oDtype: v.dtype, wantFinal, out: outT, pool };
  if (pending) prepared.calibrate = { K, V };
  return prepared;
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
  if (p.pool?.state) {
    // the pool is read and written in place
  } else if (step) {
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

/** Rows [n * per, (n + 1) * per) of a float64 result into `dst` (in dst's dtype), for the live sequences only. */
function copyRows(src: Tensor, dst: Tensor, per: number, rows: (n: number) => number[], N: number) {
  const conv = tensor(src.data, src.shape, dst.dtype).data;
  for (let n = 0; n < N; n++) {
    for (const r of rows(n)) dst.data.set(conv.subarray(r * per, (r + 1) * per), r * per);
  }
}

function runReference(op: string, opts: DeltaRuleOptions | DeltaStepOptions, p: Prepared, step: boolean, kla: boolean) {
  void op;
  const ref = { ...opts, beta: kla ? undefined : opts.beta, eta: kla ? opts.eta : undefined };
  const pool = p.pool;
  if (pool?.stateIndices) ref.stateIndices = pool.stateIndices; // the checked copies
  if (pool?.hasInitialState) (ref as DeltaRuleOptions).hasInitialState = pool.hasInitialState;
  const live = (n: number) => (pool?.stateIndices ? pool.stateIndices[n] >= 0 : true);
  const { HV, K, V } = p.args;
  const per = HV * K * V;
  if (step) {
    const r = gatedDeltaRuleStepReference(ref as DeltaStepOptions);
    const T = p.args.T;
    if (pool?.updateState) copyRows(r.state, pool.state!, per, (n) => (live(n) ? [pool.stateIndices ? pool.stateIndices[n] : n] : []), p.N);
    if (pool?.snaps && r.intermediateStates) copyRows(r.intermediateStates, pool.snaps, per, (n) => (live(n) ? Array.from({ length: T }, (_, i) => n * T + i) : []), p.N);
    return { o: referenceO(r, p) };
  }
  const r = gatedDeltaRuleReference(ref as DeltaRuleOptions);
  const out: DeltaRuleResult = { o: referenceO(r, p) };
  if (p.wantFinal) out.finalState = tensor(r.finalState.data, p.stateShape, 'float32');
  if (pool?.state && r.state) copyRows(r.state, pool.state, per, (n) => (live(n) ? [pool.stateIndices ? pool.stateIndices[n] : n] : []), p.N);
  if (pool?.snaps && pool.layout && r.checkpoints) {
    const L = pool.layout;
    copyRows(r.checkpoints, pool.snaps, per, (n) => (live(n) ? [...L.sequence.keys()].filter((i) => L.sequence[i] === n) : []), p.N);
  }
  return withLayout(out, p);
}

/** The checkpoint layout on a prefill's result, when it wrote checkpoints. */
function withLayout(r: DeltaRuleResult, p: Prepared): DeltaRuleResult {
  if (p.pool?.layout) {
    r.checkpointSequence = p.pool.layout.sequence;
    r.checkpointPosition = p.pool.layout.position;
  }
  return r;
}

function runSync(op: string, opts: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean) {
  if (wantsCudaDelta(opts)) return deltaCuda(op, opts, step, kla, false) as DeltaRuleResult;
  const p = prepare(op, opts, step, kla);
  if (p.backend === 'reference') return runReference(op, opts, p, step, kla);
  const out = allocate(p, step);
  callNative(op, () => native()!.deltaRule(p.args));
  return step ? { o: out.o } : withLayout(out.finalState ? { o: out.o, finalState: out.finalState } : { o: out.o }, p);
}

async function runAsync(op: string, opts: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean, a: AsyncOptions = {}) {
  const signal = a.signal;
  if (signal?.aborted) throw abortError(signal);
  if (wantsCudaDelta(opts)) return deltaCuda(op, opts, step, kla, true, a);
  const p = prepare(op, opts, step, kla, true);
  // 'auto' that needs its one-time race: run it on the worker first (the event loop keeps running).
  if (p.calibrate) p.args.algorithm = (await calibrateDeltaAsync(p.calibrate.K, p.calibrate.V)).algorithm;
  // Again after prepare, which may run caller code (option getters), and before out or the state is touched.
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(op, opts, p, step, kla);
  const out = allocate(p, step);
  // The worker polls this flag between chunks; setting it makes the call reject with an AbortError. With an
  // in-place state (the step) or a caller's out, the worker reads it once before its first write and then
  // drops it.
  await callNativeAsync(op, p.args, signal, () => native()!.deltaRuleAsync(p.args));
  // A prefill with fresh outputs only: an abort that raced the last chunk still rejects (finalState included).
  // A caller's out is now completely written (the abort came after the start), so resolve with it, as the
  // step does with its state.
  if (!step && !p.out && !p.pool && signal?.aborted) throw abortError(signal);
  return step ? { o: out.o } : withLayout(out.finalState ? { o: out.o, finalState: out.finalState } : { o: out.o }, p);
}

/**
 * Gated delta rule prefill (Gated DeltaNet; DeltaNet without g; negative eigenvalues with beta in [0, 2];
 * signed decay with `decay`). q, k [B,T,H,K]; v [B,T,HV,V]; beta, g [B,T,HV] → o [B,T,HV,V] in v's dtype,
 * and finalState [N,HV,K,V] when `outputFinalState`. `out`: a Tensor of o's shape and v's dtype to write o
 * into (the result's `o` is `out` itself), for callers that reuse buffers; it must not overlap the inputs or
 * initialState: SHAPE_MISMATCH / BAD_DTYPE / BAD_ARGUMENT otherwise, raised before anything is written.
 */
export function gatedDeltaRule(opts: GatedDeltaRuleOptions & { outputFinalState: true }): DeltaRuleResultWithState;
export function gatedDeltaRule(opts: GatedDeltaRuleOptions): DeltaRuleResult;
export function gatedDeltaRule(opts: GatedDeltaRuleOptions): DeltaRuleResult {
  return runSync('gatedDeltaRule', opts, false, false) as DeltaRuleResult;
}

/**
 * Promise form of gatedDeltaRule; runs off the event loop and can be aborted between chunks (rejecting with
 * an AbortError). With `out`, the abort is honoured only until the kernel starts, so `out` is never left
 * half-written: the signal is checked before the call and once more on the worker before the first write;
 * an abort by then rejects with `out` untouched, and an abort after that is ignored: the call runs to the
 * end and resolves with `out` (and finalState) completely written.
 */
export function gatedDeltaRuleAsync(opts: GatedDeltaRuleOptions & { outputFinalState: true }, a?: AsyncOptions): Promise<DeltaRuleResultWithState>;
export function gatedDeltaRuleAsync(opts: GatedDeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult>;
export function gatedDeltaRuleAsync(opts: GatedDeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult> {
  return runAsync('gatedDeltaRuleAsync', opts, false, false, a) as Promise<DeltaRuleResult>;
}

/** Kaczmarz linear attention: `eta` in place of beta, beta_t = eta_t / (|k_t|^2 + eps) in the kernel. */
export function kaczmarzDeltaRule(opts: KaczmarzDeltaRuleOptions & { outputFinalState: true }): DeltaRuleResultWithState;
export function kaczmarzDeltaRule(opts: KaczmarzDeltaRuleOptions): DeltaRuleResult;
export function kaczmarzDeltaRule(opts: KaczmarzDeltaRuleOptions): DeltaRuleResult {
  return runSync('kaczmarzDeltaRule', opts, false, true) as DeltaRuleResult;
}

export function kaczmarzDeltaRuleAsync(opts: KaczmarzDeltaRuleOptions & { outputFinalState: true }, a?: AsyncOptions): Promise<DeltaRuleResultWithState>;
export function kaczmarzDeltaRuleAsync(opts: KaczmarzDeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult>;
export function kaczmarzDeltaRuleAsync(opts: KaczmarzDeltaRuleOptions, a?: AsyncOptions): Promise<DeltaRuleResult> {
  return runAsync('kaczmarzDeltaRuleAsync', opts, false, true, a) as Promise<DeltaRuleResult>;
}

/**
 * One decode step: q, k [N,H,K]; v [N,HV,V]; beta, g [N,HV]; state [N,HV,K,V] float32, updated in place
 * (read and written once). Returns o [N,HV,V] in v's dtype, written into `out` when given (a Tensor of that
 * shape and dtype apart from the inputs and the state; the result's `o` is `out` itself).
 */
export function gatedDeltaRuleStep(opts: GatedDeltaStepOptions): DeltaStepResult {
  return runSync('gatedDeltaRuleStep', opts, true, false) as DeltaStepResult;
}

/**
 * Promise form of the decode step. The signal is checked once, before the first write: an abort seen by then
 * leaves the state (and `out`) untouched; one after that is ignored (both completely written).
 */
export function gatedDeltaRuleStepAsync(opts: GatedDeltaStepOptions, a?: AsyncOptions): Promise<DeltaStepResult> {
  return runAsync('gatedDeltaRuleStepAsync', opts, true, false, a) as Promise<DeltaStepResult>;
}

/** Decode step of Kaczmarz linear attention (eta in place of beta). */
export function kaczmarzDeltaRuleStep(opts: KaczmarzDeltaStepOptions): DeltaStepResult {
  return runSync('kaczmarzDeltaRuleStep', opts, true, true) as DeltaStepResult;
}

export function kaczmarzDeltaRuleStepAsync(opts: KaczmarzDeltaStepOptions, a?: AsyncOptions): Promise<DeltaStepResult> {
  return runAsync('kaczmarzDeltaRuleStepAsync', opts, true, true, a) as Promise<DeltaStepResult>;
}

// Chained ops (src/runtime.ts): the prefills and decode steps, validated as the sync forms do, outputs
// allocated now; an 'auto' prefill's calibration, if still to make, runs before the chain (on the worker
// with run(), on this thread with runSync()).
for (const [name, step, kla] of [
  ['gatedDeltaRule', false, false], ['kaczmarzDeltaRule', false, true],
  ['gatedDeltaRuleStep', true, false], ['kaczmarzDeltaRuleStep', true, true],
] as const) {
  registerChainOp(name, (op: string, opts: DeltaRuleOptions | DeltaStepOptions) => {
    const p = prepare(op, opts, step, kla, true, true);
    chainBackend(op, p.backend);
    const out = allocate(p, step);
    const result = step ? { o: out.o } : out.finalState ? { o: out.o, finalState: out.finalState } : { o: out.o };
    const c = p.calibrate;
    return {
      fn: 'deltaRule', args: p.args as unknown as Record<string, unknown>, result,
      before: c && (() => { p.args.algorithm = calibrateDelta(c.K, c.V).algorithm; }),
      beforeAsync: c && (async () => { p.args.algorithm = (await calibrateDeltaAsync(c.K, c.V)).algorithm; }),
    };
  });
}

/**
 * After a speculative verify (a step over Tq tokens with intermediateStates and updateState: false): writes
 * the state after accepted[n] tokens, intermediateStates[n, accepted[n] - 1], into slot stateIndices[n] of the
 * pool (converted to its dtype); accepted[n] = 0 leaves the slot as it was, and padding (-1) is skipped.
 * Everything is checked before the first slot is written.
 */
export function deltaCommitStates(opts: {
  state: TensorInput; stateIndices: Int32Array | readonly number[]; intermediateStates: TensorInput; accepted: Int32Array | readonly number[];
}): void {
  const op = 'deltaCommitStates';
  checkOptions(op, opts, ['state', 'stateIndices', 'intermediateStates', 'accepted']);
  const inter = checkTensor(op, 'intermediateStates', opts.intermediateStates, STATE_DTYPES, 5);
  const [N, Tq, HV, K, V] = inter.shape;
  const state = checkTensor(op, 'state', opts.state, STATE_DTYPES, 4);
  checkShape(op, 'state', state, [state.shape[0], HV, K, V]);
  const idx = checkStateIndices(op, opts.stateIndices, N, state.shape[0], true);
  const acc = copyInt32(op, 'accepted', opts.accepted);
  if (acc.length !== N) fail('SHAPE_MISMATCH', op, 'accepted', `of N=${N} counts`, `${acc.length}`);
  acc.forEach((a, n) => {
    if (a < 0 || a > Tq) fail('OUT_OF_RANGE', op, 'accepted', `in [0, Tq=${Tq}]`, `${a} at index ${n}`);
  });
  if (overlaps(state.data, inter.data)) fail('BAD_ARGUMENT', op, 'intermediateStates', 'memory apart from state', 'a view overlapping state');
  const per = HV * K * V;
  for (let n = 0; n < N; n++) {
    if (idx[n] < 0 || acc[n] === 0) continue;
    const r = (n * Tq + acc[n] - 1) * per;
    const src = new Tensor(inter.data.subarray(r, r + per), [per], inter.dtype);
    state.data.set((src.dtype === state.dtype ? src : src.to(state.dtype)).data, idx[n] * per);
  }
}
