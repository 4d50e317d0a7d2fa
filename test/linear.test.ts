// linear (issue 14 part 5): the native GEMV (<= 8 rows) and packed-panel GEMM (more rows) against the float64
// reference on seeded random inputs at awkward shapes (in/out in {1, 7, 64, 4096}, rows 1..600, both sides of
// the GEMV/GEMM switch and of every tile edge), every dtype of x, weight, bias and y, bias, out, leading
// shapes, async and abort, and bit-equality across thread counts (each output element is computed by one
// task in a fixed order). `npm test` runs this file once per SIMD level.
//
// Tolerances (relative Frobenius, DESIGN.md 7): float32 accumulation over K <= 4096 of products of exact
// float32 values stays below ~1e-6; a float16/bfloat16 result adds its own rounding (half an ulp: 2^-11,
// 2^-8 relative at most; ~1/3 of that in the Frobenius norm of random data).
import { describe, expect, it } from 'vitest';
import {
  info, linear, linearAsync, linearReference, randn, setNumThreads, Tensor, type DType,
} from '../src/index.js';
import { expectClose, relErr, sameBytes, snapshot } from './helpers.js';

const TOL: Record<string, number> = { float32: 2e-6, float16: 6e-4, bfloat16: 5e-3 };
const DTS: DType[] = ['float32', 'float16', 'bfloat16'];

interface Case { M: number; K: number; N: number; x: DType; w: DType; b?: DType | undefined; y?: 'float32' | 'x'; seed: number }

function run(c: Case): void {
  const x = randn([c.M, c.K], { seed: c.seed, dtype: c.x });
  const w = randn([c.N, c.K], { seed: c.seed + 1, dtype: c.w, std: 1 / Math.sqrt(Math.max(c.K, 1)) });
  const bias = c.b ? randn([c.N], { seed: c.seed + 2, dtype: c.b }) : undefined;
  const outDtype = c.y === 'x' ? c.x : 'float32';
  const y = linear(x, w, { bias, outDtype, backend: 'cpu' });
  expect(y.dtype).toBe(outDtype);
  const what = `M=${c.M},K=${c.K},N=${c.N} x=${c.x} w=${c.w} bias=${c.b ?? 'none'} y=${outDtype} seed=${c.seed}`;
  // A float32 sum of K products carries ~sqrt(K) roundings (the portable kernel adds them in one chain).
  expectClose(y, linearReference(x, w, { bias }), TOL[outDtype] * Math.max(1, Math.sqrt(c.K / 256)), what);
}

/** Cycles through the dtype combinations so that every shape list covers all of them. */
function dtypesOf(i: number): Pick<Case, 'x' | 'w' | 'b' | 'y'> {
  const bias: (DType | undefined)[] = [undefined, 'float32', 'bfloat16', 'float16'];
  return { x: DTS[i % 3], w: DTS[Math.floor(i / 3) % 3], b: bias[Math.floor(i / 9) % 4], y: Math.floor(i / 2) % 2 ? 'x' : 'float32' };
}

const SMALL = [1, 7, 64];
const ROWS = [1, 2, 3, 5, 7, 8, 9, 13, 31, 64, 97, 191, 193, 600];

