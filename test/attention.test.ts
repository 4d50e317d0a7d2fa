// Native attention against the float64 reference (DESIGN.md 6.3, 7): the shape grid (T, S in {1, 63, 64, 65,
// 1000}, T != S, D in {64, 128}, Dv != D, GQA 8:2, MQA, causal and not), bottom-right causal alignment when
// S > T and queries that see no key when S < T, packed sequences with zero-length ones, both gate kinds,
// lse, decode calls against the last row of a full causal call, float16/bfloat16 inputs, adversarial scores,
// and the Promise form with abort. Every case names its shape in the test id and its seed in the message.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { attention, attentionAsync, attentionReference, randn, setNumThreads, Tensor, tensor, type AttentionOptions, type AttentionResult, type DType } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { expectClose, offsets, relErr, sameBytes, slice, snapshot } from './helpers.js';

/** DESIGN.md 7: attention, float32. */
const TOL = 1e-5;
/** float16/bfloat16 inputs (the output is rounded to the input's dtype too). */
const TOL_LOW = 2e-2;
/** Two native calls that differ only in blocking (query blocks, key tiles, a key split): float rounding. */
const TOL_SELF = 5e-6;

interface Case {
  B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  causal: boolean;
  seed: number;
  gate?: 'elementwise' | 'headwise';
  /** Packed lengths of the queries (and keys when lensK is absent); then B = 1, T and S their sums. */
  lens?: number[];
  lensK?: number[];
  dtype?: DType;
  gateDtype?: DType;
  scale?: number;
}

const id = (c: Case): string =>
  `B=${c.B},T=${c.T},S=${c.S},Hq=${c.Hq},Hk=${c.Hk},D=${c.D},Dv=${c.Dv}${c.causal ? ' causal' : ''}` +
  `${c.gate ? ` gate=${c.gate}` : ''}${c.lens ? ` lens=[${c.lens}]` : ''}${c.lensK ? ` lensK=[${c.lensK}]` : ''}` +
  `${c.dtype && c.dtype !== 'float32' ? ` ${c.dtype}` : ''}${c.scale !== undefined ? ` scale=${c.scale}` : ''}`;

function inputs(c: Case) {
  const dtype = c.dtype ?? 'float32';
  const q = randn([c.B, c.T, c.Hq, c.D], { seed: c.seed + 1, dtype });
  const k = randn([c.B, c.S, c.Hk, c.D], { seed: c.seed + 2, dtype });
  const v = randn([c.B, c.S, c.Hk, c.Dv], { seed: c.seed + 3, dtype });
  const opts: AttentionOptions = { causal: c.causal, scale: c.scale };
  if (c.gate) {
    const shape = c.gate === 'elementwise' ? [c.B, c.T, c.Hq, c.Dv] : [c.B, c.T, c.Hq];
    opts.gate = randn(shape, { seed: c.seed + 4, std: 2, dtype: c.gateDtype ?? 'float32' });
  }
  if (c.lens) {
    opts.cuSeqlens = offsets(c.lens);
    if (c.lensK) opts.cuSeqlensK = offsets(c.lensK);
  }
  return { q, k, v, opts };
}

/** lse: the same -Inf entries (queries that see no key), every other one finite and within tol. */
function expectLse(got: Tensor, want: Tensor, tol: number, what: string): void {
  expect(got.shape, `${what}: lse shape`).toEqual(want.shape);
  expect(got.dtype, `${what}: lse dtype`).toBe('float32');
  const g = got.toFloat64();
  const w = want.toFloat64();
  const gf: number[] = [];
  const wf: number[] = [];
  for (let i = 0; i < w.length; i++) {
    if (w[i] === -Infinity) {
      expect(g[i], `${what}: lse[${i}] of a query that sees no key`).toBe(-Infinity);
    } else {
      expect(Number.isFinite(g[i]), `${what}: lse[${i}] = ${g[i]} not finite`).toBe(true);
      gf.push(g[i]);
      wf.push(w[i]);
    }
  }
  const e = relErr(Float64Array.from(gf), Float64Array.from(wf));
  expect(e, `${what}: lse relative error ${e.toExponential(3)}`).toBeLessThanOrEqual(tol);
}

