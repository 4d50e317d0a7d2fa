// Native CPU kernels of the delta family against the float64 reference (DESIGN.md 6.1, 7): the shape grid,
// every variant, packed sequences, low-precision inputs, properties, parity, and the decode step.
// Every case names its shape in the test id and its seed in the failure message.
import { describe, expect, it } from 'vitest';
import {
  gatedDeltaRule, gatedDeltaRuleReference, gatedDeltaRuleStep, gatedDeltaRuleStepReference, info,
  kaczmarzDeltaRule, kaczmarzDeltaRuleStep, randn, rng, Tensor, tensor, zeros,
  type DeltaRuleOptions, type DeltaRuleResult, type DeltaStepOptions,
} from '../src/index.js';
import {
  cat, deltaInputs, expectClose, offsets, relErr, reshape, sameBytes, shapeId, slice, snapshot, stepInputs, tokens,
  unitRows, type DeltaCase, type Variant,
} from './helpers.js';

/** DESIGN.md 7: delta family, float32, T <= 4096. */
const TOL_F32 = 1e-4;
/** float16/bfloat16 inputs (and outputs rounded to them). */
const TOL_LOW = 2e-2;
/** Two native runs that differ only in blocking (chunk size, split point, steps vs prefill): float rounding. */
const TOL_SELF = 1e-5;

type Inputs = ReturnType<typeof deltaInputs>;
type Alg = { algorithm: 'chunk' | 'recurrent' | 'auto'; chunkSize?: number };

const ALGS: Alg[] = [
  { algorithm: 'chunk' },
  { algorithm: 'chunk', chunkSize: 16 },
  { algorithm: 'chunk', chunkSize: 32 },
  { algorithm: 'chunk', chunkSize: 48 },
  { algorithm: 'recurrent' },
  { algorithm: 'auto' },
];
const algId = (a: Alg) => (a.algorithm === 'chunk' ? `chunk C=${a.chunkSize ?? 64}` : a.algorithm);

/** The op of the inputs: kaczmarzDeltaRule when they carry eta. */
function native(x: Inputs, extra: Partial<DeltaRuleOptions> = {}): DeltaRuleResult {
  const op = x.eta ? kaczmarzDeltaRule : gatedDeltaRule;
  return op({ ...x, backend: 'cpu', outputFinalState: true, ...extra } as DeltaRuleOptions);
}

/** One reference run per key (the float64 loop is the slow part, so each case computes it once). */
const refCache = new Map<string, { o: Tensor; finalState: Tensor }>();
function reference(key: string, x: Inputs, extra: Partial<DeltaRuleOptions> = {}) {
  let r = refCache.get(key);
  if (!r) {
    r = gatedDeltaRuleReference({ ...x, ...extra } as DeltaRuleOptions);
    refCache.set(key, r);
  }
  return r;
}

function checkAgainstReference(c: DeltaCase, alg: Alg, extra: Partial<DeltaRuleOptions> = {}, tol = TOL_F32) {
  const id = `${shapeId(c)} variant=${c.variant ?? 'gated'} dtype=${c.dtype ?? 'float32'} init=${!!c.initial} ${JSON.stringify(extra)} seed=${c.seed}`;
  const x = deltaInputs(c);
  const ref = reference(id, x, extra);
  const r = native(x, { ...alg, ...extra });
  const what = `${id} ${algId(alg)}`;
  expect(r.o.dtype, `${what}: o has v's dtype`).toBe(x.v.dtype);
  expect(r.finalState!.dtype).toBe('float32');
  expectClose(r.o, ref.o, tol, `${what}: o`);
  expectClose(r.finalState!, ref.finalState, tol, `${what}: finalState`);
}

// ---- 1. the shape grid ----

