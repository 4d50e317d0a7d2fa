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
}

function loadGates(opts: { beta?: Tensor | undefined; eta?: Tensor | undefined; g?: Tensor | undefined; decay?: Tensor | undefined }): Gates {
  return {
    beta: opts.beta?.toFloat64(),
    eta: opts.eta?.toFloat64(),
    g: opts.g?.toFloat64(),
    decay: opts.decay?.toFloat64(),
  };
}

/** a_t: exp(g) if g given, else decay if given, else 1. */
function decayAt(gates: Gates, idx: number): number {
  if (gates.g) return Math.exp(gates.g[idx]);
  if (gates.decay) return gates.decay[idx];
  return 1;
}

/** beta_t: eta / (|k|^2 + eps) for KLA (eta given), else beta. */
function betaAt(gates: Gates, idx: number, k: Float64Array, eps: number): number {
  if (gates.eta) {
    let kk = 0;
    for (let i = 0; i < k.length; i++) kk += k[i] * k[i];
    return gates.eta[idx] / (kk + eps);
  }
  if (gates.beta) return gates.beta[idx];
  throw new Error('delta reference: one of beta or eta is required');
}

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
export function gatedDeltaRuleReference(options: DeltaRuleOptions): { o: Tensor; finalState: Tensor } {
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
  const gates = loadGates(opts);
  const init = opts.initialState?.toFloat64();

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

  for (let n = 0; n < N; n++) {
    const { b, start, end } = seqs[n];
    for (let j = 0; j < HV; j++) {
      const h = Math.floor(j / group);
      const sOff = (n * HV + j) * K * V;
      const S = init ? init.slice(sOff, sOff + K * V) : new Float64Array(K * V);
      for (let t = start; t < end; t++) {
        const qk = ((b * T + t) * H + h) * K; // [b, t, h, 0] of [B, T, H, K]
        const vo = ((b * T + t) * HV + j) * V; // [b, t, j, 0] of [B, T, HV, V]
        const gi = (b * T + t) * HV + j; // [b, t, j] of [B, T, HV]
        const qt = loadVector(q, qk, K, l2);
        const kt = loadVector(k, qk, K, l2);
        deltaToken(S, K, V, qt, kt, v, vo, decayAt(gates, gi), betaAt(gates, gi, kt, eps), scale, o, vo);
      }
      finalState.set(S, sOff);
    }
  }

  return {
    o: new Tensor(o, [B, T, HV, V], 'float64'),
    finalState: new Tensor(finalState, [N, HV, K, V], 'float64'),
  };
}

/**
 * One decode step of the gated delta rule for N sequences, float64 reference.
 *
 * Shapes: q, k [N, H, K]; v [N, HV, V]; beta | eta, g | decay [N, HV]; state [N, HV, K, V].
 * Returns o [N, HV, V] and the new state [N, HV, K, V], both float64 and freshly allocated; the input state
 * is not modified (unlike the fast path, which updates it in place).
 */
export function gatedDeltaRuleStepReference(options: DeltaStepOptions): { o: Tensor; state: Tensor } {
  const opts = withTensors(options);
  const [N, H, K] = opts.q.shape;
  const HV = opts.v.shape[1];
  const V = opts.v.shape[2];
  const group = HV / H;
  const scale = opts.scale ?? 1 / Math.sqrt(K);
  const eps = opts.eps ?? 1e-6;
  const l2 = opts.qkL2Norm === true;

  const q = opts.q.toFloat64();
  const k = opts.k.toFloat64();
  const v = opts.v.toFloat64();
  const gates = loadGates(opts);
  const state = opts.state.toFloat64(); // a copy: the update below never touches opts.state

  const o = new Float64Array(N * HV * V);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < HV; j++) {
      const h = Math.floor(j / group);
      const qk = (n * H + h) * K; // [n, h, 0] of [N, H, K]
      const vo = (n * HV + j) * V; // [n, j, 0] of [N, HV, V]
      const gi = n * HV + j; // [n, j] of [N, HV]
      const sOff = (n * HV + j) * K * V; // [n, j, 0, 0] of [N, HV, K, V]
      const S = state.subarray(sOff, sOff + K * V);
      const qt = loadVector(q, qk, K, l2);
      const kt = loadVector(k, qk, K, l2);
      deltaToken(S, K, V, qt, kt, v, vo, decayAt(gates, gi), betaAt(gates, gi, kt, eps), scale, o, vo);
    }
  }

  return {
    o: new Tensor(o, [N, HV, V], 'float64'),
    state: new Tensor(state, [N, HV, K, V], 'float64'),
  };
}
