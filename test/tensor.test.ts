// Tensors (DESIGN.md 3): constructors, seeded random data, float16/bfloat16 bit conversions (all 65536
// patterns, both ways, in TypeScript and through the native kernels), info(), threads and SIMD levels.
import { describe, expect, it } from 'vitest';
import {
  full, gatedDeltaRule, info, numel, rand, randn, rng, SeqkernError, setNumThreads, setSimdLevel, Tensor, tensor,
  zeros, type DeltaRuleOptions,
} from '../src/index.js';
import { deltaInputs, expectClose, expectSeqkernError, sameBytes, snapshot } from './helpers.js';

describe('tensor()', () => {
  it('converts number[] to float32 by default and float64 from a Float64Array', () => {
    const t = tensor([1, 2.5, -3, 1 / 3], [2, 2]);
    expect(t.dtype).toBe('float32');
    expect(t.data).toBeInstanceOf(Float32Array);
    expect(Array.from(t.data)).toEqual([1, 2.5, -3, Math.fround(1 / 3)]);
    expect(t.shape).toEqual([2, 2]);
    expect(t.size).toBe(4);
    expect(t.device).toBe('cpu');
    const d = tensor(Float64Array.of(1 / 3), [1]);
    expect(d.dtype).toBe('float64');
    expect(d.data[0]).toBe(1 / 3);
    expect(String(t)).toBe('Tensor(float32, [2,2])');
  });

  it('uses a TypedArray of the storage type in place (no copy)', () => {
    const f = new Float32Array(6);
    expect(tensor(f, [2, 3]).data).toBe(f);
    const h = new Uint16Array(6);
    expect(tensor(h, [3, 2], 'float16').data).toBe(h);
    expect(tensor(h, [6], 'bfloat16').data).toBe(h);
    const g = new Float64Array(2);
    expect(tensor(g, [2], 'float64').data).toBe(g);
    // another storage type is converted into a fresh array
    const c = tensor(g, [2], 'float32');
    expect(c.data).toBeInstanceOf(Float32Array);
  });

  it('freezes its shape (a copy of the caller\'s)', () => {
    const shape = [2, 3];
    const t = tensor(new Float32Array(6), shape);
    shape[0] = 7;
    expect(t.shape).toEqual([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
  });

  it('accepts 0-sized and rank-0 shapes', () => {
    expect(tensor([], [0, 5]).size).toBe(0);
    expect(tensor([4], []).size).toBe(1);
    expect(numel([3, 0, 2])).toBe(0);
  });

  it('refuses a data length that does not match the shape, and bad dims, with SeqkernError', () => {
    expectSeqkernError(() => tensor([1, 2, 3], [2, 2]), 'SHAPE_MISMATCH', 'data', 'short data');
    expectSeqkernError(() => tensor(new Float32Array(5), [2, 2]), 'SHAPE_MISMATCH', 'data', 'long data');
    expectSeqkernError(() => tensor([], [-1]), 'SHAPE_MISMATCH', 'shape', 'negative dim');
    expectSeqkernError(() => tensor([1, 2], [1.5, 2]), 'SHAPE_MISMATCH', 'shape', 'fractional dim');
    expectSeqkernError(() => tensor([1], [NaN]), 'SHAPE_MISMATCH', 'shape', 'NaN dim');
    expectSeqkernError(() => tensor([1], [1], 'int8' as never), 'BAD_DTYPE', 'dtype', 'unknown dtype');
  });

  it('astype and toFloat64 copy', () => {
    const t = tensor([1.5, -2], [2]);
    const h = t.astype('float16');
    expect(h.dtype).toBe('float16');
    expect(Array.from(h.toFloat64())).toEqual([1.5, -2]);
    const f = t.toFloat64();
    f[0] = 9;
    expect(t.data[0]).toBe(1.5);
  });
});

describe('zeros, full', () => {
  it('zeros of every dtype, with its storage type', () => {
    const kinds = { float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array } as const;
    for (const [dtype, ctor] of Object.entries(kinds)) {
      const z = zeros([2, 3, 4], dtype as keyof typeof kinds);
      expect(z.dtype).toBe(dtype);
      expect(z.data).toBeInstanceOf(ctor);
      expect(z.data.length).toBe(24);
      expect(Array.from(z.data).every((x) => x === 0)).toBe(true);
    }
    expect(zeros([3]).dtype).toBe('float32');
  });

  it('full(NaN) poisons every element, in every dtype', () => {
    for (const dtype of ['float32', 'float64', 'float16', 'bfloat16'] as const) {
      const t = full([5, 3], NaN, dtype);
      expect(Array.from(t.toFloat64()).every(Number.isNaN), dtype).toBe(true);
    }
    expect(Array.from(full([2], -Infinity, 'float16').toFloat64())).toEqual([-Infinity, -Infinity]);
  });
});

describe('seeded random data', () => {
  it('randn: same seed, same numbers; another seed, other numbers', () => {
    const a = randn([1000], { seed: 42 });
    const b = randn([1000], { seed: 42 });
    const c = randn([1000], { seed: 43 });
    expect(sameBytes(a, snapshot(b))).toBe(true);
    expect(sameBytes(a, snapshot(c))).toBe(false);
    expect(sameBytes(randn([7]), snapshot(randn([7], { seed: 0 }))), 'default seed is 0').toBe(true);
    // The prefix of a longer draw is the shorter draw (one stream per seed).
    expect(Array.from(randn([10], { seed: 5 }).data)).toEqual(Array.from(randn([11], { seed: 5 }).data.slice(0, 10)));
  });

  it('randn is standard normal (mean 0, std 1) and honours mean, std and dtype', () => {
    const n = 200_000;
    const x = randn([n], { seed: 7 }).toFloat64();
    let m = 0;
    for (const v of x) m += v;
    m /= n;
    let s = 0;
    for (const v of x) s += (v - m) ** 2;
    s = Math.sqrt(s / n);
    expect(Math.abs(m)).toBeLessThan(0.01);
    expect(Math.abs(s - 1)).toBeLessThan(0.01);
    expect(Array.from(x).every(Number.isFinite)).toBe(true);
    const y = randn([n], { seed: 7, mean: 3, std: 0.5 }).toFloat64();
    let my = 0;
    for (const v of y) my += v;
    expect(my / n).toBeCloseTo(3, 2);
    const h = randn([8], { seed: 7, dtype: 'bfloat16' });
    expect(h.dtype).toBe('bfloat16');
    expect(h.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(h.toFloat64())).toEqual(Array.from(randn([8], { seed: 7 }).astype('bfloat16').toFloat64()));
  });

  it('rand is uniform in [low, high) and deterministic', () => {
    const r = rand([10_000], { seed: 3, low: -2, high: 5 }).toFloat64();
    expect(Math.min(...r)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...r)).toBeLessThan(5);
    expect(Array.from(rand([5], { seed: 3 }).data)).toEqual(Array.from(rand([5], { seed: 3 }).data));
    const g = rng(9);
    const h = rng(9);
    for (let i = 0; i < 100; i++) {
      const u = g();
      expect(u).toBe(h());
      expect(u >= 0 && u < 1).toBe(true);
    }
  });
});

// ---- float16 / bfloat16 ----

const ALL_BITS = Uint16Array.from({ length: 65536 }, (_, i) => i);
const isF16NaN = (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0;
const isBf16NaN = (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;

function f16Value(b: number): number {
  const s = b & 0x8000 ? -1 : 1;
  const e = (b >> 10) & 0x1f;
  const m = b & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

describe('float16 and bfloat16', () => {
  it('float16: every bit pattern decodes to its IEEE value and encodes back to itself (NaN stays NaN)', () => {
    const t = new Tensor(ALL_BITS.slice(), [65536], 'float16');
    const vals = t.toFloat64();
    const back = tensor(vals, [65536], 'float16').data;
    for (let b = 0; b < 65536; b++) {
      const want = f16Value(b);
      if (isF16NaN(b)) {
        if (!Number.isNaN(vals[b]) || !isF16NaN(back[b])) expect.fail(`float16 0x${b.toString(16)}: NaN -> ${vals[b]} -> 0x${back[b].toString(16)}`);
      } else if (!Object.is(vals[b], want) || back[b] !== b) {
        expect.fail(`float16 0x${b.toString(16)}: decodes to ${vals[b]} (want ${want}), encodes back to 0x${back[b].toString(16)}`);
      }
    }
  });

  it('float16: rounding to nearest even, overflow to Inf, subnormals, signed zero', () => {
    const cases: [number, number][] = [
      [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00],
      [Infinity, 0x7c00], [-Infinity, 0xfc00], [0, 0], [-0, 0x8000],
      [2 ** -14, 0x0400], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -26, 0x0001], [-(2 ** -24), 0x8001],
      [1023 * 2 ** -24, 0x03ff], [2 ** -14 - 2 ** -25, 0x0400], // the largest subnormal, and a tie up to the smallest normal
      [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -10, 0x3c01], [1e-10, 0], [-1e-10, 0x8000],
    ];
    for (const [x, bits] of cases) {
      expect(tensor([x], [1], 'float16').data[0], `float16 of ${x}`).toBe(bits);
    }
    expect(isF16NaN(tensor([NaN], [1], 'float16').data[0])).toBe(true);
  });

  it('bfloat16: every bit pattern round-trips (NaN stays NaN), subnormals included', () => {
    const t = new Tensor(ALL_BITS.slice(), [65536], 'bfloat16');
    const vals = t.toFloat64();
    const back = tensor(vals, [65536], 'bfloat16').data;
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let b = 0; b < 65536; b++) {
      u[0] = b << 16;
      const want = f[0];
      if (isBf16NaN(b)) {
        if (!Number.isNaN(vals[b]) || !isBf16NaN(back[b])) expect.fail(`bfloat16 0x${b.toString(16)}: NaN -> ${vals[b]} -> 0x${back[b].toString(16)}`);
      } else if (!Object.is(vals[b], want) || back[b] !== b) {
        expect.fail(`bfloat16 0x${b.toString(16)}: decodes to ${vals[b]} (want ${want}), encodes back to 0x${back[b].toString(16)}`);
      }
    }
  });

  it('bfloat16: rounding to nearest even, overflow to Inf', () => {
    const cases: [number, number][] = [
      [1, 0x3f80], [-1, 0xbf80], [1 + 2 ** -8, 0x3f80], [1 + 3 * 2 ** -8, 0x3f82], [1 + 2 ** -7, 0x3f81],
      [3.4028234663852886e38, 0x7f80], [Infinity, 0x7f80], [-Infinity, 0xff80], [-0, 0x8000],
      [2 ** -133, 0x0001], [2 ** -126, 0x0080],
    ];
    for (const [x, bits] of cases) expect(tensor([x], [1], 'bfloat16').data[0], `bfloat16 of ${x}`).toBe(bits);
    expect(isBf16NaN(tensor([NaN], [1], 'bfloat16').data[0])).toBe(true);
  });

  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const algorithm of ['chunk', 'recurrent'] as const) {
      it(`the native kernels read and write every ${dtype} bit pattern exactly (o = v with K=1, q=k=1, beta=1; ${algorithm})`, () => {
        // 64 sequences of one token, V = 1024: S = k u^T with u = v, so o = S^T q = v in float32, exactly;
        // what comes back is the native float -> ${dtype} conversion of the native ${dtype} -> float one.
        const B = 64;
        const V = 1024;
        const one = tensor(new Float64Array(B).fill(1), [B, 1, 1, 1], dtype);
        const v = new Tensor(ALL_BITS.slice(), [B, 1, 1, V], dtype);
        const r = gatedDeltaRule({ q: one, k: one, v, beta: full([B, 1, 1], 1), scale: 1, backend: 'cpu', algorithm });
        expect(r.o.dtype).toBe(dtype);
        const got = r.o.data as Uint16Array;
        const isNaN = dtype === 'float16' ? isF16NaN : isBf16NaN;
        const vals = v.toFloat64();
        const outs = r.o.toFloat64();
        const bad: string[] = [];
        for (let b = 0; b < 65536 && bad.length < 10; b++) {
          if (isNaN(b)) {
            if (!isNaN(got[b])) bad.push(`0x${b.toString(16)} (NaN) -> 0x${got[b].toString(16)}`);
          } else if (outs[b] !== vals[b]) {
            // -0 may come back as +0 (0 + -0 = +0); every other value must be exact.
            bad.push(`0x${b.toString(16)} (${vals[b]}) -> 0x${got[b].toString(16)} (${outs[b]})`);
          }
        }
        expect(bad, `${dtype} ${algorithm}: first mismatches`).toEqual([]);
      });
    }
  }
});