const refCache = new Map<string, { o: Tensor; lse: Tensor }>();
function check(c: Case): AttentionResult {
  const what = `${id(c)} seed=${c.seed}`;
  const { q, k, v, opts } = inputs(c);
  let ref = refCache.get(what);
  if (!ref) refCache.set(what, (ref = attentionReference(q, k, v, opts)));
  const r = attention(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
  const low = (c.dtype ?? 'float32') !== 'float32';
  expect(r.o.dtype, `${what}: o has v's dtype`).toBe(v.dtype);
  expectClose(r.o, ref.o, low ? TOL_LOW : TOL, `${what}: o`);
  expectLse(r.lse!, ref.lse, low ? TOL_LOW : TOL, what);
  return r;
}

// ---- 1. the shape grid

const CONFIGS = [
  { B: 2, Hq: 2, Hk: 2, D: 64, Dv: 64 }, // plain multi-head, B = 2
  { B: 1, Hq: 8, Hk: 2, D: 64, Dv: 96 }, // GQA 8:2, Dv != D
  { B: 1, Hq: 4, Hk: 1, D: 128, Dv: 128 }, // MQA, D = 128
  { B: 2, Hq: 3, Hk: 1, D: 128, Dv: 40 }, // MQA with 3 query heads (odd column counts), Dv < D
];
const SMALL: [number, number][] = [[1, 1], [1, 63], [63, 63], [64, 64], [65, 65], [63, 65], [65, 64], [64, 200], [200, 64], [65, 1]];

describe('attention native vs reference: shapes', () => {
  for (const [T, S] of SMALL) {
    for (const [ci, cfg] of CONFIGS.entries()) {
      for (const causal of [false, true]) {
        const c: Case = { ...cfg, T, S, causal, seed: 100 * T + S + 17 * ci };
        it(id(c), () => void check(c));
      }
    }
  }
  // Long sequences: few heads, so the O(T S D) float64 reference stays quick.
  const LONG: Case[] = [
    { B: 1, T: 1000, S: 1000, Hq: 2, Hk: 1, D: 64, Dv: 64, causal: true, seed: 1 },
    { B: 1, T: 1000, S: 1000, Hq: 1, Hk: 1, D: 64, Dv: 48, causal: false, seed: 2 },
    { B: 1, T: 64, S: 1000, Hq: 8, Hk: 2, D: 64, Dv: 96, causal: true, seed: 3 }, // S > T: a chunk against a cache
    { B: 1, T: 65, S: 1000, Hq: 4, Hk: 1, D: 128, Dv: 128, causal: false, seed: 4 },
    { B: 2, T: 1, S: 1000, Hq: 8, Hk: 2, D: 128, Dv: 128, causal: true, seed: 5 }, // decode, GQA
    // decode over several kv heads per unit (P V key by key) with Dv not a multiple of any vector width
    { B: 1, T: 1, S: 777, Hq: 6, Hk: 3, D: 72, Dv: 41, causal: true, seed: 8 },
    { B: 1, T: 2, S: 300, Hq: 16, Hk: 8, D: 64, Dv: 70, causal: false, seed: 9 },
    // several kv heads per unit and a causal mask: the unit's two runs of keys (see run_unit) both end in
    // keys some query may not see (run B holds the last keys; with S = T, run A too); odd key counts
    { B: 1, T: 2, S: 301, Hq: 16, Hk: 8, D: 64, Dv: 70, causal: true, seed: 10 },
    { B: 2, T: 7, S: 7, Hq: 3, Hk: 3, D: 40, Dv: 24, causal: true, seed: 11 },
    { B: 1, T: 3, S: 131, Hq: 4, Hk: 4, D: 64, Dv: 64, causal: true, seed: 12 },
    { B: 1, T: 1000, S: 65, Hq: 2, Hk: 2, D: 64, Dv: 32, causal: true, seed: 6 }, // S < T: 935 queries see nothing
    { B: 1, T: 1000, S: 63, Hq: 4, Hk: 1, D: 64, Dv: 64, causal: false, seed: 7 },
  ];
  for (const c of LONG) it(id(c), () => void check(c));
});

// ---- 2. options: scale, gates, packed sequences

describe('attention native vs reference: options', () => {
  const base = { B: 1, Hq: 8, Hk: 2, D: 64, Dv: 96 };
  const cases: Case[] = [
    { ...base, T: 65, S: 65, causal: true, scale: 0.37, seed: 11 },
    { ...base, T: 65, S: 65, causal: false, scale: 0, seed: 12 }, // all scores 0: a plain mean of v
    { ...base, T: 65, S: 130, causal: true, gate: 'elementwise', seed: 13 },
    { ...base, T: 65, S: 130, causal: false, gate: 'headwise', seed: 14 },
    { ...base, T: 1, S: 1000, causal: true, gate: 'elementwise', seed: 15 },
    { ...base, T: 1, S: 1000, causal: true, gate: 'headwise', gateDtype: 'bfloat16', seed: 16 },
    { B: 2, T: 64, S: 64, Hq: 4, Hk: 1, D: 128, Dv: 128, causal: true, gate: 'elementwise', gateDtype: 'float16', seed: 17 },
    { B: 2, T: 100, S: 40, Hq: 2, Hk: 1, D: 32, Dv: 16, causal: true, gate: 'elementwise', seed: 18 }, // gated rows that see no key
  ];
  for (const c of cases) it(id(c), () => void check(c));

  it('gateType given explicitly equals the inferred one (both kinds)', () => {
    for (const gate of ['elementwise', 'headwise'] as const) {
      const c: Case = { ...base, T: 20, S: 30, causal: true, gate, seed: 19 };
      const { q, k, v, opts } = inputs(c);
      const a = attention(q, k, v, { ...opts, backend: 'cpu' });
      const b = attention(q, k, v, { ...opts, gateType: gate, backend: 'cpu' });
      expect(sameBytes(a.o, snapshot(b.o)), gate).toBe(true);
    }
  });

  it('a gate multiplies the ungated output by sigmoid(z), elementwise and per head', () => {
    const c: Case = { ...base, T: 33, S: 70, causal: true, seed: 20 };
    const { q, k, v, opts } = inputs(c);
    const plain = attention(q, k, v, { ...opts, backend: 'cpu' }).o.toFloat64();
    const zh = randn([1, 33, 8], { seed: 21, std: 3 });
    const gated = attention(q, k, v, { ...opts, gate: zh, backend: 'cpu' }).o.toFloat64();
    const zd = zh.toFloat64();
    const want = plain.map((x, i) => x / (1 + Math.exp(-zd[Math.floor(i / 96)])));
    expect(relErr(gated, want)).toBeLessThan(1e-6);
  });
});

describe('attention native vs reference: packed sequences (varlen)', () => {
  const cases: Case[] = [
    // Keys packed as the queries (cuSeqlens alone), a zero-length sequence in the middle.
    { B: 1, T: 130, S: 130, Hq: 8, Hk: 2, D: 64, Dv: 96, lens: [63, 0, 65, 1, 1], causal: true, seed: 31 },
    { B: 1, T: 130, S: 130, Hq: 8, Hk: 2, D: 64, Dv: 96, lens: [63, 0, 65, 1, 1], causal: false, seed: 32 },
    // Keys packed on their own (cuSeqlensK): T_n != S_n, zero-length queries and zero-length keys.
    { B: 1, T: 107, S: 418, Hq: 4, Hk: 1, D: 128, Dv: 64, lens: [40, 0, 61, 1, 5], lensK: [50, 7, 61, 0, 300], causal: true, seed: 33 },
    { B: 1, T: 107, S: 418, Hq: 4, Hk: 1, D: 128, Dv: 64, lens: [40, 0, 61, 1, 5], lensK: [50, 7, 61, 0, 300], causal: false, seed: 34 },
    // Decode over packed caches: one query per sequence, caches of different lengths (one empty).
    { B: 1, T: 4, S: 1700, Hq: 8, Hk: 2, D: 64, Dv: 64, lens: [1, 1, 1, 1], lensK: [1000, 0, 600, 100], causal: true, seed: 35, gate: 'headwise' },
    // S_n < T_n in a causal sequence: its first queries see nothing.
    { B: 1, T: 90, S: 45, Hq: 2, Hk: 2, D: 64, Dv: 64, lens: [70, 20], lensK: [20, 25], causal: true, seed: 36, gate: 'elementwise' },
  ];
  for (const c of cases) it(id(c), () => void check(c));
});

// Prefills whose keys are each read by several query blocks: the driver first copies K and V into float32
// rows per (sequence, kv head) (attention.cc, packing) and the units read those. Odd D and Dv, grouped heads,
// half-precision inputs, varlen with a zero-length sequence and one of a single token, S > T.
describe('attention native vs reference: prefills on packed K/V copies', () => {
  const cases: Case[] = [
    { B: 1, T: 558, S: 558, Hq: 4, Hk: 2, D: 40, Dv: 24, lens: [300, 0, 257, 1], causal: true, seed: 51, dtype: 'bfloat16' },
    { B: 1, T: 558, S: 558, Hq: 4, Hk: 2, D: 40, Dv: 24, lens: [300, 0, 257, 1], causal: false, seed: 52, dtype: 'float16' },
    { B: 2, T: 333, S: 333, Hq: 3, Hk: 1, D: 72, Dv: 136, causal: true, seed: 53, gate: 'elementwise' },
    { B: 1, T: 400, S: 1000, Hq: 2, Hk: 2, D: 64, Dv: 64, causal: true, seed: 54 },
  ];
  for (const c of cases) it(id(c), () => void check(c));
});

// ---- 3. the mask: bottom-right alignment, queries that see nothing, masked keys that cannot leak

describe('attention: the causal mask', () => {
  it('S > T: query i sees keys j <= i + S - T (equal to the tail of a square causal call)', () => {
    // The last T queries of a causal T'=S call see exactly what a T-query causal call against S keys sees.
    const S = 300;
    const q = randn([1, S, 4, 64], { seed: 41 });
    const k = randn([1, S, 2, 64], { seed: 42 });
    const v = randn([1, S, 2, 64], { seed: 43 });
    const full = attention(q, k, v, { causal: true, returnLse: true, backend: 'cpu' });
    for (const T of [1, 63, 64, 65, 200]) {
      const tail = slice(q, [undefined, [S - T, S]]);
      const r = attention(tail, k, v, { causal: true, returnLse: true, backend: 'cpu' });
      const want = slice(full.o, [undefined, [S - T, S]]);
      expect(relErr(r.o, want), `T=${T}: o`).toBeLessThan(TOL_SELF);
      expect(relErr(r.lse!, slice(full.lse!, [undefined, undefined, [S - T, S]])), `T=${T}: lse`).toBeLessThan(TOL_SELF);
    }
  });

  it('S < T: the first T - S queries see no key and get o = 0, lse = -Inf (gated too)', () => {
    const [T, S] = [100, 30];
    const q = randn([2, T, 2, 32], { seed: 44 });
    const k = randn([2, S, 1, 32], { seed: 45 });
    const v = randn([2, S, 1, 16], { seed: 46 });
    const gate = randn([2, T, 2, 16], { seed: 47 });
    const r = attention(q, k, v, { causal: true, returnLse: true, gate, backend: 'cpu' });
    const o = r.o.toFloat64();
    const lse = r.lse!.toFloat64();
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < 2; h++) {
          const l = lse[(b * 2 + h) * T + t];
          const row = o.subarray(((b * T + t) * 2 + h) * 16, ((b * T + t) * 2 + h + 1) * 16);
          if (t < T - S) {
            expect(l, `b=${b} t=${t} h=${h}`).toBe(-Infinity);
            expect(row.every((x) => x === 0), `b=${b} t=${t} h=${h}: o = 0`).toBe(true);
          } else {
            expect(Number.isFinite(l)).toBe(true);
          }
        }
      }
    }
  });

  it('masked keys with huge scores and values leave earlier queries exactly as the reference has them', () => {
    // Keys from 100 on have scores ~1e3 and values 1e30; queries before 100 must not see them at all (an
    // exp(-inf) that is not exactly 0, or a max taken over masked scores, would show here).
    const T = 230;
    const q = randn([1, T, 2, 64], { seed: 48 });
    const kd = randn([1, T, 1, 64], { seed: 49 }).toFloat64();
    const vd = randn([1, T, 1, 32], { seed: 50 }).toFloat64();
    for (let j = 100; j < T; j++) {
      for (let d = 0; d < 64; d++) kd[j * 64 + d] *= 100;
      for (let d = 0; d < 32; d++) vd[j * 32 + d] = 1e30;
    }
    const k = tensor(kd, [1, T, 1, 64], 'float32');
    const v = tensor(vd, [1, T, 1, 32], 'float32');
    const r = attention(q, k, v, { causal: true, backend: 'cpu' });
    const ref = attentionReference(q, k, v, { causal: true });
    expectClose(slice(r.o, [undefined, [0, 100]]), slice(ref.o, [undefined, [0, 100]]), TOL, 'queries before the huge keys');
  });
});

