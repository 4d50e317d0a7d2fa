// Bad input to attention (DESIGN.md 4, 7): every argument, sync and async, gives a SeqkernError with the right
// code and a message naming the argument, and leaves every input byte-identical. Then the raw addon's own
// checks (in a child process, so a crash is reported instead of killing vitest), and a fast-check run of the
// public API: a SeqkernError or the reference's answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { attention, attentionAsync, attentionReference, numel, randn, SeqkernError, Tensor, tensor, zeros, type DType, type TensorData } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import {
  checkSeqkernError, detached, expectRawFailure, expectSeqkernRejection, firstNonFinite, mutateTensor, relErr, runInChild, sameBytes,
  seededUniform, snapshot, type RawResult, type TensorMutation,
} from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { q: unknown; k: unknown; v: unknown; opts: Opts }

const f32 = (shape: number[], seed = 0) => randn(shape, { seed });

/** B=2, T=5, S=7, Hq=4, Hk=2, D=8, Dv=6. */
function base(): Call {
  return { q: f32([2, 5, 4, 8], 1), k: f32([2, 7, 2, 8], 2), v: f32([2, 7, 2, 6], 3), opts: { backend: 'cpu', causal: true } };
}
/** The same heads packed: B=1, T=5, S=7. */
function packed(): Call {
  return { q: f32([1, 5, 4, 8], 1), k: f32([1, 7, 2, 8], 2), v: f32([1, 7, 2, 6], 3), opts: { backend: 'cpu', causal: true } };
}

interface BadCase { name: string; make: (c: Call) => Call; code: string; arg: string }
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });
const elementwise = () => f32([2, 5, 4, 6], 4);
const headwise = () => f32([2, 5, 4], 5);