interface Config { B: number; H: number; HV: number; K: number; V: number; initial: boolean; maxT: number }
const CONFIGS: Config[] = [
  { B: 1, H: 1, HV: 1, K: 32, V: 48, initial: false, maxT: 1000 },
  { B: 2, H: 3, HV: 6, K: 48, V: 24, initial: true, maxT: 1000 }, // HV = 2H, K > V
  { B: 1, H: 1, HV: 4, K: 60, V: 100, initial: true, maxT: 1000 }, // HV = 4H, fla's odd sizes
  { B: 2, H: 3, HV: 3, K: 64, V: 64, initial: false, maxT: 1000 },
  { B: 2, H: 1, HV: 2, K: 128, V: 128, initial: true, maxT: 65 }, // the Qwen3-Next head size
];

describe('gatedDeltaRule native vs reference: shapes', () => {
  for (const T of [1, 63, 64, 65, 1000]) {
    for (const [ci, cfg] of CONFIGS.entries()) {
      if (T > cfg.maxT) continue;
      const c: DeltaCase = { ...cfg, T, seed: 1000 * T + 17 * ci };
      for (const alg of ALGS) {
        it(`${shapeId(c)} init=${cfg.initial} gated, ${algId(alg)}`, () => checkAgainstReference(c, alg));
      }
    }
  }
});

// ---- 2. variants ----

const VARIANT_ALGS: Alg[] = [{ algorithm: 'chunk' }, { algorithm: 'chunk', chunkSize: 16 }, { algorithm: 'recurrent' }];
const VARIANTS: { variant: Variant; extra?: Partial<DeltaRuleOptions>; name: string }[] = [
  { variant: 'gated', name: 'gated (g)' },
  { variant: 'plain', name: 'plain DeltaNet (no g)' },
  { variant: 'decay', name: 'signed decay in [-1, 1] with exact 0, -1 and 1' },
  { variant: 'negeig', name: 'negative eigenvalues (beta in [0, 2], no g)' },
  { variant: 'kla', name: 'KLA (eta, raw keys, qkL2Norm)' },
  { variant: 'kla', extra: { qkL2Norm: false, eps: 0.5 }, name: 'KLA without qkL2Norm, eps 0.5' },
  { variant: 'l2norm', name: 'qkL2Norm on (raw q, k) with g' },
  { variant: 'gated', extra: { qkL2Norm: false }, name: 'qkL2Norm off explicitly' },
  { variant: 'gated-extreme', name: 'g in [-20, 0] with exact zeros' },
  { variant: 'gated', extra: { scale: 0.37 }, name: 'custom scale 0.37' },
  { variant: 'negeig', extra: { scale: 1 }, name: 'negative eigenvalues, scale 1' },
];

describe('gatedDeltaRule native vs reference: variants', () => {
  const shapes = [
    { B: 2, T: 1, H: 3, HV: 6, K: 48, V: 24 },
    { B: 2, T: 65, H: 3, HV: 6, K: 48, V: 24 },
    { B: 1, T: 200, H: 1, HV: 2, K: 60, V: 100 },
  ];
  for (const [vi, v] of VARIANTS.entries()) {
    for (const [si, s] of shapes.entries()) {
      const c: DeltaCase = { ...s, variant: v.variant, initial: si !== 2, seed: 50_000 + 100 * vi + si };
      for (const alg of VARIANT_ALGS) {
        it(`${shapeId(c)} ${v.name}, ${algId(alg)}`, () => checkAgainstReference(c, alg, v.extra));
      }
    }
  }

  it('signed decay: a chunk of all zeros, a chunk of all -1 and alternating signs (B=1,T=200,H=1,HV=2,K=32,V=16)', () => {
    const c: DeltaCase = { B: 1, T: 200, H: 1, HV: 2, K: 32, V: 16, variant: 'decay', initial: true, seed: 51_000 };
    const x = deltaInputs(c);
    const d = x.decay!.toFloat64();
    for (let t = 0; t < 200; t++) {
      for (let j = 0; j < 2; j++) {
        const i = t * 2 + j;
        if (t < 64) d[i] = 0; // the state is wiped every token of the first chunk
        else if (t < 128) d[i] = -1; // pure sign flips
        else d[i] = t % 2 ? -0.9 : 0.95;
      }
    }
    const xd = { ...x, decay: tensor(d, x.decay!.shape, 'float32') };
    const ref = gatedDeltaRuleReference(xd);
    for (const alg of [...VARIANT_ALGS, { algorithm: 'chunk' as const, chunkSize: 48 }]) {
      const r = native(xd, alg);
      expectClose(r.o, ref.o, TOL_F32, `${shapeId(c)} structured decay ${algId(alg)} seed=${c.seed}: o`);
      expectClose(r.finalState!, ref.finalState, TOL_F32, `${shapeId(c)} structured decay ${algId(alg)}: finalState`);
    }
  });
});