// ---- 4. decode: T = 1 against a cache equals the last row of a full causal call

describe('attention: decode (T = 1 against a cache; long caches split their keys across threads)', () => {
  // Each of these is a single unit of work (one query per head: all kv heads go in one unit), so on any
  // number of threads the driver splits its keys into pieces of >= 256 and merges them by log-sum-exp:
  // S = 4097 gives up to 16 pieces, S = 1000 two or three; S = 300 is too short to split, and runs whole.
  const cases = [
    { S: 300, Hq: 8, Hk: 2, D: 64, Dv: 96, seed: 60 },
    { S: 1000, Hq: 8, Hk: 2, D: 64, Dv: 96, seed: 61 },
    { S: 1000, Hq: 4, Hk: 1, D: 128, Dv: 128, seed: 62 },
    { S: 4097, Hq: 2, Hk: 1, D: 64, Dv: 64, seed: 63 },
    { S: 4097, Hq: 8, Hk: 8, D: 64, Dv: 32, seed: 64 },
  ];
  for (const c of cases) {
    it(`S=${c.S},Hq=${c.Hq},Hk=${c.Hk},D=${c.D},Dv=${c.Dv}: decode = last row of the full causal call, and = reference`, () => {
      const q = randn([1, c.S, c.Hq, c.D], { seed: c.seed + 1 });
      const k = randn([1, c.S, c.Hk, c.D], { seed: c.seed + 2 });
      const v = randn([1, c.S, c.Hk, c.Dv], { seed: c.seed + 3 });
      const full = attention(q, k, v, { causal: true, returnLse: true, backend: 'cpu' });
      const last = slice(q, [undefined, [c.S - 1, c.S]]);
      const dec = attention(last, k, v, { causal: true, returnLse: true, backend: 'cpu' });
      const what = `S=${c.S} seed=${c.seed}`;
      expect(relErr(dec.o, slice(full.o, [undefined, [c.S - 1, c.S]])), `${what}: o`).toBeLessThan(TOL_SELF);
      expect(relErr(dec.lse!, slice(full.lse!, [undefined, undefined, [c.S - 1, c.S]])), `${what}: lse`).toBeLessThan(TOL_SELF);
      const ref = attentionReference(last, k, v, { causal: true });
      expectClose(dec.o, ref.o, TOL, `${what}: decode vs reference`);
      expectLse(dec.lse!, ref.lse, TOL, `${what}: decode lse`);
    });
  }
});

