// Softmax (DESIGN.md 6.2, 7): the native two-pass and three-pass kernels (at every SIMD level: `npm test`
// runs this file once per level) against the float64 reference, on random rows of many lengths and on
// hostile rows; float16/bfloat16; softmaxInto in place; the thread split of long rows; async and abort.
// Bad input, the raw addon's own checks and a fast-check fuzz are in softmax-errors.test.ts.
//
// Tolerance (DESIGN.md 7 says 1e-6 for softmax): elementwise, stronger than the row-wise Frobenius norm.
// Every element y of a row whose reference value r is at least 1e-30 of the row's largest must satisfy
// |y - r| <= 1e-6 r; the ones below that only |y - r| <= 1e-30 max (they are e^-69 of the largest, and
// float32 has no relative precision left there once they reach the subnormal range).
import { describe, expect, it } from 'vitest';
import {
  calibrateSoftmax, info, randn, setSimdLevel, SOFTMAX_STREAM_BYTES, softmaxAutoChoice, setNumThreads, softmax, softmaxAsync, softmaxInto, softmaxIntoAsync, softmaxReference, Tensor, tensor,
  type DType,
} from '../src/index.js';
import { relErr, sameBytes, snapshot } from './helpers.js';

const TOL = 1e-6;
/** Two native results each within TOL of float64 are within 2 TOL of each other. */
const TOL_PAIR = 2e-6;
const TINY = 1e-30;
const ALGS = ['two-pass', 'three-pass'] as const;
type Alg = (typeof ALGS)[number];

/** ulp of a positive value in a 16-bit dtype (subnormals: the fixed spacing). */
function ulp16(v: number, dtype: DType): number {
  const [mant, emin] = dtype === 'float16' ? [10, -14] : [7, -126];
  const e = v > 0 ? Math.max(Math.floor(Math.log2(v)), emin) : emin;
  return 2 ** (e - mant);
}

/**
 * Checks y against the float64 reference r (both [rows, n] flattened), row by row. float32: the elementwise
 * rule at the top of the file; float16/bfloat16: y is r rounded to the dtype (half an ulp) up to float32's
 * compute error. A reference row of NaN (NaN/+Inf input, or a row of all -Inf) must come out all NaN.
 * Returns the largest relative error seen on the checked elements.
 */
function checkRows(y: Tensor, ref: Tensor, what: string, tol = TOL): number {
  const g = y.toFloat64();
  const r = ref.toFloat64();
  expect(y.shape, `${what}: shape`).toEqual(ref.shape);
  const n = y.shape[y.shape.length - 1];
  let worst = 0;
  for (let off = 0; off < r.length; off += n) {
    const row = off / n;
    if (Number.isNaN(r[off])) {
      for (let i = 0; i < n; i++) {
        if (!Number.isNaN(g[off + i])) throw new Error(`${what}: row ${row} should be all NaN, element ${i} is ${g[off + i]}`);
      }
      continue;
    }
    let max = 0;
    for (let i = 0; i < n; i++) max = Math.max(max, r[off + i]);
    for (let i = 0; i < n; i++) {
      const gi = g[off + i];
      const ri = r[off + i];
      let ok: boolean;
      if (y.dtype === 'float32' || y.dtype === 'float64') {
        ok = ri >= TINY * max ? Math.abs(gi - ri) <= tol * ri : gi >= 0 && Math.abs(gi - ri) <= TINY * max;
        if (ri >= TINY * max && ri > 0) worst = Math.max(worst, Math.abs(gi - ri) / ri);
      } else {
        ok = gi >= 0 && Math.abs(gi - ri) <= 0.5 * ulp16(Math.max(gi, ri), y.dtype) + 2 * tol * ri;
      }
      if (!ok) {
        throw new Error(`${what}: row ${row} element ${i}: got ${gi}, float64 reference ${ri} (row max ${max}, relative error ${Math.abs(gi - ri) / ri})`);
      }
    }
  }
  return worst;
}

