// The ops on backend 'cuda' (cuda/*.cu through cuda/binding.cc): taken when an input is a device tensor or
// `backend: 'cuda'` is asked. Device inputs give device outputs; CPU inputs with backend 'cuda' are copied
// to the GPU and their results back. Ops without a CUDA kernel say so (a SeqkernError naming the op).
import { abortError, fail } from './errors.js';
import { CudaTensor, checkSameDevice, cudaCall, emptyCuda, fromCuda, requireCuda, toCpu, toCuda } from './device.js';
import { numel, Tensor, type DType } from './tensor.js';
import type { AsyncOptions, AttentionOptions, AttentionResult, DeltaRuleOptions, DeltaRuleResult, DeltaStepOptions, SoftmaxOptions } from './types.js';
import { checkCuSeqlens, checkFinite, checkInt, checkOffsets, checkOneOf, checkOptions, checkShape, checkTensor, checkValues, rankOf } from './validate.js';

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

// ---- attention ----

const ATTENTION_OPTIONS = ['backend', 'causal', 'scale', 'gate', 'gateType', 'cuSeqlens', 'cuSeqlensK', 'returnLse', 'out'] as const;
const CUDA_MAX_HEAD_DIM = 256;

export function attentionCuda(op: string, q: unknown, k: unknown, v: unknown, opts: AttentionOptions, async: false): AttentionResult;
export function attentionCuda(op: string, q: unknown, k: unknown, v: unknown, opts: AttentionOptions, async: true, a?: AsyncOptions): Promise<AttentionResult>;
export function attentionCuda(op: string, q: unknown, k: unknown, v: unknown, opts: AttentionOptions, async: boolean, as?: AsyncOptions): AttentionResult | Promise<AttentionResult> {
  checkOptions(op, opts, ATTENTION_OPTIONS);
  const o = opts ?? {};
  const qT = checkAny(op, 'q', q, DTYPES, 4);
  const device = qT instanceof CudaTensor ? 'cuda' : 'cpu';
  checkBackend(op, o.backend, device);
  const kT = checkAny(op, 'k', k, DTYPES, 4);
  const vT = checkAny(op, 'v', v, DTYPES, 4);
  checkSameDevice(op, device, { k: kT, v: vT, gate: o.gate, out: o.out });
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
  if (D > CUDA_MAX_HEAD_DIM || Dv > CUDA_MAX_HEAD_DIM) fail('TOO_LARGE', op, 'q/v', `head dims D, Dv <= ${CUDA_MAX_HEAD_DIM} on backend 'cuda'`, `D=${D}, Dv=${Dv}`);
  if (o.causal !== undefined && typeof o.causal !== 'boolean') fail('BAD_ARGUMENT', op, 'causal', 'to be a boolean', typeof o.causal);
  if (o.returnLse !== undefined && typeof o.returnLse !== 'boolean') fail('BAD_ARGUMENT', op, 'returnLse', 'to be a boolean', typeof o.returnLse);
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFinite(op, 'scale', o.scale);
  let gateKind: 'none' | 'elementwise' | 'headwise' = 'none';
  let gT: Tensor | undefined;
  if (o.gate !== undefined) {
    const requested = o.gateType === undefined ? undefined : checkOneOf(op, 'gateType', o.gateType, ['elementwise', 'headwise'] as const);
    const rank = rankOf(o.gate, 0);
    gateKind = requested ?? (rank === 3 ? 'headwise' : 'elementwise');
    const want = gateKind === 'elementwise' ? [B, T, Hq, Dv] : [B, T, Hq];
    gT = checkAny(op, 'gate', o.gate, DTYPES, want.length);
    checkShape(op, 'gate', gT, want);
  } else if (o.gateType !== undefined) {
    fail('BAD_ARGUMENT', op, 'gateType', 'only together with a gate', String(o.gateType));
  }
  let cu: Int32Array | undefined;
  let cuK: Int32Array | undefined;
  if (o.cuSeqlens !== undefined) {
    cu = checkOffsets(op, 'cuSeqlens', o.cuSeqlens, T, 'T');
    if (B !== 1) fail('SHAPE_MISMATCH', op, 'q', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
    if (o.cuSeqlensK !== undefined) {
      cuK = checkOffsets(op, 'cuSeqlensK', o.cuSeqlensK, S, 'S');
      if (cuK.length !== cu.length) fail('SHAPE_MISMATCH', op, 'cuSeqlensK', `of ${cu.length} offsets (as cuSeqlens)`, `${cuK.length}`);
    } else if (S !== T) {
      fail('SHAPE_MISMATCH', op, 'k', `with S = T = ${T} when cuSeqlens is given without cuSeqlensK`, `S=${S}`);
    }
  } else if (o.cuSeqlensK !== undefined) {
    fail('BAD_ARGUMENT', op, 'cuSeqlensK', 'only together with cuSeqlens', typeof o.cuSeqlensK);
  }
  const oShape = [B, T, Hq, Dv];
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkAny(op, 'out', o.out, [vT.dtype], 4);
    checkShape(op, 'out', outT, oShape);
    for (const [name, t] of [['q', qT], ['k', kT], ['v', vT], ['gate', gT]] as const) {
      if (t && t === outT) fail('BAD_ARGUMENT', op, 'out', 'memory apart from the inputs (q, k, v, gate)', `${name} itself`);
    }
  }
  const a = requireCuda(op);
  if (as?.signal?.aborted) return Promise.reject(abortError(as.signal));
  const st = new Staging(op);
  let args: Record<string, unknown>;
  let od: CudaTensor;
  let lseD: CudaTensor | undefined;
  try {
    const qd = st.dev(qT), kd = st.dev(kT), vd = st.dev(vT), gd = gT ? st.dev(gT) : undefined;
    od = outT ? st.dev(outT) : st.fresh(oShape, vT.dtype);
    lseD = o.returnLse ? st.fresh([B, Hq, T], 'float32') : undefined;
    args = {
      B, T, S, Hq, Hk, D, Dv, dtype: qT.dtype, causal: o.causal === true, scale,
      q: qd.handleFor(op, 'q'), k: kd.handleFor(op, 'k'), v: vd.handleFor(op, 'v'), o: od.handleFor(op, 'out'),
      lse: lseD?.handleFor(op, 'lse'), gate: gd?.handleFor(op, 'gate'), gateDtype: gT?.dtype, gateKind,
      cuSeqlens: cu, cuSeqlensK: cuK,
    };
  } catch (e) {
    st.end();
    throw e;
  }
  const result = (): AttentionResult => {
    if (device === 'cuda') {
      const r: AttentionResult = { o: outT ?? st.keep(od) };
      if (lseD) r.lse = st.keep(lseD);
      return r;
    }
    const oc = toCpu(od, op);
    if (outT) outT.data.set(oc.data as never);
    const r: AttentionResult = { o: outT ?? oc };
    if (lseD) r.lse = toCpu(lseD, op);
    return r;
  };
  if (!async) {
    try {
      cudaCall(op, () => a.cudaAttention(args));
      return result();
    } finally {
      st.end();
    }
  }
  return settle(op, st, a.cudaAttentionAsync(args), as?.signal, result);
}

