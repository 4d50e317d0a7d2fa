// The delta-state pool (issue 14 part 2): state [slots, HV, K, V] with stateIndices / hasInitialState, in
// place; bfloat16 pools; checkpoints; speculative verify (intermediateStates, updateState: false); in-kernel
// gating. Every native result against the float64 reference, and the properties of the issue: a pool with
// shuffled slots equals the contiguous call, checkpoints equal prefills cut there, intermediateStates[n, i]
// equals i + 1 steps, gating equals precomputed g / beta. Then the bad input, nothing written on error.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  deltaCheckpointLayout, deltaCommitStates, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleReference, gatedDeltaRuleStep, gatedDeltaRuleStepAsync,
  gatedDeltaRuleStepReference, kaczmarzDeltaRule, kaczmarzDeltaRuleStep, randn, rand, SeqkernError, Tensor, tensor, zeros,
  type DType, type DeltaRuleOptions, type DeltaStepOptions,
} from '../src/index.js';
import {
  deltaInputs, expectClose, expectSameBits, expectSeqkernError, offsets, relErr, reshape, sameBytes, slice, snapshot, stepInputs, tokens,
  type Variant,
} from './helpers.js';

const TOL_F32 = 1e-4;
/** Two native runs doing the same float32 work in another arrangement (slots, segments). */
const TOL_SELF = 1e-6;
/** bfloat16 pools: one rounding of the state to bfloat16 (2^-8 relative), either side of a rounding boundary. */
const TOL_BF16 = 6e-3;

const H = 2, HV = 4, K = 24, V = 20;
const per = HV * K * V;

type Inputs = ReturnType<typeof deltaInputs>;

/** A pool of `slots` random states in `dtype`. */
function makePool(slots: number, dtype: 'float32' | 'bfloat16', seed: number): Tensor {
  return randn([slots, HV, K, V], { seed, std: 0.5 }).to(dtype);
}

/** The slot rows of `pool` as a contiguous float32 [N, HV, K, V] (zeros for padding or hasInitialState 0). */
function gatherRows(pool: Tensor, idx: Int32Array, has?: Uint8Array): Tensor {
  const f = pool.to('float32').data as Float32Array;
  const out = zeros([idx.length, HV, K, V]);
  idx.forEach((s, n) => {
    if (s >= 0 && (!has || has[n])) out.data.set(f.subarray(s * per, (s + 1) * per), n * per);
  });
  return out;
}

/** Row r of a [R, HV, K, V] (or [N, Tq, HV, K, V]) tensor, same dtype. */
const row = (t: Tensor, r: number): Tensor => new Tensor(t.data.slice(r * per, (r + 1) * per), [HV, K, V], t.dtype);

/** Packed inputs for lens (B = 1), or B rows of T tokens. */
function packed(lens: number[], seed: number, variant: Variant = 'gated'): Inputs & { cuSeqlens: Int32Array } {
  const T = lens.reduce((a, b) => a + b, 0);
  return { ...deltaInputs({ B: 1, T, H, HV, K, V, seed, variant }), cuSeqlens: offsets(lens) };
}

const op = (x: { eta?: unknown }) => (x.eta ? kaczmarzDeltaRule : gatedDeltaRule);
const stepOp = (x: { eta?: unknown }) => (x.eta ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep);
const withoutInit = <T extends { initialState?: unknown }>(x: T): Omit<T, 'initialState'> => {
  const { initialState, ...rest } = x;
  void initialState;
  return rest;
};

