// Bad input to NaLaFormer (DESIGN.md 4, 7; issue 16 part 4): every argument of nalaAttention and
// nalaAttentionStep, sync and async, gives a SeqkernError with the right code and a message naming the
// argument, and leaves every input (and out, and the step's state) byte-identical. Then the raw addon's own
// checks (in a child process, so a crash is reported instead of killing vitest), the async forms' abort, and a
// fast-check run of the public API: a SeqkernError or the reference's answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  nalaAttention, nalaAttentionAsync, nalaAttentionReference, nalaAttentionStep, nalaAttentionStepAsync, nalaStateLength, numel, randn,
  SeqkernError, Tensor, tensor, zeros, type DType,
} from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import {
  checkSeqkernError, detached, expectRawFailure, expectSeqkernRejection, firstNonFinite, mutateTensor, relErr, runInChild, sameBytes,
  seededUniform, snapshot, type RawResult, type TensorMutation,
} from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { q: unknown; k: unknown; v: unknown; opts: Opts }

const f32 = (shape: number[], seed = 0) => randn(shape, { seed });
/** A big input without the cost of randn: a deterministic pattern (never zeros). */
const big = (shape: number[], seed: number) => {
  const d = new Float32Array(numel(shape));
  const next = seededUniform(seed + 1);
  for (let i = 0; i < d.length; i++) d[i] = next() - 0.5;
  return tensor(d, shape, 'float32');
};
const rope = (rows: number, K: number, seed = 7) => ({ cos: f32([rows, K], seed), sin: f32([rows, K], seed + 1) });
const L = nalaStateLength(8, 6);

/** B=2, T=S=9, H=4, Hk=2, K=8, V=6, causal, rope, an initial state, finalState wanted. */
function base(): Call {
  return {
    q: f32([2, 9, 4, 8], 1), k: f32([2, 9, 2, 8], 2), v: f32([2, 9, 2, 6], 3),
    opts: { backend: 'cpu', causal: true, rope: rope(9, 8), initialState: zeros([2, 2, L]), outputFinalState: true },
  };
}

interface BadCase { name: string; make: (c: Call) => Call; code: string; arg: string }
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });
const nanAt = (t: Tensor, i: number, x = NaN) => {
  const d = t.toFloat64();
  d[i] = x;
  return tensor(d, t.shape, t.dtype);
};