/** Rows of x, each drawn from its own distribution (so one batch covers several), seeded. */
function mixedRows(rows: number, n: number, seed: number, dtype: DType = 'float32'): Tensor {
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const kind = r % 4;
    const z = randn([n], { seed: seed + r }).toFloat64();
    for (let i = 0; i < n; i++) {
      out[r * n + i] = kind === 0 ? z[i] : kind === 1 ? 10 * z[i] : kind === 2 ? 40 * z[i] - 300 : 3 * z[i] + 1e4;
    }
  }
  return tensor(out, [rows, n], dtype);
}

function native(x: Tensor, algorithm: Alg): Tensor {
  return softmax(x, { algorithm, backend: 'cpu' });
}

const LENGTHS = [1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 4097, 32768];

describe(`softmax native vs float64 reference, random rows (SIMD ${info().simd ?? 'none'})`, () => {
  for (const n of LENGTHS) {
    for (const algorithm of ALGS) {
      it(`[4, ${n}] ${algorithm}`, () => {
        const x = mixedRows(4, n, 100 + n);
        const y = native(x, algorithm);
        expect(y.dtype).toBe('float32');
        checkRows(y, softmaxReference(x), `[4,${n}] ${algorithm} seed=${100 + n}`);
      });
    }
  }

  it('any leading shape: [2, 3, 5, 67] equals the same data as [30, 67]', () => {
    const x = mixedRows(30, 67, 7);
    const x4 = new Tensor(x.data, [2, 3, 5, 67], 'float32');
    for (const algorithm of ALGS) {
      const y4 = native(x4, algorithm);
      expect(y4.shape).toEqual([2, 3, 5, 67]);
      expect(sameBytes(y4, snapshot(native(x, algorithm))), algorithm).toBe(true);
      checkRows(y4, softmaxReference(x4), `[2,3,5,67] ${algorithm}`);
    }
  });

  it('rank 1: a [1000] vector is one row', () => {
    const x = randn([1000], { seed: 8, std: 5 });
    for (const algorithm of ALGS) checkRows(native(x, algorithm), softmaxReference(x), `[1000] ${algorithm}`);
  });

  it('two-pass and three-pass agree within 2e-6 elementwise', () => {
    const x = mixedRows(8, 3001, 9);
    const a = native(x, 'two-pass');
    const b = native(x, 'three-pass');
    checkRows(a, b.astype('float64'), 'two-pass vs three-pass', TOL_PAIR);
  });
});

// Hostile rows: each one a row of its own, through both algorithms.
const HOSTILE: [string, number[]][] = [
  ['±1e30', [1e30, -1e30, 0, 5, 1e30, -3]],
  ['all equal 5', Array(37).fill(5)],
  ['all equal 0', Array(100).fill(0)],
  ['all equal 1e30', Array(19).fill(1e30)],
  ['all equal -1e30', Array(19).fill(-1e30)],
  ['all equal 3.4e38', Array(5).fill(3.4e38)],
  ['all equal -3.4e38', Array(66).fill(-3.4e38)],
  ['one huge value', [0.5, -1, 1e30, 2, 0]],
  ['one value 200 above the rest', [0, 1, -2, 200, 0.5, 3]],
  ['-Inf entries', [-Infinity, 1, -Infinity, 0, 2, -Infinity, -Infinity, 3]],
  ['-Inf but one', [-Infinity, -Infinity, -Infinity, 7, -Infinity]],
  ['near expf overflow', [88, 88.5, 88.7, 89, 87, -88]],
  ['around ±103/104', [103, 104, -103, -104, 100, 0]],
  ['subnormal outputs', [0, -100, -103, -104, -90, -87.5]],
  ['±1e4', [1e4, 1e4 - 1, 1e4 - 50, -1e4, 9990]],
  ['-1e4 block', [-1e4, -1e4 + 3, -1e4 - 1, -1e4 + 0.25]],
  ['large offset 3e7 (spacing 2)', [3e7, 3e7 - 2, 3e7 - 4, 3e7 - 40]],
  ['large offset -3e7', [-3e7, -3e7 - 2, -3e7 - 6, -3e7 + 2]],
  ['around the unshifted range 45000', [45000, 44999, 44990.5, 0]],
  ['just past it 46000', [46000, 45999, 45995, -46000]],
  ['-46000 and below', [-46000, -46001, -46002.5, -1e9]],
  ['±65536 (the clamp)', [65536, 65535, -65536, -65537]],
  ['1e6 and float32 max', [1e6, 1e6 - 1, 3.4028234e38, 3.4028234e38]],
  ['length 1: 5', [5]],
  ['length 1: -1e30', [-1e30]],
  ['length 1: 3.4e38', [3.4e38]],
  ['length 1: -Inf (NaN)', [-Infinity]],
  ['all -Inf (NaN)', Array(20).fill(-Infinity)],
  ['NaN entry (NaN row)', [1, 2, NaN, 3]],
  ['+Inf entry (NaN row)', [1, Infinity, 3, -Infinity]],
];

