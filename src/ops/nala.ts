// NaLaFormer's norm-aware linear attention (DESIGN.md 6.5, issue 16): public ops. Validates in TypeScript,
// then runs the native CPU kernels (native/cpu/nala.h) or the float64 reference (when asked, for float64
// inputs, or when the addon is missing).
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend, type NativeNalaArgs } from '../backend.js';
import { nalaAttentionReference, nalaAttentionStepReference, nalaStateLength } from '../reference/nala.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData } from '../tensor.js';
import type { AsyncOptions, CommonOptions } from '../types.js';
import { callerInt32, checkFinite, checkOffsets, checkOptions, checkShape, checkTensor, checkValues, overlaps } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Rotary tables of the numerator (the official theta_shift): row t rotates position t. */
export interface NalaRope {
  /** [T, K] (ropeK: [S, K]; the step: [N, K]) float32. */
  cos: Tensor;
  sin: Tensor;
}

/**
 * nalaAttention's options; the float64 reference takes the same. q [B,T,H,K], k [B,S,Hk,K], v [B,S,Hk,V],
 * H a multiple of Hk (query head h reads kv head floor(h / (H/Hk))).
 */
export interface NalaAttentionOptions extends CommonOptions {
  /** Key j is seen by queries i >= j only (then S = T); default false (every query sees every key). */
  causal?: boolean;
  /** Rotation of the numerator's features, rows [T, K] by position on the T axis (K even). */
  rope?: NalaRope;
  /** Non-causal with S != T: the keys' rotation, rows [S, K] (default: rope, when S = T). */
  ropeK?: NalaRope;
  /** Packed sequences (B = 1): N + 1 offsets into T. */
  cuSeqlens?: Int32Array | number[];
  /** Non-causal: N + 1 offsets of the sequences' keys into S (default cuSeqlens, then S = T). */
  cuSeqlensK?: Int32Array | number[];
  /** Causal: the state of a previous call (its finalState) [N, Hk, 2K·V + 2K + 1] float32. */
  initialState?: Tensor;
  /** Causal: also return finalState [N, Hk, 2K·V + 2K + 1] float32 (README "NaLaFormer": the layout). */
  outputFinalState?: boolean;
  /** Added to the denominator once per key seen, default 1e-6 (the official eps). */
  eps?: number;
  /** Write o into this tensor: shape [B,T,H,V], v's dtype, apart from every input. The result's o is it. */
  out?: Tensor;
}

export interface NalaAttentionResult {
  /** [B, T, H, V], dtype of v. */
  o: Tensor;
  /** [N, Hk, 2K·V + 2K + 1] float32 with outputFinalState (causal). */
  finalState?: Tensor;
}

/** nalaAttentionStep's options: one new token per sequence. */
export interface NalaStepOptions extends CommonOptions {
  /** [N, H, K] */
  q: Tensor;
  /** [N, Hk, K] */
  k: Tensor;
  /** [N, Hk, V] */
  v: Tensor;
  /** [N, Hk, 2K·V + 2K + 1] float32, updated in place (a causal prefill's finalState as it is). */
  state: Tensor;
  /** Rows [N, K]: row n rotates sequence n's new position. */
  rope?: NalaRope;
  eps?: number;
  /** Write o into this tensor: [N, H, V], v's dtype, apart from the inputs and the state. */
  out?: Tensor;
}

export interface NalaStepResult {
  /** [N, H, V], dtype of v. */
  o: Tensor;
}

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const ROPE_DTYPES: readonly DType[] = ['float32', 'float64'];
const MAX_HEAD_DIM = 512;
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays

/** Set by the tests (SEQKERN_POISON=1): outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

const PREFILL_OPTIONS = ['backend', 'causal', 'rope', 'ropeK', 'cuSeqlens', 'cuSeqlensK', 'initialState', 'outputFinalState', 'eps', 'out'] as const;
const STEP_OPTIONS = ['backend', 'q', 'k', 'v', 'state', 'rope', 'eps', 'out'] as const;

function describe(x: unknown): string {
  if (x === undefined || x === null) return String(x);
  if (ArrayBuffer.isView(x)) return x.constructor.name;
  return Array.isArray(x) ? 'an array' : typeof x;
}

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeNalaArgs;
  step: boolean;
  q: Tensor; k: Tensor; v: Tensor;
  oShape: number[];
  oDtype: DType;
  stateShape: number[];
  wantFinal: boolean;
  refOpts: NalaAttentionOptions;
  state?: Tensor;
  out?: Tensor;
  /** Every input array, named, for the overlap check of out and the reference's finite check. */
  inputs: [string, Tensor | undefined][];
}