// ---- info, threads, SIMD levels ----

describe('info()', () => {
  it('reports the addon, its build and this machine', () => {
    const i = info();
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(i.backend).toBe('cpu');
    expect(i.addonPath).toMatch(/seqkern\.node$/);
    expect(i.addonError).toBeUndefined();
    expect(['node-gyp', 'cmake-js']).toContain(i.buildSystem);
    expect(typeof i.compiler).toBe('string');
    expect(['avx512', 'avx2', 'portable']).toContain(i.simd);
    expect(['avx512', 'avx2', 'portable']).toContain(i.simdBest);
    const order = ['portable', 'avx2', 'avx512'];
    expect(order.indexOf(i.simd!)).toBeLessThanOrEqual(order.indexOf(i.simdBest!));
    if (process.env.SEQKERN_SIMD && order.indexOf(process.env.SEQKERN_SIMD) <= order.indexOf(i.simdBest!)) {
      expect(i.simd, 'SEQKERN_SIMD is honoured').toBe(process.env.SEQKERN_SIMD);
    }
    expect(typeof i.cpuFeatures).toBe('string');
    if (i.simdBest === 'avx512') expect(i.cpuFeatures).toContain('avx512f');
    if (i.simdBest !== 'portable') expect(i.cpuFeatures).toContain('avx2');
    expect(Number.isInteger(i.threads) && i.threads! >= 1).toBe(true);
    expect(i.cuda.available).toBe(false);
    expect(typeof i.cuda.reason).toBe('string');
  });
});