describe(`linear native vs float64 reference (SIMD ${info().simd ?? 'none'})`, () => {
  for (const M of ROWS) {
    it(`rows ${M}, in/out in {1, 7, 64}, mixed dtypes`, () => {
      let i = M;
      for (const K of SMALL) for (const N of SMALL) run({ M, K, N, ...dtypesOf(i++), seed: 1000 * M + 10 * K + N });
    });
  }

  it('every dtype of x x weight x bias x y at one shape of each path (GEMV 5 rows, GEMM 70 rows)', () => {
    let seed = 1;
    for (const M of [5, 70])
      for (const x of DTS)
        for (const w of DTS)
          for (const b of [undefined, ...DTS])
            for (const y of ['float32', 'x'] as const) run({ M, K: 67, N: 45, x, w, b, y, seed: seed++ });
  });

  it('in = 4096 at few and many rows', () => {
    let i = 0;
    for (const M of [1, 3, 5, 7, 8, 9, 40]) for (const N of [1, 7, 64]) run({ M, K: 4096, N, ...dtypesOf(i++), seed: 50 + i });
  });

  it('out = 4096 at few and many rows', () => {
    let i = 0;
    for (const M of [1, 4, 8, 9, 25]) for (const K of [1, 7, 64]) run({ M, K, N: 4096, ...dtypesOf(i++), seed: 90 + i });
  });

  it('4096 -> 4096 GEMV (1 and 8 rows), float32 and bfloat16 weights, with bias', () => {
    run({ M: 1, K: 4096, N: 4096, x: 'float32', w: 'float32', b: 'float32', seed: 7 });
    run({ M: 8, K: 4096, N: 4096, x: 'bfloat16', w: 'bfloat16', b: 'bfloat16', seed: 8 });
  });

  // The GEMV sums in chunks of 1024 columns (native/cpu/linear.h kLinearChunk), visiting them rows first when
  // the rows of x fit in L1 (M * in * 4 <= 32 KiB) and chunks first (in groups of blocks) otherwise: both
  // sides, a chunk's tail not a multiple of the vector width, every row count of the GEMV and one past it,
  // every weight dtype.
  it.each([513, 1031, 2053, 8200])('GEMV rows 1..9 at in = %i (chunk edges and tails), float32/float16/bfloat16 weights', (K) => {
    let i = 0;
    for (let M = 1; M <= 9; M++) for (const w of DTS) run({ M, K, N: 13 + M, x: 'float32', w, b: 'float32', seed: 300 + K + i++ });
  });

  // The GEMM packs x in tiles of 12 (AVX-512) / 6 / 4 rows and weights in chunks of 256 columns, tasks of at
  // most 768 rows x 256 features: row counts on both sides of the tiles and of a row block, in = 257 (one
  // column into the next chunk) and out = 257 (one feature into the next task), every weight dtype.
  it.each([10, 12, 13, 25, 769, 780])('GEMM rows %i at in = 257, out in {33, 257}', (M) => {
    let i = 0;
    for (const N of [33, 257]) for (const w of DTS) run({ M, K: 257, N, x: 'float32', w, b: 'float32', seed: 700 + M + i++ });
  });

  it('in = 0 gives the bias (or zeros); no rows gives an empty result', () => {
    const x = new Tensor(new Float32Array(0), [3, 0], 'float32');
    const w = new Tensor(new Float32Array(0), [5, 0], 'float32');
    const bias = randn([5], { seed: 3 });
    const y = linear(x, w, { bias, backend: 'cpu' });
    expect(Array.from(y.data)).toEqual([...bias.data, ...bias.data, ...bias.data]);
    expect(Array.from(linear(x, w, { backend: 'cpu' }).data)).toEqual(new Array(15).fill(0));
    const e = linear(new Tensor(new Float32Array(0), [0, 4], 'float32'), randn([6, 4], { seed: 1 }), { backend: 'cpu' });
    expect(e.shape).toEqual([0, 6]);
  });

  it('x of any leading shape: [2, 3, 5, 33] is the same as [30, 33]', () => {
    const x = randn([30, 33], { seed: 4 });
    const w = randn([19, 33], { seed: 5, dtype: 'bfloat16' });
    const y = linear(new Tensor(x.data, [2, 3, 5, 33], 'float32'), w, { backend: 'cpu' });
    expect(y.shape).toEqual([2, 3, 5, 19]);
    expect(sameBytes(y, snapshot(linear(x, w, { backend: 'cpu' })))).toBe(true);
    const v = linear(new Tensor(x.data.subarray(0, 33), [33], 'float32'), w, { backend: 'cpu' });
    expect(v.shape).toEqual([19]);
  });

  it('out: written in place and returned, float32 or x\'s dtype', () => {
    for (const [M, dt] of [[3, 'float32'], [3, 'bfloat16'], [40, 'float16']] as const) {
      const x = randn([M, 50], { seed: 6, dtype: dt });
      const w = randn([21, 50], { seed: 7 });
      const out = new Tensor(dt === 'float32' ? new Float32Array(M * 21).fill(NaN) : new Uint16Array(M * 21).fill(0x7fc0), [M, 21], dt);
      const y = linear(x, w, { out, backend: 'cpu' });
      expect(y === out).toBe(true);
      expectClose(out, linearReference(x, w), TOL[dt], `out ${dt} M=${M}`);
    }
  });

  it('the same bits on 1 thread and on all (GEMV and GEMM)', () => {
    for (const M of [4, 200]) {
      const x = randn([M, 300], { seed: 8 });
      const w = randn([260, 300], { seed: 9, dtype: 'float16' });
      const bias = randn([260], { seed: 10 });
      const all = linear(x, w, { bias, backend: 'cpu' });
      setNumThreads(1);
      try {
        expect(sameBytes(linear(x, w, { bias, backend: 'cpu' }), snapshot(all)), `M=${M}`).toBe(true);
      } finally {
        setNumThreads(0);
      }
    }
  });

  it('the two paths agree across the switch: 9 rows through GEMM vs each row alone through GEMV', () => {
    const x = randn([9, 129], { seed: 11 });
    const w = randn([70, 129], { seed: 12 });
    const y = linear(x, w, { backend: 'cpu' }).toFloat64();
    for (let m = 0; m < 9; m++) {
      const r = linear(new Tensor(x.data.subarray(m * 129, (m + 1) * 129), [1, 129], 'float32'), w, { backend: 'cpu' }).toFloat64();
      for (let n = 0; n < 70; n++) expect(Math.abs(r[n] - y[m * 70 + n])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(r[n])));
    }
  });

  it('reference backend and float64 inputs', () => {
    const x = randn([4, 9], { seed: 13, dtype: 'float64' });
    const w = randn([3, 9], { seed: 14 });
    const y = linear(x, w);
    expect(y.dtype).toBe('float64');
    expectClose(y, linearReference(x, w), 1e-15, 'float64');
    const x32 = randn([4, 9], { seed: 13 });
    expectClose(linear(x32, w, { backend: 'reference' }), linearReference(x32, w), 1e-7, 'reference backend');
  });
});

