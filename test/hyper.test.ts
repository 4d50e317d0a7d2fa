// HyperAttention (DESIGN.md 6.4, 7): the generator (native and TypeScript give the same R and samples bit for
// bit, and they look like what they should be), the Gray-rank order, exact attention where it must be exact
// (T <= minSeqLen; one block and no samples), native against the float64 reference of the same algorithm
// (same hashes, sort and samples) over a grid of awkward shapes, every dtype, bit-identical results across
// thread counts, the error on clustered keys against the sampled part alone, `out`, and async with abort.
// Every case names its shape in the test id; sizes are small (minSeqLen, blockSize and sampleSize scaled down).
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  attention, attentionReference, grayRank, hyperAttention, hyperAttentionAsync, hyperAttentionReference, hyperProjections,
  hyperSamples, hyperSampleStream, info, randn, setNumThreads, setSimdLevel, Tensor, tensor, zeros, type DType,
  type HyperAttentionOptions,
} from '../src/index.js';
import { loadedAddonPath, type NativeAddon } from '../src/backend.js';
import { hyperPlan } from '../src/ops/hyper.js';
import { hyperInputs } from '../bench/inputs.js';
import { expectClose, expectIsOut, expectSameBits, garbage, relErr, sameBytes, snapshot } from './helpers.js';

/** DESIGN.md 7: native vs the float64 reference of the same algorithm, float32. */
const TOL = 1e-5;
/** float16/bfloat16 inputs: the output is rounded to the input's dtype. */
const TOL_LOW = 2e-2;

const addon = (): NativeAddon => createRequire(import.meta.url)(loadedAddonPath()!) as NativeAddon;

interface Case {
  B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  causal: boolean;
  seed: number;
  opts: HyperAttentionOptions;
  dtype?: DType;
}

const id = (c: Case): string =>
  `B=${c.B},T=${c.T},S=${c.S},Hq=${c.Hq},Hk=${c.Hk},D=${c.D},Dv=${c.Dv}${c.causal ? ' causal' : ''}` +
  ` ${Object.entries(c.opts).map(([k, v]) => `${k}=${v}`).join(',')}${c.dtype && c.dtype !== 'float32' ? ` ${c.dtype}` : ''}`;

function inputs(c: Case) {
  const dtype = c.dtype ?? 'float32';
  return {
    q: randn([c.B, c.T, c.Hq, c.D], { seed: c.seed + 1, dtype }),
    k: randn([c.B, c.S, c.Hk, c.D], { seed: c.seed + 2, dtype }),
    v: randn([c.B, c.S, c.Hk, c.Dv], { seed: c.seed + 3, dtype }),
  };
}

/** lse within tol (relative Frobenius over the finite entries), -Inf where the reference has it. */
function expectLse(got: Tensor, want: Tensor, tol: number, what: string): void {
  expect(got.shape, `${what}: lse shape`).toEqual(want.shape);
  const g = got.toFloat64();
  const w = want.toFloat64();
  for (let i = 0; i < w.length; i++) {
    if (w[i] === -Infinity) expect(g[i], `${what}: lse[${i}]`).toBe(-Infinity);
    else expect(Number.isFinite(g[i]), `${what}: lse[${i}] = ${g[i]}`).toBe(true);
  }
  const e = relErr(got, want);
  expect(e, `${what}: lse relative error ${e.toExponential(3)}`).toBeLessThanOrEqual(tol);
}

