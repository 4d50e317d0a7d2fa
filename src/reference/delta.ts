/**
 * Float64 reference of the gated delta rule family (DESIGN.md 6.1): Gated DeltaNet, plain DeltaNet, the
 * negative-eigenvalue variant (beta in [0, 2]), signed diagonal decay, and Kaczmarz linear attention (KLA).
 *
 * A plain per-timestep loop, like fla's `naive.py` / `fused_recurrent` reference: no chunking, every input
 * converted to float64 first, every sum accumulated in float64. The fast paths are tested against it.
 *
 * Per sequence n and v-head j (q/k head h = floor(j / (HV / H))), with S (K x V) starting at
 * initialState[n, j] (or zeros), for each token t of the sequence in order:
 *
 *   a_t    = exp(g_t) if g is given, else decay_t if decay is given, else 1 (plain DeltaNet)
 *   q_t, k_t <- x / sqrt(sum x^2 + 1e-6)                    only when qkL2Norm
 *   beta_t = beta_t, or for KLA: eta_t / (sum k_t^2 + eps)   (k_t after any L2 normalisation; eps = 1e-6)
 *   S      <- a_t * S
 *   u_t    = beta_t * (v_t - S^T k_t)                         (V)
 *   S      <- S + k_t u_t^T                                   (K x V)
 *   o_t    = S^T (scale * q_t)                                (V), scale default 1 / sqrt(K)
 *
 * In-kernel gating: with aLog (and dtBias), g_t <- -exp(aLog_j) * softplus(g_t + dtBias_j); with betaSigmoid,
 * beta_t (or eta_t) <- betaScale * sigmoid(beta_t).
 *
 * The state pool: with `state` [slots, HV, K, V], sequence n starts from slot stateIndices[n] (slot n without
 * them; zeros where hasInitialState[n] is 0; skipped with o rows 0 where the slot is -1), and the returned
 * `state` is a float64 copy of the pool with the final states in their slots (the input is not modified).
 * With checkpointEvery, `checkpoints` holds the state after every that many tokens of each sequence, rows in
 * sequence order (padding sequences keep their rows, zeros here).
 *
 * Options `backend`, `algorithm`, `chunkSize` and `outputFinalState` are ignored (the final state is always
 * returned). Inputs are not validated: the ops layer does that.
 */
import type { DeltaRuleOptions, DeltaStepOptions } from '../types.js';
import { Tensor, withTensors } from '../tensor.js';

/** The 1e-6 inside qkL2Norm's sqrt (fla's l2norm). */
const L2NORM_EPS = 1e-6;

/** x[off .. off+n) / sqrt(sum x^2 + 1e-6), into a fresh array. */
function loadVector(src: Float64Array, off: number, n: number, l2norm: boolean): Float64Array {
  const x = src.slice(off, off + n);
  if (l2norm) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[i] * x[i];
    const inv = 1 / Math.sqrt(ss + L2NORM_EPS);
    for (let i = 0; i < n; i++) x[i] *= inv;
  }
  return x;
}

/** Per-token scalar inputs, resolved from the options at one flat index of beta/eta/g/decay. */
interface Gates {
  beta?: Float64Array;
  eta?: Float64Array;
  g?: Float64Array;
  decay?: Float64Array;
  aLog?: Float64Array;
  dtBias?: Float64Array;
  betaSigmoid: boolean;
  betaScale: number;
  HV: number;
}

interface GateOptions {
  beta?: Tensor | undefined; eta?: Tensor | undefined; g?: Tensor | undefined; decay?: Tensor | undefined;
  aLog?: Tensor | undefined; dtBias?: Tensor | undefined; betaSigmoid?: boolean | undefined; betaScale?: number | undefined;
}

function loadGates(opts: GateOptions, HV: number): Gates {
  return {
    beta: opts.beta?.toFloat64(),
    eta: opts.eta?.toFloat64(),
    g: opts.g?.toFloat64(),
    decay: opts.decay?.toFloat64(),
    aLog: opts.aLog?.toFloat64(),
    dtBias: opts.dtBias?.toFloat64(),
    betaSigmoid: opts.betaSigmoid === true,
    betaScale: opts.betaScale ?? 1,
    HV,
  };
}

/** softplus(x) = log(1 + e^x), without overflow. */
const softplus = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

/** a_t: exp(g) if g given (g gated in the kernel when aLog is), else decay if given, else 1. */
function decayAt(gates: Gates, idx: number): number {
  if (gates.g) {
    let g = gates.g[idx];
    if (gates.aLog) {
      const j = idx % gates.HV;
      g = -Math.exp(gates.aLog[j]) * softplus(g + (gates.dtBias ? gates.dtBias[j] : 0));
    }
    return Math.exp(g);
  }
  if (gates.decay) return gates.decay[idx];
  return 1;
}