describe('pool prefill: shuffled slots equal the contiguous call', () => {
  const cases: { lens: number[]; idx: number[]; has: number[]; variant: Variant; alg: 'chunk' | 'recurrent'; chunkSize?: number }[] = [
    { lens: [1, 63, 65, 0, 130], idx: [5, -1, 0, 3, 6], has: [1, 1, 0, 1, 1], variant: 'gated', alg: 'chunk' },
    { lens: [1, 63, 65, 0, 130], idx: [5, -1, 0, 3, 6], has: [1, 1, 0, 1, 1], variant: 'gated', alg: 'recurrent' },
    { lens: [7, 33, 64], idx: [2, 0, 6], has: [0, 1, 1], variant: 'kla', alg: 'chunk', chunkSize: 16 },
    { lens: [40, 1, 17], idx: [-1, 4, 1], has: [1, 1, 1], variant: 'negeig', alg: 'recurrent' },
  ];
  for (const c of cases) {
    it(`lens=[${c.lens}] slots=[${c.idx}] has=[${c.has}] ${c.variant} ${c.alg}`, () => {
      const x = withoutInit(packed(c.lens, 11));
      const xs = c.variant === 'gated' ? x : withoutInit(packed(c.lens, 11, c.variant));
      const idx = Int32Array.from(c.idx), has = Uint8Array.from(c.has);
      const pool = makePool(7, 'float32', 99);
      const before = pool.astype('float32');
      const alg = { algorithm: c.alg, chunkSize: c.chunkSize };
      const contiguous = op(xs)({ ...xs, ...alg, initialState: gatherRows(pool, idx, has), outputFinalState: true } as DeltaRuleOptions);
      const r = op(xs)({ ...xs, ...alg, state: pool, stateIndices: idx, hasInitialState: has } as DeltaRuleOptions);
      expect(r.finalState, 'no finalState is allocated').toBeUndefined();
      const cu = offsets(c.lens);
      const o = r.o.toFloat64(), oc = contiguous.o.toFloat64();
      c.idx.forEach((s, n) => {
        for (let t = cu[n]; t < cu[n + 1]; t++) {
          for (let e = t * HV * V; e < (t + 1) * HV * V; e++) {
            const want = s < 0 ? 0 : oc[e];
            if (s < 0 ? o[e] !== 0 : !(Math.abs(o[e] - want) <= TOL_SELF * (1 + Math.abs(want)))) {
              expect.fail(`sequence ${n} (slot ${s}) token ${t}: o[${e}] = ${o[e]}, want ${want}`);
            }
          }
        }
      });
      for (let s = 0; s < 7; s++) {
        const n = c.idx.indexOf(s);
        if (n < 0) expectSameBits(row(pool, s), row(before, s), `slot ${s} (no live sequence) untouched`);
        else expectClose(row(pool, s), row(contiguous.finalState!, n), TOL_SELF, `slot ${s} = final state of sequence ${n}`);
      }
      // And the reference, pool in pool out.
      const ref = gatedDeltaRuleReference({ ...xs, state: before, stateIndices: idx, hasInitialState: has } as DeltaRuleOptions);
      expectClose(r.o, ref.o, TOL_F32, 'o vs reference');
      expectClose(pool, ref.state!, TOL_F32, 'pool vs reference');
    });
  }

  it('without stateIndices sequence n uses slot n; the reference backend writes the pool the same way', () => {
    const x = withoutInit(packed([5, 70], 3));
    const pool = makePool(3, 'float32', 4);
    const pool2 = pool.astype('float32');
    const r = gatedDeltaRule({ ...x, state: pool });
    const rr = gatedDeltaRule({ ...x, state: pool2, backend: 'reference' });
    expectClose(r.o, rr.o, TOL_F32, 'o');
    expectClose(pool, pool2, TOL_F32, 'pool');
    expectSameBits(row(pool, 2), row(makePool(3, 'float32', 4), 2), 'slot 2 untouched');
  });
});

describe('pool step: shuffled slots equal the contiguous step', () => {
  for (const variant of ['gated', 'kla', 'decay'] as Variant[]) {
    it(`N=5, slots [3,-1,6,0,2] of 7, ${variant}`, () => {
      const x = withoutInit(deltaInputs({ B: 5, T: 1, H, HV, K, V, seed: 21, variant }));
      const s = stepInputs(x, 0);
      const idx = Int32Array.from([3, -1, 6, 0, 2]);
      const pool = makePool(7, 'float32', 5);
      const before = pool.astype('float32');
      const contiguousState = gatherRows(pool, idx);
      const oc = stepOp(s)({ ...s, state: contiguousState } as DeltaStepOptions).o;
      const out = tensor(new Float32Array(5 * HV * V).fill(7), [5, HV, V]); // o of the padding row is set to 0
      const o = stepOp(s)({ ...s, state: pool, stateIndices: idx, out } as DeltaStepOptions).o;
      const ref = gatedDeltaRuleStepReference({ ...s, state: before, stateIndices: idx } as DeltaStepOptions);
      expectClose(o, ref.o, TOL_F32, 'o vs reference');
      expectClose(pool, ref.state, TOL_F32, 'pool vs reference');
      for (let n = 0; n < 5; n++) {
        const got = o.data.subarray(n * HV * V, (n + 1) * HV * V), want = oc.data.subarray(n * HV * V, (n + 1) * HV * V);
        if (idx[n] < 0) expect(Array.from(got).every((e) => e === 0), `padding row ${n} of o is 0`).toBe(true);
        else expectSameBits(tensor(got.slice(), [HV, V]), tensor(want.slice(), [HV, V]), `o row ${n}`);
      }
      for (let sl = 0; sl < 7; sl++) {
        const n = idx.indexOf(sl);
        if (n < 0) expectSameBits(row(pool, sl), row(before, sl), `slot ${sl} untouched`);
        else expectSameBits(row(pool, sl), row(contiguousState, n), `slot ${sl} = state of sequence ${n}`);
      }
    });
  }
});

