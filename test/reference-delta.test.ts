// Tests of the float64 delta-rule reference on its own (native-vs-reference tests live elsewhere).
import { describe, it, expect } from 'vitest';
import { gatedDeltaRuleReference, gatedDeltaRuleStepReference } from '../src/reference/delta.js';
import { Tensor, tensor, randn, rand, rng, numel } from '../src/tensor.js';

// ---- helpers ----

const f64 = (data: ArrayLike<number>, shape: readonly number[]): Tensor => tensor(Float64Array.from(data), shape, 'float64');

/** Copy of the hyper-rectangle ranges[d] = [start, end) of x (all of a dim when ranges[d] is undefined), float64. */
function sub(x: Tensor, ranges: ([number, number] | undefined)[]): Tensor {
  const src = x.toFloat64();
  const shape = x.shape;
  const r = shape.map((d, i) => ranges[i] ?? [0, d]);
  const outShape = r.map(([a, b]) => b - a);
  const out = new Float64Array(numel(outShape));
  let w = 0;
  const rec = (dim: number, off: number): void => {
    if (dim === shape.length) { out[w++] = src[off]; return; }
    for (let i = r[dim][0]; i < r[dim][1]; i++) rec(dim + 1, off * shape[dim] + i);
  };
  rec(0, 0);
  return new Tensor(out, outShape, 'float64');
}

const reshape = (x: Tensor, shape: readonly number[]): Tensor => new Tensor(x.toFloat64(), shape, 'float64');

/** Concatenation along axis 1 (the T axis of [B, T, ...]). */
function catT(parts: Tensor[]): Tensor {
  const B = parts[0].shape[0];
  const inner = numel(parts[0].shape.slice(2));
  const T = parts.reduce((s, p) => s + p.shape[1], 0);
  const out = new Float64Array(B * T * inner);
  for (let b = 0; b < B; b++) {
    let t0 = 0;
    for (const p of parts) {
      const d = p.toFloat64();
      const Tp = p.shape[1];
      out.set(d.subarray(b * Tp * inner, (b + 1) * Tp * inner), (b * T + t0) * inner);
      t0 += Tp;
    }
  }
  return new Tensor(out, [B, T, ...parts[0].shape.slice(2)], 'float64');
}

