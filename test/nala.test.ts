// Native CPU kernels of NaLaFormer (DESIGN.md 6.5, 7; issue 16 part 4) against the float64 reference (the
// defining sums, O(T·S) per head): the shape grid, causal and not, rope or not, GQA, K != V, packed
// sequences with a zero-length one, low-precision inputs, decode steps = prefill, split-and-carry = whole,
// zero and huge-norm q rows, every SIMD level, and `out`. Every case names its shape in the test id and its
// seed in the failure message.
import { describe, expect, it } from 'vitest';
import {
  info, nalaAttention, nalaAttentionReference, nalaAttentionStep, nalaAttentionStepReference, nalaStateLength, randn,
  setSimdLevel, Tensor, tensor, zeros, type DType, type NalaAttentionOptions, type NalaRope,
} from '../src/index.js';
import { expectClose, expectIsOut, garbage, offsets, relErr, reshape, slice } from './helpers.js';

/** DESIGN.md 7: nala, float32, T <= 4096. */
const TOL_F32 = 1e-4;
/** float16/bfloat16 inputs (and outputs rounded to them). */
const TOL_LOW = 2e-2;
/** Two native runs that differ only in blocking (steps vs prefill, split point): float rounding. */
const TOL_SELF = 1e-5;

/** RoPE tables of positions [p0, p0 + rows), the official layout (each angle repeated for a pair). */
export function ropeTables(rows: number, K: number, p0 = 0, base = 10000): NalaRope {
  const cos = new Float32Array(rows * K), sin = new Float32Array(rows * K);
  for (let t = 0; t < rows; t++) {
    for (let m = 0; m < K / 2; m++) {
      const ang = (p0 + t) / base ** ((2 * m) / K);
      cos[t * K + 2 * m] = cos[t * K + 2 * m + 1] = Math.cos(ang);
      sin[t * K + 2 * m] = sin[t * K + 2 * m + 1] = Math.sin(ang);
    }
  }
  return { cos: tensor(cos, [rows, K]), sin: tensor(sin, [rows, K]) };
}

interface Case { B: number; T: number; S?: number; H: number; Hk: number; K: number; V: number; causal: boolean; rope: boolean; seed: number; dtype?: DType }

const id = (c: Case) =>
  `B=${c.B},T=${c.T},S=${c.S ?? c.T},H=${c.H},Hk=${c.Hk},K=${c.K},V=${c.V} ${c.causal ? 'causal' : 'full'}${c.rope ? ' rope' : ''}${c.dtype ? ` ${c.dtype}` : ''}`;

function inputs(c: Case) {
  const S = c.S ?? c.T;
  const dtype = c.dtype ?? 'float32';
  const q = randn([c.B, c.T, c.H, c.K], { seed: c.seed + 1, dtype });
  const k = randn([c.B, S, c.Hk, c.K], { seed: c.seed + 2, dtype });
  const v = randn([c.B, S, c.Hk, c.V], { seed: c.seed + 3, dtype });
  const opts: NalaAttentionOptions = { causal: c.causal };
  if (c.rope) {
    opts.rope = ropeTables(c.T, c.K);
    if (S !== c.T) opts.ropeK = ropeTables(S, c.K, 3);
  }
  return { q, k, v, opts };
}

function check(c: Case, tol = c.dtype ? TOL_LOW : TOL_F32) {
  const what = `${id(c)} seed=${c.seed}`;
  const { q, k, v, opts } = inputs(c);
  const ref = nalaAttentionReference(q, k, v, opts);
  const r = nalaAttention(q, k, v, { ...opts, backend: 'cpu', outputFinalState: c.causal ? true : undefined });
  expect(r.o.dtype, `${what}: o has v's dtype`).toBe(v.dtype);
  expectClose(r.o, ref.o, tol, `${what}: o`);
  if (c.causal) expectClose(r.finalState!, ref.finalState!, tol, `${what}: finalState`);
}