function check(c: Case): void {
  const what = `${id(c)} seed=${c.seed}`;
  const { q, k, v } = inputs(c);
  const opts = { ...c.opts, causal: c.causal };
  const ref = hyperAttentionReference(q, k, v, opts);
  const r = hyperAttention(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
  const low = (c.dtype ?? 'float32') !== 'float32';
  expect(r.o.dtype, `${what}: o has v's dtype`).toBe(v.dtype);
  expectClose(r.o, ref.o, low ? TOL_LOW : TOL, `${what}: o`);
  expectLse(r.lse!, ref.lse, low ? TOL_LOW : TOL, what);
}

// ---- 1. the generator

describe('hyper: the generator (README "HyperAttention")', () => {
  it('native R [D, lshBits] equals the TypeScript one bit for bit (seeds 0, 1, 2^32 + 7, 2^53 - 1; D 1..200; lshBits 0..16)', () => {
    for (const seed of [0, 1, 2 ** 32 + 7, Number.MAX_SAFE_INTEGER]) {
      for (const [D, bits] of [[1, 1], [3, 7], [64, 7], [128, 16], [200, 5], [17, 0]]) {
        const R = new Float32Array(D * bits).fill(NaN);
        addon().hyperRandom({ seed, D, lshBits: bits, R });
        expect(sameBytes({ data: R }, snapshot({ data: hyperProjections(seed, D, bits) })), `seed=${seed} D=${D} bits=${bits}`).toBe(true);
      }
    }
  });

  it('native samples equal the TypeScript ones (several streams, n = 1, 7, 2^31 - 1)', () => {
    for (const [seed, b, hk, q0] of [[0, 0, 0, 0], [3, 1, 2, 4096], [2 ** 40, 7, 0, 1]]) {
      for (const n of [1, 7, 1000, 2 ** 31 - 1]) {
        const s = new Int32Array(500).fill(-1);
        addon().hyperRandom({ seed, b, hk, q0, n, samples: s });
        const want = hyperSamples(hyperSampleStream(seed, b, hk, q0), 500, n);
        expect(Array.from(s), `seed=${seed} b=${b} hk=${hk} q0=${q0} n=${n}`).toEqual(Array.from(want));
      }
    }
  });

  it('R looks standard normal and the samples uniform, streams differ by seed and by (b, hk, q0)', () => {
    const R = hyperProjections(5, 1000, 16);
    let m = 0;
    let v = 0;
    let within1 = 0;
    for (const x of R) {
      m += x;
      v += x * x;
      if (Math.abs(x) < 1) within1++;
    }
    m /= R.length;
    v = v / R.length - m * m;
    // 16000 draws: the mean within 4 standard errors, variance within 5%, P(|x| < 1) = 0.683 within 0.02.
    expect(Math.abs(m)).toBeLessThan(4 / Math.sqrt(R.length));
    expect(Math.abs(v - 1)).toBeLessThan(0.05);
    expect(Math.abs(within1 / R.length - 0.6827)).toBeLessThan(0.02);
    const counts = new Array(10).fill(0);
    for (const x of hyperSamples(hyperSampleStream(5, 0, 0, 0), 20000, 10)) counts[x]++;
    for (const c of counts) expect(Math.abs(c - 2000)).toBeLessThan(200);
    const a = Array.from(hyperSamples(hyperSampleStream(5, 0, 0, 0), 20, 1 << 30));
    for (const [seed, b, hk, q0] of [[6, 0, 0, 0], [5, 1, 0, 0], [5, 0, 1, 0], [5, 0, 0, 1]]) {
      expect(Array.from(hyperSamples(hyperSampleStream(seed, b, hk, q0), 20, 1 << 30)), `${seed},${b},${hk},${q0}`).not.toEqual(a);
    }
    expect(Array.from(hyperProjections(6, 8, 7))).not.toEqual(Array.from(hyperProjections(5, 8, 7)));
  });

  it('the sort key is the Gray-code rank: buckets adjacent in rank differ in one bit (the authors\' gray(bin) order: 1 in 4 do not)', () => {
    const popcount = (x: number) => x.toString(2).replace(/0/g, '').length;
    const gray = (i: number) => i ^ (i >>> 1);
    for (const bits of [1, 2, 7, 12]) {
      const n = 1 << bits;
      const byRank = new Array<number>(n);
      for (let bin = 0; bin < n; bin++) byRank[grayRank(bin)] = bin; // a bijection of [0, 2^bits)
      for (let r = 0; r + 1 < n; r++) expect(popcount(byRank[r] ^ byRank[r + 1]), `bits=${bits} rank ${r}`).toBe(1);
      // The authors sort by gray(bin): bins adjacent in that key are grayRank(k) and grayRank(k + 1).
      let far = 0;
      for (let key = 0; key + 1 < n; key++) if (popcount(grayRank(key) ^ grayRank(key + 1)) > 1) far++;
      if (bits === 7) expect(far / (n - 1)).toBeCloseTo(0.244, 3);
      for (let i = 0; i < n; i++) expect(grayRank(gray(i))).toBe(i);
    }
  });
});

// ---- 2. where HyperAttention is exact attention

describe('hyper: exact where it must be', () => {
  const shapes = [
    { B: 2, T: 65, S: 65, Hq: 4, Hk: 2, D: 32, Dv: 24 },
    { B: 1, T: 1, S: 100, Hq: 2, Hk: 1, D: 16, Dv: 16 },
    { B: 1, T: 200, S: 63, Hq: 3, Hk: 3, D: 64, Dv: 64 },
  ];
  for (const s of shapes) {
    for (const causal of [false, true]) {
      if (causal && s.T !== s.S) continue;
      // Non-causal below minSeqLen keys, causal at minSeqLen queries or fewer: exact attention (the defaults).
      it(`T <= minSeqLen (default 4096): equals exact attention, ${id({ ...s, causal, seed: 1, opts: {} })}`, () => {
        const { q, k, v } = inputs({ ...s, causal, seed: 7, opts: {} });
        const ref = attentionReference(q, k, v, { causal });
        const r = hyperAttention(q, k, v, { causal, returnLse: true, backend: 'cpu' });
        expectClose(r.o, ref.o, TOL, 'o');
        expectLse(r.lse!, ref.lse, TOL, 'lse');
      });
      // Hashing runs (minSeqLen small), but one block holds every key and no key is sampled.
      it(`blockSize >= S, sampleSize 0: equals exact attention, ${id({ ...s, causal, seed: 1, opts: { minSeqLen: 8 } })}`, () => {
        const { q, k, v } = inputs({ ...s, causal, seed: 8, opts: {} });
        const ref = attentionReference(q, k, v, { causal });
        const opts = { causal, minSeqLen: 8, blockSize: s.S, sampleSize: 0, lshBits: 5, seed: 3 };
        expect(hyperPlan(s.T, s.S, causal, 8, s.S, 0).direct, 'the hyper path runs').toBe(false);
        const r = hyperAttention(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
        expectClose(r.o, ref.o, TOL, 'o');
        expectLse(r.lse!, ref.lse, TOL, 'lse');
        expectClose(hyperAttentionReference(q, k, v, opts).o, ref.o, 1e-12, 'the float64 reference of hyper');
      });
    }
  }
});

// ---- 3. native vs the float64 reference of the same algorithm

describe('hyper native vs reference (same hashes, sort and samples)', () => {
  const small = { minSeqLen: 64, blockSize: 32, sampleSize: 24, lshBits: 4 };
  const cases: Case[] = [
    { B: 1, T: 300, S: 300, Hq: 2, Hk: 2, D: 32, Dv: 32, causal: false, seed: 1, opts: small },
    { B: 1, T: 300, S: 300, Hq: 2, Hk: 2, D: 32, Dv: 32, causal: true, seed: 2, opts: small },
    // GQA 4:2, Dv != D, B = 2, S not a multiple of blockSize, T != S
    { B: 2, T: 257, S: 201, Hq: 4, Hk: 2, D: 24, Dv: 40, causal: false, seed: 3, opts: small },
    { B: 2, T: 90, S: 333, Hq: 4, Hk: 2, D: 24, Dv: 40, causal: false, seed: 4, opts: small },
    { B: 2, T: 333, S: 333, Hq: 6, Hk: 2, D: 20, Dv: 12, causal: true, seed: 5, opts: small },
    // MQA, odd lengths, deeper recursion (minSeqLen 16: leaves of 16 or fewer)
    { B: 1, T: 517, S: 517, Hq: 3, Hk: 1, D: 16, Dv: 8, causal: true, seed: 6, opts: { minSeqLen: 16, blockSize: 16, sampleSize: 8, lshBits: 7 } },
    // lower-left blocks below minSeqLen (exact, no hashing) beside hashed ones: T = 100 with minSeqLen 30
    { B: 1, T: 100, S: 100, Hq: 2, Hk: 1, D: 16, Dv: 16, causal: true, seed: 7, opts: { minSeqLen: 30, blockSize: 8, sampleSize: 4 } },
    // minSeqLen 0 (always hashed), T = 1; and T = 2 causal (the smallest recursion)
    { B: 2, T: 1, S: 50, Hq: 2, Hk: 2, D: 8, Dv: 8, causal: false, seed: 8, opts: { minSeqLen: 0, blockSize: 7, sampleSize: 5 } },
    { B: 1, T: 2, S: 2, Hq: 2, Hk: 1, D: 8, Dv: 4, causal: true, seed: 9, opts: { minSeqLen: 0, blockSize: 1, sampleSize: 3 } },
    // lshBits 0 (one bucket: sorted order is the input order) and 16; sampleSize > blockSize; the defaults
    { B: 1, T: 200, S: 200, Hq: 2, Hk: 2, D: 16, Dv: 16, causal: false, seed: 10, opts: { minSeqLen: 10, blockSize: 32, sampleSize: 60, lshBits: 0 } },
    { B: 1, T: 200, S: 200, Hq: 2, Hk: 2, D: 16, Dv: 16, causal: true, seed: 11, opts: { minSeqLen: 10, blockSize: 32, sampleSize: 60, lshBits: 16 } },
    { B: 1, T: 700, S: 700, Hq: 1, Hk: 1, D: 64, Dv: 64, causal: true, seed: 12, opts: { minSeqLen: 256 } },
    // sub-problems longer than the driver's row chunks (2048 rows per gather and merge task)
    { B: 1, T: 4500, S: 4500, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: false, seed: 15, opts: { minSeqLen: 64, blockSize: 64, sampleSize: 16 } },
    { B: 1, T: 4500, S: 4500, Hq: 1, Hk: 1, D: 8, Dv: 8, causal: true, seed: 16, opts: { minSeqLen: 1000, blockSize: 64, sampleSize: 16 } },
    // scale and seed
    { B: 1, T: 150, S: 150, Hq: 2, Hk: 1, D: 32, Dv: 32, causal: false, seed: 13, opts: { ...small, scale: 0.9, seed: 2 ** 40 + 3 } },
    { B: 1, T: 150, S: 150, Hq: 2, Hk: 1, D: 32, Dv: 32, causal: true, seed: 14, opts: { ...small, scale: 0, seed: 77 } },
  ];
  for (const c of cases) it(id(c), () => check(c));
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const causal of [false, true]) {
      const c: Case = { B: 1, T: 160, S: 160, Hq: 4, Hk: 2, D: 32, Dv: 16, causal, seed: 20, opts: small, dtype };
      it(id(c), () => check(c));
    }
  }

  it('float64 inputs run on the reference and give its answer', () => {
    const c: Case = { B: 1, T: 100, S: 100, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: true, seed: 30, opts: small, dtype: 'float64' };
    const { q, k, v } = inputs(c);
    const r = hyperAttention(q, k, v, { ...small, causal: true });
    expect(r.o.dtype).toBe('float64');
    expectClose(r.o, hyperAttentionReference(q, k, v, { ...small, causal: true }).o, 0, 'o');
  });

  it('it is not exact attention there (the approximation is in effect), and another seed gives another answer', () => {
    const c: Case = { B: 1, T: 300, S: 300, Hq: 2, Hk: 2, D: 32, Dv: 32, causal: false, seed: 1, opts: small };
    const { q, k, v } = inputs(c);
    const a = hyperAttention(q, k, v, small).o;
    expect(relErr(a, attention(q, k, v).o)).toBeGreaterThan(0.1);
    expect(relErr(hyperAttention(q, k, v, { ...small, seed: 1 }).o, a)).toBeGreaterThan(0.01);
  });
});