/** beta_t: eta / (|k|^2 + eps) for KLA (eta given), else beta; either through betaScale * sigmoid first. */
function betaAt(gates: Gates, idx: number, k: Float64Array, eps: number): number {
  const raw = gates.eta ?? gates.beta;
  if (!raw) throw new Error('delta reference: one of beta or eta is required');
  const b = gates.betaSigmoid ? gates.betaScale / (1 + Math.exp(-raw[idx])) : raw[idx];
  if (gates.eta) {
    let kk = 0;
    for (let i = 0; i < k.length; i++) kk += k[i] * k[i];
    return b / (kk + eps);
  }
  return b;
}

/** Slot of sequence n: stateIndices[n], or n without them. */
const slotOf = (idx: Int32Array | readonly number[] | undefined, n: number) => (idx ? idx[n] : n);

/**
 * One token of the recurrence on S (K x V, row-major, S[i*V + c]), in place. Writes o_t (V values) to
 * out[outOff ..]. v is read from vs[vOff .. vOff+V).
 */
function deltaToken(
  S: Float64Array, K: number, V: number,
  q: Float64Array, k: Float64Array, vs: Float64Array, vOff: number,
  a: number, beta: number, scale: number,
  out: Float64Array, outOff: number,
): void {
  // S <- a S
  if (a !== 1) for (let i = 0; i < K * V; i++) S[i] *= a;
  // u = beta (v - S^T k)
  const u = new Float64Array(V);
  for (let c = 0; c < V; c++) {
    let sk = 0;
    for (let i = 0; i < K; i++) sk += S[i * V + c] * k[i];
    u[c] = beta * (vs[vOff + c] - sk);
  }
  // S <- S + k u^T
  for (let i = 0; i < K; i++) for (let c = 0; c < V; c++) S[i * V + c] += k[i] * u[c];
  // o = S^T (scale q)
  for (let c = 0; c < V; c++) {
    let acc = 0;
    for (let i = 0; i < K; i++) acc += S[i * V + c] * (scale * q[i]);
    out[outOff + c] = acc;
  }
}

/**
 * Gated delta rule prefill, float64 reference.
 *
 * Shapes: q, k [B, T, H, K]; v [B, T, HV, V]; beta | eta, g | decay [B, T, HV]; initialState [N, HV, K, V]
 * (optional, zeros when absent). N = B, or with cuSeqlens (N + 1 offsets into T, B = 1) N = cuSeqlens.length - 1,
 * sequence n covering packed tokens cuSeqlens[n] .. cuSeqlens[n+1] - 1 (zero-length sequences allowed: their
 * final state is their initial state).
 *
 * Returns o [B, T, HV, V] and finalState [N, HV, K, V], both float64 and freshly allocated.
 */
export function gatedDeltaRuleReference(options: DeltaRuleOptions): { o: Tensor; finalState: Tensor; state?: Tensor; checkpoints?: Tensor } {
  const opts = withTensors(options);
  const [B, T, H, K] = opts.q.shape;
  const HV = opts.v.shape[2];
  const V = opts.v.shape[3];
  const group = HV / H;
  const scale = opts.scale ?? 1 / Math.sqrt(K);
  const eps = opts.eps ?? 1e-6;
  const l2 = opts.qkL2Norm === true;

  const q = opts.q.toFloat64();
  const k = opts.k.toFloat64();
  const v = opts.v.toFloat64();
  const gates = loadGates(opts, HV);
  const pool = opts.state?.toFloat64();
  const init = pool ?? opts.initialState?.toFloat64();
  const every = opts.checkpointEvery ?? 0;

  // Sequences as (batch row, first token, end token).
  const seqs: { b: number; start: number; end: number }[] = [];
  if (opts.cuSeqlens) {
    const cu = opts.cuSeqlens;
    for (let n = 0; n + 1 < cu.length; n++) seqs.push({ b: 0, start: cu[n], end: cu[n + 1] });
  } else {
    for (let b = 0; b < B; b++) seqs.push({ b, start: 0, end: T });
  }
  const N = seqs.length;

  const o = new Float64Array(B * T * HV * V);
  const finalState = new Float64Array(N * HV * K * V);
  const ckBase: number[] = [];
  let ckCount = 0;
  for (const sq of seqs) {
    ckBase.push(ckCount);
    if (every > 0) ckCount += Math.floor((sq.end - sq.start) / every);
  }
  const checkpoints = new Float64Array(ckCount * HV * K * V);
  const newPool = pool?.slice();

  for (let n = 0; n < N; n++) {
    const { b, start, end } = seqs[n];
    const slot = pool ? slotOf(opts.stateIndices, n) : n;
    if (slot < 0) continue; // padding: o rows stay 0
    const fresh = pool !== undefined && opts.hasInitialState !== undefined && !opts.hasInitialState[n];
    for (let j = 0; j < HV; j++) {
      const h = Math.floor(j / group);
      const sOff = (n * HV + j) * K * V;
      const iOff = (slot * HV + j) * K * V;
      const S = init && !fresh ? init.slice(iOff, iOff + K * V) : new Float64Array(K * V);
      for (let t = start; t < end; t++) {
        const qk = ((b * T + t) * H + h) * K; // [b, t, h, 0] of [B, T, H, K]
        const vo = ((b * T + t) * HV + j) * V; // [b, t, j, 0] of [B, T, HV, V]
        const gi = (b * T + t) * HV + j; // [b, t, j] of [B, T, HV]
        const qt = loadVector(q, qk, K, l2);
        const kt = loadVector(k, qk, K, l2);
        deltaToken(S, K, V, qt, kt, v, vo, decayAt(gates, gi), betaAt(gates, gi, kt, eps), scale, o, vo);
        const done = t + 1 - start;
        if (every > 0 && done % every === 0) checkpoints.set(S, ((ckBase[n] + done / every - 1) * HV + j) * K * V);
      }
      finalState.set(S, sOff);
      if (newPool) newPool.set(S, iOff);
    }
  }

  const r: { o: Tensor; finalState: Tensor; state?: Tensor; checkpoints?: Tensor } = {
    o: new Tensor(o, [B, T, HV, V], 'float64'),
    finalState: new Tensor(finalState, [N, HV, K, V], 'float64'),
  };
  if (newPool) r.state = new Tensor(newPool, opts.state!.shape, 'float64');
  if (every > 0) r.checkpoints = new Tensor(checkpoints, [ckCount, HV, K, V], 'float64');
  return r;
}