describe('nalaAttention native vs reference: shapes', () => {
  for (const T of [1, 63, 64, 65, 1000]) {
    for (const K of [32, 64]) {
      for (const causal of [false, true]) {
        for (const rope of [false, true]) {
          // T = 1000: the reference is the slow part (O(T²) per head), so one head pair and one K per mode.
          if (T === 1000 && (K === 32) === rope) continue;
          const c: Case = { B: T === 1000 ? 1 : 2, T, H: 4, Hk: 2, K, V: K === 32 ? 48 : 24, causal, rope, seed: 31 * T + K };
          it(id(c), () => check(c));
        }
      }
    }
  }
  // S != T (non-causal): fewer and more keys than queries, with their own rope tables.
  for (const [T, S] of [[63, 1], [1, 65], [64, 200], [130, 63]]) {
    for (const rope of [false, true]) {
      const c: Case = { B: 2, T, S, H: 3, Hk: 1, K: 32, V: 16, causal: false, rope, seed: 7 * T + S };
      it(id(c), () => check(c));
    }
  }
  // One head pair and many keys: the driver splits the keys into parts summed afterwards (native/cpu/nala.cc);
  // many heads: both passes in one unit. Both against the reference.
  for (const [B, Hk, S] of [[1, 1, 5000], [1, 2, 2500], [3, 2, 300]]) {
    for (const rope of [false, true]) {
      const c: Case = { B, T: 3, S, H: 2 * Hk, Hk, K: 32, V: 16, causal: false, rope, seed: S + B };
      it(`${id(c)} (key parts / fused passes)`, () => check(c));
    }
  }
  it('MHA and MQA (H = Hk, Hk = 1), K = 16, V = 80', () => {
    check({ B: 1, T: 70, H: 2, Hk: 2, K: 16, V: 80, causal: true, rope: true, seed: 5 });
    check({ B: 1, T: 70, H: 3, Hk: 1, K: 16, V: 80, causal: false, rope: true, seed: 6 });
  });
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const causal of [false, true]) {
      const c: Case = { B: 2, T: 65, H: 4, Hk: 2, K: 32, V: 48, causal, rope: true, seed: 11, dtype };
      it(id(c), () => check(c));
    }
  }
});

describe('nalaAttention: packed sequences', () => {
  const lens = [5, 0, 70, 64, 1];
  const T = lens.reduce((a, b) => a + b, 0);
  for (const causal of [false, true]) {
    for (const rope of [false, true]) {
      it(`lens=${lens} ${causal ? 'causal' : 'full'}${rope ? ' rope' : ''} = each sequence alone`, () => {
        const q = randn([1, T, 4, 32], { seed: 1 }), k = randn([1, T, 2, 32], { seed: 2 }), v = randn([1, T, 2, 24], { seed: 3 });
        const cu = offsets(lens);
        const tabs = rope ? ropeTables(T, 32) : undefined;
        const r = nalaAttention(q, k, v, { backend: 'cpu', causal, cuSeqlens: cu, rope: tabs, outputFinalState: causal ? true : undefined });
        const ref = nalaAttentionReference(q, k, v, { causal, cuSeqlens: cu, rope: tabs });
        expectClose(r.o, ref.o, TOL_F32, 'o vs reference');
        if (causal) {
          expectClose(r.finalState!, ref.finalState!, TOL_F32, 'finalState vs reference');
          // The zero-length sequence's state is all zeros (its initial state).
          const L = nalaStateLength(32, 24);
          expect(Array.from(r.finalState!.data.subarray(2 * L, 4 * L)).every((x) => x === 0)).toBe(true);
        }
        // Each sequence alone (rope rows of the packed axis) gives the same rows.
        lens.forEach((len, n) => {
          if (len === 0) return;
          const rows: [number, number] = [cu[n], cu[n + 1]];
          const sub = (x: Tensor) => slice(x, [undefined, rows]);
          const one = nalaAttention(sub(q), sub(k), sub(v), {
            backend: 'cpu', causal, rope: tabs ? { cos: slice(tabs.cos, [rows]), sin: slice(tabs.sin, [rows]) } : undefined,
          });
          expect(relErr(one.o, sub(r.o)), `sequence ${n}`).toBeLessThan(TOL_SELF);
        });
      });
    }
  }
  it('non-causal with cuSeqlensK: a sequence with queries but no keys gets o = 0', () => {
    const lq = [3, 4, 2], lk = [6, 0, 9];
    const q = randn([1, 9, 2, 16], { seed: 4 }), k = randn([1, 15, 1, 16], { seed: 5 }), v = randn([1, 15, 1, 8], { seed: 6 });
    const opts = { cuSeqlens: offsets(lq), cuSeqlensK: offsets(lk), rope: ropeTables(9, 16), ropeK: ropeTables(15, 16) };
    const r = nalaAttention(q, k, v, { backend: 'cpu', ...opts });
    expectClose(r.o, nalaAttentionReference(q, k, v, opts).o, TOL_F32, 'o');
    const mid = slice(r.o, [undefined, [3, 7]]).toFloat64();
    expect(mid.every((x) => x === 0), 'queries of the key-less sequence').toBe(true);
  });
});