describe('bfloat16 pools', () => {
  it('the step on a bfloat16 pool is the float32 step on the widened pool, rounded once', () => {
    const x = withoutInit(deltaInputs({ B: 3, T: 1, H, HV, K, V, seed: 31 }));
    const s = stepInputs(x, 0);
    const idx = Int32Array.from([4, 0, 2]);
    const pool = makePool(5, 'bfloat16', 8);
    const before = pool.astype('bfloat16');
    const wide = pool.to('float32');
    const o = gatedDeltaRuleStep({ ...s, state: pool, stateIndices: idx, stateDtype: 'bfloat16' }).o;
    const ow = gatedDeltaRuleStep({ ...s, state: wide, stateIndices: idx }).o;
    expectSameBits(o, ow, 'o');
    expectSameBits(pool, wide.to('bfloat16'), 'pool');
    // Against the reference with the same rounding.
    const ref = gatedDeltaRuleStepReference({ ...s, state: before, stateIndices: idx });
    expect(relErr(pool, tensor(ref.state.data, ref.state.shape, 'bfloat16'))).toBeLessThan(TOL_BF16);
    expectClose(o, ref.o, TOL_F32, 'o vs reference');
  });

  for (const alg of ['chunk', 'recurrent'] as const) {
    it(`prefill into a bfloat16 pool, checkpoints bfloat16 too (${alg})`, () => {
      const lens = [65, 3, 128];
      const x = withoutInit(packed(lens, 41));
      const idx = Int32Array.from([1, 3, 0]);
      const pool = makePool(4, 'bfloat16', 9);
      const before = pool.astype('bfloat16');
      const L = deltaCheckpointLayout({ T: x.q.shape[1], cuSeqlens: x.cuSeqlens, checkpointEvery: 64 });
      const ck = zeros([L.count, HV, K, V], 'bfloat16');
      const r = gatedDeltaRule({ ...x, algorithm: alg, state: pool, stateIndices: idx, checkpointEvery: 64, checkpoints: ck });
      const ref = gatedDeltaRuleReference({ ...x, state: before, stateIndices: idx, checkpointEvery: 64 });
      expectClose(r.o, ref.o, TOL_F32, 'o');
      expect(relErr(pool, tensor(ref.state!.data, pool.shape, 'bfloat16'))).toBeLessThan(TOL_BF16);
      expect(relErr(ck, tensor(ref.checkpoints!.data, ck.shape, 'bfloat16'))).toBeLessThan(TOL_BF16);
      expectSameBits(row(pool, 2), row(before, 2), 'slot 2 untouched');
    });
  }
});

describe('checkpoints equal prefills cut there', () => {
  const cases = [
    { lens: [130, 64, 0, 200, 63], every: 64, alg: 'chunk' as const, chunkSize: 64 },
    { lens: [130, 64, 0, 200, 63], every: 32, alg: 'chunk' as const, chunkSize: 16 },
    { lens: [97, 5, 48], every: 16, alg: 'recurrent' as const, chunkSize: 16 },
  ];
  for (const c of cases) {
    it(`lens=[${c.lens}] every ${c.every}, ${c.alg} C=${c.chunkSize}`, () => {
      const x = packed(c.lens, 51);
      const T = x.q.shape[1];
      const init = randn([c.lens.length, HV, K, V], { seed: 52, std: 0.5 });
      const L = deltaCheckpointLayout({ T, cuSeqlens: x.cuSeqlens, checkpointEvery: c.every });
      const want = c.lens.reduce((a, l) => a + Math.floor(l / c.every), 0);
      expect(L.count).toBe(want);
      const ck = tensor(new Float32Array(L.count * per).fill(NaN), [L.count, HV, K, V]);
      const opts = { ...x, initialState: init, algorithm: c.alg, chunkSize: c.chunkSize };
      const r = gatedDeltaRule({ ...opts, outputFinalState: true, checkpointEvery: c.every, checkpoints: ck });
      expect(Array.from(r.checkpointSequence!)).toEqual(Array.from(L.sequence));
      expect(Array.from(r.checkpointPosition!)).toEqual(Array.from(L.position));
      const full = gatedDeltaRule({ ...opts, outputFinalState: true });
      expectSameBits(r.o, full.o, 'o is that of the call without checkpoints');
      for (let i = 0; i < L.count; i++) {
        const n = L.sequence[i], p = L.position[i];
        const cu = x.cuSeqlens;
        const part = tokens(withoutInit(x), cu[n], cu[n] + p);
        const cut = gatedDeltaRule({
          ...part, cuSeqlens: undefined, initialState: tensor(init.data.slice(n * per, (n + 1) * per), [1, HV, K, V]),
          algorithm: c.alg, chunkSize: c.chunkSize, outputFinalState: true,
        });
        expectClose(row(ck, i), row(cut.finalState, 0), 1e-5, `checkpoint ${i} (sequence ${n}, position ${p})`);
        if (p === c.lens[n]) expectClose(row(ck, i), row(full.finalState, n), TOL_SELF, `checkpoint ${i} at the end = final state`);
      }
      const ref = gatedDeltaRuleReference({ ...x, initialState: init, checkpointEvery: c.every });
      expectClose(ck, ref.checkpoints!, TOL_F32, 'checkpoints vs reference');
    });
  }

  it('B rows (no cuSeqlens) into a pool, with padding rows left untouched', () => {
    const x = withoutInit(deltaInputs({ B: 3, T: 128, H, HV, K, V, seed: 61 }));
    const pool = makePool(4, 'float32', 62);
    const idx = Int32Array.from([2, -1, 0]);
    const L = deltaCheckpointLayout({ T: 128, B: 3, checkpointEvery: 64 });
    expect(Array.from(L.sequence)).toEqual([0, 0, 1, 1, 2, 2]);
    expect(Array.from(L.position)).toEqual([64, 128, 64, 128, 64, 128]);
    const ck = tensor(new Float32Array(6 * per).fill(5), [6, HV, K, V]);
    const before = pool.astype('float32');
    gatedDeltaRule({ ...x, state: pool, stateIndices: idx, checkpointEvery: 64, checkpoints: ck, algorithm: 'chunk' });
    const ref = gatedDeltaRuleReference({ ...x, state: before, stateIndices: idx, checkpointEvery: 64 });
    for (const r of [0, 1, 4, 5]) expectClose(row(ck, r), row(ref.checkpoints!, r), TOL_F32, `checkpoint ${r}`);
    for (const r of [2, 3]) expect(Array.from(row(ck, r).data).every((e) => e === 5), `padding checkpoint ${r} untouched`).toBe(true);
    expectClose(row(pool, 2), row(ck, 1), TOL_SELF, 'slot 2 = the last checkpoint of sequence 0');
  });
});