// ---- 2b. adversarial decays and the longest sequences of the bound ----

describe('gatedDeltaRule native vs reference: adversarial g, long T', () => {
  // Valid g is any finite value <= 0. The reference multiplies by exp(g_t) token by token; a chunked
  // algorithm that forms exp(G_i - G_j) from float32 prefix sums G loses the small decays that follow a
  // huge one in the same chunk (G absorbs them), and G overflowing to -Inf gives -Inf - -Inf = NaN.
  const c: DeltaCase = { B: 1, T: 130, H: 1, HV: 2, K: 32, V: 32, initial: true, seed: 52_000 };
  const gOf = (f: (t: number) => number) => tensor(Float64Array.from({ length: 130 * 2 }, (_, i) => f(i >> 1)), [1, 130, 2], 'float32');
  const cases: [string, Tensor][] = [
    ['g = -3e38 on every token (the state is wiped each token)', gOf(() => -3e38)],
    ['g = -1e30 on the first token of each chunk, -0.01 after', gOf((t) => (t % 64 === 0 ? -1e30 : -0.01))],
    ['g = -1e4 on the first token of each chunk, -0.01 after', gOf((t) => (t % 64 === 0 ? -1e4 : -0.01))],
    ['g = -100 on every token', gOf(() => -100)],
    ['g = -50 on the first token of each chunk, -0.01 after', gOf((t) => (t % 64 === 0 ? -50 : -0.01))],
  ];
  for (const [name, g] of cases) {
    for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'chunk', chunkSize: 16 }, { algorithm: 'recurrent' }] as Alg[]) {
      it(`${shapeId(c)} ${name}, ${algId(alg)}`, () => {
        const x = { ...deltaInputs(c), g };
        const ref = reference(`adversarial g ${name}`, x);
        const r = native(x, alg);
        expectClose(r.o, ref.o, TOL_F32, `${name} ${algId(alg)} seed=${c.seed}: o`);
        expectClose(r.finalState!, ref.finalState, TOL_F32, `${name} ${algId(alg)}: finalState`);
      });
    }
  }

  for (const variant of ['plain', 'gated', 'negeig'] as Variant[]) {
    const cl: DeltaCase = { B: 1, T: 4096, H: 1, HV: 2, K: 32, V: 32, variant, initial: true, seed: 53_000 };
    for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'recurrent' }] as Alg[]) {
      it(`${shapeId(cl)} ${variant} (the longest T of the 1e-4 bound), ${algId(alg)}`, () => checkAgainstReference(cl, alg));
    }
  }
});

// ---- 3. packed sequences ----