describe('softmax hostile rows', () => {
  for (const [name, row] of HOSTILE) {
    for (const algorithm of ALGS) {
      it(`${name} (${row.length}) ${algorithm}`, () => {
        const x = tensor(Float32Array.from(row), [1, row.length]);
        checkRows(native(x, algorithm), softmaxReference(x), `${name} ${algorithm}`);
      });
    }
  }

  it('hostile values sprinkled into long random rows (every block and tail position), both algorithms', () => {
    const n = 5000;
    const specials = [1e30, -1e30, -Infinity, 88.7, 104, -104, 1e4, -1e4, 3e7];
    for (const [si, v] of specials.entries()) {
      const d = randn([3, n], { seed: 40 + si, std: 3 }).toFloat64();
      for (let i = si; i < d.length; i += 97) d[i] = v;
      const x = tensor(d, [3, n], 'float32');
      const ref = softmaxReference(x);
      for (const algorithm of ALGS) checkRows(native(x, algorithm), ref, `sprinkled ${v} ${algorithm}`);
    }
  });

  it('rows of NaN among good rows leave the good rows exact', () => {
    const x = mixedRows(6, 300, 11);
    const d = x.data as Float32Array;
    d[300 + 17] = NaN;
    d.fill(-Infinity, 3 * 300, 4 * 300);
    d[5 * 300 + 299] = Infinity;
    for (const algorithm of ALGS) checkRows(native(x, algorithm), softmaxReference(x), `NaN rows ${algorithm}`);
  });
});

describe('softmax long rows, split across threads', () => {
  const threads = info().threads ?? 1;
  const cases: [string, () => Tensor][] = [
    ['one row of 1e6, randn * 5', () => randn([1, 1_000_000], { seed: 50, std: 5 })],
    ['[3, 1e6] rows of three distributions', () => mixedRows(3, 1_000_000, 51)],
    ['[1e6] with 1e30 at the end (shifted path)', () => {
      const x = randn([1_000_000], { seed: 52 });
      (x.data as Float32Array)[999_999] = 1e30;
      (x.data as Float32Array)[3] = 1e30;
      return x;
    }],
    ['[2, 1e6]: a row near -3e7 and a row of -Inf but one', () => {
      const d = new Float32Array(2_000_000).fill(-Infinity);
      const z = randn([1_000_000], { seed: 53 }).data as Float32Array;
      for (let i = 0; i < 1_000_000; i++) d[i] = -3e7 + 64 * Math.round(z[i]);
      d[1_000_000 + 123_457] = 2;
      return tensor(d, [2, 1_000_000]);
    }],
    ['[2, 300001]: a row of all -Inf and a row with NaN (NaN rows)', () => {
      const d = new Float32Array(600_002).fill(-Infinity);
      d.fill(1, 300_001);
      d[450_000] = NaN;
      return tensor(d, [2, 300_001]);
    }],
    ['[8, 100000] (more rows than 4 per thread: split by rows)', () => mixedRows(8, 100_000, 54)],
  ];
  for (const [name, make] of cases) {
    it(name, () => {
      const x = make();
      const ref = softmaxReference(x);
      for (const algorithm of ALGS) checkRows(native(x, algorithm), ref, `${name} ${algorithm} threads=${threads}`);
    });
  }

  it('thread count changes nothing: 1, 2 and 3 threads give the same bytes on [64, 1000] and within 1e-6 on [5, 70000]', () => {
    const small = mixedRows(64, 1000, 55);
    const long = mixedRows(5, 70_000, 56);
    const refLong = softmaxReference(long);
    const base: Record<string, Uint8Array> = {};
    try {
      for (const t of [1, 2, 3]) {
        setNumThreads(t);
        for (const algorithm of ALGS) {
          const y = native(small, algorithm);
          if (base[algorithm]) expect(sameBytes(y, base[algorithm]), `${algorithm} at ${t} threads`).toBe(true);
          else base[algorithm] = snapshot(y);
          checkRows(native(long, algorithm), refLong, `[5,70000] ${algorithm} at ${t} threads`);
        }
      }
    } finally {
      setNumThreads(0);
    }
  });
});