// ---- 4. determinism

describe('hyper: deterministic for a seed', () => {
  it('bit-identical on 1, 2 and 3 threads and on repeated calls (causal and not, GQA)', () => {
    const opts = { minSeqLen: 64, blockSize: 32, sampleSize: 24, returnLse: true };
    for (const causal of [false, true]) {
      const c: Case = { B: 2, T: 333, S: 333, Hq: 4, Hk: 2, D: 32, Dv: 24, causal, seed: 40, opts };
      const { q, k, v } = inputs(c);
      try {
        setNumThreads(1);
        const one = hyperAttention(q, k, v, { ...opts, causal });
        for (const t of [2, 3, 1]) {
          setNumThreads(t);
          const r = hyperAttention(q, k, v, { ...opts, causal });
          expectSameBits(r.o, one.o, `${id(c)} threads=${t}: o`);
          expectSameBits(r.lse!, one.lse!, `${id(c)} threads=${t}: lse`);
        }
      } finally {
        setNumThreads(0);
      }
    }
  });
});

describe('hyper: the same hashes on every SIMD level', () => {
  it('each level this CPU runs gives the answer of the others to float rounding (a bucket that moved would not)', () => {
    const opts = { minSeqLen: 64, blockSize: 32, sampleSize: 24, lshBits: 16 };
    const c: Case = { B: 1, T: 600, S: 600, Hq: 2, Hk: 1, D: 40, Dv: 8, causal: true, seed: 45, opts };
    const { q, k, v } = inputs(c);
    const order = ['avx512', 'avx2', 'portable'] as const;
    const levels = order.slice(order.indexOf(info().simdBest as (typeof order)[number]));
    const start = info().simd as (typeof order)[number];
    try {
      const outs = levels.map((l) => {
        setSimdLevel(l);
        return hyperAttention(q, k, v, { ...opts, causal: true }).o;
      });
      for (let i = 1; i < outs.length; i++) expect(relErr(outs[i], outs[0]), `${levels[i]} vs ${levels[0]}`).toBeLessThan(1e-6);
    } finally {
      setSimdLevel(start);
    }
  });
});