describe('gatedDeltaRule native vs reference: cuSeqlens', () => {
  const packs = [
    { lens: [37, 0, 130, 64, 1, 100], H: 2, HV: 4, K: 32, V: 48 },
    { lens: [0, 5, 0], H: 1, HV: 2, K: 16, V: 8 },
    { lens: [65, 63, 129], H: 3, HV: 3, K: 48, V: 24 },
  ];
  for (const [pi, p] of packs.entries()) {
    for (const variant of ['gated', 'decay', 'kla'] as Variant[]) {
      const T = p.lens.reduce((a, b) => a + b, 0);
      const c: DeltaCase = { B: 1, T, H: p.H, HV: p.HV, K: p.K, V: p.V, lens: p.lens, variant, initial: true, seed: 60_000 + 10 * pi };
      for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'chunk', chunkSize: 16 }, { algorithm: 'recurrent' }, { algorithm: 'auto' }] as Alg[]) {
        it(`lens=[${p.lens}] ${shapeId(c)} ${variant}, ${algId(alg)}: equals the reference and separate runs`, () => {
          const what = `lens=[${p.lens}] ${shapeId(c)} ${variant} ${algId(alg)} seed=${c.seed}`;
          const x = deltaInputs(c);
          const cu = offsets(p.lens);
          const ref = reference(`packed ${what}`, x, { cuSeqlens: cu });
          const r = native(x, { ...alg, cuSeqlens: cu });
          const N = p.lens.length;
          expect(r.finalState!.shape).toEqual([N, p.HV, p.K, p.V]);
          expectClose(r.o, ref.o, TOL_F32, `${what}: o`);
          expectClose(r.finalState!, ref.finalState, TOL_F32, `${what}: finalState`);
          // Each sequence alone, with its own initial state, gives the same answer.
          const outs: Tensor[] = [];
          for (let n = 0; n < N; n++) {
            const one = { ...tokens(x, cu[n], cu[n + 1]), initialState: slice(x.initialState!, [[n, n + 1]]) };
            const rn = native(one, alg.algorithm === 'auto' ? { algorithm: 'chunk' } : alg);
            outs.push(rn.o);
            const fsN = slice(r.finalState!, [[n, n + 1]]);
            if (p.lens[n] === 0) {
              // A zero-length sequence passes its initial state through untouched.
              expect(sameBytes(fsN, snapshot(one.initialState)), `${what}: zero-length sequence ${n} keeps its state`).toBe(true);
            }
            expectClose(fsN, rn.finalState!, TOL_SELF, `${what}: finalState of sequence ${n} vs a separate run`);
          }
          expectClose(r.o, cat(outs, 1), TOL_SELF, `${what}: o vs separate runs`);
        });
      }
    }
  }

  it('cuSeqlens as a number[] equals the Int32Array form; T = 0 with one empty sequence', () => {
    const c: DeltaCase = { B: 1, T: 70, H: 1, HV: 2, K: 16, V: 16, initial: true, lens: [30, 40], seed: 61_000 };
    const x = deltaInputs(c);
    const a = native(x, { cuSeqlens: [0, 30, 70] });
    const b = native(x, { cuSeqlens: Int32Array.from([0, 30, 70]) });
    expect(relErr(a.o, b.o)).toBe(0);
    expect(relErr(a.finalState!, b.finalState!)).toBe(0);
    const e = deltaInputs({ B: 1, T: 0, H: 1, HV: 2, K: 16, V: 16, initial: true, lens: [0], seed: 61_001 });
    const r = native(e, { cuSeqlens: [0, 0] });
    expect(r.o.shape).toEqual([1, 0, 2, 16]);
    expect(sameBytes(r.finalState!, snapshot(e.initialState!))).toBe(true);
  });

  it('T = 0 without cuSeqlens: empty o, finalState = initialState (B=2,T=0,H=3,HV=6,K=48,V=24)', () => {
    const x = deltaInputs({ B: 2, T: 0, H: 3, HV: 6, K: 48, V: 24, initial: true, seed: 61_002 });
    for (const algorithm of ['chunk', 'recurrent', 'auto'] as const) {
      const r = native(x, { algorithm });
      expect(r.o.shape).toEqual([2, 0, 6, 24]);
      expect(sameBytes(r.finalState!, snapshot(x.initialState!)), algorithm).toBe(true);
      const z = native({ ...x, initialState: undefined }, { algorithm });
      expect(Array.from(z.finalState!.data).every((v) => v === 0), `${algorithm}: zero state`).toBe(true);
    }
  });
});

// ---- 4. float16 / bfloat16 inputs ----