describe('speculative verify: intermediateStates[n, i] equals i + 1 steps', () => {
  for (const [Tq, dtype] of [[4, 'float32'], [1, 'float32'], [3, 'bfloat16']] as const) {
    it(`N=3, Tq=${Tq}, pool ${dtype}, updateState false then true`, () => {
      const N = 3;
      const x = withoutInit(deltaInputs({ B: N, T: Tq, H, HV, K, V, seed: 71 }));
      const idx = Int32Array.from([5, 1, -1]);
      const pool = makePool(6, dtype, 72);
      const before = pool.astype(dtype);
      const inter = tensor(new Float32Array(N * Tq * per).fill(3), [N, Tq, HV, K, V]).to(dtype);
      const r = gatedDeltaRuleStep({ ...x, state: pool, stateIndices: idx, intermediateStates: inter, updateState: false });
      expectSameBits(pool, before, 'updateState false leaves the pool as it was');
      expect(r.o.shape).toEqual([N, Tq, HV, V]);
      // Token by token with ordinary steps on a float32 copy of the slots.
      const S = gatherRows(before, idx);
      for (let i = 0; i < Tq; i++) {
        const si = stepInputs(x, i);
        const oi = gatedDeltaRuleStep({ ...si, state: S }).o;
        for (let n = 0; n < N; n++) {
          const got = slice(r.o, [[n, n + 1], [i, i + 1]]);
          if (idx[n] < 0) {
            expect(Array.from(got.data).every((e) => e === 0), `padding o [${n}, ${i}] is 0`).toBe(true);
            expect(Array.from(row(inter, n * Tq + i).to('float32').data).every((e) => e === 3), `padding intermediate [${n}, ${i}] untouched`).toBe(true);
            continue;
          }
          const want = slice(oi, [[n, n + 1]]);
          expectClose(reshape(got, [HV, V]), reshape(want, [HV, V]), dtype === 'float32' ? TOL_SELF : 0, `o[${n}, ${i}]`);
          const st = row(S, n);
          if (dtype === 'float32') expectSameBits(row(inter, n * Tq + i), st, `intermediateStates[${n}, ${i}]`);
          else expectSameBits(row(inter, n * Tq + i), st.to('bfloat16'), `intermediateStates[${n}, ${i}] (rounded once)`);
        }
      }
      // The reference agrees; then with updateState the pool holds the last intermediate state.
      const ref = gatedDeltaRuleStepReference({ ...x, state: before, stateIndices: idx });
      expectClose(r.o, ref.o, TOL_F32, 'o vs reference');
      // (with intermediateStates, as above: without them the Tq tokens run as one block, another rounding)
      const inter2 = zeros([N, Tq, HV, K, V], dtype);
      const r2 = gatedDeltaRuleStep({ ...x, state: pool, stateIndices: idx, intermediateStates: inter2 });
      expectSameBits(r2.o, r.o, 'o with updateState');
      const r3 = gatedDeltaRuleStep({ ...x, state: before.astype(dtype), stateIndices: idx });
      expectClose(r3.o, r.o, 1e-5, 'o without intermediateStates');
      for (let n = 0; n < 2; n++) expectSameBits(row(pool, idx[n]), row(inter, n * Tq + Tq - 1), `slot ${idx[n]} = last intermediate`);
      for (const sl of [0, 2, 3, 4]) expectSameBits(row(pool, sl), row(before, sl), `slot ${sl} untouched`);
    });
  }

  it('deltaCommitStates writes the state after the accepted prefix into each slot (bfloat16 pool from float32 states)', () => {
    const N = 3, Tq = 4;
    const x = withoutInit(deltaInputs({ B: N, T: Tq, H, HV, K, V, seed: 75 }));
    const pool = makePool(5, 'bfloat16', 76);
    const before = pool.astype('bfloat16');
    const idx = Int32Array.from([4, -1, 1]);
    const inter = zeros([N, Tq, HV, K, V]);
    gatedDeltaRuleStep({ ...x, state: pool, stateIndices: idx, intermediateStates: inter, updateState: false });
    expectSameBits(pool, before, 'verify left the pool');
    expectSeqkernError(() => deltaCommitStates({ state: pool, stateIndices: idx, intermediateStates: inter, accepted: [2, 0, 5] }), 'OUT_OF_RANGE', 'accepted', 'accepted > Tq');
    expectSeqkernError(() => deltaCommitStates({ state: pool, stateIndices: [4, 4, 1], intermediateStates: inter, accepted: [1, 1, 1] }), 'BAD_ARGUMENT', 'stateIndices', 'repeated slot');
    expectSameBits(pool, before, 'nothing written on error');
    deltaCommitStates({ state: pool, stateIndices: idx, intermediateStates: inter, accepted: [2, 3, 0] });
    expectSameBits(row(pool, 4), row(inter, 0 * Tq + 1).to('bfloat16'), 'slot 4 = state after 2 tokens');
    for (const sl of [0, 1, 2, 3]) expectSameBits(row(pool, sl), row(before, sl), `slot ${sl} untouched (padding, accepted 0, unused)`);
  });

  it('the reference backend fills intermediateStates and leaves the pool with updateState false', () => {
    const x = withoutInit(deltaInputs({ B: 2, T: 2, H, HV, K, V, seed: 81 }));
    const pool = makePool(3, 'float32', 82), p2 = pool.astype('float32'), before = pool.astype('float32');
    const i1 = zeros([2, 2, HV, K, V]), i2 = zeros([2, 2, HV, K, V]);
    const idx = [2, 0];
    const a = gatedDeltaRuleStep({ ...x, state: pool, stateIndices: idx, intermediateStates: i1, updateState: false });
    const b = gatedDeltaRuleStep({ ...x, state: p2, stateIndices: idx, intermediateStates: i2, updateState: false, backend: 'reference' });
    expectClose(a.o, b.o, TOL_F32, 'o');
    expectClose(i1, i2, TOL_F32, 'intermediateStates');
    expectSameBits(p2, before, 'pool');
  });
});