describe('nalaAttention: properties', () => {
  const K = 32, V = 40, H = 4, Hk = 2;
  for (const rope of [false, true]) {
    it(`decode steps after a prefill = one longer prefill${rope ? ' (rope)' : ''}`, () => {
      const T = 90, T0 = 37, B = 2;
      const q = randn([B, T, H, K], { seed: 21 }), k = randn([B, T, Hk, K], { seed: 22 }), v = randn([B, T, Hk, V], { seed: 23 });
      const tabs = rope ? ropeTables(T, K) : undefined;
      const rows = (a: number, b: number) => (tabs ? { cos: slice(tabs.cos, [[a, b]]), sin: slice(tabs.sin, [[a, b]]) } : undefined);
      const whole = nalaAttention(q, k, v, { backend: 'cpu', causal: true, rope: tabs, outputFinalState: true });
      const tok = (x: Tensor, a: number, b: number) => slice(x, [undefined, [a, b]]);
      const pre = nalaAttention(tok(q, 0, T0), tok(k, 0, T0), tok(v, 0, T0), { backend: 'cpu', causal: true, rope: rows(0, T0), outputFinalState: true });
      const state = pre.finalState!;
      const outs = [pre.o];
      for (let t = T0; t < T; t++) {
        const step = (x: Tensor) => reshape(tok(x, t, t + 1), [B, ...x.shape.slice(2)]);
        // Both batch rows are at position t: the step's rope rows are row t, once per sequence.
        const r1 = rows(t, t + 1);
        const stepRope = r1 ? { cos: tensor(new Float32Array([...r1.cos.data, ...r1.cos.data]), [B, K]), sin: tensor(new Float32Array([...r1.sin.data, ...r1.sin.data]), [B, K]) } : undefined;
        const s = nalaAttentionStep({ q: step(q), k: step(k), v: step(v), state, rope: stepRope, backend: 'cpu' });
        outs.push(reshape(s.o, [B, 1, H, V]));
      }
      // Concatenate along T.
      const o = new Float32Array(B * T * H * V);
      let t0 = 0;
      for (const part of outs) {
        const n = part.shape[1];
        for (let b = 0; b < B; b++) o.set((part.data as Float32Array).subarray(b * n * H * V, (b + 1) * n * H * V), (b * T + t0) * H * V);
        t0 += n;
      }
      expect(relErr(tensor(o, [B, T, H, V]), whole.o), 'o').toBeLessThan(TOL_SELF);
      expect(relErr(state, whole.finalState!), 'state').toBeLessThan(TOL_SELF);
      // And the step against the reference step (one step from the prefill's state).
      const s0 = pre.finalState!;
      void s0;
    });
  }
  it('the step against the reference step', () => {
    const N = 3;
    const pre = nalaAttention(randn([N, 20, H, K], { seed: 1 }), randn([N, 20, Hk, K], { seed: 2 }), randn([N, 20, Hk, V], { seed: 3 }),
      { backend: 'cpu', causal: true, outputFinalState: true });
    const args = { q: randn([N, H, K], { seed: 4 }), k: randn([N, Hk, K], { seed: 5 }), v: randn([N, Hk, V], { seed: 6 }), rope: ropeTables(N, K, 20) };
    const ref = nalaAttentionStepReference({ ...args, state: pre.finalState! });
    const state = pre.finalState!;
    const r = nalaAttentionStep({ ...args, state, backend: 'cpu' });
    expectClose(r.o, ref.o, TOL_F32, 'o');
    expectClose(state, ref.state, TOL_F32, 'state (in place)');
  });
  for (const rope of [false, true]) {
    it(`split and carry = whole, split at 1, 64, 65, 100${rope ? ' (rope)' : ''}`, () => {
      const T = 160;
      const q = randn([2, T, H, K], { seed: 31 }), k = randn([2, T, Hk, K], { seed: 32 }), v = randn([2, T, Hk, V], { seed: 33 });
      const tabs = rope ? ropeTables(T, K) : undefined;
      const whole = nalaAttention(q, k, v, { backend: 'cpu', causal: true, rope: tabs, outputFinalState: true });
      for (const cut of [1, 64, 65, 100]) {
        const part = (a: number, b: number, initialState?: Tensor) => nalaAttention(
          slice(q, [undefined, [a, b]]), slice(k, [undefined, [a, b]]), slice(v, [undefined, [a, b]]),
          { backend: 'cpu', causal: true, initialState, outputFinalState: true, rope: tabs ? { cos: slice(tabs.cos, [[a, b]]), sin: slice(tabs.sin, [[a, b]]) } : undefined });
        const a = part(0, cut);
        const b = part(cut, T, a.finalState);
        expect(relErr(b.o, slice(whole.o, [undefined, [cut, T]])), `cut ${cut}: second part`).toBeLessThan(TOL_SELF);
        expect(relErr(a.o, slice(whole.o, [undefined, [0, cut]])), `cut ${cut}: first part`).toBeLessThan(TOL_SELF);
        expect(relErr(b.finalState!, whole.finalState!), `cut ${cut}: state`).toBeLessThan(TOL_SELF);
      }
    });
  }
  it('an initial state against the reference', () => {
    const pre = nalaAttention(randn([2, 30, H, K], { seed: 8 }), randn([2, 30, Hk, K], { seed: 9 }), randn([2, 30, Hk, V], { seed: 10 }),
      { backend: 'cpu', causal: true, outputFinalState: true });
    const q = randn([2, 65, H, K], { seed: 11 }), k = randn([2, 65, Hk, K], { seed: 12 }), v = randn([2, 65, Hk, V], { seed: 13 });
    const opts = { causal: true, initialState: pre.finalState, rope: ropeTables(65, K, 30) };
    const ref = nalaAttentionReference(q, k, v, opts);
    const r = nalaAttention(q, k, v, { ...opts, backend: 'cpu', outputFinalState: true });
    expectClose(r.o, ref.o, TOL_F32, 'o');
    expectClose(r.finalState!, ref.finalState!, TOL_F32, 'finalState');
  });
  for (const causal of [false, true]) {
    it(`zero and huge-norm q rows (${causal ? 'causal' : 'full'}): finite, zero rows give o = 0, as the reference`, () => {
      const T = 70;
      const q = randn([1, T, H, K], { seed: 41 }).toFloat64();
      const zeroRows = [0, 5, 64], hugeRows = [3, 33, 65], tinyRows = [7];
      for (const t of zeroRows) q.fill(0, t * H * K, t * H * K + H * K);
      for (const t of hugeRows) for (let i = t * H * K; i < (t + 1) * H * K; i++) q[i] *= 1e30;
      for (const t of tinyRows) for (let i = t * H * K; i < (t + 1) * H * K; i++) q[i] *= 1e-38;
      const qt = tensor(q, [1, T, H, K], 'float32');
      const k = randn([1, T, Hk, K], { seed: 42 }), v = randn([1, T, Hk, V], { seed: 43 });
      const opts = { causal, rope: ropeTables(T, K) };
      const r = nalaAttention(qt, k, v, { ...opts, backend: 'cpu' });
      expectClose(r.o, nalaAttentionReference(qt, k, v, opts).o, TOL_F32, 'o');
      for (const t of zeroRows) expect(slice(r.o, [undefined, [t, t + 1]]).toFloat64().every((x) => x === 0), `row ${t}`).toBe(true);
    });
  }
});