describe('gatedDeltaRule native vs reference: float16 / bfloat16 inputs', () => {
  const shapes = [
    { B: 2, T: 63, H: 3, HV: 6, K: 48, V: 24 },
    { B: 1, T: 200, H: 1, HV: 4, K: 60, V: 100 },
  ];
  for (const dtype of ['float16', 'bfloat16'] as const) {
    for (const [si, s] of shapes.entries()) {
      for (const variant of ['gated', 'negeig', 'l2norm', 'decay', 'kla'] as Variant[]) {
        const c: DeltaCase = { ...s, dtype, variant, initial: si === 0, seed: 70_000 + si * 10 };
        for (const alg of VARIANT_ALGS) {
          it(`${dtype} ${shapeId(c)} ${variant}, ${algId(alg)}`, () => checkAgainstReference(c, alg, {}, TOL_LOW));
        }
      }
    }
    it(`${dtype} beta and g too (B=2,T=65,H=1,HV=2,K=32,V=48)`, () => {
      const c: DeltaCase = { B: 2, T: 65, H: 1, HV: 2, K: 32, V: 48, dtype, initial: true, seed: 71_000 };
      const x = deltaInputs(c);
      const xl = { ...x, beta: x.beta!.astype(dtype), g: x.g!.astype(dtype) };
      const ref = gatedDeltaRuleReference(xl);
      for (const alg of VARIANT_ALGS) {
        const r = native(xl, alg);
        expect(r.o.dtype).toBe(dtype);
        expectClose(r.o, ref.o, TOL_LOW, `${dtype} gates ${shapeId(c)} ${algId(alg)} seed=${c.seed}: o`);
        expectClose(r.finalState!, ref.finalState, TOL_LOW, `${dtype} gates ${algId(alg)}: finalState`);
      }
    });
  }
});

// ---- 5. properties of the native kernels ----