// ---- the gated delta rule (recurrence and decode step) ----

const STEP_OPTIONS = ['backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'state', 'qkL2Norm', 'scale', 'eps', 'out'] as const;
const PREFILL_OPTIONS = [
  'backend', 'q', 'k', 'v', 'beta', 'eta', 'g', 'decay', 'initialState', 'outputFinalState', 'cuSeqlens', 'qkL2Norm',
  'scale', 'eps', 'algorithm', 'chunkSize', 'out',
] as const;
const CUDA_MAX_K = 256;

/**
 * The delta family on CUDA: the prefill runs the recurrence (the chunkwise tensor-core form is a later
 * issue: algorithm 'chunk' is a SeqkernError), the step updates the device state in place. Values (beta in
 * [0, 2], g <= 0, decay in [-1, 1]) are checked on CPU inputs; device inputs are not read back to check them.
 */
export function deltaCuda(op: string, opts: DeltaRuleOptions | DeltaStepOptions, step: boolean, kla: boolean, async: boolean, as?: AsyncOptions): DeltaRuleResult | Promise<DeltaRuleResult> {
  checkOptions(op, opts, step ? STEP_OPTIONS : PREFILL_OPTIONS);
  const o = opts;
  const rank = step ? 3 : 4;
  const q = checkAny(op, 'q', o.q, DTYPES, rank);
  const device = q instanceof CudaTensor ? 'cuda' : 'cpu';
  checkBackend(op, o.backend, device);
  const k = checkAny(op, 'k', o.k, DTYPES, rank);
  const v = checkAny(op, 'v', o.v, DTYPES, rank);
  const stateArg = step ? (o as DeltaStepOptions).state : (o as DeltaRuleOptions).initialState;
  checkSameDevice(op, device, { k, v, beta: o.beta, eta: o.eta, g: o.g, decay: o.decay, [step ? 'state' : 'initialState']: stateArg, out: o.out });
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
  if (K > CUDA_MAX_K) fail('TOO_LARGE', op, 'q', `head dim K <= ${CUDA_MAX_K} on backend 'cuda'`, `K=${K}`);
  const betaName = kla ? 'eta' : 'beta';
  if ((kla ? o.beta : o.eta) !== undefined) fail('BAD_ARGUMENT', op, kla ? 'beta' : 'eta', `to be absent (${op} takes ${betaName})`, 'a tensor');
  const betaT = checkAny(op, betaName, kla ? o.eta : o.beta, DTYPES, lead.length + 1);
  checkShape(op, betaName, betaT, [...lead, HV]);
  if (!(betaT instanceof CudaTensor)) checkValues(op, betaName, betaT, 0, 2);
  if (o.g !== undefined && o.decay !== undefined) fail('BAD_ARGUMENT', op, 'g', 'or decay, not both', 'both');
  let decayKind: 'none' | 'log' | 'sign' = 'none';
  let gT: Tensor | undefined;
  if (o.g !== undefined || o.decay !== undefined) {
    const name = o.g !== undefined ? 'g' : 'decay';
    gT = checkAny(op, name, o.g ?? o.decay, DTYPES, lead.length + 1);
    checkShape(op, name, gT, [...lead, HV]);
    if (!(gT instanceof CudaTensor)) checkValues(op, name, gT, o.g !== undefined ? -Infinity : -1, o.g !== undefined ? 0 : 1);
    decayKind = o.g !== undefined ? 'log' : 'sign';
  }
  const scale = o.scale === undefined ? 1 / Math.sqrt(K) : checkFinite(op, 'scale', o.scale);
  const eps = o.eps === undefined ? 1e-6 : checkFinite(op, 'eps', o.eps);
  if (eps <= 0) fail('OUT_OF_RANGE', op, 'eps', '> 0', String(eps));
  if (o.qkL2Norm !== undefined && typeof o.qkL2Norm !== 'boolean') fail('BAD_ARGUMENT', op, 'qkL2Norm', 'to be a boolean', typeof o.qkL2Norm);
  let N = B;
  let cu: Int32Array | undefined;
  let wantFinal = step;
  if (!step) {
    const po = o as DeltaRuleOptions;
    if (po.cuSeqlens !== undefined) {
      cu = checkCuSeqlens(op, po.cuSeqlens, T);
      if (B !== 1) fail('SHAPE_MISMATCH', op, 'q', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
      N = cu.length - 1;
    }
    const alg = checkOneOf(op, 'algorithm', po.algorithm ?? 'auto', ['auto', 'chunk', 'recurrent'] as const);
    if (alg === 'chunk') fail('BAD_ARGUMENT', op, 'algorithm', "'recurrent' or 'auto' on backend 'cuda' (the chunkwise CUDA kernel is not written yet)", "'chunk'");
    if (po.chunkSize !== undefined) checkInt(op, 'chunkSize', po.chunkSize, 1, 256);
    wantFinal = po.outputFinalState === true;
  }
  const stateName = step ? 'state' : 'initialState';
  const stateShape = [N, HV, K, V];
  let initial: Tensor | undefined;
  if (stateArg !== undefined) {
    initial = checkAny(op, stateName, stateArg, ['float32'], 4);
    checkShape(op, stateName, initial, stateShape);
  } else if (step) {
    fail('BAD_ARGUMENT', op, 'state', 'to be a Tensor [N,HV,K,V] float32', 'undefined');
  }
  const oShape = step ? [B, HV, V] : [B, T, HV, V];
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkAny(op, 'out', o.out, [v.dtype], rank);
    checkShape(op, 'out', outT, oShape);
    for (const [name, t] of [['q', q], ['k', k], ['v', v], [betaName, betaT], ['g', gT], [stateName, initial]] as const) {
      if (t && t === outT) fail('BAD_ARGUMENT', op, 'out', 'memory apart from the inputs', `${name} itself`);
    }
  }
  const a = requireCuda(op);
  if (as?.signal?.aborted) return Promise.reject(abortError(as.signal));
  const st = new Staging(op);
  let args: Record<string, unknown>;
  let od: CudaTensor;
  let sd: CudaTensor | undefined;
  let fd: CudaTensor | undefined;
  try {
    const qd = st.dev(q), kd = st.dev(k), vd = st.dev(v), bd = st.dev(betaT), gd = gT ? st.dev(gT) : undefined;
    sd = initial ? st.dev(initial) : undefined;
    od = outT ? st.dev(outT) : st.fresh(oShape, v.dtype);
    fd = step ? sd : wantFinal ? st.fresh(stateShape, 'float32') : undefined;
    args = {
      B: step ? B : B, T, H, HV, K, V, dtype: q.dtype,
      q: qd.handleFor(op, 'q'), k: kd.handleFor(op, 'k'), v: vd.handleFor(op, 'v'),
      beta: bd.handleFor(op, betaName), betaDtype: betaT.dtype, kaczmarz: kla, eps,
      g: gd?.handleFor(op, 'g'), gDtype: gT?.dtype, decayKind,
      initialState: sd?.handleFor(op, stateName), finalState: fd?.handleFor(op, 'finalState'),
      o: od.handleFor(op, 'out'), cuSeqlens: cu, qkL2Norm: o.qkL2Norm === true, scale,
    };
  } catch (e) {
    st.end();
    throw e;
  }
  const result = (): DeltaRuleResult => {
    if (device === 'cuda') {
      const r: DeltaRuleResult = { o: outT ?? st.keep(od) };
      if (!step && fd) r.finalState = st.keep(fd);
      return r;
    }
    const oc = toCpu(od, op);
    if (outT) outT.data.set(oc.data as never);
    const r: DeltaRuleResult = { o: outT ?? oc };
    if (step && sd && initial) initial.data.set(toCpu(sd, op).data as never); // the CPU state, in place
    if (!step && fd) r.finalState = toCpu(fd, op);
    return r;
  };
  if (!async) {
    try {
      cudaCall(op, () => a.cudaDelta(args));
      return result();
    } finally {
      st.end();
    }
  }
  return settle(op, st, a.cudaDeltaAsync(args), as?.signal, result);
}
