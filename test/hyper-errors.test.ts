// Bad input to HyperAttention (DESIGN.md 4, 7): every argument, sync and async, gives a SeqkernError with the
// right code and a message naming the argument, and leaves every input byte-identical. Then the raw addon's
// own checks (in a child process, so a crash is reported instead of killing vitest), and a fast-check run of
// the public API: a SeqkernError or the reference's answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hyperAttention, hyperAttentionAsync, hyperAttentionReference, numel, randn, SeqkernError, Tensor, tensor, zeros, type DType } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import {
  checkSeqkernError, detached, expectRawFailure, expectSeqkernRejection, firstNonFinite, mutateTensor, relErr, runInChild, sameBytes,
  seededUniform, snapshot, type RawResult, type TensorMutation,
} from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { q: unknown; k: unknown; v: unknown; opts: Opts }

const f32 = (shape: number[], seed = 0) => randn(shape, { seed });

/** B=2, T=S=9, Hq=4, Hk=2, D=8, Dv=6, hashed (minSeqLen 4, blockSize 3, sampleSize 2), causal. */
function base(): Call {
  return {
    q: f32([2, 9, 4, 8], 1), k: f32([2, 9, 2, 8], 2), v: f32([2, 9, 2, 6], 3),
    opts: { backend: 'cpu', causal: true, minSeqLen: 4, blockSize: 3, sampleSize: 2 },
  };
}

interface BadCase { name: string; make: (c: Call) => Call; code: string; arg: string }
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });

