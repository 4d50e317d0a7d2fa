// Causal convolution (issue 14 parts 3 and 7): native vs the float64 reference at awkward shapes (W 1..8, odd
// D across the 64-channel tiles, T across the 64-token tiles, every dtype, silu and bias), varlen with a
// zero-length sequence, the pool (shuffled slots equal the contiguous call, hasInitialState, padding), the
// update over T steps equal to the prefill, every SIMD level, and async with abort.
import { describe, expect, it } from 'vitest';
import {
  causalConv1d, causalConv1dAsync, causalConv1dReference, causalConv1dUpdate, causalConv1dUpdateAsync, info, randn,
  setSimdLevel, Tensor, tensor, type DType,
} from '../src/index.js';
import { expectClose, expectSameBits, relErr, sameBytes, snapshot } from './helpers.js';

const TOL = 1e-5;
const TOL_LOW = 1e-2;

const clone = (t: Tensor): Tensor => new Tensor(t.data.slice() as Tensor['data'], t.shape, t.dtype);

interface Case { B: number; T: number; D: number; W: number; silu: boolean; bias: boolean; dtype: DType; wDtype?: DType; seed: number }

const id = (c: Case) =>
  `B=${c.B},T=${c.T},D=${c.D},W=${c.W}${c.silu ? ' silu' : ''}${c.bias ? ' bias' : ''} ${c.dtype}${c.wDtype ? `/w ${c.wDtype}` : ''} seed=${c.seed}`;

function inputs(c: Case) {
  return {
    x: randn([c.B, c.T, c.D], { seed: c.seed, dtype: c.dtype }),
    w: randn([c.D, c.W], { seed: c.seed + 1, dtype: c.wDtype ?? 'float32', std: 0.5 }),
    bias: c.bias ? randn([c.D], { seed: c.seed + 2, std: 0.3 }) : undefined,
    pool: randn([c.B + 2, c.D, c.W - 1], { seed: c.seed + 3 }),
  };
}

const cases: Case[] = [];
{
  let seed = 100;
  for (const W of [1, 2, 3, 4, 5, 6, 7, 8]) {
    for (const [B, T, D] of [[1, 1, 1], [3, 5, 7], [1, 70, 67], [3, 130, 13], [1, 3, 130]]) {
      cases.push({ B, T, D, W, silu: (W + T) % 2 === 0, bias: (W + D) % 2 === 1, dtype: 'float32', seed: seed++ });
    }
  }
  for (const dtype of ['float16', 'bfloat16'] as const) {
    cases.push({ B: 3, T: 65, D: 71, W: 4, silu: true, bias: true, dtype, seed: seed++ });
    cases.push({ B: 1, T: 9, D: 5, W: 8, silu: false, bias: false, dtype, wDtype: dtype, seed: seed++ });
  }
  cases.push({ B: 2, T: 33, D: 19, W: 4, silu: true, bias: true, dtype: 'float32', wDtype: 'bfloat16', seed: seed++ });
}

describe('causalConv1d: native vs the float64 reference', () => {
  for (const c of cases) {
    it(id(c), () => {
      const { x, w, bias, pool } = inputs(c);
      const act = c.silu ? 'silu' : 'none';
      const tol = c.dtype === 'float32' ? TOL : TOL_LOW;
      // Without a pool: zeros before the start.
      const ref = causalConv1dReference(x, w, { bias, activation: act });
      expectClose(causalConv1d(x, w, { bias, activation: act }), ref.y, tol, `${id(c)} no pool`);
      // With a pool: initial states from the slots, final states written back (shuffled slots).
      const slots = Int32Array.from({ length: c.B }, (_, b) => (b * 2 + 1) % (c.B + 2));
      const p = clone(pool);
      const init = new Tensor(new Float64Array(c.B * c.D * (c.W - 1)), [c.B, c.D, c.W - 1], 'float64');
      const pv = pool.toFloat64();
      const n = c.D * (c.W - 1);
      for (let b = 0; b < c.B; b++) (init.data as Float64Array).set(pv.subarray(slots[b] * n, (slots[b] + 1) * n), b * n);
      const r2 = causalConv1dReference(x, w, { bias, activation: act, initialStates: init });
      const y = causalConv1d(x, w, { bias, activation: act, convState: p, stateIndices: slots });
      expectClose(y, r2.y, tol, `${id(c)} pool`);
      const after = p.toFloat64();
      const fin = r2.finalStates.toFloat64();
      for (let s = 0; s < c.B + 2; s++) {
        const b = slots.indexOf(s);
        const got = after.subarray(s * n, (s + 1) * n);
        const want = b >= 0 ? fin.subarray(b * n, (b + 1) * n) : pv.subarray(s * n, (s + 1) * n);
        expect(relErr(Float64Array.from(got), Float64Array.from(want)), `${id(c)} slot ${s}`).toBeLessThanOrEqual(c.dtype === 'float32' ? 0 : TOL_LOW);
      }
    });
  }
});