// ---- 5. the approximation on clustered keys

describe('hyper: keys in tight clusters, queries near them (bench/inputs.ts hyperInputs clustered)', () => {
  // S = 4096 keys in 64 clusters of ~64 (a quarter of a block), D = 64, minSeqLen 1024 (so the non-causal
  // call and every lower-left block of the causal one are hashed). The sampled part alone: exact attention
  // over the 256 keys of the first sample stream (uniform, as the sampled part draws them). Measured (seed 1):
  // non-causal 1.48 against 4.39 (hashing off, lshBits 0: 4.12); causal 0.37 against 2.25 (lshBits 0: 1.04).
  // (Relative errors above 1 are what they are: exact attention averages the random v of ~64 keys, so |o| is
  // small, and each sampled key outside the block stands for S / 256 = 16 keys.)
  const s = { B: 1, T: 4096, S: 4096, Hq: 2, Hk: 2, D: 64, Dv: 64, dtype: 'float32' as const };
  const { q, k, v } = hyperInputs(s, 'clustered', 1);
  for (const causal of [false, true]) {
    it(`${causal ? 'causal' : 'non-causal'}: error below half that of the sampled part alone, and below hashing off`, () => {
      const exact = attention(q, k, v, { causal }).o;
      const opts = { causal, minSeqLen: 1024, seed: 1 };
      const hyper = relErr(hyperAttention(q, k, v, opts).o, exact);
      const unhashed = relErr(hyperAttention(q, k, v, { ...opts, lshBits: 0 }).o, exact);
      const idx = hyperSamples(hyperSampleStream(1, 0, 0, 0), 256, s.S);
      const pick = (x: Tensor) => {
        const row = s.Hk * x.shape[3];
        const out = new Float32Array(256 * row);
        idx.forEach((j, n) => out.set((x.data as Float32Array).subarray(j * row, (j + 1) * row), n * row));
        return tensor(out, [1, 256, s.Hk, x.shape[3]]);
      };
      const sampled = relErr(attention(q, pick(k), pick(v), { causal: false }).o, exact);
      expect(hyper, `hyper ${hyper} vs the sampled part alone ${sampled}`).toBeLessThan(0.5 * sampled);
      expect(hyper, `hyper ${hyper} vs lshBits 0 ${unhashed}`).toBeLessThan(0.7 * unhashed);
    });
  }
});