const CASES: BadCase[] = [
  // shapes
  { name: 'q of rank 3', make: (c) => ({ ...c, q: f32([2, 5, 32]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k of rank 5', make: (c) => ({ ...c, k: f32([2, 7, 2, 8, 1]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v of rank 3', make: (c) => ({ ...c, v: f32([2, 7, 12]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'k with another B', make: (c) => ({ ...c, k: f32([1, 7, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'k with another D', make: (c) => ({ ...c, k: f32([2, 7, 2, 9]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v with another S', make: (c) => ({ ...c, v: f32([2, 6, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v with another Hk', make: (c) => ({ ...c, v: f32([2, 7, 1, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v with another B', make: (c) => ({ ...c, v: f32([3, 7, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'Hq not a multiple of Hk', make: (c) => ({ ...c, q: f32([2, 5, 3, 8]) }), code: 'SHAPE_MISMATCH', arg: 'Hq' },
  { name: 'Hk larger than Hq', make: (c) => ({ ...c, q: f32([2, 5, 1, 8]) }), code: 'SHAPE_MISMATCH', arg: 'Hq' },
  { name: 'Hq = 0', make: (c) => ({ ...c, q: f32([2, 5, 0, 8]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'D = 0', make: (c) => ({ ...c, q: f32([2, 5, 4, 0]), k: f32([2, 7, 2, 0]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'Hk = 0', make: (c) => ({ ...c, k: f32([2, 7, 0, 8]), v: f32([2, 7, 0, 6]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'Dv = 0', make: (c) => ({ ...c, v: f32([2, 7, 2, 0]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'D > 1024', make: (c) => ({ ...c, q: f32([1, 1, 1, 1025]), k: f32([1, 1, 1, 1025]), v: f32([1, 1, 1, 2]) }), code: 'TOO_LARGE', arg: 'D=1025' },
  { name: 'Dv > 1024', make: (c) => ({ ...c, q: f32([1, 1, 1, 2]), k: f32([1, 1, 1, 2]), v: f32([1, 1, 1, 1025]) }), code: 'TOO_LARGE', arg: 'Dv=1025' },
  { name: 'a negative dimension', make: (c) => ({ ...c, q: new Tensor(new Float32Array(0), [2, 5, 4, -8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'a fractional dimension', make: (c) => ({ ...c, k: new Tensor(new Float32Array(112), [2, 7, 2, 4.5], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'k' },
  // storage and types
  { name: 'Float64Array data in a float32 q', make: (c) => ({ ...c, q: new Tensor(new Float64Array(320), [2, 5, 4, 8], 'float32') }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'Float32Array data in a float16 k', make: (c) => ({ ...c, k: new Tensor(new Float32Array(224), [2, 7, 2, 8], 'float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'Uint16Array data in a float32 v', make: (c) => ({ ...c, v: new Tensor(new Uint16Array(168), [2, 7, 2, 6], 'float32') }), code: 'BAD_DTYPE', arg: 'v' },
  { name: 'an unknown dtype', make: (c) => ({ ...c, q: new Tensor(new Float32Array(320), [2, 5, 4, 8], 'int8' as DType) }), code: 'BAD_DTYPE', arg: 'q' },
  { name: 'k float16 while q is float32', make: (c) => ({ ...c, k: (c.k as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'v bfloat16 while q is float32', make: (c) => ({ ...c, v: (c.v as Tensor).astype('bfloat16') }), code: 'BAD_DTYPE', arg: 'v' },
  {
    name: 'float64 inputs with backend cpu',
    make: (c) => ({ ...c, q: (c.q as Tensor).astype('float64'), k: (c.k as Tensor).astype('float64'), v: (c.v as Tensor).astype('float64') }),
    code: 'BAD_DTYPE', arg: 'float64',
  },
  // not tensors
  { name: 'q a tensor-like without dtype', make: (c) => ({ ...c, q: { shape: [2, 5, 4, 8], data: new Float32Array(320) } }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'q a tensor-like of a short array', make: (c) => ({ ...c, q: { dtype: 'float32', shape: [2, 5, 4, 8], data: new Float32Array(319) } }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k a Float32Array', make: (c) => ({ ...c, k: new Float32Array(224) }), code: 'BAD_ARGUMENT', arg: 'k' },
  { name: 'v undefined', make: (c) => ({ ...c, v: undefined }), code: 'BAD_ARGUMENT', arg: 'v' },
  { name: 'q null', make: (c) => ({ ...c, q: null }), code: 'BAD_ARGUMENT', arg: 'q' },
  // short and detached buffers
  { name: 'q with a short buffer', make: (c) => ({ ...c, q: new Tensor(new Float32Array(319), [2, 5, 4, 8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'v with a long buffer', make: (c) => ({ ...c, v: new Tensor(new Float32Array(169), [2, 7, 2, 6], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'a float16 k with a short buffer', make: (c) => ({ ...c, q: (c.q as Tensor).astype('float16'), v: (c.v as Tensor).astype('float16'), k: new Tensor(new Uint16Array(223), [2, 7, 2, 8], 'float16') }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'a huge declared shape over a short buffer', make: (c) => ({ ...c, k: new Tensor(new Float32Array(224), [2e6, 7e6, 2, 8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'q on a detached buffer', make: (c) => ({ ...c, q: detached([2, 5, 4, 8]) }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'v on a detached buffer', make: (c) => ({ ...c, v: detached([2, 7, 2, 6]) }), code: 'BAD_ARGUMENT', arg: 'v' },
  // gate
  { name: 'gate of rank 2', make: (c) => withOpts(c, { gate: f32([2, 5]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'elementwise gate with another Dv', make: (c) => withOpts(c, { gate: f32([2, 5, 4, 7]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'elementwise gate with another T', make: (c) => withOpts(c, { gate: f32([2, 6, 4, 6]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'headwise gate with another Hq', make: (c) => withOpts(c, { gate: f32([2, 5, 2]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: "gateType 'elementwise' with a headwise gate", make: (c) => withOpts(c, { gate: headwise(), gateType: 'elementwise' }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: "gateType 'headwise' with an elementwise gate", make: (c) => withOpts(c, { gate: elementwise(), gateType: 'headwise' }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: "gateType 'sigmoid'", make: (c) => withOpts(c, { gate: elementwise(), gateType: 'sigmoid' }), code: 'BAD_ARGUMENT', arg: 'gateType' },
  { name: 'gateType without a gate', make: (c) => withOpts(c, { gateType: 'headwise' }), code: 'BAD_ARGUMENT', arg: 'gateType' },
  { name: 'gate a Float32Array', make: (c) => withOpts(c, { gate: new Float32Array(240) }), code: 'BAD_ARGUMENT', arg: 'gate' },
  { name: 'gate null', make: (c) => withOpts(c, { gate: null }), code: 'BAD_ARGUMENT', arg: 'gate' },
  { name: 'Float64Array data in a float32 gate', make: (c) => withOpts(c, { gate: new Tensor(new Float64Array(240), [2, 5, 4, 6], 'float32') }), code: 'BAD_DTYPE', arg: 'gate' },
  { name: 'gate with a short buffer', make: (c) => withOpts(c, { gate: new Tensor(new Float32Array(39), [2, 5, 4], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'gate on a detached buffer', make: (c) => withOpts(c, { gate: detached([2, 5, 4, 6]) }), code: 'BAD_ARGUMENT', arg: 'gate' },
  { name: 'a float64 gate with backend cpu', make: (c) => withOpts(c, { gate: elementwise().astype('float64') }), code: 'BAD_DTYPE', arg: 'float64' },
  // packed sequences (B = 1, T = 5, S = 7)
  { name: 'cuSeqlens not starting at 0', make: () => withOpts(packed(), { cuSeqlens: [1, 3, 5], cuSeqlensK: [0, 3, 7] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens not ending at T', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 4], cuSeqlensK: [0, 3, 7] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens decreasing', make: () => withOpts(packed(), { cuSeqlens: Int32Array.from([0, 3, 2, 5]), cuSeqlensK: [0, 1, 2, 7] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens of one offset', make: () => withOpts(packed(), { cuSeqlens: [0] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlens' },
  { name: 'cuSeqlens a Float32Array', make: () => withOpts(packed(), { cuSeqlens: Float32Array.from([0, 5]), cuSeqlensK: [0, 7] }), code: 'BAD_DTYPE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with a fraction', make: () => withOpts(packed(), { cuSeqlens: [0, 2.5, 5], cuSeqlensK: [0, 3, 7] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with NaN', make: () => withOpts(packed(), { cuSeqlens: [0, NaN, 5], cuSeqlensK: [0, 3, 7] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with B = 2', make: (c) => withOpts(c, { cuSeqlens: [0, 5], cuSeqlensK: [0, 7] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlens' },
  { name: 'cuSeqlensK not ending at S', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 5], cuSeqlensK: [0, 3, 6] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlensK' },
  { name: 'cuSeqlensK decreasing', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 5], cuSeqlensK: [0, 8, 7] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlensK' },
  { name: 'cuSeqlensK with another N', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 5], cuSeqlensK: [0, 1, 3, 7] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlensK' },
  { name: 'cuSeqlensK a string', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 5], cuSeqlensK: '0,3,7' }), code: 'BAD_DTYPE', arg: 'cuSeqlensK' },
  { name: 'cuSeqlensK without cuSeqlens', make: () => withOpts(packed(), { cuSeqlensK: [0, 3, 7] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlensK' },
  { name: 'cuSeqlens alone with S != T', make: () => withOpts(packed(), { cuSeqlens: [0, 2, 5] }), code: 'SHAPE_MISMATCH', arg: 'cuSeqlensK' },
  // options
  { name: 'scale NaN', make: (c) => withOpts(c, { scale: NaN }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale Infinity', make: (c) => withOpts(c, { scale: Infinity }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale -Infinity', make: (c) => withOpts(c, { scale: -Infinity }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'scale a string', make: (c) => withOpts(c, { scale: '0.5' }), code: 'BAD_ARGUMENT', arg: 'scale' },
  { name: "causal 'yes'", make: (c) => withOpts(c, { causal: 'yes' }), code: 'BAD_ARGUMENT', arg: 'causal' },
  { name: 'returnLse 1', make: (c) => withOpts(c, { returnLse: 1 }), code: 'BAD_ARGUMENT', arg: 'returnLse' },
  { name: "backend 'cuda'", make: (c) => withOpts(c, { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
  { name: "backend 'gpu'", make: (c) => withOpts(c, { backend: 'gpu' }), code: 'BAD_ARGUMENT', arg: 'backend' },
  // caps: o [1, 2^21, 1, 1024] has 2^31 elements while every input is small (S = 0)
  {
    name: 'an output past 2^31 - 1 elements',
    make: () => ({ q: zeros([1, 2 ** 21, 1, 1]), k: zeros([1, 0, 1, 1]), v: zeros([1, 0, 1, 1024]), opts: { backend: 'cpu' } }),
    code: 'TOO_LARGE', arg: 'o',
  },
];

function snapAll(c: Call): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  for (const [key, val] of Object.entries({ q: c.q, k: c.k, v: c.v, gate: c.opts.gate })) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

describe('bad input to attention / attentionAsync', () => {
  it('the valid base calls succeed (so each case below fails for its own reason)', async () => {
    for (const c of [base(), withOpts(base(), { gate: elementwise() }), withOpts(base(), { gate: headwise(), gateType: 'headwise' }), withOpts(packed(), { cuSeqlens: [0, 2, 5], cuSeqlensK: [0, 3, 7] })]) {
      expect(() => attention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts)).not.toThrow();
      await expect(attentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts)).resolves.toBeDefined();
    }
  });
  for (const bc of CASES) {
    it(`${bc.name} -> ${bc.code} (sync)`, () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      let err: unknown;
      try {
        attention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, `attention: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
    it(`${bc.name} -> ${bc.code} (async rejects alike)`, async () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      await expectSeqkernRejection(() => attentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts), bc.code, bc.arg, `attentionAsync: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
  it('options not an object -> BAD_ARGUMENT', async () => {
    const c = base();
    for (const bad of [null, 3, 'q']) {
      expect(() => attention(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).toThrow(SeqkernError);
      await expect(attentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).rejects.toBeInstanceOf(SeqkernError);
    }
  });
});

// ---- the raw addon re-checks everything (anything may call it directly)

/**
 * Runs `mutate(base)` against the raw addon in a child process (so a crash shows as a signal, not a dead test
 * runner). Base: B=1, T=4, S=6, Hq=2, Hk=1, D=3, Dv=2, float32, causal, elementwise gate, lse.
 */
function rawCall(mutate: string, asyncForm: boolean) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n, x = 0.5) => new Float32Array(n).fill(x);
    const base = { B: 1, T: 4, S: 6, Hq: 2, Hk: 1, D: 3, Dv: 2, q: F(24), k: F(18, 0.3), v: F(12), dtype: 'float32',
      o: F(16, NaN), lse: F(8, NaN), gate: F(16, 1), gateDtype: 'float32', gateKind: 'elementwise', causal: true, scale: 0.5 };
    const args = (${mutate})(base);
    const done = (r) => { process.stdout.write(JSON.stringify(r)); };
    const fromErr = (e, stage) => ({ ok: false, stage, isError: e instanceof Error, code: e && e.code, message: e && e.message });
    try {
      const r = ${asyncForm ? 'a.attentionAsync' : 'a.attention'}(...(Array.isArray(args) ? args : [args]));
      if (r && typeof r.then === 'function') r.then(() => done({ ok: true, o: Array.from(args.o) }), (e) => done(fromErr(e, 'rejected')));
      else done({ ok: true, o: Array.from(args.o) });
    } catch (e) { done(fromErr(e, 'threw')); }
  `;
  return runInChild<RawResult & { o?: number[] }>(src);
}

const RAW_CASES: { name: string; mutate: string; code: string }[] = [
  { name: 'q shorter than B*T*Hq*D', mutate: '(b) => ({ ...b, q: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'k longer than B*S*Hk*D', mutate: '(b) => ({ ...b, k: F(19) })', code: 'SHAPE_MISMATCH' },
  { name: 'v shorter than B*S*Hk*Dv', mutate: '(b) => ({ ...b, v: F(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'o shorter than B*T*Hq*Dv', mutate: '(b) => ({ ...b, o: F(8) })', code: 'SHAPE_MISMATCH' },
  { name: 'lse shorter than B*Hq*T', mutate: '(b) => ({ ...b, lse: F(7) })', code: 'SHAPE_MISMATCH' },
  { name: 'elementwise gate shorter than B*T*Hq*Dv', mutate: '(b) => ({ ...b, gate: F(15) })', code: 'SHAPE_MISMATCH' },
  { name: 'headwise gate of elementwise length', mutate: "(b) => ({ ...b, gateKind: 'headwise' })", code: 'SHAPE_MISMATCH' },
  { name: 'T larger than the data', mutate: '(b) => ({ ...b, T: 1000 })', code: 'SHAPE_MISMATCH' },
  { name: 'S larger than the data', mutate: '(b) => ({ ...b, S: 7 })', code: 'SHAPE_MISMATCH' },
  { name: 'Hq not a multiple of Hk', mutate: '(b) => ({ ...b, Hk: 3, Hq: 2 })', code: 'SHAPE_MISMATCH' },
  { name: 'Hk = 0', mutate: '(b) => ({ ...b, Hk: 0 })', code: 'SHAPE_MISMATCH' },
  { name: 'Dv = 0', mutate: '(b) => ({ ...b, Dv: 0 })', code: 'SHAPE_MISMATCH' },
  { name: 'D = 2000', mutate: '(b) => ({ ...b, D: 2000 })', code: 'TOO_LARGE' },
  { name: 'B negative', mutate: '(b) => ({ ...b, B: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'S fractional', mutate: '(b) => ({ ...b, S: 1.5 })', code: 'OUT_OF_RANGE' },
  { name: 'T = 2^31', mutate: '(b) => ({ ...b, T: 2 ** 31 })', code: 'OUT_OF_RANGE' },
  { name: 'Hq a string', mutate: "(b) => ({ ...b, Hq: '2' })", code: 'BAD_ARGUMENT' },
  { name: 'q missing', mutate: '(b) => ({ ...b, q: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'o missing', mutate: '(b) => ({ ...b, o: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'q a Float64Array', mutate: '(b) => ({ ...b, q: new Float64Array(24) })', code: 'BAD_DTYPE' },
  { name: 'k a plain array', mutate: '(b) => ({ ...b, k: [1, 2, 3] })', code: 'BAD_DTYPE' },
  { name: 'dtype float64', mutate: "(b) => ({ ...b, dtype: 'float64' })", code: 'BAD_DTYPE' },
  { name: 'dtype float16 over Float32Arrays', mutate: "(b) => ({ ...b, dtype: 'float16' })", code: 'BAD_DTYPE' },
  { name: 'lse a Uint16Array', mutate: '(b) => ({ ...b, lse: new Uint16Array(8) })', code: 'BAD_DTYPE' },
  { name: 'gate float16 over a Float32Array', mutate: "(b) => ({ ...b, gateDtype: 'float16' })", code: 'BAD_DTYPE' },
  { name: 'an unknown gateKind', mutate: "(b) => ({ ...b, gateKind: 'sigmoid' })", code: 'BAD_ARGUMENT' },
  { name: 'gateKind elementwise without a gate', mutate: '(b) => ({ ...b, gate: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'a gate with gateKind none', mutate: "(b) => ({ ...b, gateKind: 'none' })", code: 'BAD_ARGUMENT' },
  { name: 'cuSeqlens ending past T', mutate: '(b) => ({ ...b, S: 4, k: F(12), v: F(8), cuSeqlens: Int32Array.from([0, 2, 5]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens decreasing', mutate: '(b) => ({ ...b, S: 4, k: F(12), v: F(8), cuSeqlens: Int32Array.from([0, 3, 1, 4]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens negative start', mutate: '(b) => ({ ...b, S: 4, k: F(12), v: F(8), cuSeqlens: Int32Array.from([-4, 4]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens a Float32Array', mutate: '(b) => ({ ...b, cuSeqlens: Float32Array.from([0, 4]) })', code: 'BAD_DTYPE' },
  { name: 'cuSeqlens of one offset', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlens with B = 2', mutate: '(b) => ({ ...b, B: 2, T: 2, S: 3, cuSeqlens: Int32Array.from([0, 2]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlens with S != T and no cuSeqlensK', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 1, 4]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlensK not ending at S', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 1, 4]), cuSeqlensK: Int32Array.from([0, 2, 5]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlensK with another N', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 1, 4]), cuSeqlensK: Int32Array.from([0, 2, 3, 6]) })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlensK without cuSeqlens', mutate: '(b) => ({ ...b, cuSeqlensK: Int32Array.from([0, 6]) })', code: 'BAD_ARGUMENT' },
  { name: 'scale NaN', mutate: '(b) => ({ ...b, scale: NaN })', code: 'NON_FINITE' },
  { name: 'scale Infinity', mutate: '(b) => ({ ...b, scale: Infinity })', code: 'NON_FINITE' },
  { name: 'cancel a Float32Array', mutate: '(b) => ({ ...b, cancel: new Float32Array(1) })', code: 'BAD_DTYPE' },
  { name: 'no argument', mutate: '(b) => []', code: 'BAD_ARGUMENT' },
  { name: 'a number for the argument object', mutate: '(b) => [5]', code: 'BAD_ARGUMENT' },
  {
    // B*T*Hq*D = 2^20 * 2^22 * 2^22 * 1 = 2^64: wraps to 0 in int64, the length of the empty arrays given.
    name: 'dimension products that overflow int64 (empty arrays)',
    mutate: "(b) => ({ B: 2 ** 20, T: 2 ** 22, S: 2 ** 22, Hq: 2 ** 22, Hk: 2 ** 22, D: 1, Dv: 1, q: F(0), k: F(0), v: F(0), dtype: 'float32', o: F(0), gateKind: 'none', causal: false, scale: 1 })",
    code: 'TOO_LARGE|SHAPE_MISMATCH',
  },
  { name: 'an output past the cap from empty inputs', mutate: "(b) => ({ ...b, B: 1, T: 2 ** 21, Hq: 1, D: 1, S: 0, Hk: 1, Dv: 1024, q: F(0), k: F(0), v: F(0), o: F(0), lse: undefined, gate: undefined, gateKind: 'none' })", code: 'TOO_LARGE' },
];

describe('raw addon: the C++ re-check', () => {
  it('the base call is valid and writes every output', () => {
    for (const asyncForm of [false, true]) {
      const r = rawCall('(b) => b', asyncForm);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.result?.ok, r.stderr).toBe(true);
      expect(r.result!.o!.every(Number.isFinite), 'every output written').toBe(true);
    }
  });
  for (const c of RAW_CASES) {
    for (const asyncForm of [false, true]) {
      it(`${asyncForm ? 'attentionAsync' : 'attention'}: ${c.name} -> Error with .code ${c.code}, no crash`, () => {
        expectRawFailure(rawCall(c.mutate, asyncForm), c.code);
      });
    }
  }
});

// ---- fuzzing the public API

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20251125);

interface Mutation { target: number; how: 'dim' | TensorMutation; pick: number }

const specArb = fc.record({
  B: fc.integer({ min: 0, max: 2 }),
  T: fc.integer({ min: 0, max: 6 }),
  S: fc.integer({ min: 0, max: 9 }),
  Hk: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  group: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 4 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  hqExtra: fc.oneof({ arbitrary: fc.constant(0), weight: 30 }, { arbitrary: fc.integer({ min: 1, max: 2 }), weight: 1 }),
  D: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 20 }), weight: 40 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  Dv: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 20 }), weight: 40 }, { arbitrary: fc.constantFrom(0, 1025), weight: 1 }),
  dtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  gate: fc.constantFrom('none', 'none', 'elementwise', 'headwise'),
  gateDtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  gateType: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, 'same'), weight: 12 }, { arbitrary: fc.constantFrom<unknown>('other', 'bogus'), weight: 1 }),
  causal: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, true, false, true), weight: 20 }, { arbitrary: fc.constant<unknown>('yes'), weight: 1 }),
  returnLse: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, true, true, false), weight: 20 }, { arbitrary: fc.constant<unknown>(1), weight: 1 }),
  lens: fc.option(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 4 }), { freq: 3 }),
  lensK: fc.option(fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 4, maxLength: 4 }), { freq: 2 }),
  cuBad: fc.oneof(
    { arbitrary: fc.constant('none'), weight: 20 },
    { arbitrary: fc.constantFrom('start', 'end', 'decreasing', 'B2', 'float', 'short', 'kEnd', 'kLen', 'kOnly', 'noK'), weight: 1 },
  ),
  backend: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, 'cpu', 'cpu', 'cpu', 'reference'), weight: 20 }, { arbitrary: fc.constantFrom<unknown>('cuda', 'gpu'), weight: 1 }),
  scale: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.double({ min: -2, max: 2, noNaN: true }), weight: 6 },
    { arbitrary: fc.constantFrom<unknown>(NaN, Infinity, -Infinity, '1'), weight: 1 },
  ),
  mutations: fc.array(
    fc.record({
      target: fc.integer({ min: 0, max: 3 }),
      how: fc.constantFrom<Mutation['how']>('dim', 'rank', 'huge', 'short', 'storage', 'junk', 'detach'),
      pick: fc.nat({ max: 1000 }),
    }),
    { maxLength: 2 },
  ),
  noMutation: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, { arbitrary: fc.constant(false), weight: 1 }),
  seed: fc.nat(),
});
type Spec = typeof specArb extends fc.Arbitrary<infer S> ? S : never;

/** Builds the call of a spec, and says which of its parts are invalid (so the op must throw). */
function build(spec: Spec) {
  const invalid: string[] = [];
  let { B, T, S } = spec;
  const { Hk, D, Dv } = spec;
  const Hq = Hk * spec.group + spec.hqExtra;
  const opts: Opts = { backend: spec.backend, causal: spec.causal, returnLse: spec.returnLse, scale: spec.scale };
  const cum = (l: number[]) => l.reduce<number[]>((o, x) => [...o, o[o.length - 1] + x], [0]);
  if (spec.lens) {
    B = 1;
    const cq = cum(spec.lens);
    T = cq[cq.length - 1];
    let cq2: unknown = cq;
    let ck: unknown;
    if (spec.lensK) {
      const lk = spec.lensK.slice(0, spec.lens.length);
      while (lk.length < spec.lens.length) lk.push(1);
      const c = cum(lk);
      S = c[c.length - 1];
      ck = c;
    } else {
      S = T;
    }
    switch (spec.cuBad) {
      case 'start': cq2 = [1, ...cq.slice(1)]; break;
      case 'end': cq2 = [...cq.slice(0, -1), T + 1]; break;
      case 'decreasing': cq2 = [...cq.slice(0, -1), T + 3, T]; break;
      case 'B2': B = 2; break;
      case 'float': cq2 = Float32Array.from(cq); break;
      case 'short': cq2 = [0]; break;
      case 'kEnd': ck = ck ? [...(ck as number[]).slice(0, -1), S + 1] : [...cq.slice(0, -1), S + 1]; break;
      case 'kLen': ck = [...((ck as number[] | undefined) ?? cq), S]; break;
      case 'kOnly': cq2 = undefined; ck = ck ?? cq; break;
      case 'noK': if (ck) { ck = undefined; S = T + 1; } else S = T + 1; break;
    }
    if (spec.cuBad !== 'none') invalid.push(`cuSeqlens ${spec.cuBad}`);
    if (cq2 !== undefined) opts.cuSeqlens = cq2;
    if (ck !== undefined) opts.cuSeqlensK = ck;
  }
  if (Hq < 1 || D < 1 || Hk < 1 || Dv < 1) invalid.push('a zero head count or size');
  if (Hk >= 1 && Hq % Hk !== 0) invalid.push('Hq not a multiple of Hk');
  if (D > 1024 || Dv > 1024) invalid.push('D or Dv > 1024');

  const next = seededUniform(spec.seed);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const mk = (shape: number[], dt: DType) => tensor(Float64Array.from({ length: numel(shape) }, normal), shape, dt);
  // Big head sizes only ever reach a shape check: keep their (never read) data empty-ish.
  const big = D > 1024 || Dv > 1024;
  const q = mk([B, T, Hq, D].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const k = mk([B, S, Hk, D].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const v = mk([B, S, Hk, Dv].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  let gate: Tensor | undefined;
  if (spec.gate !== 'none') {
    gate = mk(spec.gate === 'elementwise' ? [B, T, Hq, Dv] : [B, T, Hq], spec.gateDtype);
    if (spec.gateType === 'same') opts.gateType = spec.gate;
    else if (spec.gateType === 'other') {
      opts.gateType = spec.gate === 'elementwise' ? 'headwise' : 'elementwise';
      invalid.push('gateType other than the gate');
    } else if (spec.gateType === 'bogus') {
      opts.gateType = 'sigmoid';
      invalid.push('gateType bogus');
    }
  } else if (spec.gateType === 'other' || spec.gateType === 'bogus') {
    opts.gateType = spec.gateType === 'bogus' ? 'sigmoid' : 'headwise';
    invalid.push('gateType without a gate');
  }

  const slots: unknown[] = [q, k, v, gate];
  const names = ['q', 'k', 'v', 'gate'];
  // Dims whose change always breaks the call: q's B and D; all of k's (each is shared with v or q); v's B, S
  // and Hk (a changed Dv alone is a valid call); any of the gate's.
  const breaking = [[0, 3], [0, 1, 2, 3], [0, 1, 2], [0, 1, 2, 3]];
  const mutated = new Set<number>();
  for (const m of spec.noMutation ? [] : spec.mutations) {
    const t = slots[m.target];
    if (!(t instanceof Tensor) || mutated.has(m.target)) continue;
    mutated.add(m.target);
    const name = names[m.target];
    if (m.how === 'dim') {
      const dims = breaking[m.target].filter((d) => d < t.shape.length);
      const shape = [...t.shape];
      shape[dims[m.pick % dims.length]] += 1;
      slots[m.target] = zeros(shape, t.dtype);
      invalid.push(`${name} dim changed`);
      continue;
    }
    // A headwise gate [B,T,Hq] with a trailing 1 is a fine elementwise gate when Dv = 1.
    if (m.how === 'rank' && m.target === 3 && t.shape.length === 3 && Dv === 1 && opts.gateType === undefined) continue;
    const r = mutateTensor(t, m.how, m.pick, name);
    if (r) {
      slots[m.target] = r.value;
      invalid.push(r.invalid);
    }
  }
  if (slots[3] !== undefined) opts.gate = slots[3];
  if (spec.backend === 'cuda' || spec.backend === 'gpu') invalid.push(`backend ${String(spec.backend)}`);
  const f64 = spec.dtype === 'float64' || (gate !== undefined && spec.gateDtype === 'float64');
  if (f64 && spec.backend === 'cpu') invalid.push('float64 inputs on cpu');
  if (spec.scale !== undefined && !(typeof spec.scale === 'number' && Number.isFinite(spec.scale))) invalid.push('scale');
  if (spec.causal !== undefined && typeof spec.causal !== 'boolean') invalid.push('causal');
  if (spec.returnLse !== undefined && typeof spec.returnLse !== 'boolean') invalid.push('returnLse');
  return { call: { q: slots[0], k: slots[1], v: slots[2], opts }, invalid };
}

describe('fuzz: random bad (and good) calls give a SeqkernError or the right answer', () => {
  it(`2500 random calls at attention (fast-check seed ${FC_SEED})`, () => {
    let valid = 0;
    let thrown = 0;
    fc.assert(
      fc.property(specArb, (spec) => {
        const { call, invalid } = build(spec);
        const what = `spec ${JSON.stringify(spec)} invalid=[${invalid.join('; ')}]`;
        const snaps = snapAll(call);
        const ref = invalid.length === 0 ? attentionReference(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts) : undefined;
        let result: ReturnType<typeof attention> | undefined;
        let err: unknown;
        try {
          result = attention(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts);
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
        const low = spec.dtype === 'float16' || spec.dtype === 'bfloat16' || (call.opts.gate !== undefined && (spec.gateDtype === 'float16' || spec.gateDtype === 'bfloat16'));
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
            const ok = w[i] === -Infinity ? g[i] === -Infinity : Math.abs(g[i] - w[i]) <= (low ? 2e-2 : 1e-5) * Math.max(1, Math.abs(w[i]));
            if (!ok) throw new Error(`${what}: lse[${i}] = ${g[i]}, want ${w[i]}`);
          }
        } else if (result!.lse !== undefined) throw new Error(`${what}: lse without returnLse`);
      }),
      { numRuns: 2500, seed: FC_SEED, endOnFailure: true },
    );
    // The generator should produce both kinds in fair numbers (about 40% valid).
    expect(valid, 'valid calls').toBeGreaterThan(600);
    expect(thrown, 'refused calls').toBeGreaterThan(600);
  });
});