describe('attention: decode on 1, 2 and 3 threads (no split, and splits of 2 to 16 pieces)', () => {
  it('S = 1000 and S = 4097 (Hq=8, Hk=2, D=64, Dv=96): each thread count matches the reference', () => {
    try {
      for (const S of [1000, 4097]) {
        const q = randn([1, 1, 8, 64], { seed: 90 + S });
        const k = randn([1, S, 2, 64], { seed: 91 + S });
        const v = randn([1, S, 2, 96], { seed: 92 + S });
        const ref = attentionReference(q, k, v, { causal: true });
        for (const t of [1, 2, 3]) {
          setNumThreads(t);
          const r = attention(q, k, v, { causal: true, returnLse: true, backend: 'cpu' });
          expectClose(r.o, ref.o, TOL, `S=${S} on ${t} threads`);
          expectLse(r.lse!, ref.lse, TOL, `S=${S} lse on ${t} threads`);
        }
      }
    } finally {
      setNumThreads(0);
    }
  });
});

// ---- 5. float16 / bfloat16 inputs

describe('attention native vs reference: float16/bfloat16 inputs (2e-2)', () => {
  const cases: Case[] = [
    { B: 1, T: 65, S: 65, Hq: 8, Hk: 2, D: 64, Dv: 96, causal: true, dtype: 'float16', seed: 71 },
    { B: 2, T: 63, S: 200, Hq: 4, Hk: 1, D: 128, Dv: 128, causal: false, dtype: 'bfloat16', seed: 72, gate: 'elementwise', gateDtype: 'bfloat16' },
    { B: 1, T: 1, S: 1000, Hq: 8, Hk: 2, D: 128, Dv: 128, causal: true, dtype: 'bfloat16', seed: 73 },
    // several kv heads per unit read float16/bfloat16 K and V in place, converting as they load: partial
    // vectors at the end of D and Dv (72 and 41 are multiples of neither 8 nor 16), two runs, a mask
    { B: 1, T: 3, S: 131, Hq: 8, Hk: 4, D: 64, Dv: 48, causal: true, dtype: 'float16', seed: 75 },
    { B: 1, T: 1, S: 777, Hq: 6, Hk: 3, D: 72, Dv: 41, causal: true, dtype: 'bfloat16', seed: 76 },
    { B: 2, T: 2, S: 301, Hq: 8, Hk: 4, D: 40, Dv: 70, causal: true, dtype: 'float16', seed: 77 },
    { B: 1, T: 1, S: 2500, Hq: 16, Hk: 4, D: 128, Dv: 128, causal: true, dtype: 'bfloat16', seed: 78 }, // split across threads
    // batched decode over packed bfloat16 caches (sequence offsets into K and V read in place)
    { B: 1, T: 3, S: 2111, Hq: 6, Hk: 3, D: 40, Dv: 24, lens: [1, 1, 1], lensK: [1500, 11, 600], causal: true, dtype: 'bfloat16', seed: 79 },
    { B: 1, T: 107, S: 418, Hq: 4, Hk: 2, D: 64, Dv: 64, lens: [40, 0, 61, 1, 5], lensK: [50, 7, 61, 0, 300], causal: true, dtype: 'float16', seed: 74, gate: 'headwise', gateDtype: 'float16' },
  ];
  for (const c of cases) it(id(c), () => void check(c));
});