describe('softmax float16 / bfloat16 in and out (float32 compute)', () => {
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const n of [1, 17, 64, 1000, 70_000]) {
      it(`${dtype} [3, ${n}]`, () => {
        const x = randn([3, n], { seed: 60 + n, std: 4, dtype });
        const ref = softmaxReference(x); // the same rounded inputs, in float64
        for (const algorithm of ALGS) {
          const y = native(x, algorithm);
          expect(y.dtype).toBe(dtype);
          checkRows(y, ref, `${dtype} [3,${n}] ${algorithm}`);
        }
      });
    }
    it(`${dtype} hostile: -Inf entries, all-equal, large values, a NaN row`, () => {
      const big = dtype === 'float16' ? 60000 : 1e30;
      const rows = [[-Infinity, 1, 2, -Infinity], [3, 3, 3, 3], [big, big / 2, -big, 0], [NaN, 1, 2, 3], [-Infinity, -Infinity, -Infinity, -Infinity]];
      const x = tensor(rows.flat(), [rows.length, 4], dtype);
      for (const algorithm of ALGS) checkRows(native(x, algorithm), softmaxReference(x), `${dtype} hostile ${algorithm}`);
    });
  }

  it('float64 runs on the reference backend (and returns float64)', () => {
    const x = randn([3, 50], { seed: 70, dtype: 'float64' });
    const y = softmax(x);
    expect(y.dtype).toBe('float64');
    expect(Array.from(y.data)).toEqual(Array.from(softmaxReference(x).data));
  });

  it("backend 'reference' on float32 gives the float64 answer rounded to float32", () => {
    const x = mixedRows(3, 100, 71);
    const y = softmax(x, { backend: 'reference' });
    expect(y.dtype).toBe('float32');
    expect(Array.from(y.data)).toEqual(Array.from(Float32Array.from(softmaxReference(x).data)));
  });
});