describe('gatedDeltaRule native: properties', () => {
  const base = { B: 2, T: 300, H: 3, HV: 6, K: 48, V: 24 };

  for (const variant of ['gated', 'decay', 'plain'] as Variant[]) {
    it(`chunk size does not change the answer (${shapeId(base)}, ${variant})`, () => {
      const c: DeltaCase = { ...base, variant, initial: true, seed: 80_000 };
      const x = deltaInputs(c);
      const r64 = native(x, { algorithm: 'chunk', chunkSize: 64 });
      const rec = native(x, { algorithm: 'recurrent' });
      expectClose(rec.o, r64.o, TOL_SELF, `${variant} recurrent vs chunk 64 seed=${c.seed}`);
      for (const C of [1, 2, 7, 16, 32, 48, 100, 128, 256]) {
        const r = native(x, { algorithm: 'chunk', chunkSize: C });
        expectClose(r.o, r64.o, TOL_SELF, `${variant} chunk ${C} vs 64 seed=${c.seed}: o`);
        expectClose(r.finalState!, r64.finalState!, TOL_SELF, `${variant} chunk ${C} vs 64: finalState`);
      }
    });
  }

  for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'chunk', chunkSize: 48 }, { algorithm: 'recurrent' }] as Alg[]) {
    for (const variant of ['gated', 'kla'] as Variant[]) {
      it(`splitting and carrying the state equals the whole run (${shapeId(base)}, ${variant}, ${algId(alg)})`, () => {
        const c: DeltaCase = { ...base, variant, initial: true, seed: 81_000 };
        const x = deltaInputs(c);
        const whole = native(x, alg);
        for (const t0 of [0, 1, 64, 100, 257, 300]) {
          const a = native({ ...tokens(x, 0, t0), initialState: x.initialState }, alg);
          const b = native({ ...tokens(x, t0, 300), initialState: a.finalState }, alg);
          expectClose(cat([a.o, b.o], 1), whole.o, TOL_SELF, `split at ${t0} ${algId(alg)} seed=${c.seed}: o`);
          expectClose(b.finalState!, whole.finalState!, TOL_SELF, `split at ${t0}: finalState`);
        }
      });
    }
  }

  for (const variant of ['gated', 'decay', 'plain', 'negeig', 'kla', 'l2norm'] as Variant[]) {
    it(`T decode steps (state in place) equal one prefill (B=2,T=40,H=2,HV=4,K=32,V=16, ${variant})`, () => {
      const c: DeltaCase = { B: 2, T: 40, H: 2, HV: 4, K: 32, V: 16, variant, initial: true, seed: 82_000 };
      const x = deltaInputs(c);
      const init = snapshot(x.initialState!);
      const whole = native(x, { algorithm: 'chunk', chunkSize: 16 });
      const state = tensor(Float32Array.from(x.initialState!.data as Float32Array), x.initialState!.shape);
      const outs: Tensor[] = [];
      const stepOp = x.eta ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep;
      for (let t = 0; t < 40; t++) {
        const s = stepInputs({ ...x, initialState: undefined }, t);
        const r = stepOp({ ...s, state, backend: 'cpu' } as DeltaStepOptions);
        expect(r.o.shape).toEqual([2, 4, 16]);
        outs.push(reshape(r.o, [2, 1, 4, 16]));
      }
      expect(sameBytes(x.initialState!, init), 'the prefill leaves initialState alone').toBe(true);
      expectClose(cat(outs, 1), whole.o, TOL_SELF, `${variant} steps vs prefill seed=${c.seed}: o`);
      expectClose(state, whole.finalState!, TOL_SELF, `${variant} steps vs prefill: state`);
    });
  }

  for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'chunk', chunkSize: 48 }, { algorithm: 'recurrent' }] as Alg[]) {
    it(`beta = 0 with no g leaves the state exactly unchanged (B=2,T=130,H=1,HV=2,K=48,V=24, ${algId(alg)})`, () => {
      const c: DeltaCase = { B: 2, T: 130, H: 1, HV: 2, K: 48, V: 24, variant: 'plain', initial: true, seed: 83_000 };
      const x = { ...deltaInputs(c), beta: zeros([2, 130, 2]) };
      const r = native(x, alg);
      expect(sameBytes(r.finalState!, snapshot(x.initialState!)), `${algId(alg)} seed=${c.seed}`).toBe(true);
      expectClose(r.o, gatedDeltaRuleReference(x).o, TOL_F32, `beta=0 ${algId(alg)}: o = S0^T (scale q)`);
      // KLA with eta = 0 too.
      const k = kaczmarzDeltaRule({ ...x, beta: undefined, eta: zeros([2, 130, 2]), backend: 'cpu', outputFinalState: true, ...alg });
      expect(sameBytes(k.finalState!, snapshot(x.initialState!)), `eta=0 ${algId(alg)}`).toBe(true);
    });
  }

  it('grouped heads: each v-head equals a single-head run on its q/k head (B=2,T=70,H=2,HV=4,K=32,V=48)', () => {
    const c: DeltaCase = { B: 2, T: 70, H: 2, HV: 4, K: 32, V: 48, initial: true, seed: 84_000 };
    const x = deltaInputs(c);
    for (const alg of VARIANT_ALGS) {
      const r = native(x, alg);
      for (let j = 0; j < 4; j++) {
        const h = Math.floor(j / 2);
        const one = native({
          q: slice(x.q, [undefined, undefined, [h, h + 1]]),
          k: slice(x.k, [undefined, undefined, [h, h + 1]]),
          v: slice(x.v, [undefined, undefined, [j, j + 1]]),
          beta: slice(x.beta!, [undefined, undefined, [j, j + 1]]),
          g: slice(x.g!, [undefined, undefined, [j, j + 1]]),
          initialState: slice(x.initialState!, [undefined, [j, j + 1]]),
        } as Inputs, alg);
        expectClose(slice(r.o, [undefined, undefined, [j, j + 1]]), one.o, TOL_SELF, `v-head ${j} ${algId(alg)} seed=${c.seed}`);
        expectClose(slice(r.finalState!, [undefined, [j, j + 1]]), one.finalState!, TOL_SELF, `v-head ${j} state`);
      }
    }
  });

  it('threads and SIMD level in use are reported (sanity for the runs above)', () => {
    const i = info();
    expect(i.backend).toBe('cpu');
    expect(['avx512', 'avx2', 'portable']).toContain(i.simd);
  });
});