/** Relative Frobenius error |a - b| / |b| (absolute when |b| = 0). */
function relErr(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  const x = a.toFloat64();
  const y = b.toFloat64();
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  if (Number.isNaN(num)) return NaN;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Relative error within tol (tol = 0: bit-exact). */
function expectClose(a: Tensor, b: Tensor, tol = 1e-12): void {
  const e = relErr(a, b);
  expect(Number.isFinite(e)).toBe(true);
  expect(e).toBeLessThanOrEqual(tol);
}

const B = 2, H = 2, HV = 4, K = 5, V = 3;

/** Seeded random inputs of the [B, T, ...] layout; beta in [0, 2], g in [-1, 0]. */
function inputs(Bn: number, T: number, seed: number) {
  return {
    q: randn([Bn, T, H, K], { seed: seed + 1 }),
    k: randn([Bn, T, H, K], { seed: seed + 2 }),
    v: randn([Bn, T, HV, V], { seed: seed + 3 }),
    beta: rand([Bn, T, HV], { seed: seed + 4, low: 0, high: 2 }),
    g: rand([Bn, T, HV], { seed: seed + 5, low: -1, high: 0 }),
    initialState: randn([Bn, HV, K, V], { seed: seed + 6 }),
  };
}

// ---- 1. hand-computed cases ----

describe('gatedDeltaRuleReference: hand-computed', () => {
  it('K = V = 1, T = 2, with g, initial state and explicit scale', () => {
    // S0 = 1, scale = 1.
    // t=1: a = exp(0) = 1, S = 1; u = 0.5 (2 - 1*1) = 0.5; S = 1 + 1*0.5 = 1.5; o = 1.5 * 1 = 1.5
    // t=2: a = exp(ln 0.5) = 0.5, S = 0.75; u = 1 (4 - 0.75*0.5) = 3.625; S = 0.75 + 0.5*3.625 = 2.5625;
    //      o = 2.5625 * 2 = 5.125
    const r = gatedDeltaRuleReference({
      q: f64([1, 2], [1, 2, 1, 1]),
      k: f64([1, 0.5], [1, 2, 1, 1]),
      v: f64([2, 4], [1, 2, 1, 1]),
      beta: f64([0.5, 1], [1, 2, 1]),
      g: f64([0, Math.log(0.5)], [1, 2, 1]),
      initialState: f64([1], [1, 1, 1, 1]),
      scale: 1,
    });
    expect(r.o.dtype).toBe('float64');
    expect(r.finalState.dtype).toBe('float64');
    expect(r.o.shape).toEqual([1, 2, 1, 1]);
    expect(r.finalState.shape).toEqual([1, 1, 1, 1]);
    expect(r.o.data[0]).toBeCloseTo(1.5, 14);
    expect(r.o.data[1]).toBeCloseTo(5.125, 14);
    expect(r.finalState.data[0]).toBeCloseTo(2.5625, 14);
  });

  it('K = 2, V = 1, H = 1, HV = 2 (grouped), default scale 1/sqrt(2), zero initial state', () => {
    // q1 = [1,0], k1 = [1,0]; q2 = [0,1], k2 = [0.6,0.8] (shared by both v-heads).
    // v-head 0: v = [3, 1], beta = [1, 0.5]
    //   t=1: S = 0; u = 3; S = [3, 0]; o = 3/sqrt2
    //   t=2: S^T k = 1.8; u = 0.5 (1 - 1.8) = -0.4; S = [3 - 0.24, -0.32] = [2.76, -0.32]; o = -0.32/sqrt2
    // v-head 1: v = [-1, 2], beta = [1, 1]
    //   t=1: u = -1; S = [-1, 0]; o = -1/sqrt2
    //   t=2: S^T k = -0.6; u = 2.6; S = [-1 + 1.56, 2.08] = [0.56, 2.08]; o = 2.08/sqrt2
    const r = gatedDeltaRuleReference({
      q: f64([1, 0, 0, 1], [1, 2, 1, 2]),
      k: f64([1, 0, 0.6, 0.8], [1, 2, 1, 2]),
      v: f64([3, -1, 1, 2], [1, 2, 2, 1]), // [t0h0, t0h1, t1h0, t1h1]
      beta: f64([1, 1, 0.5, 1], [1, 2, 2]),
    });
    const s = Math.SQRT1_2;
    const wantO = [3 * s, -1 * s, -0.32 * s, 2.08 * s];
    const wantS = [2.76, -0.32, 0.56, 2.08]; // [n=0][j=0][k=0..1][v=0], then j=1
    expect(r.o.shape).toEqual([1, 2, 2, 1]);
    expect(r.finalState.shape).toEqual([1, 2, 2, 1]);
    wantO.forEach((w, i) => expect(r.o.data[i]).toBeCloseTo(w, 13));
    wantS.forEach((w, i) => expect(r.finalState.data[i]).toBeCloseTo(w, 13));
  });

  it('T = 0 does not crash and returns the initial state', () => {
    const x = inputs(B, 0, 50);
    const r = gatedDeltaRuleReference(x);
    expect(r.o.shape).toEqual([B, 0, HV, V]);
    expect(r.finalState.shape).toEqual([B, HV, K, V]);
    expectClose(r.finalState, x.initialState, 0);
    const z = gatedDeltaRuleReference({ ...x, initialState: undefined });
    expect(Array.from(z.finalState.data).every((e) => e === 0)).toBe(true);
  });
});

// ---- 2. parity (Grazzi et al.) ----

describe('parity with negative eigenvalues', () => {
  // K = 2, V = 1, S0 = [1, 0]^T, v_t = 0, unit keys: k = e1 for bit 1, k = e2 for bit 0, q = e1, scale 1.
  // With v = 0 the update is S <- (I - beta k k^T) S. For beta = 2 that is the reflection flipping the sign of
  // the k-component: bit 1 flips S[0], bit 0 flips S[1] (which stays 0). So o_t = S_t[0] = (-1)^(prefix parity).
  function parityRun(bits: number[], beta1: number, beta0: number): Float64Array {
    const T = bits.length;
    const k = new Float64Array(T * 2);
    const q = new Float64Array(T * 2);
    const beta = new Float64Array(T);
    bits.forEach((bit, t) => {
      k[t * 2 + (bit ? 0 : 1)] = 1;
      q[t * 2] = 1;
      beta[t] = bit ? beta1 : beta0;
    });
    const r = gatedDeltaRuleReference({
      q: f64(q, [1, T, 1, 2]),
      k: f64(k, [1, T, 1, 2]),
      v: f64(new Float64Array(T), [1, T, 1, 1]),
      beta: f64(beta, [1, T, 1]),
      initialState: f64([1, 0], [1, 1, 2, 1]),
      scale: 1,
    });
    return r.o.data as Float64Array;
  }

  const next = rng(2024);
  const bits = Array.from({ length: 1000 }, () => (next() < 0.5 ? 1 : 0));
  const paritySigns = (bs: number[]): number[] => {
    let p = 0;
    return bs.map((b) => ((p ^= b) ? -1 : 1));
  };

  it('beta = 2 with unit keys tracks the parity of 1000 random bits exactly', () => {
    expect(bits.filter((b) => b === 1).length).toBeGreaterThan(400); // a non-trivial string
    const o = parityRun(bits, 2, 2);
    const want = paritySigns(bits);
    for (let t = 0; t < bits.length; t++) {
      expect(Math.sign(o[t])).toBe(want[t]);
      expect(o[t]).toBe(want[t]); // exactly +-1: reflections of a unit vector are exact in float64
    }
  });

  it('the same via 1000 decode steps', () => {
    let state = f64([1, 0], [1, 1, 2, 1]);
    const want = paritySigns(bits);
    bits.forEach((bit, t) => {
      const r = gatedDeltaRuleStepReference({
        q: f64([1, 0], [1, 1, 2]),
        k: f64(bit ? [1, 0] : [0, 1], [1, 1, 2]),
        v: f64([0], [1, 1, 1]),
        beta: f64([2], [1, 1]),
        state,
        scale: 1,
      });
      expect(r.o.data[0]).toBe(want[t]);
      state = r.state;
    });
  });

  it('beta restricted to [0, 1] cannot track parity with this construction', () => {
    const grid = [0, 0.25, 0.5, 0.75, 1];
    const ones = new Array<number>(50).fill(1);
    for (const beta1 of grid) {
      for (const beta0 of grid) {
        // Eigenvalue 1 - beta in [0, 1]: the readout never goes negative, so every odd prefix is missed.
        const oOnes = parityRun(ones, beta1, beta0);
        expect(Array.from(oOnes).every((x) => x >= 0)).toBe(true);
        const o = parityRun(bits, beta1, beta0);
        const want = paritySigns(bits);
        const wrong = want.filter((w, t) => Math.sign(o[t]) !== w).length;
        expect(wrong).toBeGreaterThan(0);
      }
    }
  });
});

// ---- 3. properties on random inputs ----

describe('gatedDeltaRuleReference: properties', () => {
  for (const T of [1, 7, 33]) {
    it(`splitting at t0 and carrying the state equals the whole run (T=${T})`, () => {
      const x = inputs(B, T, 100 + T);
      const whole = gatedDeltaRuleReference(x);
      for (const t0 of [0, 1, Math.floor(T / 2), T]) {
        const part = (a: number, b: number) => ({
          q: sub(x.q, [undefined, [a, b]]),
          k: sub(x.k, [undefined, [a, b]]),
          v: sub(x.v, [undefined, [a, b]]),
          beta: sub(x.beta, [undefined, [a, b]]),
          g: sub(x.g, [undefined, [a, b]]),
        });
        const r1 = gatedDeltaRuleReference({ ...part(0, t0), initialState: x.initialState });
        const r2 = gatedDeltaRuleReference({ ...part(t0, T), initialState: r1.finalState });
        expectClose(catT([r1.o, r2.o]), whole.o);
        expectClose(r2.finalState, whole.finalState);
      }
    });

    it(`T decode steps equal one prefill (T=${T})`, () => {
      const x = inputs(B, T, 200 + T);
      const whole = gatedDeltaRuleReference(x);
      let state: Tensor = x.initialState;
      const before = Float32Array.from(x.initialState.data as Float32Array);
      const outs: Tensor[] = [];
      for (let t = 0; t < T; t++) {
        const at = (a: Tensor, inner: number[]) => reshape(sub(a, [undefined, [t, t + 1]]), [B, ...inner]);
        const r = gatedDeltaRuleStepReference({
          q: at(x.q, [H, K]),
          k: at(x.k, [H, K]),
          v: at(x.v, [HV, V]),
          beta: at(x.beta, [HV]),
          g: at(x.g, [HV]),
          state,
        });
        expect(r.o.shape).toEqual([B, HV, V]);
        expect(r.state.shape).toEqual([B, HV, K, V]);
        expect(r.state).not.toBe(state);
        outs.push(reshape(r.o, [B, 1, HV, V]));
        state = r.state;
      }
      expect(Array.from(x.initialState.data)).toEqual(Array.from(before)); // input state not modified
      expectClose(catT(outs), whole.o);
      expectClose(state, whole.finalState);
    });

    it(`beta = 0 with a = 1 leaves the state unchanged (T=${T})`, () => {
      const x = inputs(B, T, 300 + T);
      const r = gatedDeltaRuleReference({ ...x, g: undefined, beta: rand([B, T, HV], { seed: 1, low: 0, high: 0 }) });
      expectClose(r.finalState, x.initialState, 0);
      // and o_t = S0^T (q_t / sqrt(K)) for every token
      const q = x.q.toFloat64();
      const S0 = x.initialState.toFloat64();
      const want = new Float64Array(B * T * HV * V);
      for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let j = 0; j < HV; j++) {
        const h = Math.floor(j / (HV / H));
        for (let c = 0; c < V; c++) {
          let acc = 0;
          for (let i = 0; i < K; i++) acc += S0[((b * HV + j) * K + i) * V + c] * q[((b * T + t) * H + h) * K + i];
          want[((b * T + t) * HV + j) * V + c] = acc / Math.sqrt(K);
        }
      }
      expectClose(r.o, new Tensor(want, [B, T, HV, V], 'float64'));
    });

    it(`decay = exp(g) equals the g variant (T=${T})`, () => {
      const x = inputs(B, T, 400 + T);
      const withG = gatedDeltaRuleReference(x);
      const decay = f64(x.g.toFloat64().map(Math.exp), x.g.shape);
      const withDecay = gatedDeltaRuleReference({ ...x, g: undefined, decay });
      expectClose(withDecay.o, withG.o);
      expectClose(withDecay.finalState, withG.finalState);
      // and a signed decay is actually used (it changes the answer)
      const neg = f64(decay.toFloat64().map((a) => -a), x.g.shape);
      expect(relErr(gatedDeltaRuleReference({ ...x, g: undefined, decay: neg }).o, withG.o)).toBeGreaterThan(1e-3);
    });

    for (const qkL2Norm of [false, true]) {
      it(`KLA with eta equals beta = eta / (|k|^2 + eps) by hand (T=${T}, qkL2Norm=${qkL2Norm})`, () => {
        const x = inputs(B, T, 500 + T);
        const eta = rand([B, T, HV], { seed: 77, low: 0, high: 1.5 });
        const eps = qkL2Norm ? 1e-6 : 0.25;
        const k = x.k.toFloat64();
        const e = eta.toFloat64();
        const beta = new Float64Array(B * T * HV);
        for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let j = 0; j < HV; j++) {
          const h = Math.floor(j / (HV / H));
          let kk = 0;
          for (let i = 0; i < K; i++) kk += k[((b * T + t) * H + h) * K + i] ** 2;
          if (qkL2Norm) kk = kk / (kk + 1e-6); // |k / sqrt(|k|^2 + 1e-6)|^2
          beta[(b * T + t) * HV + j] = e[(b * T + t) * HV + j] / (kk + eps);
        }
        const common = { q: x.q, k: x.k, v: x.v, g: x.g, initialState: x.initialState, qkL2Norm };
        const rEta = gatedDeltaRuleReference({ ...common, eta, eps: qkL2Norm ? undefined : eps });
        const rBeta = gatedDeltaRuleReference({ ...common, beta: f64(beta, [B, T, HV]) });
        expectClose(rEta.o, rBeta.o);
        expectClose(rEta.finalState, rBeta.finalState);
      });
    }

    it(`qkL2Norm equals pre-normalised inputs (T=${T})`, () => {
      const x = inputs(B, T, 600 + T);
      const norm = (a: Tensor): Tensor => {
        const d = a.toFloat64();
        for (let off = 0; off < d.length; off += K) {
          let ss = 0;
          for (let i = 0; i < K; i++) ss += d[off + i] ** 2;
          for (let i = 0; i < K; i++) d[off + i] /= Math.sqrt(ss + 1e-6);
        }
        return f64(d, a.shape);
      };
      const a = gatedDeltaRuleReference({ ...x, qkL2Norm: true });
      const b = gatedDeltaRuleReference({ ...x, q: norm(x.q), k: norm(x.k) });
      expectClose(a.o, b.o);
      expectClose(a.finalState, b.finalState);
      expect(relErr(gatedDeltaRuleReference(x).o, a.o)).toBeGreaterThan(1e-3); // the flag does something
    });

    it(`grouped heads and batches: each (b, j) equals a single-head run on q/k head floor(j/2) (T=${T})`, () => {
      const x = inputs(B, T, 700 + T);
      const r = gatedDeltaRuleReference(x);
      for (let b = 0; b < B; b++) for (let j = 0; j < HV; j++) {
        const h = Math.floor(j / (HV / H));
        const one = gatedDeltaRuleReference({
          q: sub(x.q, [[b, b + 1], undefined, [h, h + 1]]),
          k: sub(x.k, [[b, b + 1], undefined, [h, h + 1]]),
          v: sub(x.v, [[b, b + 1], undefined, [j, j + 1]]),
          beta: sub(x.beta, [[b, b + 1], undefined, [j, j + 1]]),
          g: sub(x.g, [[b, b + 1], undefined, [j, j + 1]]),
          initialState: sub(x.initialState, [[b, b + 1], [j, j + 1]]),
          scale: 1 / Math.sqrt(K),
        });
        expectClose(one.o, sub(r.o, [[b, b + 1], undefined, [j, j + 1]]));
        expectClose(one.finalState, sub(r.finalState, [[b, b + 1], [j, j + 1]]));
      }
    });
  }

  for (const asInt32 of [false, true]) {
    it(`cuSeqlens packing of lengths 5, 0, 4 equals separate runs (${asInt32 ? 'Int32Array' : 'number[]'})`, () => {
      const lens = [5, 0, 4];
      const cu = [0, 5, 5, 9];
      const x = inputs(1, 9, 800);
      const init = randn([3, HV, K, V], { seed: 801 });
      const packed = gatedDeltaRuleReference({ ...x, initialState: init, cuSeqlens: asInt32 ? Int32Array.from(cu) : cu });
      expect(packed.o.shape).toEqual([1, 9, HV, V]);
      expect(packed.finalState.shape).toEqual([3, HV, K, V]);
      const outs: Tensor[] = [];
      for (let n = 0; n < 3; n++) {
        const tr: [number, number] = [cu[n], cu[n + 1]];
        const r = gatedDeltaRuleReference({
          q: sub(x.q, [undefined, tr]),
          k: sub(x.k, [undefined, tr]),
          v: sub(x.v, [undefined, tr]),
          beta: sub(x.beta, [undefined, tr]),
          g: sub(x.g, [undefined, tr]),
          initialState: sub(init, [[n, n + 1]]),
        });
        expect(r.o.shape[1]).toBe(lens[n]);
        outs.push(r.o);
        expectClose(sub(packed.finalState, [[n, n + 1]]), r.finalState);
      }
      expectClose(sub(packed.finalState, [[1, 2]]), sub(init, [[1, 2]]), 0); // zero-length: state unchanged
      expectClose(packed.o, catT(outs));
      // The packed run differs from one unbroken sequence (the state really restarts at 5).
      expect(relErr(gatedDeltaRuleReference({ ...x, initialState: sub(init, [[0, 1]]) }).o, packed.o)).toBeGreaterThan(1e-3);
    });
  }

  it('any input dtype is converted to float64 first (float16 input equals its float64 values)', () => {
    const x = inputs(B, 7, 900);
    const h = { q: x.q.astype('float16'), k: x.k.astype('bfloat16'), v: x.v.astype('float16'), beta: x.beta, g: x.g };
    const a = gatedDeltaRuleReference(h);
    const b = gatedDeltaRuleReference({ ...h, q: h.q.astype('float64'), k: h.k.astype('float64'), v: h.v.astype('float64') });
    expect(a.o.dtype).toBe('float64');
    expectClose(a.o, b.o, 0);
    expectClose(a.finalState, b.finalState, 0);
  });
});