describe('softmaxInto', () => {
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    for (const algorithm of ALGS) {
      it(`${dtype} ${algorithm}: into a separate tensor, and in place (out === x, and a second view of x's memory)`, () => {
        const x = mixedRows(5, 777, 80, dtype);
        const want = native(x, algorithm);
        const out = new Tensor(dtype === 'float32' ? new Float32Array(x.size).fill(NaN) : new Uint16Array(x.size).fill(0x7fc0), x.shape, dtype);
        expect(softmaxInto(x, out, { algorithm })).toBe(out);
        expect(sameBytes(out, snapshot(want)), 'into out').toBe(true);

        const a = tensor(x.data.slice(), x.shape, dtype);
        expect(softmaxInto(a, a, { algorithm })).toBe(a);
        expect(sameBytes(a, snapshot(want)), 'in place, out === x').toBe(true);

        const b = tensor(x.data.slice(), x.shape, dtype);
        const view = new Tensor(dtype === 'float32' ? new Float32Array(b.data.buffer) : new Uint16Array(b.data.buffer), x.shape, dtype);
        softmaxInto(b, view, { algorithm });
        expect(sameBytes(b, snapshot(want)), 'in place, out a view of the same memory').toBe(true);
      });
    }
  }

  it('in place on long rows split across threads, and on a large batch (1024 x 4096)', () => {
    for (const [rows, n] of [[2, 500_000], [1024, 4096]]) {
      const x = mixedRows(rows, n, 81);
      for (const algorithm of ALGS) {
        const want = native(x, algorithm);
        const a = tensor(x.data.slice(), x.shape);
        softmaxInto(a, a, { algorithm });
        expect(sameBytes(a, snapshot(want)), `[${rows},${n}] ${algorithm}`).toBe(true);
      }
    }
  });

  it('a 96 MiB float32 batch (non-temporal stores) equals the reference on sampled rows, into a reused buffer', () => {
    const rows = 768;
    const n = 32768;
    const x = mixedRows(rows, n, 82);
    const out = tensor(new Float32Array(rows * n).fill(NaN), [rows, n]);
    for (const algorithm of ALGS) {
      out.data.fill(NaN);
      softmaxInto(x, out, { algorithm });
      for (const r of [0, 1, 2, 3, 383, 766, 767]) {
        const xr = new Tensor((x.data as Float32Array).subarray(r * n, (r + 1) * n), [1, n], 'float32');
        const yr = new Tensor((out.data as Float32Array).subarray(r * n, (r + 1) * n), [1, n], 'float32');
        checkRows(yr, softmaxReference(xr), `96 MiB batch row ${r} ${algorithm}`);
      }
      let nonFinite = 0;
      for (const v of out.data as Float32Array) if (!Number.isFinite(v)) nonFinite++;
      expect(nonFinite, `${algorithm}: every output written`).toBe(0);
    }
  });

  it('a 68 MiB batch of odd rows into a misaligned view (non-temporal stores at every alignment) equals each row alone, bit for bit', () => {
    // 32763 is odd: row r starts at a different offset modulo the vector width for r = 0..15, and the
    // output view starts one float past an aligned address.
    const rows = 544;
    const n = 32763;
    const x = mixedRows(rows, n, 83);
    const out = tensor(new Float32Array(new ArrayBuffer((rows * n + 1) * 4), 4, rows * n).fill(NaN), [rows, n]);
    softmaxInto(x, out);
    for (const r of [...Array(17).keys(), 300, 542, 543]) {
      const xr = tensor((x.data as Float32Array).slice(r * n, (r + 1) * n), [1, n]);
      const yr = new Tensor((out.data as Float32Array).slice(r * n, (r + 1) * n), [1, n], 'float32');
      expect(sameBytes(yr, snapshot(native(xr, 'two-pass'))), `row ${r}`).toBe(true);
    }
    let nonFinite = 0;
    for (const v of out.data as Float32Array) if (!Number.isFinite(v)) nonFinite++;
    expect(nonFinite, 'every output written').toBe(0);
  });
});

describe('softmax async', () => {
  it('softmaxAsync / softmaxIntoAsync equal the sync forms bit for bit', async () => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const x = mixedRows(16, 3000, 90, dtype);
      for (const algorithm of ALGS) {
        const want = native(x, algorithm);
        const y = await softmaxAsync(x, { algorithm, backend: 'cpu' });
        expect(sameBytes(y, snapshot(want)), `${dtype} ${algorithm} softmaxAsync`).toBe(true);
        const a = tensor(x.data.slice(), x.shape, dtype);
        await softmaxIntoAsync(a, a, { algorithm });
        expect(sameBytes(a, snapshot(want)), `${dtype} ${algorithm} in place`).toBe(true);
      }
    }
  });

  it('float64 / reference backend async', async () => {
    const x = randn([2, 9], { seed: 91, dtype: 'float64' });
    expect(Array.from((await softmaxAsync(x)).data)).toEqual(Array.from(softmaxReference(x).data));
  });

  // A long call: 2048 rows of 16K floats (128 MiB) take tens of milliseconds. Made once; tests that write
  // into x take a copy.
  let bigX: Tensor | undefined;
  const big = () => {
    bigX ??= tensor(randn([2048 * 16384], { seed: 92, std: 6 }).data, [2048, 16384]);
    return tensor(bigX.data.slice(), bigX.shape);
  };

  it('the event loop keeps turning while a long call runs', async () => {
    const x = big();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    try {
      const y = await softmaxAsync(x);
      expect(y.shape).toEqual(x.shape);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(0);
  });

  it('an already aborted signal rejects with AbortError before anything is written', async () => {
    const x = mixedRows(4, 100, 93);
    const out = tensor(new Float32Array(x.size).fill(NaN), x.shape);
    const snapOut = snapshot(out);
    const snapX = snapshot(x);
    for (const run of [() => softmaxAsync(x, {}, { signal: AbortSignal.abort() }), () => softmaxIntoAsync(x, out, {}, { signal: AbortSignal.abort() }), () => softmaxIntoAsync(x, x, {}, { signal: AbortSignal.abort() })]) {
      await expect(run()).rejects.toMatchObject({ name: 'AbortError' });
    }
    expect(sameBytes(out, snapOut), 'out untouched').toBe(true);
    expect(sameBytes(x, snapX), 'x untouched').toBe(true);
  });

  it('aborting mid-call rejects with AbortError (x untouched)', async () => {
    const x = big();
    const snapX = snapshot(x);
    for (const algorithm of ALGS) {
      const ac = new AbortController();
      const p = softmaxAsync(x, { algorithm }, { signal: ac.signal });
      queueMicrotask(() => ac.abort());
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    }
    const ac = new AbortController();
    const out = tensor(new Float32Array(x.size), x.shape);
    const p = softmaxIntoAsync(x, out, {}, { signal: ac.signal });
    setTimeout(() => ac.abort(), 1);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(x, snapX), 'x untouched').toBe(true);
  });

  it('in place, an abort after the start lets the call finish: x is all old (rejected) or all new (resolved)', async () => {
    const x = big();
    const want = native(x, 'two-pass');
    const old = snapshot(x);
    const ac = new AbortController();
    const p = softmaxIntoAsync(x, x, {}, { signal: ac.signal });
    setTimeout(() => ac.abort(), 1);
    let rejected: unknown;
    try {
      await p;
    } catch (e) {
      rejected = e;
    }
    if (rejected !== undefined) {
      expect(rejected).toMatchObject({ name: 'AbortError' });
      expect(sameBytes(x, old), 'rejected: x untouched').toBe(true);
    } else {
      expect(sameBytes(x, snapshot(want)), 'resolved: x is its softmax').toBe(true);
    }
  });
});