describe('linearAsync', () => {
  it('resolves with the same bits as linear (GEMV and GEMM)', async () => {
    for (const M of [2, 50]) {
      const x = randn([M, 100], { seed: 15, dtype: 'bfloat16' });
      const w = randn([90, 100], { seed: 16, dtype: 'bfloat16' });
      const bias = randn([90], { seed: 17 });
      const a = await linearAsync(x, w, { bias, outDtype: 'bfloat16' });
      expect(sameBytes(a, snapshot(linear(x, w, { bias, outDtype: 'bfloat16' })))).toBe(true);
    }
  });

  it('an aborted signal rejects with an AbortError and leaves out untouched', async () => {
    const ac = new AbortController();
    ac.abort();
    const out = new Tensor(new Float32Array(6).fill(3), [2, 3], 'float32');
    await expect(linearAsync(randn([2, 4], { seed: 1 }), randn([3, 4], { seed: 2 }), { out }, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(Array.from(out.data)).toEqual([3, 3, 3, 3, 3, 3]);
  });

  it('an abort during a large call rejects (fresh output)', async () => {
    const x = randn([600, 1024], { seed: 18 });
    const w = randn([2048, 1024], { seed: 19, dtype: 'bfloat16' });
    const ac = new AbortController();
    const p = linearAsync(x, w, {}, { signal: ac.signal });
    setImmediate(() => ac.abort());
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('linear: batchInvariant', () => {
  it.each([[37, 300, 45], [9, 4100, 17], [64, 128, 256]])('M=%i K=%i N=%i: each row equals the same row linear alone, bit for bit', (M, K, N) => {
    const x = randn([M, K], { seed: M }), w = randn([N, K], { seed: K, dtype: 'bfloat16' }), bias = randn([N], { seed: N });
    const all = linear(x, w, { bias, batchInvariant: true });
    for (const m of [0, 5, M - 1]) {
      const row = new Tensor(x.data.slice(m * K, (m + 1) * K), [1, K], 'float32');
      const one = linear(row, w, { bias });
      expect(sameBytes(new Tensor(all.data.slice(m * N, (m + 1) * N), [1, N], 'float32'), snapshot(one)), `row ${m}`).toBe(true);
    }
    expect(relErr(all, linear(x, w, { bias }))).toBeLessThan(1e-5); // the GEMM's answer, summed in another order
  });

  it('rows 1..9 at in = 1031 (2 chunks, a tail), every weight dtype: each row of the call equals the row alone', () => {
    for (const dtype of DTS) {
      const K = 1031, N = 29;
      const w = randn([N, K], { seed: 5, dtype }), bias = randn([N], { seed: 6 });
      for (let M = 1; M <= 9; M++) {
        const x = randn([M, K], { seed: 40 + M });
        const all = linear(x, w, { bias, batchInvariant: true });
        for (let m = 0; m < M; m++) {
          const one = linear(new Tensor(x.data.slice(m * K, (m + 1) * K), [1, K], 'float32'), w, { bias });
          expect(sameBytes(new Tensor(all.data.slice(m * N, (m + 1) * N), [1, N], 'float32'), snapshot(one)), `${dtype} M=${M} row ${m}`).toBe(true);
        }
      }
    }
  });

  it('refuses a non-boolean batchInvariant', () => {
    expect(() => linear(randn([2, 3]), randn([4, 3]), { batchInvariant: 1 as never })).toThrow(/batchInvariant/);
  });
});
