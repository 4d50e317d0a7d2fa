// RMSNorm and gated RMSNorm (issue 14 parts 4 and 7): native vs the float64 reference at awkward shapes (H
// from 1 to 2049, groups, ranks 1 to 4, mixed dtypes), in place (out = x, out = gate), a float32 out of a
// bfloat16 x, every SIMD level, and async with abort.
import { describe, expect, it } from 'vitest';
import {
  info, randn, rmsNorm, rmsNormAsync, rmsNormGated, rmsNormGatedAsync, rmsNormReference, setSimdLevel, Tensor, zeros,
  type DType,
} from '../src/index.js';
import { expectClose, expectSameBits, sameBytes, snapshot } from './helpers.js';

const TOL = 1e-5;
const TOL_LOW = 1e-2;

interface Case { shape: number[]; group?: number; gated: boolean; dtype: DType; gDtype?: DType; wDtype?: DType; eps?: number; seed: number }
const id = (c: Case) =>
  `[${c.shape.join(',')}]${c.group ? ` group=${c.group}` : ''}${c.gated ? ' gated' : ''} ${c.dtype}${c.gDtype ? `/g ${c.gDtype}` : ''}` +
  `${c.wDtype ? `/w ${c.wDtype}` : ''}${c.eps !== undefined ? ` eps=${c.eps}` : ''} seed=${c.seed}`;

const cases: Case[] = [];
{
  let seed = 1;
  for (const shape of [[1], [7], [3, 1], [3, 64], [17, 129], [2, 3, 2049], [1, 2, 3, 40]]) {
    for (const gated of [false, true]) cases.push({ shape, gated, dtype: 'float32', seed: seed++ });
  }
  cases.push({ shape: [5, 256], group: 64, gated: true, dtype: 'float32', seed: seed++ });
  cases.push({ shape: [5, 96], group: 12, gated: false, dtype: 'float32', eps: 0.5, seed: seed++ });
  cases.push({ shape: [9, 100], group: 25, gated: true, dtype: 'bfloat16', gDtype: 'float32', wDtype: 'bfloat16', seed: seed++ });
  cases.push({ shape: [4, 77], gated: true, dtype: 'float16', gDtype: 'bfloat16', wDtype: 'float16', seed: seed++ });
  cases.push({ shape: [4, 33], gated: false, dtype: 'bfloat16', seed: seed++ });
}

function inputs(c: Case) {
  const H = c.shape[c.shape.length - 1];
  return {
    x: randn(c.shape, { seed: c.seed, dtype: c.dtype, std: 3 }),
    g: randn(c.shape, { seed: c.seed + 1000, dtype: c.gDtype ?? c.dtype, std: 2 }),
    w: randn([H], { seed: c.seed + 2000, dtype: c.wDtype ?? 'float32', mean: 1, std: 0.3 }),
  };
}

describe('rmsNorm / rmsNormGated: native vs the float64 reference', () => {
  for (const c of cases) {
    it(id(c), () => {
      const { x, g, w } = inputs(c);
      const opts = { groupSize: c.group, eps: c.eps };
      const want = rmsNormReference(x, w, { gate: c.gated ? g : undefined, ...opts });
      const got = c.gated ? rmsNormGated(x, g, w, opts) : rmsNorm(x, w, opts);
      expect(got.dtype).toBe(c.dtype);
      expectClose(got, want, c.dtype === 'float32' ? TOL : TOL_LOW, id(c));
    });
  }
});

describe('rmsNorm: out', () => {
  it('in place (out = x) and out = gate give the fresh result bit for bit', () => {
    const x = randn([6, 130], { seed: 3 });
    const g = randn([6, 130], { seed: 4 });
    const w = randn([130], { seed: 5 });
    const fresh = rmsNormGated(x, g, w);
    const x2 = new Tensor(x.data.slice(), x.shape, 'float32');
    expect(rmsNormGated(x2, g, w, { out: x2 })).toBe(x2);
    expectSameBits(x2, fresh, 'out = x');
    const g2 = new Tensor(g.data.slice(), g.shape, 'float32');
    rmsNormGated(x, g2, w, { out: g2 });
    expectSameBits(g2, fresh, 'out = gate');
  });
  it('a float32 out of a bfloat16 x holds the unrounded result', () => {
    const x = randn([3, 50], { seed: 6, dtype: 'bfloat16' });
    const w = randn([50], { seed: 7 });
    const out = zeros([3, 50], 'float32');
    rmsNorm(x, w, { out });
    expectClose(out, rmsNormReference(x, w), TOL, 'float32 out');
  });
});