describe('causalConv1d: varlen and the pool', () => {
  const D = 37;
  const W = 4;
  const lens = [5, 0, 67, 1, 2];
  const cu = Int32Array.from([0, ...lens.map((_, i) => lens.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  const T = cu[cu.length - 1];
  const x = randn([1, T, D], { seed: 7 });
  const w = randn([D, W], { seed: 8 });
  const bias = randn([D], { seed: 9 });
  const pool = randn([8, D, W - 1], { seed: 10 });

  it('packed sequences (one of length 0) equal one call per sequence; hasInitialState 0 starts from zeros', () => {
    const slots = Int32Array.from([6, 2, 0, 5, 3]);
    const has = Uint8Array.from([1, 1, 0, 1, 0]);
    const p = clone(pool);
    const y = causalConv1d(x, w, { bias, activation: 'silu', cuSeqlens: cu, convState: p, stateIndices: slots, hasInitialState: has });
    const pr = clone(pool);
    const yr = causalConv1d(tensor(x.toFloat64(), x.shape, 'float64'), tensor(w.toFloat64(), w.shape, 'float64'), {
      bias, activation: 'silu', cuSeqlens: cu, convState: pr, stateIndices: slots, hasInitialState: has,
    });
    expectClose(y, yr, TOL, 'varlen vs reference backend');
    expect(relErr(p, pr), 'pool vs reference backend').toBeLessThanOrEqual(1e-6);
    // one call per sequence on its own slot
    const p2 = clone(pool);
    for (let n = 0; n < lens.length; n++) {
      const xs = new Tensor(x.data.slice(cu[n] * D, cu[n + 1] * D), [1, lens[n], D], 'float32');
      const yn = causalConv1d(xs, w, { bias, activation: 'silu', convState: p2, stateIndices: [slots[n]], hasInitialState: [has[n]] });
      expectSameBits(yn, new Tensor(y.data.slice(cu[n] * D, cu[n + 1] * D), [1, lens[n], D], 'float32'), `sequence ${n}`);
    }
    expectSameBits(p2, p, 'pool after per-sequence calls');
    // the zero-length sequence with an initial state keeps its state; without one it is zeroed
    const n = D * (W - 1);
    expect(sameBytes({ data: p.data.subarray(2 * n, 3 * n) as Float32Array }, snapshot({ data: pool.data.subarray(2 * n, 3 * n) as Float32Array })), 'slot of the empty sequence').toBe(true);
  });

  it('padding (slot -1): y rows 0, its slot and the others untouched', () => {
    const p = clone(pool);
    const before = snapshot(p);
    const y = causalConv1d(x, w, { cuSeqlens: cu, convState: p, stateIndices: [-1, -1, -1, -1, -1] });
    expect(Array.from(y.data).every((v) => v === 0), 'y all 0').toBe(true);
    expect(sameBytes(p, before), 'pool untouched').toBe(true);
  });

  it('a pool with shuffled slots equals the contiguous call', () => {
    const B = 3;
    const xb = randn([B, 20, D], { seed: 11 });
    const contiguous = randn([B, D, W - 1], { seed: 12 });
    const order = [4, 0, 6];
    const shuffled = randn([8, D, W - 1], { seed: 13 });
    const n = D * (W - 1);
    for (let b = 0; b < B; b++) shuffled.data.set(contiguous.data.subarray(b * n, (b + 1) * n), order[b] * n);
    const y1 = causalConv1d(xb, w, { bias, convState: contiguous });
    const y2 = causalConv1d(xb, w, { bias, convState: shuffled, stateIndices: order });
    expectSameBits(y2, y1, 'y');
    for (let b = 0; b < B; b++) {
      expectSameBits(new Tensor(shuffled.data.slice(order[b] * n, (order[b] + 1) * n), [n], 'float32'),
        new Tensor(contiguous.data.slice(b * n, (b + 1) * n), [n], 'float32'), `state ${b}`);
    }
  });
});

describe('causalConv1dUpdate: T steps equal the prefill', () => {
  for (const [W, D, dtype] of [[4, 37, 'float32'], [1, 9, 'float32'], [8, 70, 'float32'], [3, 16, 'bfloat16'], [5, 11, 'float16']] as const) {
    it(`W=${W}, D=${D}, ${dtype}: 1-token and 4-token updates after a prefill`, () => {
      const N = 3;
      const T = 23;
      const x = randn([N, T, D], { seed: W * 100 + D, dtype });
      const w = randn([D, W], { seed: 5 });
      const bias = randn([D], { seed: 6 });
      const slots = [2, 0, 4];
      const pool0 = randn([5, D, W - 1], { seed: 7, dtype: dtype === 'float32' ? 'float32' : dtype });
      const full = clone(pool0);
      const yFull = causalConv1d(x, w, { bias, activation: 'silu', convState: full, stateIndices: slots });
      const step = clone(pool0);
      const pre = 7;
      const take = (t0: number, t1: number) => {
        const es = t1 - t0;
        const d = new (x.data.constructor as typeof Uint16Array)(N * es * D);
        for (let n = 0; n < N; n++) d.set(x.data.subarray((n * T + t0) * D, (n * T + t1) * D), n * es * D);
        return new Tensor(d as Tensor['data'], [N, es, D], dtype);
      };
      const parts: Tensor[] = [causalConv1d(take(0, pre), w, { bias, activation: 'silu', convState: step, stateIndices: slots })];
      let t = pre;
      for (; t + 4 <= 15; t += 4) parts.push(causalConv1dUpdate(take(t, t + 4), step, w, { bias, activation: 'silu', stateIndices: slots }));
      for (; t < T; t++) {
        const one = take(t, t + 1);
        const y = causalConv1dUpdate(new Tensor(one.data, [N, D], dtype), step, w, { bias, activation: 'silu', stateIndices: slots });
        expect(y.shape).toEqual([N, D]);
        parts.push(new Tensor(y.data, [N, 1, D], dtype));
      }
      const cat = new (x.data.constructor as typeof Uint16Array)(N * T * D);
      let off = 0;
      for (const p of parts) {
        const es = p.shape[1];
        for (let n = 0; n < N; n++) cat.set(p.data.subarray(n * es * D, (n + 1) * es * D) as Uint16Array, (n * T + off) * D);
        off += es;
      }
      expectSameBits(new Tensor(cat as Tensor['data'], [N, T, D], dtype), yFull, 'y of the steps vs the prefill');
      expectSameBits(step, full, 'pool after the steps vs after the prefill');
    });
  }
});

describe('causalConv1dUpdate: the update pass (windows in registers) at wide, odd D', () => {
  // D = 5003 spans several channel chunks of the update pass, the last one partial, and ends in a partial vector
  // at every level; the state block of W - 1 values per channel is deinterleaved lane by lane, so every W in 1..8
  // takes its own lane tables. Padding (slot -1) keeps its y rows 0 and touches no slot.
  const D = 5003;
  for (const W of [1, 2, 3, 4, 5, 6, 7, 8]) {
    for (const [Tq, sdt] of [[1, 'float32'], [3, 'bfloat16']] as const) {
      it(`N=3, Tq=${Tq}, D=${D}, W=${W}, pool ${sdt}: vs the reference`, () => {
        const N = 3;
        const x = randn([N, Tq, D], { seed: 300 + W });
        const w = randn([D, W], { seed: 310 + W, std: 0.5 });
        const bias = randn([D], { seed: 320 + W, std: 0.3 });
        const pool = randn([5, D, W - 1], { seed: 330 + W, dtype: sdt });
        const slots = Int32Array.from([3, -1, 0]);
        const p = clone(pool);
        const y = causalConv1dUpdate(Tq === 1 ? new Tensor(x.data, [N, D], 'float32') : x, p, w, { bias, activation: 'silu', stateIndices: slots });
        const n = D * (W - 1);
        const pv = pool.toFloat64();
        const init = new Tensor(new Float64Array(N * n), [N, D, W - 1], 'float64');
        slots.forEach((s, b) => s >= 0 && (init.data as Float64Array).set(pv.subarray(s * n, (s + 1) * n), b * n));
        const r = causalConv1dReference(x, w, { bias, activation: 'silu', initialStates: init });
        const yv = y.toFloat64(), rv = r.y.toFloat64();
        const rows = Tq * D;
        expect(relErr(yv.subarray(0, rows), rv.subarray(0, rows)), 'sequence 0').toBeLessThanOrEqual(TOL);
        expect(yv.subarray(rows, 2 * rows).every((v) => v === 0), 'padding rows 0').toBe(true);
        expect(relErr(yv.subarray(2 * rows), rv.subarray(2 * rows)), 'sequence 2').toBeLessThanOrEqual(TOL);
        const after = p.toFloat64(), fin = r.finalStates.toFloat64();
        const tol = sdt === 'float32' ? 0 : TOL_LOW;
        expect(relErr(after.subarray(3 * n, 4 * n), fin.subarray(0, n)), 'slot 3').toBeLessThanOrEqual(tol);
        expect(relErr(after.subarray(0, n), fin.subarray(2 * n, 3 * n)), 'slot 0').toBeLessThanOrEqual(tol);
        for (const s of [1, 2, 4]) expect(after.subarray(s * n, (s + 1) * n).every((v, i) => v === pv[s * n + i]), `slot ${s} untouched`).toBe(true);
      });
    }
  }
  it('a prefill of 100 tokens (the tiles) equals 60 then 40 tokens (the update pass), bit for bit', () => {
    const D = 75, W = 4, T = 100;
    const x = randn([1, T, D], { seed: 41 });
    const w = randn([D, W], { seed: 42 });
    const pool = randn([2, D, W - 1], { seed: 43 });
    const full = clone(pool);
    const yFull = causalConv1d(x, w, { activation: 'silu', convState: full });
    const part = clone(pool);
    const a = causalConv1d(new Tensor(x.data.slice(0, 60 * D), [1, 60, D], 'float32'), w, { activation: 'silu', convState: part });
    const b = causalConv1dUpdate(new Tensor(x.data.slice(60 * D), [1, 40, D], 'float32'), part, w, { activation: 'silu' });
    const cat = new Float32Array(T * D);
    cat.set(a.data as Float32Array), cat.set(b.data as Float32Array, 60 * D);
    expectSameBits(new Tensor(cat, [1, T, D], 'float32'), yFull, 'y');
    expectSameBits(part, full, 'pool');
  });
});

describe('causalConv1d: every SIMD level', () => {
  it('each level this CPU runs matches the reference', () => {
    const order = ['avx512', 'avx2', 'portable'] as const;
    const levels = order.slice(order.indexOf(info().simdBest as (typeof order)[number]));
    const start = info().simd as (typeof order)[number];
    const x = randn([2, 70, 75], { seed: 21, dtype: 'bfloat16' });
    const w = randn([75, 4], { seed: 22 });
    const pool = randn([2, 75, 3], { seed: 23 });
    const ref = causalConv1d(tensor(x.toFloat64(), x.shape, 'float64'), tensor(w.toFloat64(), w.shape, 'float64'), { activation: 'silu', convState: clone(pool) });
    try {
      for (const l of levels) {
        setSimdLevel(l);
        const y = causalConv1d(x, w, { activation: 'silu', convState: clone(pool) });
        expectClose(y, ref, TOL_LOW, `level ${l}`);
        const xf = x.toFloat32();
        const yf = causalConv1d(xf, w, { activation: 'silu', convState: clone(pool) });
        expectClose(yf, causalConv1dReference(xf, w, { activation: 'silu', initialStates: pool }).y, TOL, `level ${l} float32`);
      }
    } finally {
      setSimdLevel(start);
    }
  });
});

describe('causalConv1d: async', () => {
  it('the Async forms give the sync results; an aborted signal rejects and leaves the pool', async () => {
    const x = randn([2, 30, 20], { seed: 31 });
    const w = randn([20, 4], { seed: 32 });
    const pool = randn([2, 20, 3], { seed: 33 });
    const p1 = clone(pool);
    const p2 = clone(pool);
    expectSameBits(await causalConv1dAsync(x, w, { convState: p1 }), causalConv1d(x, w, { convState: p2 }), 'prefill');
    const x1 = randn([2, 20], { seed: 34 });
    expectSameBits(await causalConv1dUpdateAsync(x1, p1, w), causalConv1dUpdate(x1, p2, w), 'update');
    expectSameBits(p1, p2, 'pool');
    const ac = new AbortController();
    ac.abort();
    const before = snapshot(p1);
    await expect(causalConv1dUpdateAsync(x1, p1, w, {}, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(p1, before)).toBe(true);
  });
});

describe('causalConv1d: by hand', () => {
  it('D = 1, W = 3, w = [a, b, c] (oldest first), state [s1, s2]: y[t] = a x[t-2] + b x[t-1] + c x[t]', () => {
    const x = new Tensor(Float32Array.from([1, 2, 3, 4]), [1, 4, 1], 'float32');
    const w = new Tensor(Float32Array.from([100, 10, 1]), [1, 3], 'float32');
    const state = new Tensor(Float32Array.from([5, 6]), [1, 1, 2], 'float32');
    const y = causalConv1d(x, w, { convState: state });
    expect(Array.from(y.data)).toEqual([500 + 60 + 1, 600 + 10 + 2, 100 + 20 + 3, 200 + 30 + 4]);
    expect(Array.from(state.data)).toEqual([3, 4]);
    const y1 = causalConv1dUpdate(new Tensor(Float32Array.from([7]), [1, 1], 'float32'), state, w, { bias: tensor([0.5], [1]) });
    expect(Array.from(y1.data)).toEqual([300 + 40 + 7 + 0.5]);
    expect(Array.from(state.data)).toEqual([4, 7]);
    const short = causalConv1d(new Tensor(Float32Array.from([9]), [1, 1, 1], 'float32'), w, { convState: state });
    expect(Array.from(short.data)).toEqual([400 + 70 + 9]);
    expect(Array.from(state.data)).toEqual([7, 9]);
  });
});

describe('causalConv1d: the reference backend and metadata copies', () => {
  it("backend 'reference' with a bfloat16 pool writes the same rounded states as the native call", () => {
    const x = randn([1, 40, 21], { seed: 41, dtype: 'bfloat16' });
    const w = randn([21, 5], { seed: 42 });
    const pool = randn([4, 21, 4], { seed: 43, dtype: 'bfloat16' });
    const opts = { cuSeqlens: [0, 3, 3, 40], stateIndices: [3, 0, 1], hasInitialState: [true, false, true], activation: 'silu' as const };
    const pc = clone(pool);
    const pr = clone(pool);
    const yc = causalConv1d(x, w, { ...opts, convState: pc });
    const yr = causalConv1d(x, w, { ...opts, convState: pr, backend: 'reference' });
    expectClose(yc, yr, TOL_LOW, 'y');
    expectSameBits(pc, pr, 'pool (copies of inputs, rounded the same)');
    const out = randn([1, 40, 21], { seed: 44, dtype: 'bfloat16' });
    expect(causalConv1d(x, w, { ...opts, convState: clone(pool), backend: 'reference', out })).toBe(out);
    expectSameBits(out, yr, 'reference into out');
  });

  it('stateIndices and cuSeqlens are copied at the call (changed while an async call runs: no effect)', async () => {
    const x = randn([1, 300, 64], { seed: 45 });
    const w = randn([64, 4], { seed: 46 });
    const pool = randn([6, 64, 3], { seed: 47 });
    const slots = Int32Array.from([5, 1, 3]);
    const cu = Int32Array.from([0, 100, 250, 300]);
    const want = causalConv1d(x, w, { cuSeqlens: cu, convState: clone(pool), stateIndices: slots });
    const p = clone(pool);
    const pending = causalConv1dAsync(x, w, { cuSeqlens: cu, convState: p, stateIndices: slots });
    slots.set([0, 0, 0]);
    cu.set([0, 1, 2, 300]);
    expectSameBits(await pending, want, 'y');
  });
});