const CASES: BadCase[] = [
  // shapes
  { name: 'q of rank 3', make: (c) => ({ ...c, q: f32([2, 9, 32]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k with another B', make: (c) => ({ ...c, k: f32([1, 9, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'k with another K', make: (c) => ({ ...c, k: f32([2, 9, 2, 9]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'v with another S', make: (c) => ({ ...c, v: f32([2, 8, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'v with another Hk', make: (c) => ({ ...c, v: f32([2, 9, 1, 6]) }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'H not a multiple of Hk', make: (c) => ({ ...c, q: f32([2, 9, 3, 8]) }), code: 'SHAPE_MISMATCH', arg: 'Hk' },
  { name: 'K = 0', make: (c) => ({ ...c, q: f32([2, 9, 4, 0]), k: f32([2, 9, 2, 0]), opts: { backend: 'cpu' } }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'V = 0', make: (c) => ({ ...c, v: f32([2, 9, 2, 0]), opts: { backend: 'cpu' } }), code: 'SHAPE_MISMATCH', arg: 'v' },
  { name: 'K > 512', make: () => ({ q: f32([1, 1, 1, 513]), k: f32([1, 1, 1, 513]), v: f32([1, 1, 1, 2]), opts: {} }), code: 'TOO_LARGE', arg: 'K=513' },
  { name: 'causal with S != T', make: (c) => ({ ...c, k: f32([2, 10, 2, 8]), v: f32([2, 10, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'S = T' },
  // storage and types
  { name: 'k float16 while q is float32', make: (c) => ({ ...c, k: (c.k as Tensor).astype('float16') }), code: 'BAD_DTYPE', arg: 'k' },
  { name: 'Float64Array data in a float32 q', make: (c) => ({ ...c, q: new Tensor(new Float64Array(576), [2, 9, 4, 8], 'float32') }), code: 'BAD_DTYPE', arg: 'q' },
  {
    name: 'float64 inputs with backend cpu',
    make: (c) => ({ ...c, q: (c.q as Tensor).astype('float64'), k: (c.k as Tensor).astype('float64'), v: (c.v as Tensor).astype('float64') }),
    code: 'BAD_DTYPE', arg: 'float64',
  },
  { name: 'v undefined', make: (c) => ({ ...c, v: undefined }), code: 'BAD_ARGUMENT', arg: 'v' },
  { name: 'q with a short buffer', make: (c) => ({ ...c, q: new Tensor(new Float32Array(575), [2, 9, 4, 8], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k on a detached buffer', make: (c) => ({ ...c, k: detached([2, 9, 2, 8]) }), code: 'BAD_ARGUMENT', arg: 'k' },
  // non-finite values (checked before anything is written)
  { name: 'a NaN in q', make: (c) => ({ ...c, q: nanAt(c.q as Tensor, 100) }), code: 'NON_FINITE', arg: 'q' },
  { name: '+Inf in k', make: (c) => ({ ...c, k: nanAt(c.k as Tensor, 287, Infinity) }), code: 'NON_FINITE', arg: 'k' },
  { name: '-Inf in a bfloat16 v', make: (c) => ({ q: (c.q as Tensor).astype('bfloat16'), k: (c.k as Tensor).astype('bfloat16'), v: nanAt(c.v as Tensor, 3, -Infinity).astype('bfloat16'), opts: c.opts }), code: 'NON_FINITE', arg: 'v' },
  { name: 'a NaN in rope.sin', make: (c) => withOpts(c, { rope: { ...rope(9, 8), sin: nanAt(f32([9, 8]), 5) } }), code: 'NON_FINITE', arg: 'rope.sin' },
  { name: 'a NaN in initialState', make: (c) => withOpts(c, { initialState: nanAt(zeros([2, 2, L]), 17) }), code: 'NON_FINITE', arg: 'initialState' },
  // rope
  { name: 'rope.cos of another T', make: (c) => withOpts(c, { rope: { ...rope(9, 8), cos: f32([8, 8]) } }), code: 'SHAPE_MISMATCH', arg: 'rope.cos' },
  { name: 'rope.sin of another K', make: (c) => withOpts(c, { rope: { ...rope(9, 8), sin: f32([9, 4]) } }), code: 'SHAPE_MISMATCH', arg: 'rope.sin' },
  { name: 'rope without sin', make: (c) => withOpts(c, { rope: { cos: f32([9, 8]) } }), code: 'BAD_ARGUMENT', arg: 'rope.sin' },
  { name: 'rope a tensor', make: (c) => withOpts(c, { rope: f32([9, 8]) }), code: 'BAD_ARGUMENT', arg: 'rope' },
  { name: 'rope with an extra key', make: (c) => withOpts(c, { rope: { ...rope(9, 8), tan: 1 } }), code: 'BAD_ARGUMENT', arg: 'tan' },
  { name: 'rope with an odd K', make: () => ({ q: f32([1, 3, 1, 5]), k: f32([1, 3, 1, 5]), v: f32([1, 3, 1, 2]), opts: { rope: rope(3, 5) } }), code: 'SHAPE_MISMATCH', arg: 'K even' },
  { name: 'ropeK when causal', make: (c) => withOpts(c, { ropeK: rope(9, 8) }), code: 'BAD_ARGUMENT', arg: 'ropeK' },
  {
    name: 'rope with S != T and no ropeK',
    make: (c) => ({ ...c, k: f32([2, 5, 2, 8]), v: f32([2, 5, 2, 6]), opts: { rope: rope(9, 8) } }), code: 'BAD_ARGUMENT', arg: 'ropeK',
  },
  {
    name: 'ropeK of T rows where S = 5',
    make: (c) => ({ ...c, k: f32([2, 5, 2, 8]), v: f32([2, 5, 2, 6]), opts: { rope: rope(9, 8), ropeK: rope(9, 8) } }), code: 'SHAPE_MISMATCH', arg: 'ropeK.cos',
  },
  // state
  { name: 'initialState of another shape', make: (c) => withOpts(c, { initialState: zeros([2, 2, L - 1]) }), code: 'SHAPE_MISMATCH', arg: 'initialState' },
  { name: 'initialState float16', make: (c) => withOpts(c, { initialState: zeros([2, 2, L], 'float16') }), code: 'BAD_DTYPE', arg: 'initialState' },
  { name: 'initialState when not causal', make: (c) => withOpts(c, { causal: false, rope: undefined }), code: 'BAD_ARGUMENT', arg: 'initialState' },
  { name: 'outputFinalState when not causal', make: (c) => withOpts(c, { causal: false, rope: undefined, initialState: undefined }), code: 'BAD_ARGUMENT', arg: 'outputFinalState' },
  { name: "outputFinalState 'yes'", make: (c) => withOpts(c, { outputFinalState: 'yes' }), code: 'BAD_ARGUMENT', arg: 'outputFinalState' },
  // packed sequences
  { name: 'cuSeqlens with B = 2', make: (c) => withOpts(c, { cuSeqlens: new Int32Array([0, 9]) }), code: 'SHAPE_MISMATCH', arg: 'B = 1' },
  {
    name: 'cuSeqlens not ending at T',
    make: () => ({ q: f32([1, 9, 2, 8]), k: f32([1, 9, 1, 8]), v: f32([1, 9, 1, 6]), opts: { cuSeqlens: [0, 4, 8] } }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens',
  },
  {
    name: 'cuSeqlensK when causal',
    make: () => ({ q: f32([1, 9, 2, 8]), k: f32([1, 9, 1, 8]), v: f32([1, 9, 1, 6]), opts: { causal: true, cuSeqlens: [0, 4, 9], cuSeqlensK: [0, 4, 9] } }), code: 'BAD_ARGUMENT', arg: 'cuSeqlensK',
  },
  { name: 'cuSeqlensK alone', make: (c) => withOpts(c, { causal: false, rope: undefined, initialState: undefined, outputFinalState: undefined, cuSeqlensK: [0, 9] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlensK' },
  // options
  { name: 'eps 0', make: (c) => withOpts(c, { eps: 0 }), code: 'OUT_OF_RANGE', arg: 'eps' },
  { name: 'eps NaN', make: (c) => withOpts(c, { eps: NaN }), code: 'NON_FINITE', arg: 'eps' },
  { name: "causal 'yes'", make: (c) => withOpts(c, { causal: 'yes' }), code: 'BAD_ARGUMENT', arg: 'causal' },
  { name: 'an unknown option (initial_state)', make: (c) => withOpts(c, { initial_state: 1 }), code: 'BAD_ARGUMENT', arg: 'initialState' },
  { name: "backend 'cuda'", make: (c) => withOpts(c, { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
  // out
  { name: 'out of another shape', make: (c) => withOpts(c, { out: zeros([2, 9, 4, 5]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out of another dtype', make: (c) => withOpts(c, { out: zeros([2, 9, 4, 6], 'float16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'out overlapping q', make: (c) => withOpts(c, { out: new Tensor((c.q as Tensor).data.subarray(0, 432) as Float32Array, [2, 9, 4, 6], 'float32') }), code: 'BAD_ARGUMENT', arg: 'out' },
  // caps
  {
    name: 'an output past 2^31 - 1 elements',
    make: () => ({ q: zeros([1, 2 ** 22, 1, 1]), k: zeros([1, 0, 1, 1]), v: zeros([1, 0, 1, 512]), opts: { backend: 'cpu' } }), code: 'TOO_LARGE', arg: 'o',
  },
];

function snapAll(c: Call): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  const all: Record<string, unknown> = { q: c.q, k: c.k, v: c.v, out: c.opts.out, initialState: c.opts.initialState, state: c.opts.state };
  for (const [key, val] of Object.entries(all)) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

describe('bad input to nalaAttention / nalaAttentionAsync', () => {
  it('the valid base call succeeds (so each case below fails for its own reason)', async () => {
    const c = base();
    const r = nalaAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
    expect(r.finalState!.shape).toEqual([2, 2, L]);
    await expect(nalaAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts)).resolves.toBeDefined();
  });
  for (const bc of CASES) {
    it(`${bc.name} -> ${bc.code} (sync)`, () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      let err: unknown;
      try {
        nalaAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, `nalaAttention: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
    it(`${bc.name} -> ${bc.code} (async rejects alike)`, async () => {
      const c = bc.make(base());
      const snaps = snapAll(c);
      await expectSeqkernRejection(() => nalaAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts), bc.code, bc.arg, `nalaAttentionAsync: ${bc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
  it('non-finite input with the reference backend -> NON_FINITE too', () => {
    const c = base();
    expect(() => nalaAttention(nanAt(c.q as Tensor, 3), c.k as Tensor, c.v as Tensor, { ...c.opts, backend: 'reference' })).toThrow(/finite/);
  });
  it('options not an object -> BAD_ARGUMENT', async () => {
    const c = base();
    for (const bad of [null, 3, 'q']) {
      expect(() => nalaAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).toThrow(SeqkernError);
      await expect(nalaAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, bad as never), String(bad)).rejects.toBeInstanceOf(SeqkernError);
    }
  });
});

/** N=2, H=4, Hk=2, K=8, V=6, a state, rope rows. */
function stepBase(): Opts {
  return { q: f32([2, 4, 8], 1), k: f32([2, 2, 8], 2), v: f32([2, 2, 6], 3), state: tensor(randn([2, 2, L], { seed: 4, std: 0.1 }).toFloat64().map(Math.abs), [2, 2, L], 'float32'), rope: rope(2, 8), backend: 'cpu' };
}

const STEP_CASES: { name: string; make: (o: Opts) => Opts; code: string; arg: string }[] = [
  { name: 'q of rank 4', make: (o) => ({ ...o, q: f32([2, 1, 4, 8]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'k with another N', make: (o) => ({ ...o, k: f32([3, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'k' },
  { name: 'state missing', make: (o) => ({ ...o, state: undefined }), code: 'BAD_ARGUMENT', arg: 'state' },
  { name: 'state of another length', make: (o) => ({ ...o, state: zeros([2, 2, L + 1]) }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state of 1 sequence', make: (o) => ({ ...o, state: zeros([1, 2, L]) }), code: 'SHAPE_MISMATCH', arg: 'state' },
  { name: 'state bfloat16', make: (o) => ({ ...o, state: zeros([2, 2, L], 'bfloat16') }), code: 'BAD_DTYPE', arg: 'state' },
  { name: 'a NaN in the state', make: (o) => ({ ...o, state: nanAt(o.state as Tensor, 9) }), code: 'NON_FINITE', arg: 'state' },
  { name: 'rope of T rows, not N', make: (o) => ({ ...o, rope: rope(3, 8) }), code: 'SHAPE_MISMATCH', arg: 'rope.cos' },
  { name: 'a prefill option (causal)', make: (o) => ({ ...o, causal: true }), code: 'BAD_ARGUMENT', arg: 'causal' },
  { name: 'out overlapping the state', make: (o) => ({ ...o, out: new Tensor((o.state as Tensor).data.subarray(0, 48) as Float32Array, [2, 4, 6], 'float32') }), code: 'BAD_ARGUMENT', arg: 'out' },
];

describe('bad input to nalaAttentionStep / nalaAttentionStepAsync: the state is untouched', () => {
  it('the valid base step succeeds', () => {
    expect(() => nalaAttentionStep(stepBase() as never)).not.toThrow();
  });
  for (const sc of STEP_CASES) {
    it(`${sc.name} -> ${sc.code}`, async () => {
      const o = sc.make(stepBase());
      const snaps = snapAll({ q: o.q, k: o.k, v: o.v, opts: o });
      let err: unknown;
      try {
        nalaAttentionStep(o as never);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, sc.code, sc.arg, `nalaAttentionStep: ${sc.name}`);
      await expectSeqkernRejection(() => nalaAttentionStepAsync(o as never), sc.code, sc.arg, `nalaAttentionStepAsync: ${sc.name}`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
});

describe('async forms: same answer, abort', () => {
  it('nalaAttentionAsync and nalaAttentionStepAsync give the sync bits', async () => {
    const c = base();
    const a = nalaAttention(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
    const b = await nalaAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts);
    expect(relErr(b.o, a.o)).toBe(0);
    expect(relErr(b.finalState!, a.finalState!)).toBe(0);
    const s1 = stepBase(), s2 = { ...s1, state: new Tensor((s1.state as Tensor).data.slice(), (s1.state as Tensor).shape, 'float32') };
    const r1 = nalaAttentionStep(s1 as never);
    const r2 = await nalaAttentionStepAsync(s2 as never);
    expect(relErr(r2.o, r1.o)).toBe(0);
    expect(sameBytes(s2.state, snapshot(s1.state as Tensor))).toBe(true);
  });
  it('an aborted signal rejects with AbortError before anything runs; the step leaves its state', async () => {
    const c = base();
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(nalaAttentionAsync(c.q as Tensor, c.k as Tensor, c.v as Tensor, c.opts, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const s = stepBase();
    const before = snapshot(s.state as Tensor);
    await expect(nalaAttentionStepAsync(s as never, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(s.state as Tensor, before), 'state untouched').toBe(true);
  });
  for (const causal of [false, true]) {
    it(`an abort while a long ${causal ? 'causal' : 'non-causal'} call runs rejects with AbortError`, async () => {
      const T = 1 << 16;
      const q = big([1, T, 4, 64], 1), k = big([1, T, 4, 64], 2), v = big([1, T, 4, 64], 3);
      const ac = new AbortController();
      const p = nalaAttentionAsync(q, k, v, { causal, backend: 'cpu' }, { signal: ac.signal });
      setTimeout(() => ac.abort(), 5);
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    });
  }
  it('off the event loop: a timer keeps firing while a long call runs; an abort mid-call leaves initialState byte-identical, cause = reason', async () => {
    const T = 1 << 16;
    const q = big([1, T, 4, 64], 1), k = big([1, T, 4, 64], 2), v = big([1, T, 4, 64], 3);
    const initialState = tensor(big([1, 4, nalaStateLength(64, 64)], 4).toFloat64().map(Math.abs), [1, 4, nalaStateLength(64, 64)], 'float32');
    const before = snapshot(initialState);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = Date.now();
    await nalaAttentionAsync(q, k, v, { causal: true, initialState, outputFinalState: true });
    const ms = Date.now() - t0;
    clearInterval(timer);
    if (ms > 20) expect(ticks, `timer ticks during a ${ms} ms call`).toBeGreaterThan(1);
    const ac = new AbortController();
    const reason = new Error('enough');
    const p = nalaAttentionAsync(q, k, v, { causal: true, initialState, outputFinalState: true }, { signal: ac.signal });
    setTimeout(() => ac.abort(reason), 2);
    await expect(p).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(sameBytes(initialState, before), 'initialState untouched').toBe(true);
  });
});

// ---- the raw addon re-checks everything (anything may call it directly)

/** Runs `mutate(base)` against the raw addon in a child process. Base: B=1, T=S=6, H=2, Hk=1, K=4, V=2, causal, rope. */
function rawCall(mutate: string, fn: string) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n, x = 0.5) => Float32Array.from({ length: n }, (_, i) => x * Math.sin(i + 1));
    const L = 2 * 4 * 2 + 2 * 4 + 1;
    const base = { B: 1, T: 6, S: 6, H: 2, Hk: 1, K: 4, V: 2, step: false, q: F(48), k: F(24, 0.3), v: F(12), dtype: 'float32',
      o: new Float32Array(24).fill(NaN), causal: true, eps: 1e-6, ropeCos: F(24), ropeSin: F(24, 0.2),
      initialState: new Float32Array(L), finalState: new Float32Array(L).fill(NaN) };
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
  { name: 'q shorter than B*T*H*K', mutate: '(b) => ({ ...b, q: F(47) })', code: 'SHAPE_MISMATCH' },
  { name: 'v longer than B*S*Hk*V', mutate: '(b) => ({ ...b, v: F(13) })', code: 'SHAPE_MISMATCH' },
  { name: 'o shorter than B*T*H*V', mutate: '(b) => ({ ...b, o: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'T larger than the data', mutate: '(b) => ({ ...b, T: 1000, S: 1000 })', code: 'SHAPE_MISMATCH' },
  { name: 'causal with S != T', mutate: '(b) => ({ ...b, S: 3, k: F(12), v: F(6) })', code: 'SHAPE_MISMATCH' },
  { name: 'H not a multiple of Hk', mutate: '(b) => ({ ...b, Hk: 3 })', code: 'SHAPE_MISMATCH' },
  { name: 'K = 600', mutate: '(b) => ({ ...b, K: 600 })', code: 'TOO_LARGE' },
  { name: 'B negative', mutate: '(b) => ({ ...b, B: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'q a Float64Array', mutate: '(b) => ({ ...b, q: new Float64Array(48) })', code: 'BAD_DTYPE' },
  { name: 'dtype bfloat16 over Float32Arrays', mutate: "(b) => ({ ...b, dtype: 'bfloat16' })", code: 'BAD_DTYPE' },
  { name: 'ropeCos short', mutate: '(b) => ({ ...b, ropeCos: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'ropeSin missing', mutate: '(b) => ({ ...b, ropeSin: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'rope with an odd K', mutate: '(b) => ({ ...b, K: 3, q: F(36), k: F(18), ropeCos: F(18), ropeSin: F(18), initialState: undefined, finalState: undefined })', code: 'SHAPE_MISMATCH' },
  { name: 'initialState short', mutate: '(b) => ({ ...b, initialState: F(L - 1) })', code: 'SHAPE_MISMATCH' },
  { name: 'a state when not causal', mutate: '(b) => ({ ...b, causal: false })', code: 'BAD_ARGUMENT' },
  { name: 'a step whose finalState is not its state', mutate: '(b) => ({ ...b, step: true, B: 1, T: 1, S: 1, q: F(8), k: F(4), v: F(2), o: F(4), ropeCos: F(4), ropeSin: F(4) })', code: 'BAD_ARGUMENT' },
  { name: 'finalState overlapping k', mutate: '(b) => { const k = new Float32Array(24 + L); return { ...b, k: k.subarray(0, 24), finalState: k.subarray(10, 10 + L) }; }', code: 'BAD_ARGUMENT' },
  { name: 'o overlapping q', mutate: '(b) => ({ ...b, o: b.q.subarray(0, 24) })', code: 'BAD_ARGUMENT' },
  { name: 'cuSeqlens not ending at T', mutate: '(b) => ({ ...b, cuSeqlens: new Int32Array([0, 5]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens decreasing', mutate: '(b) => ({ ...b, initialState: undefined, finalState: undefined, cuSeqlens: new Int32Array([0, 4, 2, 6]) })', code: 'OUT_OF_RANGE' },
  { name: 'a NaN in q', mutate: '(b) => { b.q[7] = NaN; return b; }', code: 'NON_FINITE' },
  { name: 'eps 0', mutate: '(b) => ({ ...b, eps: 0 })', code: 'OUT_OF_RANGE' },
  { name: 'cancel a Float32Array', mutate: '(b) => ({ ...b, cancel: new Float32Array(1) })', code: 'BAD_DTYPE' },
  { name: 'no argument', mutate: '(b) => []', code: 'BAD_ARGUMENT' },
];

describe('raw addon: the C++ re-check', () => {
  it('the base call is valid and writes every output (sync and async)', () => {
    for (const fn of ['nala', 'nalaAsync']) {
      const r = rawCall('(b) => b', fn);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.result?.ok, r.stderr).toBe(true);
      expect(r.result!.o!.every(Number.isFinite), 'every output written').toBe(true);
    }
  });
  for (const c of RAW_CASES) {
    for (const fn of ['nala', 'nalaAsync']) {
      it(`${fn}: ${c.name} -> Error with .code ${c.code}, no crash`, () => expectRawFailure(rawCall(c.mutate, fn), c.code));
    }
  }
});

// ---- fuzzing the public API

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20251202);

interface Mutation { target: number; how: 'dim' | TensorMutation; pick: number }

const specArb = fc.record({
  B: fc.integer({ min: 0, max: 2 }),
  T: fc.integer({ min: 0, max: 80 }),
  S: fc.integer({ min: 0, max: 80 }),
  sameTS: fc.boolean(),
  Hk: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  group: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 30 }, { arbitrary: fc.constant(0), weight: 1 }),
  K: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 10 }).map((x) => 2 * x), weight: 30 }, { arbitrary: fc.constantFrom(0, 3, 513), weight: 1 }),
  V: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 20 }), weight: 40 }, { arbitrary: fc.constantFrom(0, 513), weight: 1 }),
  dtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  causal: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, true, false, true), weight: 20 }, { arbitrary: fc.constant<unknown>('yes'), weight: 1 }),
  rope: fc.oneof({ arbitrary: fc.constantFrom('none', 'ok', 'ok'), weight: 10 }, { arbitrary: fc.constantFrom('rows', 'nan'), weight: 1 }),
  eps: fc.oneof({ arbitrary: fc.constant<unknown>(undefined), weight: 10 }, { arbitrary: fc.constantFrom<unknown>(1e-3, 0, -1, NaN), weight: 1 }),
  backend: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, 'cpu', 'cpu', 'cpu', 'reference'), weight: 20 }, { arbitrary: fc.constantFrom<unknown>('cuda', 'gpu'), weight: 1 }),
  nanIn: fc.oneof({ arbitrary: fc.constant(-1), weight: 12 }, { arbitrary: fc.integer({ min: 0, max: 2 }), weight: 1 }),
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

function build(spec: Spec) {
  const invalid: string[] = [];
  const { B, T, Hk, K, V } = spec;
  const S = spec.sameTS ? T : spec.S;
  const H = Hk * spec.group;
  const opts: Opts = { backend: spec.backend, causal: spec.causal, eps: spec.eps };
  if (H < 1 || K < 1 || Hk < 1 || V < 1) invalid.push('a zero head count or size');
  const big = K > 512 || V > 512;
  if (big) invalid.push('K or V > 512');
  const next = seededUniform(spec.seed);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const mk = (shape: number[], dt: DType) => tensor(Float64Array.from({ length: numel(shape) }, normal), shape, dt);
  const q = mk([B, T, H, K].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const k = mk([B, S, Hk, K].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const v = mk([B, S, Hk, V].map((d, i) => (big && i < 2 ? 0 : d)), spec.dtype);
  const slots: unknown[] = [q, k, v];
  if (spec.nanIn >= 0 && (slots[spec.nanIn] as Tensor).size > 0) {
    const t = slots[spec.nanIn] as Tensor;
    const d = t.toFloat64();
    d[d.length - 1] = NaN;
    slots[spec.nanIn] = tensor(d, t.shape, t.dtype);
    invalid.push('a NaN input');
  }
  if (spec.rope !== 'none' && !big) {
    const rows = spec.rope === 'rows' ? T + 1 : T;
    const cos = mk([rows, K], 'float32'), sin = mk([rows, K], 'float32');
    if (spec.rope === 'nan' && sin.size > 0) sin.data[0] = NaN;
    opts.rope = { cos, sin };
    if (S !== T && spec.causal !== true) opts.ropeK = { cos: mk([S, K], 'float32'), sin: mk([S, K], 'float32') };
    if (spec.rope === 'rows') invalid.push('rope rows');
    if (spec.rope === 'nan' && sin.size > 0) invalid.push('rope NaN');
    if (K % 2 !== 0) invalid.push('odd K with rope');
  }
  const names = ['q', 'k', 'v'];
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
  if (spec.causal !== undefined && typeof spec.causal !== 'boolean') invalid.push('causal');
  if (spec.causal === true && S !== T) invalid.push('causal with S != T');
  if (spec.eps !== undefined && !(typeof spec.eps === 'number' && spec.eps > 0)) invalid.push('eps');
  return { call: { q: slots[0], k: slots[1], v: slots[2], opts }, invalid };
}

describe('fuzz: random bad (and good) calls give a SeqkernError or the right answer', () => {
  it(`800 random calls at nalaAttention (fast-check seed ${FC_SEED})`, () => {
    let valid = 0;
    let thrown = 0;
    fc.assert(
      fc.property(specArb, (spec) => {
        const { call, invalid } = build(spec);
        const what = `spec ${JSON.stringify(spec)} invalid=[${invalid.join('; ')}]`;
        const snaps = snapAll(call);
        let result: ReturnType<typeof nalaAttention> | undefined;
        let err: unknown;
        try {
          result = nalaAttention(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts);
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
        const ref = nalaAttentionReference(call.q as Tensor, call.k as Tensor, call.v as Tensor, call.opts);
        const low = spec.dtype === 'float16' || spec.dtype === 'bfloat16';
        const tol = low ? 2e-2 : 1e-4;
        const o = result!.o;
        if (o.size !== ref.o.size) throw new Error(`${what}: o has ${o.size} elements, want ${ref.o.size}`);
        const bad = firstNonFinite(o);
        if (bad >= 0) throw new Error(`${what}: o[${bad}] is not finite`);
        const e = relErr(o, ref.o);
        if (!(e <= tol)) throw new Error(`${what}: o relative error ${e} > ${tol}`);
      }),
      { numRuns: 800, seed: FC_SEED, endOnFailure: true },
    );
    expect(valid, 'valid calls').toBeGreaterThan(150);
    expect(thrown, 'refused calls').toBeGreaterThan(150);
  });
});