/** A rope option: { cos, sin } of `rows` x K each. */
function checkRope(op: string, name: string, r: unknown, rows: number, K: number): { cos: Tensor; sin: Tensor } {
  if (typeof r !== 'object' || r === null || r instanceof Tensor || ArrayBuffer.isView(r) || Array.isArray(r)) {
    fail('BAD_ARGUMENT', op, name, 'to be { cos, sin } (Tensors)', r instanceof Tensor ? 'a Tensor' : describe(r));
  }
  for (const key of Object.keys(r)) {
    if (key !== 'cos' && key !== 'sin' && (r as Record<string, unknown>)[key] !== undefined) {
      fail('BAD_ARGUMENT', op, name, 'with the keys cos and sin only', `a key '${key}'`);
    }
  }
  const rr = r as { cos: unknown; sin: unknown };
  const cos = checkTensor(op, `${name}.cos`, rr.cos, ROPE_DTYPES, 2);
  const sin = checkTensor(op, `${name}.sin`, rr.sin, ROPE_DTYPES, 2);
  checkShape(op, `${name}.cos`, cos, [rows, K]);
  checkShape(op, `${name}.sin`, sin, [rows, K]);
  if (K % 2 !== 0) fail('SHAPE_MISMATCH', op, name, 'K even (rotate_every_two pairs features)', `K=${K}`);
  return { cos, sin };
}

/** float32 data of a rope table (float64 tables are rounded once). */
const f32 = (t: Tensor): Float32Array => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));