describe('rmsNorm: every SIMD level', () => {
  it('each level this CPU runs matches the reference', () => {
    const order = ['avx512', 'avx2', 'portable'] as const;
    const levels = order.slice(order.indexOf(info().simdBest as (typeof order)[number]));
    const start = info().simd as (typeof order)[number];
    const x = randn([7, 203], { seed: 8, std: 4 });
    const g = randn([7, 203], { seed: 9, std: 3 });
    const w = randn([203], { seed: 10 });
    const want = rmsNormReference(x, w, { gate: g });
    try {
      for (const l of levels) {
        setSimdLevel(l);
        expectClose(rmsNormGated(x, g, w), want, TOL, `level ${l}`);
        expectClose(rmsNorm(x.toBFloat16(), w, { groupSize: 29 }), rmsNormReference(x.toBFloat16(), w, { groupSize: 29 }), TOL_LOW, `level ${l} bf16`);
      }
    } finally {
      setSimdLevel(start);
    }
  });
});

describe('rmsNorm: async', () => {
  it('the Async forms give the sync results; an aborted signal rejects and leaves out', async () => {
    const x = randn([40, 64], { seed: 11 });
    const g = randn([40, 64], { seed: 12 });
    const w = randn([64], { seed: 13 });
    expectSameBits(await rmsNormAsync(x, w), rmsNorm(x, w), 'rmsNorm');
    expectSameBits(await rmsNormGatedAsync(x, g, w), rmsNormGated(x, g, w), 'rmsNormGated');
    const ac = new AbortController();
    ac.abort();
    const out = randn([40, 64], { seed: 14 });
    const before = snapshot(out);
    await expect(rmsNormGatedAsync(x, g, w, { out }, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(out, before)).toBe(true);
  });
});

describe('rmsNorm: by hand', () => {
  it('x = [3, 4], w = [1, 2], eps = 0: x / sqrt(12.5) * w; gated by silu(g) = g / (1 + e^-g)', () => {
    const x = new Tensor(Float32Array.from([3, 4]), [1, 2], 'float32');
    const w = new Tensor(Float32Array.from([1, 2]), [2], 'float32');
    const y = rmsNorm(x, w, { eps: 0 }).data;
    expect(y[0]).toBeCloseTo(3 / Math.sqrt(12.5), 6);
    expect(y[1]).toBeCloseTo(8 / Math.sqrt(12.5), 6);
    const g = new Tensor(Float32Array.from([1, -2]), [1, 2], 'float32');
    const z = rmsNormGated(x, g, w, { eps: 0 }).data;
    expect(z[0]).toBeCloseTo((3 / Math.sqrt(12.5)) / (1 + Math.exp(-1)), 6);
    expect(z[1]).toBeCloseTo((8 / Math.sqrt(12.5)) * (-2 / (1 + Math.exp(2))), 6);
    const gr = rmsNorm(x, w, { eps: 0, groupSize: 1 }).data; // each channel its own group: sign(x) * w
    expect(Array.from(gr)).toEqual([1, 2]);
  });
});

describe("rmsNorm: backend 'reference'", () => {
  it('gives the native result to float32 rounding, into out too', () => {
    const x = randn([5, 48], { seed: 15, dtype: 'float16' });
    const g = randn([5, 48], { seed: 16 });
    const w = randn([48], { seed: 17, dtype: 'bfloat16' });
    const out = randn([5, 48], { seed: 18 });
    expect(rmsNormGated(x, g, w, { backend: 'reference', out, groupSize: 16 })).toBe(out);
    expectClose(rmsNormGated(x, g, w, { groupSize: 16, out: zeros([5, 48]) }), out, TOL, 'cpu vs reference');
  });
});