// ---- 6. adversarial scores: the online softmax rescales, nothing overflows

describe('attention: adversarial scores', () => {
  it('the running max grows tile after tile (keys of growing norm, T=S=700, D=64)', () => {
    // Key j scaled by 1 + 4 j / S: the max of every later tile exceeds all before it, so every tile
    // rescales the accumulator (e^(m - m') < 1).
    const S = 700;
    const q = randn([1, S, 2, 64], { seed: 81 });
    const kd = randn([1, S, 1, 64], { seed: 82 }).toFloat64();
    for (let j = 0; j < S; j++) for (let d = 0; d < 64; d++) kd[j * 64 + d] *= 1 + (4 * j) / S;
    const k = tensor(kd, [1, S, 1, 64], 'float32');
    const v = randn([1, S, 1, 64], { seed: 83 });
    for (const causal of [false, true]) {
      const r = attention(q, k, v, { causal, returnLse: true, backend: 'cpu' });
      const ref = attentionReference(q, k, v, { causal });
      expectClose(r.o, ref.o, TOL, `growing keys causal=${causal}: o`);
      expectLse(r.lse!, ref.lse, TOL, `growing keys causal=${causal}`);
    }
  });

  it('scores of +-1e4 (scale 1e3): a one-hot softmax, no NaN and no overflow', () => {
    const q = randn([1, 40, 1, 16], { seed: 84 });
    const k = randn([1, 90, 1, 16], { seed: 85 });
    const v = randn([1, 90, 1, 16], { seed: 86 });
    const r = attention(q, k, v, { scale: 1e3, returnLse: true, backend: 'cpu' });
    const ref = attentionReference(q, k, v, { scale: 1e3 });
    // The winner of each row is the same key; its weight is 1 to within e^(-gap), and lse = the max score.
    expectClose(r.o, ref.o, TOL, 'scale 1e3: o');
    expectLse(r.lse!, ref.lse, 1e-6, 'scale 1e3');
  });
});