const CASES: BadCase[] = [
  // shapes
  { name: 'q of rank 3', make: (c) => ({ ...c, q: f32([2, 9, 32]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k of rank 5', make: (c) => ({ ...c, k: f32([2, 9, 2, 8, 1]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v of rank 3', make: (c) => ({ ...c, v: f32([2, 9, 12]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'k with another B', make: (c) => ({ ...c, k: f32([1, 9, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'k with another D', make: (c) => ({ ...c, k: f32([2, 9, 2, 9]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v with another S', make: (c) => ({ ...c, v: f32([2, 8, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v with another Hk', make: (c) => ({ ...c, v: f32([2, 9, 1, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'Hq not a multiple of Hk', make: (c) => ({ ...c, q: f32([2, 9, 3, 8]) }), code: 'SHAPE_MISMATCH', arg: 'Hq' },
  { name: 'Hq = 0', make: (c) => ({ ...c, q: f32([2, 9, 0, 8]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'Hk = 0', make: (c) => ({ ...c, k: f32([2, 9, 0, 8]), v: f32([2, 9, 0, 6]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'D = 0', make: (c) => ({ ...c, q: f32([2, 9, 4, 0]), k: f32([2, 9, 2, 0]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'Dv = 0', make: (c) => ({ ...c, v: f32([2, 9, 2, 0]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'D > 1024', make: (c) => ({ ...c, q: f32([1, 1, 1, 1025]), k: f32([1, 1, 1, 1025]), v: f32([1, 1, 1, 2]) }), code: 'TOO_LARGE', arg: 'D=1025' },
  { name: 'causal with S != T', make: (c) => ({ ...c, k: f32([2, 10, 2, 8]), v: f32([2, 10, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'S = T' },
  { name: 'a negative dimension', make: (c) => ({ ...c, q: new Tensor(new Float32Array(0), [2, 9, 4, -8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  // storage and types
  { name: 'Float64Array data in a float32 q', make: (c) => ({ ...c, q: new Tensor(new Float64Array(576), [2, 9, 4, 8], 'float32') }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'Uint16Array data in a float32 v', make: (c) => ({ ...c, v: new Tensor(new Uint16Array(216), [2, 9, 2, 6], 'float32') }), code: 'BAD_DTYPE', arg: 'v' },
  { name: 'k float16 while q is float32', make: (c) => ({ ...c, k: (c.k as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'v bfloat16 while q is float32', make: (c) => ({ ...c, v: (c.v as Tensor).astype('bfloat16') }), code: 'BAD_DTYPE', arg: 'v' },
  {
    name: 'float64 inputs with backend cpu',
    make: (c) => ({ ...c, q: (c.q as Tensor).astype('float64'), k: (c.k as Tensor).astype('float64'), v: (c.v as Tensor).astype('float64') }),
    code: 'BAD_DTYPE', arg: 'float64',
  },
  { name: 'q a tensor-like without dtype', make: (c) => ({ ...c, q: { shape: [2, 9, 4, 8], data: new Float32Array(576) } }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'q a tensor-like of a short array', make: (c) => ({ ...c, q: { dtype: 'float32', shape: [2, 9, 4, 8], data: new Float32Array(575) } }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k a Float32Array', make: (c) => ({ ...c, k: new Float32Array(288) }), code: 'BAD_ARGUMENT', arg: 'k' },
  { name: 'v undefined', make: (c) => ({ ...c, v: undefined }), code: 'BAD_ARGUMENT', arg: 'v' },
  { name: 'q with a short buffer', make: (c) => ({ ...c, q: new Tensor(new Float32Array(575), [2, 9, 4, 8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k on a detached buffer', make: (c) => ({ ...c, k: detached([2, 9, 2, 8]) }), code: 'BAD_ARGUMENT', arg: 'k' },
  // options
  { name: 'scale NaN', make: (c) => withOpts(c, { scale: NaN }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale a string', make: (c) => withOpts(c, { scale: '0.5' }), code: 'BAD_ARGUMENT', arg: 'scale' },
  { name: "causal 'yes'", make: (c) => withOpts(c, { causal: 'yes' }), code: 'BAD_ARGUMENT', arg: 'causal' },
  { name: 'returnLse 1', make: (c) => withOpts(c, { returnLse: 1 }), code: 'BAD_ARGUMENT', arg: 'returnLse' },
  { name: 'lshBits 17', make: (c) => withOpts(c, { lshBits: 17 }), code: 'OUT_OF_RANGE', arg: 'lshBits' },
  { name: 'lshBits -1', make: (c) => withOpts(c, { lshBits: -1 }), code: 'OUT_OF_RANGE', arg: 'lshBits' },
  { name: 'lshBits 2.5', make: (c) => withOpts(c, { lshBits: 2.5 }), code: 'BAD_ARGUMENT', arg: 'lshBits' },
  { name: 'blockSize 0', make: (c) => withOpts(c, { blockSize: 0 }), code: 'OUT_OF_RANGE', arg: 'blockSize' },
  { name: "blockSize '256'", make: (c) => withOpts(c, { blockSize: '256' }), code: 'BAD_ARGUMENT', arg: 'blockSize' },
  { name: 'sampleSize -1', make: (c) => withOpts(c, { sampleSize: -1 }), code: 'OUT_OF_RANGE', arg: 'sampleSize' },
  { name: 'sampleSize NaN', make: (c) => withOpts(c, { sampleSize: NaN }), code: 'BAD_ARGUMENT', arg: 'sampleSize' },
  { name: 'minSeqLen -5', make: (c) => withOpts(c, { minSeqLen: -5 }), code: 'OUT_OF_RANGE', arg: 'minSeqLen' },
  { name: 'minSeqLen Infinity', make: (c) => withOpts(c, { minSeqLen: Infinity }), code: 'BAD_ARGUMENT', arg: 'minSeqLen' },
  { name: 'seed -1', make: (c) => withOpts(c, { seed: -1 }), code: 'OUT_OF_RANGE', arg: 'seed' },
  { name: 'seed 2^53', make: (c) => withOpts(c, { seed: 2 ** 53 }), code: 'OUT_OF_RANGE', arg: 'seed' },
  { name: 'seed 1.5', make: (c) => withOpts(c, { seed: 1.5 }), code: 'BAD_ARGUMENT', arg: 'seed' },
  { name: 'seed a BigInt', make: (c) => withOpts(c, { seed: 5n }), code: 'BAD_ARGUMENT', arg: 'seed' },
  { name: 'an unknown option (lsh_bits)', make: (c) => withOpts(c, { lsh_bits: 7 }), code: 'BAD_ARGUMENT', arg: 'lshBits' },
  { name: 'an option of attention (gate)', make: (c) => withOpts(c, { gate: f32([2, 9, 4, 6]) }), code: 'BAD_ARGUMENT', arg: 'gate' },
  { name: "backend 'cuda'", make: (c) => withOpts(c, { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
  { name: "backend 'gpu'", make: (c) => withOpts(c, { backend: 'gpu' }), code: 'BAD_ARGUMENT', arg: 'backend' },
  // out
  { name: 'out of another shape', make: (c) => withOpts(c, { out: zeros([2, 9, 4, 5]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out of another dtype', make: (c) => withOpts(c, { out: zeros([2, 9, 4, 6], 'float16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'out overlapping q', make: (c) => withOpts(c, { out: new Tensor((c.q as Tensor).data.subarray(0, 432) as Float32Array, [2, 9, 4, 6], 'float32') }), code: 'BAD_ARGUMENT', arg: 'out' },
  // caps
  {
    name: 'an output past 2^31 - 1 elements',
    make: () => ({ q: zeros([1, 2 ** 21, 1, 1]), k: zeros([1, 0, 1, 1]), v: zeros([1, 0, 1, 1024]), opts: { backend: 'cpu' } }),
    code: 'TOO_LARGE', arg: 'o',
  },
  {
    // 2^28 samples, laid out twice, of 4 floats: 2^31 elements
    name: 'gathered sampled keys past the cap (a huge sampleSize)',
    make: () => ({ q: zeros([1, 1, 1, 4]), k: zeros([1, 8, 1, 4]), v: zeros([1, 8, 1, 4]), opts: { backend: 'cpu', minSeqLen: 0, blockSize: 1, sampleSize: 2 ** 28 } }),
    code: 'TOO_LARGE', arg: 'sampleSize',
  },
  {
    name: 'a causal recursion of more than 2^20 leaves (minSeqLen 0)',
    make: () => ({ q: zeros([1, 2 ** 21 + 3, 1, 1]), k: zeros([1, 2 ** 21 + 3, 1, 1]), v: zeros([1, 2 ** 21 + 3, 1, 1]), opts: { backend: 'cpu', causal: true, minSeqLen: 0 } }),
    code: 'TOO_LARGE', arg: 'minSeqLen',
  },
];

function snapAll(c: Call): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  for (const [key, val] of Object.entries({ q: c.q, k: c.k, v: c.v, out: c.opts.out })) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

describe('bad input to hyperAttention / hyperAttentionAsync', () => {
  it('the valid base call succeeds, hashed (so each case below fails for its own reason)', async () => {
    const c = base();
    expect(() => hyperAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts)).not.toThrow();
    await expect(hyperAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts)).resolves.toBeDefined();
    const r = hyperAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, { ...c.opts, causal: false, lshBits: 3, seed: 5, scale: 0.3, returnLse: true });
    expect(r.lse!.shape).toEqual([2, 4, 9]);
  });
  for (const bc of CASES) {
    it(`${bc.name} -> ${bc.code} (sync)`, () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      let err: unknown;
      try {
        hyperAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, `hyperAttention: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
    it(`${bc.name} -> ${bc.code} (async rejects alike)`, async () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      await expectSeqkernRejection(() => hyperAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts), bc.code, bc.arg, `hyperAttentionAsync: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
  it('options not an object -> BAD_ARGUMENT', async () => {
    const c = base();
    for (const bad of [null, 3, 'q']) {
      expect(() => hyperAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).toThrow(SeqkernError);
      await expect(hyperAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).rejects.toBeInstanceOf(SeqkernError);
    }
  });
});

// ---- the raw addon re-checks everything (anything may call it directly)

/**
 * Runs `mutate(base)` against the raw addon in a child process. Base: B=1, T=S=6, Hq=2, Hk=1, D=3, Dv=2,
 * float32, causal, hashed (minSeqLen 2, blockSize 2, sampleSize 2), lse.
 */
function rawCall(mutate: string, fn: string) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n, x = 0.5) => Float32Array.from({ length: n }, (_, i) => x * Math.sin(i + 1));
    const base = { B: 1, T: 6, S: 6, Hq: 2, Hk: 1, D: 3, Dv: 2, q: F(36), k: F(18, 0.3), v: F(12), dtype: 'float32',
      o: new Float32Array(24).fill(NaN), lse: new Float32Array(12).fill(NaN), causal: true, scale: 0.5,
      lshBits: 3, blockSize: 2, sampleSize: 2, minSeqLen: 2, seed: 1 };
    const args = (${mutate})(base);
    const done = (r) => { process.stdout.write(JSON.stringify(r)); };
    const fromErr = (e, stage) => ({ ok: false, stage, isError: e instanceof Error, code: e && e.code, message: e && e.message });
    try {
      const r = a.${fn}(...(Array.isArray(args) ? args : [args]));
      if (r && typeof r.then === 'function') r.then(() => done({ ok: true, o: Array.from(args.o) }), (e) => done(fromErr(e, 'rejected')));
      else done({ ok: true, o: args.o ? Array.from(args.o) : [] });
    } catch (e) { done(fromErr(e, 'threw')); }
  `;
  return runInChild<RawResult & { o?: number[] }>(src);
}

const RAW_CASES: { name: string; mutate: string; code: string }[] = [
  { name: 'q shorter than B*T*Hq*D', mutate: '(b) => ({ ...b, q: F(35) })', code: 'SHAPE_MISMATCH' },
  { name: 'k longer than B*S*Hk*D', mutate: '(b) => ({ ...b, k: F(19) })', code: 'SHAPE_MISMATCH' },
  { name: 'v shorter than B*S*Hk*Dv', mutate: '(b) => ({ ...b, v: F(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'o shorter than B*T*Hq*Dv', mutate: '(b) => ({ ...b, o: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'lse shorter than B*Hq*T', mutate: '(b) => ({ ...b, lse: F(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'T larger than the data', mutate: '(b) => ({ ...b, T: 1000, S: 1000 })', code: 'SHAPE_MISMATCH' },
  { name: 'causal with S != T', mutate: '(b) => ({ ...b, S: 3, k: F(9), v: F(6) })', code: 'SHAPE_MISMATCH' },
  { name: 'Hq not a multiple of Hk', mutate: '(b) => ({ ...b, Hk: 3 })', code: 'SHAPE_MISMATCH' },
  { name: 'D = 2000', mutate: '(b) => ({ ...b, D: 2000 })', code: 'TOO_LARGE' },
  { name: 'B negative', mutate: '(b) => ({ ...b, B: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'q a Float64Array', mutate: '(b) => ({ ...b, q: new Float64Array(36) })', code: 'BAD_DTYPE' },
  { name: 'dtype float16 over Float32Arrays', mutate: "(b) => ({ ...b, dtype: 'float16' })", code: 'BAD_DTYPE' },
  { name: 'lse a Uint16Array', mutate: '(b) => ({ ...b, lse: new Uint16Array(12) })', code: 'BAD_DTYPE' },
  { name: 'o missing', mutate: '(b) => ({ ...b, o: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'o overlapping q', mutate: '(b) => ({ ...b, o: b.q.subarray(0, 24) })', code: 'BAD_ARGUMENT' },
  { name: 'lse overlapping o', mutate: '(b) => { const o = new Float32Array(36); return { ...b, o: o.subarray(0, 24), lse: o.subarray(20, 32) }; }', code: 'BAD_ARGUMENT' },
  { name: 'scale NaN', mutate: '(b) => ({ ...b, scale: NaN })', code: 'NON_FINITE' },
  { name: 'lshBits 17', mutate: '(b) => ({ ...b, lshBits: 17 })', code: 'OUT_OF_RANGE' },
  { name: 'lshBits missing', mutate: '(b) => ({ ...b, lshBits: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'blockSize 0', mutate: '(b) => ({ ...b, blockSize: 0 })', code: 'OUT_OF_RANGE' },
  { name: 'sampleSize -1', mutate: '(b) => ({ ...b, sampleSize: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'minSeqLen 1.5', mutate: '(b) => ({ ...b, minSeqLen: 1.5 })', code: 'OUT_OF_RANGE' },
  { name: 'seed -1', mutate: '(b) => ({ ...b, seed: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'seed 2^60', mutate: '(b) => ({ ...b, seed: 2 ** 60 })', code: 'OUT_OF_RANGE' },
  { name: 'seed a string', mutate: "(b) => ({ ...b, seed: '1' })", code: 'BAD_ARGUMENT' },
  { name: 'sampled keys past the cap', mutate: '(b) => ({ ...b, causal: false, T: 1, S: 8, Hq: 1, D: 4, Dv: 4, q: F(4), k: F(32), v: F(32), o: F(4), lse: F(1), blockSize: 1, sampleSize: 2 ** 28, minSeqLen: 0 })', code: 'TOO_LARGE' },
  { name: 'a causal recursion of more than 2^20 leaves', mutate: '(b) => ({ ...b, T: 2 ** 21 + 3, S: 2 ** 21 + 3, Hq: 1, D: 1, Dv: 1, q: F(2 ** 21 + 3), k: F(2 ** 21 + 3), v: F(2 ** 21 + 3), o: F(2 ** 21 + 3), lse: undefined, minSeqLen: 0 })', code: 'TOO_LARGE' },
  { name: 'cancel a Float32Array', mutate: '(b) => ({ ...b, cancel: new Float32Array(1) })', code: 'BAD_DTYPE' },
  { name: 'no argument', mutate: '(b) => []', code: 'BAD_ARGUMENT' },
];

const RANDOM_CASES: { name: string; mutate: string; code: string }[] = [
  { name: 'R of the wrong length', mutate: '(b) => ({ seed: 1, D: 4, lshBits: 3, R: new Float32Array(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'R a Float64Array', mutate: '(b) => ({ seed: 1, D: 4, lshBits: 3, R: new Float64Array(12) })', code: 'BAD_DTYPE' },
  { name: 'lshBits 20', mutate: '(b) => ({ seed: 1, D: 4, lshBits: 20, R: new Float32Array(80) })', code: 'OUT_OF_RANGE' },
  { name: 'samples an Int16Array', mutate: '(b) => ({ seed: 1, b: 0, hk: 0, q0: 0, n: 5, samples: new Int16Array(4) })', code: 'BAD_DTYPE' },
  { name: 'n = 0', mutate: '(b) => ({ seed: 1, b: 0, hk: 0, q0: 0, n: 0, samples: new Int32Array(4) })', code: 'OUT_OF_RANGE' },
  { name: 'seed NaN', mutate: '(b) => ({ seed: NaN, D: 4, lshBits: 3, R: new Float32Array(12) })', code: 'OUT_OF_RANGE' },
];

describe('raw addon: the C++ re-check', () => {
  it('the base call is valid and writes every output (sync and async)', () => {
    for (const fn of ['hyperAttention', 'hyperAttentionAsync']) {
      const r = rawCall('(b) => b', fn);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.result?.ok, r.stderr).toBe(true);
      expect(r.result!.o!.every(Number.isFinite), 'every output written').toBe(true);
    }
  });
  for (const c of RAW_CASES) {
    for (const fn of ['hyperAttention', 'hyperAttentionAsync']) {
      it(`${fn}: ${c.name} -> Error with .code ${c.code}, no crash`, () => expectRawFailure(rawCall(c.mutate, fn), c.code));
    }
  }
  for (const c of RANDOM_CASES) it(`hyperRandom: ${c.name} -> Error with .code ${c.code}, no crash`, () => expectRawFailure(rawCall(c.mutate, 'hyperRandom'), c.code));
});

// ---- fuzzing the public API

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20251125);

interface Mutation { target: number; how: 'dim' | TensorMutation; pick: number }

const smallInt = (lo: number, hi: number, bad: unknown[]) =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: 3 }, { arbitrary: fc.integer({ min: lo, max: hi }), weight: 12 }, { arbitrary: fc.constantFrom(...bad), weight: 1 });

const specArb = fc.record({
  B: fc.integer({ min: 0, max: 2 }),
  T: fc.integer({ min: 0, max: 40 }),
  S: fc.integer({ min: 0, max: 40 }),
  sameTS: fc.boolean(),
  Hk: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  group: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  D: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 12 }), weight: 40 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  Dv: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 12 }), weight: 40 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  dtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  causal: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, true, false, true), weight: 20 }, { arbitrary: fc.constant<unknown>('yes'), weight: 1 }),
  returnLse: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, true, false), weight: 20 }, { arbitrary: fc.constant<unknown>(1), weight: 1 }),
  lshBits: smallInt(0, 16, [17, -1, 2.5, '7']),
  blockSize: smallInt(1, 12, [0, -3, 1.5]),
  sampleSize: smallInt(0, 12, [-1, NaN]),
  minSeqLen: smallInt(0, 20, [-1, Infinity]),
  seedOpt: smallInt(0, 2 ** 40, [-1, 2 ** 53, 0.5]),
  backend: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, 'cpu', 'cpu', 'cpu', 'reference'), weight: 20 }, { arbitrary: fc.constantFrom<unknown>('cuda', 'gpu'), weight: 1 }),
  scale: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.double({ min: -2, max: 2, noNaN: true }), weight: 6 },
    { arbitrary: fc.constantFrom<unknown>(NaN, Infinity, '1'), weight: 1 },
  ),
  mutations: fc.array(
    fc.record({
      target: fc.integer({ min: 0, max: 2 }),
      how: fc.constantFrom<Mutation['how']>('dim', 'rank', 'huge', 'short', 'storage', 'junk', 'detach'),
      pick: fc.nat({ max: 1000 }),
    }),
    { maxLength: 2 },
  ),
  noMutation: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, { arbitrary: fc.constant(false), weight: 1 }),
  seed: fc.nat(),
});
type Spec = typeof specArb extends fc.Arbitrary<infer S> ? S : never;

const isInt = (x: unknown, lo: number, hi: number) => typeof x === 'number' && Number.isInteger(x) && x >= lo && x <= hi;

/** Builds the call of a spec, and says which of its parts are invalid (so the op must throw). */
function build(spec: Spec) {
  const invalid: string[] = [];
  const { B, T, Hk, D, Dv } = spec;
  const S = spec.sameTS ? T : spec.S;
  const Hq = Hk * spec.group;
  const opts: Opts = {
    backend: spec.backend, causal: spec.causal, returnLse: spec.returnLse, scale: spec.scale,
    lshBits: spec.lshBits, blockSize: spec.blockSize, sampleSize: spec.sampleSize, minSeqLen: spec.minSeqLen, seed: spec.seedOpt,
  };
  if (Hq < 1 || D < 1 || Hk < 1 || Dv < 1) invalid.push('a zero head count or size');
  if (D > 1024 || Dv > 1024) invalid.push('D or Dv > 1024');
  const next = seededUniform(spec.seed);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const mk = (shape: number[], dt: DType) => tensor(Float64Array.from({ length: numel(shape) }, normal), shape, dt);
  const big = D > 1024 || Dv > 1024;
  const q = mk([B, T, Hq, D].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const k = mk([B, S, Hk, D].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const v = mk([B, S, Hk, Dv].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const slots: unknown[] = [q, k, v];
  const names = ['q', 'k', 'v'];
  // Dims whose change always breaks the call: q's B and D; all of k's; v's B, S and Hk.
  const breaking = [[0, 3], [0, 1, 2, 3], [0, 1, 2]];
  const mutated = new Set<number>();
  for (const m of spec.noMutation ? [] : spec.mutations) {
    const t = slots[m.target];
    if (!(t instanceof Tensor) || mutated.has(m.target)) continue;
    mutated.add(m.target);
    const name = names[m.target];
    if (m.how === 'dim') {
      const dims = breaking[m.target];
      const shape = [...t.shape];
      shape[dims[m.pick % dims.length]] += 1;
      slots[m.target] = zeros(shape, t.dtype);
      invalid.push(`${name} dim changed`);
      continue;
    }
    const r = mutateTensor(t, m.how, m.pick, name);
    if (r) {
      slots[m.target] = r.value;
      invalid.push(r.invalid);
    }
  }
  if (spec.backend === 'cuda' || spec.backend === 'gpu') invalid.push(`backend ${String(spec.backend)}`);
  if (spec.dtype === 'float64' && spec.backend === 'cpu') invalid.push('float64 inputs on cpu');
  if (spec.scale !== undefined && !(typeof spec.scale === 'number' && Number.isFinite(spec.scale))) invalid.push('scale');
  if (spec.causal !== undefined && typeof spec.causal !== 'boolean') invalid.push('causal');
  if (spec.causal === true && S !== T) invalid.push('causal with S != T');
  if (spec.returnLse !== undefined && typeof spec.returnLse !== 'boolean') invalid.push('returnLse');
  if (spec.lshBits !== undefined && !isInt(spec.lshBits, 0, 16)) invalid.push('lshBits');
  if (spec.blockSize !== undefined && !isInt(spec.blockSize, 1, 2 ** 31 - 1)) invalid.push('blockSize');
  if (spec.sampleSize !== undefined && !isInt(spec.sampleSize, 0, 2 ** 31 - 1)) invalid.push('sampleSize');
  if (spec.minSeqLen !== undefined && !isInt(spec.minSeqLen, 0, 2 ** 31 - 1)) invalid.push('minSeqLen');
  if (spec.seedOpt !== undefined && !isInt(spec.seedOpt, 0, Number.MAX_SAFE_INTEGER)) invalid.push('seed');
  return { call: { q: slots[0], k: slots[1], v: slots[2], opts }, invalid };
}

describe('fuzz: random bad (and good) calls give a SeqkernError or the right answer', () => {
  it(`1500 random calls at hyperAttention (fast-check seed ${FC_SEED})`, () => {
    let valid = 0;
    let thrown = 0;
    fc.assert(
      fc.property(specArb, (spec) => {
        const { call, invalid } = build(spec);
        const what = `spec ${JSON.stringify(spec)} invalid=[${invalid.join('; ')}]`;
        const snaps = snapAll(call);
        const ref = invalid.length === 0 ? hyperAttentionReference(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts) : undefined;
        let result: ReturnType<typeof hyperAttention> | undefined;
        let err: unknown;
        try {
          result = hyperAttention(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts);
        } catch (e) {
          err = e;
        }
        for (const [t, s, key] of snaps) if (!sameBytes(t, s)) throw new Error(`${what}: ${key} was modified`);
        if (err !== undefined) {
          thrown++;
          if (!(err instanceof SeqkernError)) throw new Error(`${what}: threw a non-SeqkernError: ${String(err)}`);
          if (invalid.length === 0) throw new Error(`${what}: valid call threw ${err.code}: ${err.message}`);
          return;
        }
        if (invalid.length > 0) throw new Error(`${what}: an invalid call returned instead of throwing`);
        valid++;
        const low = spec.dtype === 'float16' || spec.dtype === 'bfloat16';
        const tol = low ? 2e-2 : 1e-5;
        const o = result!.o;
        if (o.size !== ref!.o.size) throw new Error(`${what}: o has ${o.size} elements, want ${ref!.o.size}`);
        const bad = firstNonFinite(o);
        if (bad >= 0) throw new Error(`${what}: o[${bad}] is not finite`);
        const e = relErr(o, ref!.o);
        if (!(e <= tol)) throw new Error(`${what}: o relative error ${e} > ${tol}`);
        if (call.opts.returnLse === true) {
          const g = result!.lse!.toFloat64();
          const w = ref!.lse.toFloat64();
          for (let i = 0; i < w.length; i++) {
            const ok = w[i] === -Infinity ? g[i] === -Infinity : Math.abs(g[i] - w[i]) <= tol * Math.max(1, Math.abs(w[i]));
            if (!ok) throw new Error(`${what}: lse[${i}] = ${g[i]}, want ${w[i]}`);
          }
        } else if (result!.lse !== undefined) throw new Error(`${what}: lse without returnLse`);
      }),
      { numRuns: 1500, seed: FC_SEED, endOnFailure: true },
    );
    expect(valid, 'valid calls').toBeGreaterThan(300);
    expect(thrown, 'refused calls').toBeGreaterThan(300);
  });
});