// ---- 6. parity (Grazzi et al.) on the native kernels ----

describe('parity with negative eigenvalues, native', () => {
  // As in reference-delta.test.ts: K = 2, V = 1, S0 = e1, v = 0, q = e1, scale 1, key e1 for bit 1, e2 for
  // bit 0. With beta = 2 each bit-1 token reflects S[0], so o_t = (-1)^(parity of bits 1..t), exactly.
  const next = rng(2024);
  const bits: number[] = Array.from({ length: 1000 }, () => (next() < 0.5 ? 1 : 0));
  const want = (() => {
    let p = 0;
    return bits.map((b) => ((p ^= b) ? -1 : 1));
  })();

  function parityInputs(beta1: number, beta0: number, bs = bits) {
    const T = bs.length;
    const k = new Float32Array(T * 2);
    const q = new Float32Array(T * 2);
    const beta = new Float32Array(T);
    bs.forEach((bit, t) => {
      k[t * 2 + (bit ? 0 : 1)] = 1;
      q[t * 2] = 1;
      beta[t] = bit ? beta1 : beta0;
    });
    return {
      q: tensor(q, [1, T, 1, 2]), k: tensor(k, [1, T, 1, 2]), v: zeros([1, T, 1, 1]),
      beta: tensor(beta, [1, T, 1]), initialState: tensor([1, 0], [1, 1, 2, 1]), scale: 1,
    };
  }

  for (const alg of [...VARIANT_ALGS, { algorithm: 'chunk', chunkSize: 256 } as Alg]) {
    it(`beta = 2 with unit keys tracks the parity of 1000 random bits exactly (B=1,T=1000,H=1,HV=1,K=2,V=1, ${algId(alg)})`, () => {
      const r = gatedDeltaRule({ ...parityInputs(2, 2), backend: 'cpu', outputFinalState: true, ...alg });
      const o = r.o.data;
      let wrong = 0;
      let first = -1;
      for (let t = 0; t < 1000; t++) {
        if (o[t] !== want[t]) {
          wrong++;
          if (first < 0) first = t;
        }
      }
      expect(wrong, `${algId(alg)}: ${wrong} tokens off, first at t=${first} (o=${o[first]}, want ${want[first]}); seed 2024`).toBe(0);
      expect(r.finalState!.data[0]).toBe(want[999]);
    });
  }

  it('the same through 1000 native decode steps (state in place)', () => {
    const state = tensor([1, 0], [1, 1, 2, 1]);
    for (let t = 0; t < 1000; t++) {
      const r = gatedDeltaRuleStep({
        q: tensor([1, 0], [1, 1, 2]), k: tensor(bits[t] ? [1, 0] : [0, 1], [1, 1, 2]), v: zeros([1, 1, 1]),
        beta: tensor([2], [1, 1]), state, scale: 1, backend: 'cpu',
      });
      if (r.o.data[0] !== want[t]) expect(r.o.data[0], `step ${t}`).toBe(want[t]);
    }
  });

  it('beta restricted to [0, 1] cannot track parity with this construction (native, chunk and recurrent)', () => {
    const grid = [0, 0.25, 0.5, 0.75, 1];
    const ones = new Array<number>(50).fill(1);
    for (const alg of [{ algorithm: 'chunk' }, { algorithm: 'recurrent' }] as Alg[]) {
      for (const b1 of grid) {
        for (const b0 of grid) {
          const oOnes = gatedDeltaRule({ ...parityInputs(b1, b0, ones), backend: 'cpu', ...alg }).o.data;
          expect(Array.from(oOnes).every((x) => x >= 0), `beta=${b1}/${b0} ${algId(alg)}: readout never negative`).toBe(true);
          const o = gatedDeltaRule({ ...parityInputs(b1, b0), backend: 'cpu', ...alg }).o.data;
          const wrong = want.filter((w, t) => Math.sign(o[t]) !== w).length;
          expect(wrong, `beta=${b1}/${b0} ${algId(alg)}`).toBeGreaterThan(0);
        }
      }
    }
  });
});