function prepare(op: string, qa: unknown, ka: unknown, va: unknown, o: NalaAttentionOptions & Partial<NalaStepOptions>, step: boolean): Prepared {
  const rank = step ? 3 : 4;
  const q = checkTensor(op, 'q', qa, IN_DTYPES, rank);
  const k = checkTensor(op, 'k', ka, IN_DTYPES, rank);
  const v = checkTensor(op, 'v', va, IN_DTYPES, rank);
  const B = q.shape[0];
  const T = step ? 1 : q.shape[1];
  const [H, K] = q.shape.slice(-2);
  const S = step ? 1 : k.shape[1];
  const [Hk] = k.shape.slice(-2);
  const V = v.shape[rank - 1];
  if (H < 1 || K < 1) fail('SHAPE_MISMATCH', op, 'q', 'with H >= 1 and K >= 1', `[${q.shape.join(',')}]`);
  if (Hk < 1) fail('SHAPE_MISMATCH', op, 'k', 'with Hk >= 1', `[${k.shape.join(',')}]`);
  const lead = step ? [B] : [B, S];
  checkShape(op, 'k', k, [...lead, Hk, K]);
  checkShape(op, 'v', v, [...lead, Hk, V]);
  if (V < 1) fail('SHAPE_MISMATCH', op, 'v', 'with V >= 1', `[${v.shape.join(',')}]`);
  if (H % Hk !== 0) fail('SHAPE_MISMATCH', op, 'k', `with Hk dividing H=${H} (grouped heads)`, `Hk=${Hk}`);
  if (k.dtype !== q.dtype) fail('BAD_DTYPE', op, 'k', `of dtype ${q.dtype} (as q)`, k.dtype);
  if (v.dtype !== q.dtype) fail('BAD_DTYPE', op, 'v', `of dtype ${q.dtype} (as q)`, v.dtype);
  if (K > MAX_HEAD_DIM || V > MAX_HEAD_DIM) fail('TOO_LARGE', op, 'q/v', `head dims K, V <= ${MAX_HEAD_DIM}`, `K=${K}, V=${V}`);

  const causal = step || o.causal === true;
  if (!step && o.causal !== undefined && typeof o.causal !== 'boolean') fail('BAD_ARGUMENT', op, 'causal', 'to be a boolean', describe(o.causal));
  if (!step && causal && S !== T) fail('SHAPE_MISMATCH', op, 'k', `with S = T = ${T} when causal`, `S=${S}`);
  const eps = o.eps === undefined ? 1e-6 : checkFinite(op, 'eps', o.eps);
  if (!(eps > 0)) fail('OUT_OF_RANGE', op, 'eps', '> 0', String(eps));

  // Packed sequences.
  let N = B;
  let cu: Int32Array | undefined;
  let cuK: Int32Array | undefined;
  if (!step && o.cuSeqlens !== undefined) {
    cu = checkOffsets(op, 'cuSeqlens', o.cuSeqlens, T, 'T');
    if (B !== 1) fail('SHAPE_MISMATCH', op, 'q', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
    N = cu.length - 1;
    if (o.cuSeqlensK !== undefined) {
      if (causal) fail('BAD_ARGUMENT', op, 'cuSeqlensK', 'absent when causal (the keys are the queries\' tokens)', 'offsets');
      cuK = checkOffsets(op, 'cuSeqlensK', o.cuSeqlensK, S, 'S');
      if (cuK.length !== cu.length) fail('SHAPE_MISMATCH', op, 'cuSeqlensK', `of ${cu.length} offsets (as cuSeqlens)`, `${cuK.length}`);
    } else if (S !== T) {
      fail('SHAPE_MISMATCH', op, 'k', `with S = T = ${T} when cuSeqlens is given without cuSeqlensK`, `S=${S}`);
    }
  } else if (!step && o.cuSeqlensK !== undefined) {
    fail('BAD_ARGUMENT', op, 'cuSeqlensK', 'only together with cuSeqlens', describe(o.cuSeqlensK));
  }

  // Rotary tables.
  let rope: { cos: Tensor; sin: Tensor } | undefined;
  let ropeK: { cos: Tensor; sin: Tensor } | undefined;
  if (o.rope !== undefined) rope = checkRope(op, 'rope', o.rope, step ? B : T, K);
  if (!step && o.ropeK !== undefined) {
    if (!rope) fail('BAD_ARGUMENT', op, 'ropeK', 'only together with rope', 'ropeK alone');
    if (causal) fail('BAD_ARGUMENT', op, 'ropeK', 'absent when causal (keys are rotated by rope)', 'ropeK');
    ropeK = checkRope(op, 'ropeK', o.ropeK, S, K);
  } else if (!step && rope && S !== T) {
    fail('BAD_ARGUMENT', op, 'ropeK', `[S, K] = [${S}, ${K}] tables for the keys (S != T)`, 'undefined');
  }

  // State.
  const L = nalaStateLength(K, V);
  const stateShape = [N, Hk, L];
  let wantFinal = false;
  let initial: Tensor | undefined;
  if (step) {
    initial = checkTensor(op, 'state', o.state, ['float32'], 3);
    checkShape(op, 'state', initial, stateShape);
    wantFinal = true;
  } else {
    if (o.initialState !== undefined) {
      if (!causal) fail('BAD_ARGUMENT', op, 'initialState', 'only with causal (a state is a prefix sum)', 'a tensor');
      initial = checkTensor(op, 'initialState', o.initialState, ['float32', 'float64'], 3);
      checkShape(op, 'initialState', initial, stateShape);
    }
    if (o.outputFinalState !== undefined && typeof o.outputFinalState !== 'boolean') {
      fail('BAD_ARGUMENT', op, 'outputFinalState', 'to be a boolean', describe(o.outputFinalState));
    }
    wantFinal = o.outputFinalState === true;
    if (!causal && wantFinal) fail('BAD_ARGUMENT', op, 'outputFinalState', 'only with causal (a state is a prefix sum)', 'true');
  }

  const oShape = step ? [B, H, V] : [B, T, H, V];
  for (const [name, shape] of [['q', q.shape], ['k', k.shape], ['v', v.shape], ['o', oShape], [step ? 'state' : 'finalState', stateShape]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }

  const stateName = step ? 'state' : 'initialState';
  const inputs: [string, Tensor | undefined][] = [
    ['q', q], ['k', k], ['v', v], ['rope.cos', rope?.cos], ['rope.sin', rope?.sin], ['ropeK.cos', ropeK?.cos], ['ropeK.sin', ropeK?.sin],
    [stateName, initial],
  ];
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [v.dtype], rank);
    checkShape(op, 'out', outT, oShape);
    const arrays: [string, TensorData | Int32Array | undefined][] = [
      ...inputs.map(([n, t]) => [n, t?.data] as [string, TensorData | undefined]),
      ['cuSeqlens', callerInt32(o.cuSeqlens)], ['cuSeqlensK', callerInt32(o.cuSeqlensK)],
    ];
    for (const [name, data] of arrays) {
      if (data && overlaps(outT.data, data)) {
        fail('BAD_ARGUMENT', op, 'out', `memory apart from the inputs (q, k, v, rope, ${stateName}, offsets)`, `a view overlapping ${name}`);
      }
    }
  }

  const float64 = q.dtype === 'float64' || (!step && initial?.dtype === 'float64');
  const backend = resolveBackend(op, o.backend, float64);
  const args: NativeNalaArgs = {
    B, T, S, H, Hk, K, V, step,
    q: q.data, k: k.data, v: v.data, dtype: q.dtype,
    o: undefined as unknown as ArrayBufferView,
    causal, eps, cuSeqlens: cu, cuSeqlensK: cuK,
    ropeCos: rope ? f32(rope.cos) : undefined, ropeSin: rope ? f32(rope.sin) : undefined,
    ropeKCos: ropeK ? f32(ropeK.cos) : undefined, ropeKSin: ropeK ? f32(ropeK.sin) : undefined,
    initialState: initial?.data as Float32Array | undefined,
  };
  const refOpts: NalaAttentionOptions = { causal, rope, ropeK, cuSeqlens: cu, cuSeqlensK: cuK, initialState: initial, eps };
  return {
    backend, args, step, q, k, v, oShape, oDtype: v.dtype, stateShape, wantFinal, refOpts, state: step ? initial : undefined,
    out: outT, inputs,
  };
}