describe('in-kernel gating equals precomputed g and beta', () => {
  const softplus = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
  /** g = -exp(aLog) softplus(g + dtBias), beta = scale sigmoid(b), per v head (the last axis). */
  function precompute(gRaw: Tensor, bRaw: Tensor, aLog: Tensor, dtBias: Tensor, scale: number) {
    const g = gRaw.toFloat64().map((x, i) => -Math.exp(aLog.data[i % HV]) * softplus(x + dtBias.data[i % HV]));
    const b = bRaw.toFloat64().map((x) => scale / (1 + Math.exp(-x)));
    return { g: tensor(g, gRaw.shape, 'float32'), beta: tensor(b, bRaw.shape, 'float32') };
  }
  const aLog = tensor(Float32Array.from([-2, 0.3, 1.5, -0.5]), [HV]);
  const dtBias = tensor(Float32Array.from([0.5, -3, 1, 25]), [HV]);

  for (const alg of ['chunk', 'recurrent'] as const) {
    it(`prefill, ${alg}, betaScale 2`, () => {
      const x = withoutInit(packed([70, 9], 91));
      const gRaw = randn(x.g!.shape, { seed: 92, std: 3 });
      const bRaw = randn(x.beta!.shape, { seed: 93, std: 2 });
      const pre = precompute(gRaw, bRaw, aLog, dtBias, 2);
      const a = gatedDeltaRule({ ...x, g: gRaw, beta: bRaw, aLog, dtBias, betaSigmoid: true, betaScale: 2, algorithm: alg, outputFinalState: true });
      const b = gatedDeltaRule({ ...x, ...pre, algorithm: alg, outputFinalState: true });
      expectClose(a.o, b.o, 1e-5, 'o');
      expectClose(a.finalState, b.finalState, 1e-5, 'finalState');
      const ref = gatedDeltaRuleReference({ ...x, g: gRaw, beta: bRaw, aLog, dtBias, betaSigmoid: true, betaScale: 2 });
      expectClose(a.o, ref.o, TOL_F32, 'o vs reference');
    });
  }

  it('step (KLA: eta through the sigmoid), aLog without dtBias', () => {
    const x = stepInputs(withoutInit(deltaInputs({ B: 3, T: 1, H, HV, K, V, seed: 94, variant: 'kla' })), 0);
    const gRaw = randn(x.g!.shape, { seed: 95, std: 2 });
    const eRaw = randn(x.eta!.shape, { seed: 96, std: 2 });
    const pre = precompute(gRaw, eRaw, aLog, zeros([HV]), 1);
    const s1 = makePool(3, 'float32', 97), s2 = s1.astype('float32'), s0 = s1.astype('float32');
    const a = kaczmarzDeltaRuleStep({ ...x, g: gRaw, eta: eRaw, aLog, betaSigmoid: true, state: s1 });
    const b = kaczmarzDeltaRuleStep({ ...x, g: pre.g, eta: pre.beta, state: s2 });
    expectClose(a.o, b.o, 1e-5, 'o');
    expectClose(s1, s2, 1e-5, 'state');
    const ref = gatedDeltaRuleStepReference({ ...x, g: gRaw, eta: eRaw, aLog, betaSigmoid: true, state: s0 });
    expectClose(a.o, ref.o, TOL_F32, 'o vs reference');
  });
});

describe('async forms', () => {
  it('the pool step and prefill resolve with the same answers; an abort before the start writes nothing', async () => {
    const x = withoutInit(packed([33, 66], 101));
    const p1 = makePool(4, 'float32', 102), p2 = p1.astype('float32');
    const idx = [3, 1];
    const a = gatedDeltaRule({ ...x, state: p1, stateIndices: idx });
    const b = await gatedDeltaRuleAsync({ ...x, state: p2, stateIndices: idx });
    expectSameBits(b.o, a.o, 'o');
    expectSameBits(p2, p1, 'pool');
    const s = stepInputs(withoutInit(deltaInputs({ B: 2, T: 1, H, HV, K, V, seed: 103 })), 0);
    const ac = new AbortController();
    ac.abort();
    const snap = snapshot(p2);
    await expect(gatedDeltaRuleStepAsync({ ...s, state: p2, stateIndices: idx }, { signal: ac.signal })).rejects.toThrow(/abort/i);
    expect(sameBytes(p2, snap), 'pool untouched by the aborted call').toBe(true);
    const c = await gatedDeltaRuleStepAsync({ ...s, state: p2, stateIndices: idx });
    const d = gatedDeltaRuleStep({ ...s, state: p1, stateIndices: idx });
    expectSameBits(c.o, d.o, 'step o');
    expectSameBits(p2, p1, 'pool after the step');
  });
});

