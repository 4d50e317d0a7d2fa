// Non-finite inputs in attention (issue 13.5): native and the float64 reference agree on which outputs are
// NaN or infinite, and the finite ones are close. A NaN in q or k makes the rows whose scores it reaches NaN
// (o and lse), causal or not, on every path (score GEMM and dot products, one key tile or many, a key split
// merged across threads, GQA, packed sequences, float16); a NaN or Inf in v reaches only the outputs that
// weigh that key: a key hidden by the causal mask carries nothing to the queries that cannot see it.
import { describe, expect, it } from 'vitest';
import { attention, attentionReference, randn, rng, setNumThreads, Tensor, tensor, type AttentionOptions, type DType } from '../src/index.js';
import { offsets } from './helpers.js';

interface Case { T: number; S: number; Hq: number; Hk: number; D: number; Dv: number; causal: boolean; lens?: number[]; dtype?: DType }

const id = (c: Case) =>
  `T=${c.T},S=${c.S},Hq=${c.Hq},Hk=${c.Hk},D=${c.D},Dv=${c.Dv}${c.causal ? ' causal' : ''}${c.lens ? ` lens=[${c.lens}]` : ''}${c.dtype ? ` ${c.dtype}` : ''}`;

const SHAPES: Omit<Case, 'causal'>[] = [
  { T: 1, S: 1, Hq: 2, Hk: 2, D: 16, Dv: 16 },
  { T: 1, S: 40, Hq: 8, Hk: 2, D: 16, Dv: 24 }, // decode, several kv heads per unit (dot products)
  { T: 5, S: 5, Hq: 2, Hk: 1, D: 16, Dv: 16 },
  { T: 65, S: 65, Hq: 2, Hk: 2, D: 32, Dv: 16 }, // score GEMM, several tiles, the diagonal tile masked
  { T: 64, S: 300, Hq: 4, Hk: 2, D: 16, Dv: 16 },
  { T: 3, S: 1000, Hq: 2, Hk: 1, D: 16, Dv: 8 },
  { T: 1, S: 4096, Hq: 4, Hk: 4, D: 32, Dv: 32 }, // long decode: the keys split across threads and merged
  { T: 73, S: 73, Hq: 2, Hk: 2, D: 16, Dv: 16, lens: [3, 0, 70] },
  { T: 40, S: 40, Hq: 2, Hk: 1, D: 16, Dv: 16, dtype: 'float16' },
  { T: 3, S: 40, Hq: 4, Hk: 2, D: 32, Dv: 32, dtype: 'bfloat16' }, // bfloat16 decode units (even/odd loads), masked tiles
];

type Kind = 'nan' | '+inf' | '-inf' | 'finite';
const kind = (x: number): Kind => (Number.isNaN(x) ? 'nan' : x === Infinity ? '+inf' : x === -Infinity ? '-inf' : 'finite');

/** Same kind (NaN, +Inf, -Inf, finite) element by element, finite ones within tol * (1 + |want|). */
function expectSameNonFinite(got: Tensor, want: Tensor, tol: number, what: string): number {
  const g = got.toFloat64();
  const w = want.toFloat64();
  expect(g.length, `${what}: length`).toBe(w.length);
  let nonFinite = 0;
  for (let i = 0; i < w.length; i++) {
    const kg = kind(g[i]);
    const kw = kind(w[i]);
    if (kg !== kw) throw new Error(`${what}: element ${i} is ${g[i]}, the reference ${w[i]}`);
    if (kw !== 'finite') nonFinite++;
    else if (!(Math.abs(g[i] - w[i]) <= tol * (1 + Math.abs(w[i])))) throw new Error(`${what}: element ${i} is ${g[i]}, the reference ${w[i]}`);
  }
  return nonFinite;
}

/** A copy of x with `value` at `count` seeded positions. */
function poison(x: Tensor, value: number, count: number, seed: number): Tensor {
  const d = x.toFloat64();
  const next = rng(seed);
  for (let i = 0; i < count; i++) d[Math.floor(next() * d.length)] = value;
  return tensor(d, x.shape, x.dtype);
}

function run(c: Case, where: 'q' | 'k' | 'v', value: number, seed: number): { o: number; lse: number } {
  const B = 1;
  const dtype = c.dtype ?? 'float32';
  let q = randn([B, c.T, c.Hq, c.D], { seed: seed + 1, dtype });
  let k = randn([B, c.S, c.Hk, c.D], { seed: seed + 2, dtype });
  let v = randn([B, c.S, c.Hk, c.Dv], { seed: seed + 3, dtype });
  if (where === 'q') q = poison(q, value, 2, seed + 4);
  if (where === 'k') k = poison(k, value, 2, seed + 4);
  if (where === 'v') v = poison(v, value, 2, seed + 4);
  const opts: AttentionOptions = { causal: c.causal, returnLse: true };
  if (c.lens) opts.cuSeqlens = offsets(c.lens);
  const got = attention(q, k, v, opts);
  const want = attentionReference(q, k, v, opts);
  const tol = dtype === 'float32' ? 1e-4 : 2e-2;
  const what = `${id(c)} ${value} in ${where} (seed ${seed})`;
  return { o: expectSameNonFinite(got.o, want.o, tol, `${what}: o`), lse: expectSameNonFinite(got.lse, want.lse, tol, `${what}: lse`) };
}

describe('NaN and Inf inputs: native agrees with the reference', () => {
  for (const s of SHAPES)
    for (const causal of [false, true]) {
      const c: Case = { ...s, causal };
      it(`${id(c)}: NaN in q, k or v`, () => {
        for (const where of ['q', 'k', 'v'] as const) {
          const r = run(c, where, NaN, 100 + s.T + s.S);
          // The test must see the NaN somewhere (a NaN in a query head of a zero-length sequence cannot be).
          expect(r.o, `${id(c)}: NaN in ${where} reached no output`).toBeGreaterThan(0);
          if (where !== 'v') expect(r.lse, `${id(c)}: NaN in ${where} reached no lse`).toBeGreaterThan(0);
          else expect(r.lse, `${id(c)}: NaN in v changed an lse`).toBe(0);
        }
      });
      it(`${id(c)}: +Inf and -Inf in v; +Inf in q or k`, () => {
        for (const value of [Infinity, -Infinity]) expect(run(c, 'v', value, 200 + s.S).o).toBeGreaterThan(0);
        // With keys of both signs an infinite q or k gives a +Inf score somewhere: NaN (Inf - Inf) there.
        if (s.S >= 40) for (const where of ['q', 'k'] as const) run(c, where, Infinity, 300 + s.S);
      });
    }

  it('the same on one thread and on two (the key split and its merge)', () => {
    const c: Case = { T: 1, S: 4096, Hq: 4, Hk: 4, D: 32, Dv: 32, causal: true };
    try {
      for (const n of [1, 2]) {
        setNumThreads(n);
        for (const where of ['q', 'k', 'v'] as const) run(c, where, NaN, 400 + n);
      }
    } finally {
      setNumThreads(0);
    }
  });
});