// ---- 6. out, async and abort

describe('hyper: out', () => {
  const opts = { minSeqLen: 64, blockSize: 32, sampleSize: 24 };
  for (const dtype of ['float32', 'bfloat16'] as const) {
    it(`writes the same bits as the allocating call into out (${dtype}, causal), and returns out`, async () => {
      const c: Case = { B: 1, T: 200, S: 200, Hq: 2, Hk: 1, D: 16, Dv: 8, causal: true, seed: 50, opts, dtype };
      const { q, k, v } = inputs(c);
      const want = hyperAttention(q, k, v, { ...opts, causal: true }).o;
      const out = garbage([1, 200, 2, 8], dtype, 51);
      const r = hyperAttention(q, k, v, { ...opts, causal: true, out });
      expectIsOut(r.o, out);
      expectSameBits(out, want, 'sync');
      const out2 = garbage([1, 200, 2, 8], dtype, 52);
      expectIsOut((await hyperAttentionAsync(q, k, v, { ...opts, causal: true, out: out2 })).o, out2);
      expectSameBits(out2, want, 'async');
    });
  }
  it('the reference backend writes into out too', () => {
    const { q, k, v } = inputs({ B: 1, T: 80, S: 80, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: false, seed: 53, opts });
    const out = zeros([1, 80, 2, 8]);
    const r = hyperAttention(q, k, v, { ...opts, out, backend: 'reference' });
    expectIsOut(r.o, out);
    expectClose(out, hyperAttentionReference(q, k, v, opts).o, 1e-6, 'out');
  });
});