describe('setNumThreads, setSimdLevel', () => {
  const c = { B: 2, T: 150, H: 2, HV: 4, K: 48, V: 40, initial: true, seed: 500 };
  const run = (x: ReturnType<typeof deltaInputs>, algorithm: 'chunk' | 'recurrent') =>
    gatedDeltaRule({ ...x, backend: 'cpu', outputFinalState: true, algorithm } as DeltaRuleOptions);

  it('1 thread, 3 threads and back to the default give bit-identical results', () => {
    const x = deltaInputs(c);
    const before = info().threads;
    const base = { chunk: run(x, 'chunk'), recurrent: run(x, 'recurrent') };
    try {
      for (const n of [1, 3]) {
        expect(setNumThreads(n)).toBe(n);
        expect(info().threads).toBe(n);
        for (const alg of ['chunk', 'recurrent'] as const) {
          const r = run(x, alg);
          expect(sameBytes(r.o, snapshot(base[alg].o)), `${n} threads ${alg}: o`).toBe(true);
          expect(sameBytes(r.finalState!, snapshot(base[alg].finalState!)), `${n} threads ${alg}: state`).toBe(true);
        }
      }
    } finally {
      const d = setNumThreads(0);
      expect(d).toBeGreaterThanOrEqual(1);
      expect(d).toBe(before);
    }
    expect(sameBytes(run(x, 'chunk').o, snapshot(base.chunk.o))).toBe(true);
    expectSeqkernError(() => setNumThreads(1.5), 'BAD_ARGUMENT', undefined, 'setNumThreads(1.5)');
  });

  it('an unsupported SIMD level throws SeqkernError; supported levels agree with each other', () => {
    const i = info();
    const original = i.simd as 'avx512' | 'avx2' | 'portable';
    expectSeqkernError(() => setSimdLevel('sse4' as never), 'BAD_ARGUMENT', 'level', 'unknown level');
    expectSeqkernError(() => setSimdLevel('' as never), 'BAD_ARGUMENT', undefined, 'empty level');
    const order = ['portable', 'avx2', 'avx512'] as const;
    for (const l of order.slice(order.indexOf(i.simdBest as (typeof order)[number]) + 1)) {
      expectSeqkernError(() => setSimdLevel(l), 'OUT_OF_RANGE', l, `${l} on a CPU whose best is ${i.simdBest}`);
    }
    expect(info().simd, 'a refused level changes nothing').toBe(original);
    const x = deltaInputs(c);
    const ref = run(x, 'chunk');
    try {
      for (const l of order.slice(0, order.indexOf(i.simdBest as (typeof order)[number]) + 1)) {
        expect(setSimdLevel(l)).toBe(l);
        expect(info().simd).toBe(l);
        for (const alg of ['chunk', 'recurrent'] as const) {
          const r = run(x, alg);
          expectClose(r.o, ref.o, 1e-5, `${l} ${alg} vs ${original} chunk`);
          expectClose(r.finalState!, ref.finalState!, 1e-5, `${l} ${alg} vs ${original} chunk: state`);
        }
      }
    } finally {
      setSimdLevel(original);
    }
    expect(info().simd).toBe(original);
  });

  it('SeqkernError is an Error with a code', () => {
    const e = new SeqkernError('OUT_OF_RANGE', 'x: expected beta in [0, 2], got 3', { argument: 'beta', expected: 'in [0, 2]', got: '3' });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SeqkernError');
    expect(e.code).toBe('OUT_OF_RANGE');
    expect(e.argument).toBe('beta');
  });
});