describe('nalaAttention: every SIMD level', () => {
  const order = ['avx512', 'avx2', 'portable'] as const;
  it('each level this CPU has matches the reference', () => {
    const start = info().simd as (typeof order)[number];
    const levels = order.slice(order.indexOf(info().simdBest as (typeof order)[number]));
    try {
      for (const level of levels) {
        setSimdLevel(level);
        for (const causal of [false, true]) {
          const c: Case = { B: 2, T: 65, H: 4, Hk: 2, K: 64, V: 24, causal, rope: true, seed: 3 };
          const { q, k, v, opts } = inputs(c);
          const r = nalaAttention(q, k, v, { ...opts, backend: 'cpu' });
          expectClose(r.o, nalaAttentionReference(q, k, v, opts).o, TOL_F32, `${level} ${id(c)}`);
        }
      }
    } finally {
      setSimdLevel(start);
    }
  });
});

describe('nalaAttention: out', () => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const causal of [false, true]) {
      it(`${dtype} ${causal ? 'causal' : 'full'}: o is written into out, the same bits as a fresh o`, () => {
        const q = randn([2, 65, 4, 32], { seed: 1, dtype }), k = randn([2, 65, 2, 32], { seed: 2, dtype }), v = randn([2, 65, 2, 16], { seed: 3, dtype });
        const fresh = nalaAttention(q, k, v, { backend: 'cpu', causal });
        const out = garbage([2, 65, 4, 16], dtype, 9);
        const r = nalaAttention(q, k, v, { backend: 'cpu', causal, out });
        expectIsOut(r.o, out);
        expect(relErr(out, fresh.o)).toBe(0);
      });
    }
  }
  it('the step writes into out', () => {
    const state = zeros([2, 2, nalaStateLength(16, 8)]);
    const out = garbage([2, 4, 8], 'float32', 3);
    const r = nalaAttentionStep({ q: randn([2, 4, 16], { seed: 1 }), k: randn([2, 2, 16], { seed: 2 }), v: randn([2, 2, 8], { seed: 3 }), state, out, backend: 'cpu' });
    expectIsOut(r.o, out);
    expect(out.toFloat64().every(Number.isFinite)).toBe(true);
  });
});