/**
 * One decode step of the gated delta rule for N sequences, float64 reference.
 *
 * Shapes: q, k [N, H, K]; v [N, HV, V]; beta | eta, g | decay [N, HV]; state [N, HV, K, V], or the pool
 * [slots, HV, K, V] with stateIndices [N] (-1: padding, skipped, o rows 0). Speculative verify: q, k
 * [N, Tq, H, K], v [N, Tq, HV, V], beta.. [N, Tq, HV]: Tq tokens per sequence in order, and
 * intermediateStates [N, Tq, HV, K, V] holds the state after each (padding rows zeros).
 * Returns o ([N, HV, V] or [N, Tq, HV, V]) and the new state (the pool's shape; unchanged when updateState is
 * false), float64 and freshly allocated; the input state is not modified (unlike the fast path).
 */
export function gatedDeltaRuleStepReference(options: DeltaStepOptions): { o: Tensor; state: Tensor; intermediateStates?: Tensor } {
  const opts = withTensors(options);
  const multi = opts.q.shape.length === 4;
  const N = opts.q.shape[0];
  const Tq = multi ? opts.q.shape[1] : 1;
  const [H, K] = opts.q.shape.slice(-2);
  const [HV, V] = opts.v.shape.slice(-2);
  const group = HV / H;
  const scale = opts.scale ?? 1 / Math.sqrt(K);
  const eps = opts.eps ?? 1e-6;
  const l2 = opts.qkL2Norm === true;

  const q = opts.q.toFloat64();
  const k = opts.k.toFloat64();
  const v = opts.v.toFloat64();
  const gates = loadGates(opts, HV);
  const state = opts.state.toFloat64(); // a copy: the update below never touches opts.state
  const inter = new Float64Array(N * Tq * HV * K * V);

  const o = new Float64Array(N * Tq * HV * V);
  for (let n = 0; n < N; n++) {
    const slot = slotOf(opts.stateIndices, n);
    if (slot < 0) continue;
    for (let j = 0; j < HV; j++) {
      const h = Math.floor(j / group);
      const sOff = (slot * HV + j) * K * V; // [slot, j, 0, 0] of the pool
      const S = state.slice(sOff, sOff + K * V);
      for (let i = 0; i < Tq; i++) {
        const tok = n * Tq + i;
        const qk = (tok * H + h) * K; // [n, i, h, 0] of [N, Tq, H, K]
        const vo = (tok * HV + j) * V; // [n, i, j, 0] of [N, Tq, HV, V]
        const gi = tok * HV + j; // [n, i, j] of [N, Tq, HV]
        const qt = loadVector(q, qk, K, l2);
        const kt = loadVector(k, qk, K, l2);
        deltaToken(S, K, V, qt, kt, v, vo, decayAt(gates, gi), betaAt(gates, gi, kt, eps), scale, o, vo);
        inter.set(S, (tok * HV + j) * K * V);
      }
      if (opts.updateState !== false) state.set(S, sOff);
    }
  }

  const r: { o: Tensor; state: Tensor; intermediateStates?: Tensor } = {
    o: new Tensor(o, multi ? [N, Tq, HV, V] : [N, HV, V], 'float64'),
    state: new Tensor(state, opts.state.shape, 'float64'),
  };
  if (multi) r.intermediateStates = new Tensor(inter, [N, Tq, HV, K, V], 'float64');
  return r;
}