describe('bad input: a SeqkernError, nothing written', () => {
  const x = withoutInit(packed([70, 5], 111));
  const s = stepInputs(withoutInit(deltaInputs({ B: 3, T: 1, H, HV, K, V, seed: 112 })), 0);
  const v4 = withoutInit(deltaInputs({ B: 2, T: 3, H, HV, K, V, seed: 113 }));
  const pool = makePool(4, 'float32', 114);
  const ck = zeros([1, HV, K, V]);
  const out = zeros([1, 75, HV, V]);
  const cases: [string, () => unknown, string, string | undefined][] = [
    ['slot out of range', () => gatedDeltaRule({ ...x, state: pool, stateIndices: [4, 0] }), 'OUT_OF_RANGE', 'stateIndices'],
    ['slot below -1', () => gatedDeltaRuleStep({ ...s, state: pool, stateIndices: [0, -2, 1] }), 'OUT_OF_RANGE', 'stateIndices'],
    ['slot repeated among live sequences', () => gatedDeltaRule({ ...x, state: pool, stateIndices: [2, 2] }), 'BAD_ARGUMENT', 'stateIndices'],
    ['step slot repeated', () => gatedDeltaRuleStep({ ...s, state: pool, stateIndices: [1, -1, 1] }), 'BAD_ARGUMENT', 'stateIndices'],
    ['stateIndices of the wrong length', () => gatedDeltaRuleStep({ ...s, state: pool, stateIndices: [1, 2] }), 'SHAPE_MISMATCH', 'stateIndices'],
    ['stateIndices not int32', () => gatedDeltaRule({ ...x, state: pool, stateIndices: [0.5, 1] }), 'BAD_ARGUMENT', 'stateIndices'],
    ['float16 pool', () => gatedDeltaRule({ ...x, state: pool.to('float16') }), 'BAD_DTYPE', 'state'],
    ['stateDtype disagrees', () => gatedDeltaRule({ ...x, state: pool, stateDtype: 'bfloat16' }), 'BAD_DTYPE', 'state'],
    ['pool of other head dims', () => gatedDeltaRule({ ...x, state: zeros([4, HV, K, V + 1]) }), 'SHAPE_MISMATCH', 'state'],
    ['pool too small without stateIndices', () => gatedDeltaRule({ ...x, state: zeros([1, HV, K, V]) }), 'SHAPE_MISMATCH', 'state'],
    ['state with initialState', () => gatedDeltaRule({ ...x, state: pool, initialState: zeros([2, HV, K, V]) }), 'BAD_ARGUMENT', 'initialState'],
    ['state with outputFinalState', () => gatedDeltaRule({ ...x, state: pool, outputFinalState: true }), 'BAD_ARGUMENT', 'outputFinalState'],
    ['stateIndices without state', () => gatedDeltaRule({ ...x, stateIndices: [0, 1] }), 'BAD_ARGUMENT', 'stateIndices'],
    ['hasInitialState of the wrong length', () => gatedDeltaRule({ ...x, state: pool, hasInitialState: new Uint8Array(3) }), 'SHAPE_MISMATCH', 'hasInitialState'],
    ['checkpointEvery not a multiple of chunkSize', () => gatedDeltaRule({ ...x, state: pool, checkpointEvery: 48, checkpoints: ck }), 'BAD_ARGUMENT', 'checkpointEvery'],
    ['checkpoints of the wrong count', () => gatedDeltaRule({ ...x, state: pool, checkpointEvery: 64, checkpoints: zeros([2, HV, K, V]) }), 'SHAPE_MISMATCH', 'checkpoints'],
    ['checkpoints without checkpointEvery', () => gatedDeltaRule({ ...x, checkpoints: ck }), 'BAD_ARGUMENT', 'checkpointEvery'],
    ['checkpoints overlapping the pool', () => gatedDeltaRule({ ...x, state: pool, checkpointEvery: 64, checkpoints: new Tensor(pool.data.subarray(0, per), [1, HV, K, V], 'float32') }), 'BAD_ARGUMENT', 'checkpoints'],
    ['out overlapping the pool', () => gatedDeltaRule({ ...x, state: pool, out: new Tensor(pool.data.subarray(0, 75 * HV * V), [1, 75, HV, V], 'float32') }), 'BAD_ARGUMENT', 'out'],
    ['pool overlapping v', () => gatedDeltaRule({ ...x, state: new Tensor(new Float32Array((x.v.data as Float32Array).buffer, 0, 2 * per), [2, HV, K, V], 'float32') }), 'BAD_ARGUMENT', 'state'],
    ['intermediateStates of the wrong shape', () => gatedDeltaRuleStep({ ...v4, state: zeros([2, HV, K, V]), intermediateStates: zeros([2, 2, HV, K, V]) }), 'SHAPE_MISMATCH', 'intermediateStates'],
    ['updateState not a boolean', () => gatedDeltaRuleStep({ ...s, state: zeros([3, HV, K, V]), updateState: 0 as unknown as boolean }), 'BAD_ARGUMENT', 'updateState'],
    ['v of another Tq', () => gatedDeltaRuleStep({ ...v4, v: randn([2, 2, HV, V], { seed: 1 }), state: zeros([2, HV, K, V]) }), 'SHAPE_MISMATCH', 'v'],
    ['beta logits without betaSigmoid', () => gatedDeltaRule({ ...x, beta: randn(x.beta!.shape, { seed: 2, std: 3 }), state: pool }), 'OUT_OF_RANGE', 'beta'],
    ['raw g without aLog', () => gatedDeltaRule({ ...x, g: rand(x.g!.shape, { seed: 3, low: 0.5, high: 1 }), state: pool }), 'OUT_OF_RANGE', 'g'],
    ['betaScale without betaSigmoid', () => gatedDeltaRule({ ...x, betaScale: 2, state: pool }), 'BAD_ARGUMENT', 'betaScale'],
    ['betaScale out of range', () => gatedDeltaRule({ ...x, betaSigmoid: true, betaScale: 3, state: pool }), 'OUT_OF_RANGE', 'betaScale'],
    ['dtBias without aLog', () => gatedDeltaRule({ ...x, dtBias: zeros([HV]), state: pool }), 'BAD_ARGUMENT', 'dtBias'],
    ['aLog of the wrong length', () => gatedDeltaRule({ ...x, aLog: zeros([HV + 1]), state: pool }), 'SHAPE_MISMATCH', 'aLog'],
    ['aLog not finite', () => gatedDeltaRule({ ...x, aLog: tensor(Float32Array.from([0, NaN, 0, 0]), [HV]), state: pool }), 'NON_FINITE', 'aLog'],
    ['aLog without g', () => gatedDeltaRule({ ...x, g: undefined, aLog: zeros([HV]), state: pool }), 'BAD_ARGUMENT', 'aLog'],
    ['aLog bfloat16', () => gatedDeltaRule({ ...x, aLog: zeros([HV], 'bfloat16'), state: pool }), 'BAD_DTYPE', 'aLog'],
    ['unknown option', () => gatedDeltaRuleStep({ ...s, state: zeros([3, HV, K, V]), stateIndex: [0, 1, 2] } as unknown as DeltaStepOptions), 'BAD_ARGUMENT', 'stateIndex'],
  ];
  for (const [what, f, code, arg] of cases) {
    it(what, () => {
      const snaps = [pool, ck, out].map((t) => snapshot(t));
      expectSeqkernError(f, code, arg, what);
      [pool, ck, out].forEach((t, i) => expect(sameBytes(t, snaps[i]), `${what}: nothing written`).toBe(true));
    });
  }

  it('the raw addon refuses the same (anything may call it directly)', async () => {
    const { native } = await import('../src/backend.js');
    const a = native();
    if (!a) return expect.fail('the addon did not load');
    const base = {
      B: 2, T: 1, H, HV, K, V, q: new Float32Array(2 * H * K), k: new Float32Array(2 * H * K), v: new Float32Array(2 * HV * V),
      dtype: 'float32', beta: new Float32Array(2 * HV).fill(0.5), betaDtype: 'float32', kaczmarz: false, eps: 1e-6, decayKind: 'none' as const,
      o: new Float32Array(2 * HV * V), qkL2Norm: false, scale: 1, chunkSize: 64, algorithm: 'recurrent' as const,
      pool: new Float32Array(3 * per), slots: 3,
    };
    const raw = (extra: object) => {
      try {
        a.deltaRule({ ...base, ...extra });
        return 'ok';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(raw({ stateIndices: Int32Array.from([0, 3]) })).toBe('OUT_OF_RANGE');
    expect(raw({ stateIndices: Int32Array.from([1, 1]) })).toBe('BAD_ARGUMENT');
    expect(raw({ stateIndices: Int32Array.from([1, 1]), updateState: false })).toBe('ok'); // read-only: shared slots are fine
    expect(raw({ slots: 4 })).toBe('SHAPE_MISMATCH');
    expect(raw({ pool: new Uint16Array(3 * per), poolDtype: 'float16' })).toBe('BAD_DTYPE');
    expect(raw({ snaps: new Float32Array(2 * per), snapEvery: 1 })).toBe('ok');
    expect(raw({ snaps: new Float32Array(per), snapEvery: 1 })).toBe('SHAPE_MISMATCH');
    expect(raw({ snaps: base.pool.subarray(0, 2 * per), snapEvery: 1 })).toBe('BAD_ARGUMENT');
    expect(raw({ hasInitialState: new Uint8Array(1) })).toBe('SHAPE_MISMATCH');
    expect(raw({ initialState: new Float32Array(2 * per) })).toBe('BAD_ARGUMENT');
    expect(raw({ betaScale: 2 })).toBe('BAD_ARGUMENT');
    expect(raw({ aLog: new Float32Array(HV) })).toBe('BAD_ARGUMENT'); // no g
    expect(raw({ beta: new Float32Array(2 * HV).fill(-3), betaSigmoid: true })).toBe('ok');
    expect(raw({ beta: new Float32Array(2 * HV).fill(-3) })).toBe('OUT_OF_RANGE');
  });

  it(`fuzz: 600 random pool calls (fast-check seed 1414) refuse or agree with the reference`, () => {
    let valid = 0, refused = 0;
    fc.assert(
      fc.property(
        fc.record({
          N: fc.integer({ min: 1, max: 3 }),
          slots: fc.integer({ min: 0, max: 4 }),
          idxMode: fc.constantFrom('none', 'ok', 'ok', 'ok', 'short', 'below'),
          idx4: fc.array(fc.integer({ min: -1, max: 3 }), { minLength: 4, maxLength: 4 }),
          Tq: fc.constantFrom(0, 1, 2),
          poolDtype: fc.constantFrom<DType>('float32', 'bfloat16', 'float16'),
          update: fc.constantFrom(true, false, undefined),
          inter: fc.boolean(),
        }),
        (sp) => {
          const N = sp.N, Tq = sp.Tq === 0 ? 1 : sp.Tq;
          const xi = withoutInit(deltaInputs({ B: N, T: Tq, H, HV, K: 8, V: 4, seed: 7 }));
          const inp = sp.Tq === 0 ? stepInputs(xi, 0) : xi;
          const pool = randn([sp.slots, HV, 8, 4], { seed: 8 }).to(sp.poolDtype);
          const inter = sp.inter ? zeros([N, Tq, HV, 8, 4]) : undefined;
          const idx = sp.idxMode === 'none' ? undefined : sp.idx4.slice(0, sp.idxMode === 'short' ? N - 1 : N);
          if (idx && sp.idxMode === 'below') idx[0] = -2;
          const invalid: string[] = [];
          if (sp.poolDtype === 'float16') invalid.push('dtype');
          if (idx === undefined && sp.slots !== N) invalid.push('slots');
          if (idx !== undefined) {
            if (idx.length !== N) invalid.push('idx length');
            else if (idx.some((i) => i < -1 || i >= sp.slots)) invalid.push('idx range');
            else if (sp.update !== false && new Set(idx.filter((i) => i >= 0)).size !== idx.filter((i) => i >= 0).length) invalid.push('idx repeat');
          }
          const opts = { ...inp, state: pool, stateIndices: idx, updateState: sp.update, intermediateStates: inter } as DeltaStepOptions;
          const snap = snapshot(pool);
          const ref = invalid.length === 0 ? gatedDeltaRuleStepReference(opts) : undefined;
          let err: unknown;
          let o: Tensor | undefined;
          try {
            o = gatedDeltaRuleStep(opts).o;
          } catch (e) {
            err = e;
          }
          const what = `${JSON.stringify(sp)} invalid=[${invalid}]`;
          if (err !== undefined) {
            if (!(err instanceof SeqkernError)) throw new Error(`${what}: ${String(err)}`);
            if (invalid.length) {
              refused++;
              if (!sameBytes(pool, snap)) throw new Error(`${what}: pool written on error`);
              return;
            }
            throw new Error(`${what}: valid call threw ${err.message}`);
          }
          if (invalid.length) throw new Error(`${what}: invalid call returned`);
          valid++;
          if (relErr(o!, ref!.o) > TOL_F32) throw new Error(`${what}: o differs`);
          if (sp.update === false && !sameBytes(pool, snap)) throw new Error(`${what}: pool written with updateState false`);
          if (sp.update !== false && relErr(pool, ref!.state) > (sp.poolDtype === 'bfloat16' ? TOL_BF16 : TOL_F32)) throw new Error(`${what}: pool differs`);
        },
      ),
      { numRuns: 600, seed: 1414, endOnFailure: true },
    );
    expect(valid).toBeGreaterThan(60);
    expect(refused).toBeGreaterThan(100);
  });
});

describe('bench: the serving suite has the pool step beside the contiguous step', async () => {
  const { defaultSuite } = await import('../bench/suites.js');
  const { InputPool, OPS } = await import('../bench/registry.js');
  it('delta-step and delta-pool-step pairs at N = 8 and 32; the pool case moves the same bytes and runs', () => {
    const cases = defaultSuite({ dtype: 'float32', backend: 'cpu', suite: 'serving' }).filter((c) => c.op.startsWith('delta'));
    expect(cases.map((c) => `${c.op} ${c.B}`)).toEqual(['delta-step 8', 'delta-pool-step 8', 'delta-step 32', 'delta-pool-step 32']);
    expect(defaultSuite({ dtype: 'float32', backend: 'cpu' }).some((c) => c.op === 'delta-pool-step')).toBe(false);
    const small = { op: 'delta-pool-step' as const, B: 3, T: 1, H: 2, HV: 4, K: 16, V: 8, dtype: 'float32' as const, algorithm: 'auto' as const, backend: 'cpu' as const };
    expect(OPS['delta-pool-step'].traffic(small)).toEqual(OPS['delta-step'].traffic({ ...small, op: 'delta-step' }));
    const run = OPS['delta-pool-step'].prepare(small, new InputPool([small]));
    run();
    run();
  });
});