// ---- 7. decode step vs the step reference ----

describe('gatedDeltaRuleStep native vs reference', () => {
  const stepVariants: { name: string; variant: Variant; drop?: 'g' }[] = [
    { name: 'g', variant: 'gated' },
    { name: 'decay', variant: 'decay' },
    { name: 'none', variant: 'plain' },
    { name: 'negative eigenvalues', variant: 'negeig' },
    { name: 'KLA', variant: 'kla' },
    { name: 'qkL2Norm', variant: 'l2norm' },
  ];
  for (const N of [1, 5]) {
    for (const H of [1, 2]) {
      for (const [K, V] of [[64, 64], [32, 16]]) {
        for (const [vi, sv] of stepVariants.entries()) {
          const HV = 2 * H;
          const seed = 90_000 + 1000 * N + 100 * H + 10 * K + vi;
          it(`N=${N},H=${H},HV=${HV},K=${K},V=${V} ${sv.name}`, () => {
            const x = deltaInputs({ B: N, T: 1, H, HV, K, V, variant: sv.variant, seed });
            const s = stepInputs({ ...x, initialState: undefined }, 0);
            const state = randn([N, HV, K, V], { seed: seed + 9, std: 0.5 });
            const ref = gatedDeltaRuleStepReference({ ...s, state } as DeltaStepOptions);
            const data = state.data;
            const op = x.eta ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep;
            const r = op({ ...s, state, backend: 'cpu' } as DeltaStepOptions);
            expect(state.data).toBe(data); // updated in place, same array
            expect(r.o.shape).toEqual([N, HV, V]);
            expect(r.o.dtype).toBe('float32');
            expectClose(r.o, ref.o, TOL_F32, `step N=${N},H=${H},K=${K},V=${V} ${sv.name} seed=${seed}: o`);
            expectClose(state, ref.state, TOL_F32, `step ${sv.name} seed=${seed}: state`);
          });
        }
      }
    }
  }

  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`${dtype} q, k, v (N=3,H=2,HV=4,K=32,V=48)`, () => {
      const x = deltaInputs({ B: 3, T: 1, H: 2, HV: 4, K: 32, V: 48, dtype, seed: 95_000 });
      const s = stepInputs({ ...x, initialState: undefined }, 0);
      const state = randn([3, 4, 32, 48], { seed: 95_001, std: 0.5 });
      const ref = gatedDeltaRuleStepReference({ ...s, state } as DeltaStepOptions);
      const r = gatedDeltaRuleStep({ ...s, state, backend: 'cpu' } as DeltaStepOptions);
      expect(r.o.dtype).toBe(dtype);
      expectClose(r.o, ref.o, TOL_LOW, `${dtype} step seed=95000: o`);
      expectClose(state, ref.state, TOL_F32, `${dtype} step: state (float32, from the same rounded inputs)`);
    });
  }

  it('custom scale and unnormalised keys with small beta (N=2,H=1,HV=2,K=60,V=100)', () => {
    const q = randn([2, 1, 60], { seed: 96_000 });
    const k = unitRows(randn([2, 1, 60], { seed: 96_001 }));
    const s = {
      q, k, v: randn([2, 2, 100], { seed: 96_002 }), beta: tensor([0.1, 0.9, 1.7, 0], [2, 2]),
      g: tensor([-0.5, 0, -3, -0.01], [2, 2]), scale: 2.5,
    };
    const state = randn([2, 2, 60, 100], { seed: 96_003 });
    const ref = gatedDeltaRuleStepReference({ ...s, state });
    const r = gatedDeltaRuleStep({ ...s, state, backend: 'cpu' });
    expectClose(r.o, ref.o, TOL_F32, 'custom scale step seed=96000: o');
    expectClose(state, ref.state, TOL_F32, 'custom scale step: state');
  });
});