describe("algorithm 'auto' (the default)", () => {
  it('rows in cache: the measured choice, bit for bit, and softmaxAutoChoice reports it', () => {
    const x = randn([37, 1000], { seed: 21, std: 3 });
    const auto = softmax(x);
    const choice = softmaxAutoChoice();
    expect(['two-pass', 'three-pass']).toContain(choice.inCache);
    const forced = softmax(x, { algorithm: choice.inCache! });
    expect(Array.from(auto.data)).toEqual(Array.from(forced.data));
    expect(calibrateSoftmax()).toBe(choice.inCache); // measured once, then remembered
    expect(relErr(auto, softmaxReference(x))).toBeLessThan(1e-6);
  });

  it('setSimdLevel moves auto to that level: its own choice, measured there, bit for bit with it', () => {
    const start = info().simd as 'avx512' | 'avx2' | 'portable';
    const x = randn([19, 700], { seed: 23, std: 2 });
    softmax(x); // auto at the start level first: measured (and the level looked up) there
    try {
      // 'portable' is on every machine and differs from the start level unless SEQKERN_SIMD=portable.
      for (const level of ['portable', start] as const) {
        setSimdLevel(level);
        // A level not used yet has no choice yet (a stale cached level would report the start level's).
        if (level !== start) expect(softmaxAutoChoice().inCache, level).toBeUndefined();
        const auto = softmax(x);
        const choice = softmaxAutoChoice().inCache;
        expect(['two-pass', 'three-pass'], level).toContain(choice);
        expect(calibrateSoftmax(), level).toBe(choice);
        const forced = softmax(x, { algorithm: choice! });
        expect(Array.from(auto.data), level).toEqual(Array.from(forced.data));
      }
    } finally {
      setSimdLevel(start);
    }
    expect(info().simd).toBe(start);
  });

  it('a batch that streams from memory (input + output > SOFTMAX_STREAM_BYTES) runs the two-pass, bit for bit', () => {
    const rows = Math.ceil(SOFTMAX_STREAM_BYTES / 8 / 1024) + 3;
    const x = randn([rows, 1024], { seed: 22 });
    const auto = softmax(x);
    const two = softmax(x, { algorithm: 'two-pass' });
    expect(auto.data.every((v, i) => Object.is(v, two.data[i]))).toBe(true);
    expect(softmaxAutoChoice().streaming).toBe('two-pass');
  });
});