describe('hyper: async and abort', () => {
  const opts = { minSeqLen: 64, blockSize: 32, sampleSize: 24, returnLse: true };
  it('hyperAttentionAsync equals the sync call bit for bit (causal and not)', async () => {
    for (const causal of [false, true]) {
      const { q, k, v } = inputs({ B: 2, T: 300, S: 300, Hq: 4, Hk: 2, D: 16, Dv: 16, causal, seed: 60, opts });
      const a = hyperAttention(q, k, v, { ...opts, causal });
      const b = await hyperAttentionAsync(q, k, v, { ...opts, causal });
      expectSameBits(b.o, a.o, 'o');
      expectSameBits(b.lse!, a.lse!, 'lse');
    }
  });

  it('an already-aborted signal rejects with an AbortError carrying the reason, inputs untouched', async () => {
    const { q, k, v } = inputs({ B: 1, T: 100, S: 100, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: true, seed: 61, opts });
    const snaps = [q, k, v].map((t) => snapshot(t));
    const ac = new AbortController();
    const reason = new Error('stop');
    ac.abort(reason);
    const e = await hyperAttentionAsync(q, k, v, { ...opts, causal: true }, { signal: ac.signal }).catch((x) => x);
    expect((e as Error).name).toBe('AbortError');
    expect((e as Error).cause).toBe(reason);
    [q, k, v].forEach((t, i) => expect(sameBytes(t, snaps[i])).toBe(true));
  });

  it('an abort mid-call rejects with an AbortError (a long causal call: T = S = 16384), the event loop keeps turning', async () => {
    const s = { B: 1, T: 16384, S: 16384, Hq: 2, Hk: 2, D: 64, Dv: 64, dtype: 'float32' as const };
    const { q, k, v } = hyperInputs(s, 'gaussian', 3);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const ac = new AbortController();
      const p = hyperAttentionAsync(q, k, v, { causal: true }, { signal: ac.signal });
      const t0 = Date.now();
      while (ticks < 3 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 1));
      ac.abort();
      const e = await p.catch((x) => x);
      // A machine fast enough to finish before the abort resolves instead; both are fine, but not anything else.
      if (e instanceof Error) expect(e.name).toBe('AbortError');
      else expect((e as { o: Tensor }).o.shape).toEqual([1, 16384, 2, 64]);
      expect(ticks, 'timers fired while the call ran').toBeGreaterThan(0);
    } finally {
      clearInterval(timer);
    }
  });

  it('with out, an abort before the start rejects and leaves out untouched', async () => {
    const { q, k, v } = inputs({ B: 1, T: 100, S: 100, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: true, seed: 62, opts });
    const out = garbage([1, 100, 2, 8], 'float32', 63);
    const before = snapshot(out);
    const ac = new AbortController();
    ac.abort();
    const e = await hyperAttentionAsync(q, k, v, { ...opts, causal: true, out }, { signal: ac.signal }).catch((x) => x);
    expect((e as Error).name).toBe('AbortError');
    expect(sameBytes(out, before)).toBe(true);
  });
});