/** The reference backend's value check (the native one scans the same arrays in C++, before any write). */
function checkFiniteInputs(op: string, p: Prepared): void {
  for (const [name, t] of p.inputs) if (t) checkValues(op, name, t, -Infinity, Infinity);
}

function allocate(p: Prepared): { o: Tensor; finalState?: Tensor } {
  const o = p.out ?? zeros(p.oShape, p.oDtype);
  if (poison) (o.data as Float32Array | Uint16Array).fill(p.oDtype === 'float32' ? NaN : 0x7fc0);
  p.args.o = o.data;
  p.args.callerOut = p.out !== undefined;
  let finalState: Tensor | undefined;
  if (p.step) {
    p.args.finalState = p.args.initialState; // in place
  } else if (p.wantFinal) {
    finalState = zeros(p.stateShape, 'float32');
    if (poison) finalState.data.fill(NaN);
    p.args.finalState = finalState.data as Float32Array;
  }
  return { o, finalState };
}

function runReference(op: string, p: Prepared): NalaAttentionResult {
  checkFiniteInputs(op, p);
  let oRef: Tensor;
  let fs: Tensor | undefined;
  if (p.step) {
    const r = nalaAttentionStepReference({ q: p.q, k: p.k, v: p.v, state: p.state!, rope: p.refOpts.rope, eps: p.refOpts.eps });
    p.state!.data.set(r.state.data); // in place, as the native step
    oRef = r.o;
  } else {
    const r = nalaAttentionReference(p.q, p.k, p.v, p.refOpts);
    oRef = r.o;
    fs = r.finalState;
  }
  const o = tensor(oRef.data, p.oShape, p.oDtype);
  if (p.out) p.out.data.set(o.data);
  const out: NalaAttentionResult = { o: p.out ?? o };
  if (p.wantFinal && !p.step) out.finalState = tensor(fs!.data, p.stateShape, 'float32');
  return out;
}

const addon = () => native()!;

function runSync(op: string, p: Prepared): NalaAttentionResult {
  if (p.backend === 'reference') return runReference(op, p);
  const out = allocate(p);
  callNative(op, () => addon().nala(p.args));
  return p.step || !out.finalState ? { o: out.o } : out;
}

async function runAsync(op: string, make: () => Prepared, a: AsyncOptions = {}): Promise<NalaAttentionResult> {
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  const p = make();
  // Again after prepare, which may run caller code (option getters), and before out or the state is touched.
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(op, p);
  const out = allocate(p);
  // The worker polls this flag between chunks; with an in-place state (the step) or a caller's out it reads
  // it once, before its first write, and then drops it.
  await callNativeAsync(op, p.args, signal, () => addon().nalaAsync(p.args));
  if (!p.step && !p.out && signal?.aborted) throw abortError(signal);
  return p.step || !out.finalState ? { o: out.o } : out;
}