// ---- 7. backends and dtypes of the result

describe('attention: backends', () => {
  it("backend 'reference' gives the reference's numbers in v's dtype (and float32 lse)", () => {
    const c: Case = { B: 1, T: 20, S: 25, Hq: 4, Hk: 2, D: 16, Dv: 8, causal: true, seed: 91, gate: 'elementwise' };
    const { q, k, v, opts } = inputs(c);
    const r = attention(q, k, v, { ...opts, returnLse: true, backend: 'reference' });
    const ref = attentionReference(q, k, v, opts);
    expect(r.o.dtype).toBe('float32');
    expect(r.lse!.dtype).toBe('float32');
    expect(relErr(r.o, ref.o)).toBeLessThan(1e-7);
  });

  it('float64 inputs run on the reference and return float64 o', () => {
    const c: Case = { B: 1, T: 10, S: 12, Hq: 2, Hk: 1, D: 8, Dv: 8, causal: false, seed: 92, dtype: 'float64' };
    const { q, k, v, opts } = inputs(c);
    const r = attention(q, k, v, opts);
    expect(r.o.dtype).toBe('float64');
    expect(r.lse).toBeUndefined();
    expect(relErr(r.o, attentionReference(q, k, v, opts).o)).toBe(0);
  });

  it('inputs are never modified', () => {
    const c: Case = { B: 1, T: 70, S: 70, Hq: 8, Hk: 2, D: 64, Dv: 96, causal: true, seed: 93, gate: 'elementwise', dtype: 'bfloat16' };
    const { q, k, v, opts } = inputs(c);
    const snaps = [q, k, v, opts.gate!].map((t) => snapshot(t));
    attention(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
    [q, k, v, opts.gate!].forEach((t, i) => expect(sameBytes(t, snaps[i]), `input ${i}`).toBe(true));
  });

  it('empty calls: B = 0, T = 0, S = 0', () => {
    const e1 = attention(randn([0, 5, 2, 8]), randn([0, 7, 1, 8]), randn([0, 7, 1, 4]), { backend: 'cpu', returnLse: true });
    expect(e1.o.shape).toEqual([0, 5, 2, 4]);
    const e2 = attention(randn([2, 0, 2, 8]), randn([2, 7, 1, 8]), randn([2, 7, 1, 4]), { backend: 'cpu', returnLse: true });
    expect(e2.o.shape).toEqual([2, 0, 2, 4]);
    expect(e2.lse!.shape).toEqual([2, 2, 0]);
    // No keys at all: every query sees nothing, causal or not.
    for (const causal of [false, true]) {
      const e3 = attention(randn([2, 3, 2, 8]), randn([2, 0, 1, 8]), randn([2, 0, 1, 4]), { causal, backend: 'cpu', returnLse: true });
      expect(Array.from(e3.o.data).every((x) => x === 0)).toBe(true);
      expect(Array.from(e3.lse!.data).every((x) => x === -Infinity)).toBe(true);
    }
  });
});

// ---- 8. Promise form and abort

describe('attentionAsync', () => {
  const cases: Case[] = [
    { B: 1, T: 130, S: 130, Hq: 8, Hk: 2, D: 64, Dv: 96, causal: true, seed: 101, gate: 'elementwise' },
    { B: 1, T: 1, S: 4097, Hq: 8, Hk: 2, D: 64, Dv: 64, causal: true, seed: 102 },
    { B: 1, T: 107, S: 418, Hq: 4, Hk: 1, D: 128, Dv: 64, lens: [40, 0, 61, 1, 5], lensK: [50, 7, 61, 0, 300], causal: true, seed: 103, dtype: 'float16' },
  ];
  for (const c of cases) {
    it(`${id(c)}: equals the sync form bit for bit`, async () => {
      const { q, k, v, opts } = inputs(c);
      const s = attention(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
      const a = await attentionAsync(q, k, v, { ...opts, returnLse: true, backend: 'cpu' });
      expect(sameBytes(a.o, snapshot(s.o)), 'o').toBe(true);
      expect(sameBytes(a.lse!, snapshot(s.lse!)), 'lse').toBe(true);
    });
  }

  it('an aborted signal rejects with an AbortError, before the start and while running', async () => {
    const q = randn([1, 1024, 8, 64], { seed: 104 });
    const k = randn([1, 1024, 8, 64], { seed: 105 });
    const v = randn([1, 1024, 8, 64], { seed: 106 });
    const before = new AbortController();
    before.abort();
    await expect(attentionAsync(q, k, v, { causal: true }, { signal: before.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const during = new AbortController();
    const p = attentionAsync(q, k, v, { causal: true }, { signal: during.signal });
    during.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    // A signal that never fires changes nothing.
    const idle = new AbortController();
    const r = await attentionAsync(q, k, v, { causal: true }, { signal: idle.signal });
    expect(r.o.shape).toEqual([1, 1024, 8, 64]);
  });

  it('the worker stops at the cancel flag (raw addon: a set flag rejects with code ABORTED)', async () => {
    const raw = createRequire(import.meta.url)(loadedAddonPath()!) as { attentionAsync(a: object): Promise<void> };
    const F = (n: number) => new Float32Array(n).fill(0.5);
    const args = {
      B: 1, T: 64, S: 640, Hq: 2, Hk: 1, D: 16, Dv: 16, q: F(64 * 2 * 16), k: F(640 * 16), v: F(640 * 16), dtype: 'float32',
      o: F(64 * 2 * 16), gateKind: 'none', causal: false, scale: 0.25, cancel: Int32Array.of(1),
    };
    await expect(raw.attentionAsync(args)).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it('keeps the event loop turning while it runs', async () => {
    const q = randn([1, 1024, 8, 64], { seed: 107 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(attentionAsync(q, q, q, { causal: true }));
    await Promise.all(runs);
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
  });
});

describe('batchInvariant: a sequence gives the same bits alone and batched', () => {
  it('decode over packed caches of 3000/2000/1000 keys: each sequence alone equals its row of the batch', () => {
    const lens = [3000, 2000, 1000];
    const Hq = 4, Hk = 2, D = 32;
    const S = lens.reduce((a, b) => a + b, 0);
    const q = randn([1, 3, Hq, D], { seed: 11 }), k = randn([1, S, Hk, D], { seed: 12 }), v = randn([1, S, Hk, D], { seed: 13 });
    const cuK = [0, 3000, 5000, 6000];
    const batched = attention(q, k, v, { cuSeqlens: [0, 1, 2, 3], cuSeqlensK: cuK, batchInvariant: true });
    const ref = attentionReference(q, k, v, { cuSeqlens: [0, 1, 2, 3], cuSeqlensK: cuK });
    expect(relErr(batched.o, ref.o)).toBeLessThan(1e-5);
    for (let n = 0; n < 3; n++) {
      const kn = k.slice(0, 1).view([S, Hk, D]).slice(cuK[n], cuK[n + 1]).view([1, lens[n], Hk, D]);
      const vn = v.slice(0, 1).view([S, Hk, D]).slice(cuK[n], cuK[n + 1]).view([1, lens[n], Hk, D]);
      const qn = q.view([3, Hq, D]).slice(n, n + 1).view([1, 1, Hq, D]);
      const alone = attention(qn, kn, vn, { batchInvariant: true });
      const row = batched.o.view([3, Hq, D]).slice(n, n + 1);
      expect(Array.from(alone.o.data), `sequence ${n}`).toEqual(Array.from(row.data));
    }
  });
});