/**
 * NaLaFormer's norm-aware linear attention (Meng et al. 2025, the official NormAwareLinearAttn), per head:
 * φq(q) = [(relu(q)/|q|)^p, (relu(−q)/|q|)^p] with p = 3(0.5 + tanh|q|), φk(k) = [relu(k)³, relu(−k)³], and
 * o_i = Σ_j (ρ_i φq_i · ρ_j φk_j) v_j / (Σ_j φq_i · φk_j + n_i·eps), ρ the rotary of `rope` (numerator only).
 * Non-causal: every query sees the S keys of its sequence (two passes: Σ φk vᵀ, then each query reads it).
 * `causal` (S = T): prefix sums, chunkwise; `initialState` / `outputFinalState` carry them between calls and
 * into nalaAttentionStep. q [B,T,H,K], k [B,S,Hk,K], v [B,S,Hk,V], H a multiple of Hk; float32, float16,
 * bfloat16 (float64 on the reference). Returns o [B,T,H,V] in v's dtype (`out` itself when given) and, with
 * outputFinalState, finalState [N,Hk,2K·V + 2K + 1] float32. Non-finite inputs are a NON_FINITE error.
 */
export function nalaAttention(q: Tensor, k: Tensor, v: Tensor, opts: NalaAttentionOptions = {}): NalaAttentionResult {
  const op = 'nalaAttention';
  checkOptions(op, opts, PREFILL_OPTIONS);
  return runSync(op, prepare(op, q, k, v, opts, false));
}

/**
 * Promise form of nalaAttention, off the event loop, abortable between chunks (an AbortError). With `out`
 * the signal is honoured only until the kernel starts (out is never half-written), as attentionAsync.
 */
export function nalaAttentionAsync(q: Tensor, k: Tensor, v: Tensor, opts: NalaAttentionOptions = {}, a?: AsyncOptions): Promise<NalaAttentionResult> {
  const op = 'nalaAttentionAsync';
  return runAsync(op, () => {
    checkOptions(op, opts, PREFILL_OPTIONS);
    return prepare(op, q, k, v, opts, false);
  }, a);
}

/**
 * One decode step of the causal form: the new key of each sequence enters `state` (in place), then its
 * queries read it. q [N,H,K], k [N,Hk,K], v [N,Hk,V], state [N,Hk,2K·V + 2K + 1] float32 (a causal
 * prefill's finalState), rope rows [N,K]. T steps after a prefill equal one prefill of the longer sequence.
 * Returns o [N,H,V] in v's dtype.
 */
export function nalaAttentionStep(opts: NalaStepOptions): NalaStepResult {
  const op = 'nalaAttentionStep';
  checkOptions(op, opts, STEP_OPTIONS);
  return runSync(op, prepare(op, opts.q, opts.k, opts.v, opts, true));
}

/** Promise form of the step; the signal is checked once, before the first write (the state ends all old or all new). */
export function nalaAttentionStepAsync(opts: NalaStepOptions, a?: AsyncOptions): Promise<NalaStepResult> {
  const op = 'nalaAttentionStepAsync';
  return runAsync(op, () => {
    checkOptions(op, opts, STEP_OPTIONS);
    return prepare(op, opts.q, opts.k, opts.v, opts, true);
  }, a);
}

// Chained ops (src/runtime.ts): validated as the sync forms do, outputs allocated now. The inputs' finite
// check runs natively when the op's turn comes (so an earlier op's output is scanned as it is then).
registerChainOp('nalaAttention', (op: string, q: Tensor, k: Tensor, v: Tensor, opts: NalaAttentionOptions = {}) => {
  checkOptions(op, opts, PREFILL_OPTIONS);
  const p = prepare(op, q, k, v, opts, false);
  chainBackend(op, p.backend);
  const out = allocate(p);
  return { fn: 'nala', args: p.args as unknown as Record<string, unknown>, result: out.finalState ? out : { o: out.o } };
});
registerChainOp('nalaAttentionStep', (op: string, opts: NalaStepOptions) => {
  checkOptions(op, opts, STEP_OPTIONS);
  const p = prepare(op, opts?.q, opts?.k, opts?.v, opts, true);
  chainBackend(op, p.backend);
  const out = allocate(p);
  return { fn: 'nala', args: p.args as unknown as Record<string, unknown>, result: { o: out.o } };
});
