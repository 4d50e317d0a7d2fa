// Bad input to causalConv1d / causalConv1dUpdate (issue 14 part 6): every argument, sync and async, gives a
// SeqkernError naming it and leaves every input, the pool and out byte-identical; the raw addon's own checks
// (in a child process); and a fast-check run: a SeqkernError or the reference's answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  causalConv1d, causalConv1dAsync, causalConv1dReference, causalConv1dUpdate, causalConv1dUpdateAsync, randn, SeqkernError,
  Tensor, zeros,
} from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { checkSeqkernError, expectRawFailure, expectSeqkernRejection, relErr, runInChild, sameBytes, snapshot, type RawResult, fuzzCall } from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { update: boolean; x: unknown; state?: unknown; w: unknown; opts: Opts }
const f32 = (shape: number[], seed = 0) => randn(shape, { seed });

/** Prefill: B = 1 packed, 3 sequences (T = 9), D = 5, W = 4, a pool of 4 slots. */
const prefill = (): Call => ({
  update: false, x: f32([1, 9, 5], 1), w: f32([5, 4], 2),
  opts: { backend: 'cpu', cuSeqlens: [0, 4, 4, 9], convState: f32([4, 5, 3], 3), stateIndices: [2, -1, 0], hasInitialState: [1, 0, 1], bias: f32([5], 4), activation: 'silu' },
});
/** Update: N = 2 tokens of D = 5 into slots [3, 1]. */
const update = (): Call => ({ update: true, x: f32([2, 5], 5), state: f32([4, 5, 3], 6), w: f32([5, 4], 7), opts: { backend: 'cpu', stateIndices: [3, 1] } });

const call = (c: Call) => (c.update ? causalConv1dUpdate(c.x as Tensor, c.state as Tensor, c.w as Tensor, c.opts) : causalConv1d(c.x as Tensor, c.w as Tensor, c.opts));
const callAsync = (c: Call) =>
  c.update ? causalConv1dUpdateAsync(c.x as Tensor, c.state as Tensor, c.w as Tensor, c.opts) : causalConv1dAsync(c.x as Tensor, c.w as Tensor, c.opts);
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });

interface BadCase { name: string; make: () => Call; code: string; arg: string }
const P = prefill;
const U = update;
const CASES: BadCase[] = [
  { name: 'x of rank 2 (prefill)', make: () => ({ ...P(), x: f32([9, 5]) }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'x of rank 4 (update)', make: () => ({ ...U(), x: f32([2, 1, 1, 5]) }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'weight of another D', make: () => ({ ...P(), w: f32([6, 4]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'weight of width 9', make: () => ({ ...P(), w: f32([5, 9]) }), code: 'OUT_OF_RANGE', arg: 'weight' },
  { name: 'weight of width 0', make: () => ({ ...P(), w: f32([5, 0]) }), code: 'OUT_OF_RANGE', arg: 'weight' },
  { name: 'weight of rank 1', make: () => ({ ...P(), w: f32([20]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'bias of another D', make: () => withOpts(P(), { bias: f32([4]) }), code: 'SHAPE_MISMATCH', arg: 'bias' },
  { name: 'x with Uint16Array data as float32', make: () => ({ ...P(), x: new Tensor(new Uint16Array(45), [1, 9, 5], 'float32') }), code: 'BAD_DTYPE', arg: 'x' },
  { name: "activation 'relu'", make: () => withOpts(P(), { activation: 'relu' }), code: 'BAD_ARGUMENT', arg: 'activation' },
  { name: 'cuSeqlens not ending at T', make: () => withOpts(P(), { cuSeqlens: [0, 4, 4, 8] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens decreasing', make: () => withOpts(P(), { cuSeqlens: [0, 5, 4, 9] }), code: 'OUT_OF_RANGE', arg: 'cuSeqlens' },
  { name: 'cuSeqlens with B = 2', make: () => ({ ...withOpts(P(), { cuSeqlens: [0, 9, 18], stateIndices: undefined, hasInitialState: undefined }), x: f32([2, 9, 5]) }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'convState of another D', make: () => withOpts(P(), { convState: f32([4, 6, 3]) }), code: 'SHAPE_MISMATCH', arg: 'convState' },
  { name: 'convState of another width', make: () => withOpts(P(), { convState: f32([4, 5, 4]) }), code: 'SHAPE_MISMATCH', arg: 'convState' },
  { name: 'stateIndices out of range', make: () => withOpts(P(), { stateIndices: [2, -1, 4] }), code: 'OUT_OF_RANGE', arg: 'stateIndices' },
  { name: 'stateIndices -2', make: () => withOpts(P(), { stateIndices: [2, -2, 0] }), code: 'OUT_OF_RANGE', arg: 'stateIndices' },
  { name: 'stateIndices repeated among live sequences', make: () => withOpts(P(), { stateIndices: [2, -1, 2] }), code: 'BAD_ARGUMENT', arg: 'stateIndices' },
  { name: 'stateIndices of another length', make: () => withOpts(P(), { stateIndices: [2, 0] }), code: 'SHAPE_MISMATCH', arg: 'stateIndices' },
  { name: 'stateIndices of floats', make: () => withOpts(P(), { stateIndices: [2, -1, 0.5] }), code: 'BAD_ARGUMENT', arg: 'stateIndices' },
  { name: 'stateIndices a Float32Array', make: () => withOpts(P(), { stateIndices: new Float32Array(3) }), code: 'BAD_DTYPE', arg: 'stateIndices' },
  { name: 'hasInitialState of another length', make: () => withOpts(P(), { hasInitialState: [1, 0] }), code: 'SHAPE_MISMATCH', arg: 'hasInitialState' },
  { name: 'hasInitialState a string', make: () => withOpts(P(), { hasInitialState: '101' }), code: 'BAD_DTYPE', arg: 'hasInitialState' },
  { name: 'stateIndices without convState', make: () => withOpts(P(), { convState: undefined }), code: 'BAD_ARGUMENT', arg: 'convState' },
  { name: 'a pool too small without stateIndices', make: () => withOpts(P(), { convState: f32([2, 5, 3]), stateIndices: undefined }), code: 'SHAPE_MISMATCH', arg: 'convState' },
  { name: 'convState overlapping x', make: () => { const c = P(); const x = c.x as Tensor; return withOpts(c, { convState: new Tensor(x.data.subarray(0, 30) as Float32Array, [2, 5, 3], 'float32'), stateIndices: [0, -1, 1] }); }, code: 'BAD_ARGUMENT', arg: 'convState' },
  { name: 'out of another shape', make: () => withOpts(P(), { out: zeros([1, 9, 4]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out of another dtype', make: () => withOpts(P(), { out: zeros([1, 9, 5], 'bfloat16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'out overlapping the pool', make: () => { const c = P(); return withOpts(c, { out: new Tensor((c.opts.convState as Tensor).data.subarray(0, 45) as Float32Array, [1, 9, 5], 'float32') }); }, code: 'BAD_ARGUMENT', arg: 'out' },
  { name: 'an unknown option (conv_state)', make: () => withOpts(P(), { conv_state: f32([4, 5, 3]) }), code: 'BAD_ARGUMENT', arg: 'convState' },
  { name: 'update given hasInitialState', make: () => withOpts(U(), { hasInitialState: [1, 1] }), code: 'BAD_ARGUMENT', arg: 'hasInitialState' },
  { name: 'update given cuSeqlens', make: () => withOpts(U(), { cuSeqlens: [0, 1, 2] }), code: 'BAD_ARGUMENT', arg: 'cuSeqlens' },
  { name: 'update: convState missing', make: () => ({ ...U(), state: undefined }), code: 'BAD_ARGUMENT', arg: 'convState' },
  { name: 'update: slot repeated', make: () => withOpts(U(), { stateIndices: [1, 1] }), code: 'BAD_ARGUMENT', arg: 'stateIndices' },
  { name: 'update: slot out of range', make: () => withOpts(U(), { stateIndices: [1, 7] }), code: 'OUT_OF_RANGE', arg: 'stateIndices' },
  { name: 'update: x of another D', make: () => ({ ...U(), x: f32([2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'update: float64 pool with float32 x', make: () => ({ ...U(), state: f32([4, 5, 3]).astype('float64') }), code: 'BAD_DTYPE', arg: 'convState' },
  { name: "backend 'cuda'", make: () => withOpts(P(), { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
];

function snapAll(c: Call): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  for (const [key, val] of Object.entries({ x: c.x, w: c.w, state: c.state, convState: c.opts.convState, out: c.opts.out, bias: c.opts.bias })) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

describe('bad input to causalConv1d / causalConv1dUpdate (and Async)', () => {
  it('the valid base calls succeed', () => {
    expect(() => call(P())).not.toThrow();
    expect(() => call(U())).not.toThrow();
  });
  for (const bc of CASES) {
    it(`${bc.name} -> ${bc.code}`, async () => {
      const c = bc.make();
      const snaps = snapAll(c);
      let err: unknown;
      try {
        call(c);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, bc.name);
      await expectSeqkernRejection(() => callAsync(c), bc.code, bc.arg, `${bc.name} (async)`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
});

// ---- the raw addon re-checks (anything may call it directly)
function rawCall(mutate: string) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1));
    const base = { D: 5, W: 4, rows: 9, N: 3, x: F(45), dtype: 'float32', y: new Float32Array(45), weight: F(20), wDtype: 'float32',
      activation: 'silu', cuSeqlens: Int32Array.from([0, 4, 4, 9]), state: F(60), stateDtype: 'float32', slots: 4,
      stateIndices: Int32Array.from([2, -1, 0]), hasInitialState: Uint8Array.from([1, 0, 1]) };
    const args = (${mutate})(base);
    const done = (r) => process.stdout.write(JSON.stringify(r));
    try { a.causalConv1d(args); done({ ok: true }); } catch (e) { done({ ok: false, isError: e instanceof Error, code: e.code, message: e.message }); }
  `;
  return runInChild<RawResult>(src);
}
const RAW: { name: string; mutate: string; code: string }[] = [
  { name: 'base', mutate: '(b) => b', code: '' },
  { name: 'W = 9', mutate: '(b) => ({ ...b, W: 9 })', code: 'OUT_OF_RANGE' },
  { name: 'x short', mutate: '(b) => ({ ...b, x: F(44) })', code: 'SHAPE_MISMATCH' },
  { name: 'y short', mutate: '(b) => ({ ...b, y: F(44) })', code: 'SHAPE_MISMATCH' },
  { name: 'state short', mutate: '(b) => ({ ...b, state: F(59) })', code: 'SHAPE_MISMATCH' },
  { name: 'slots larger than the pool', mutate: '(b) => ({ ...b, slots: 5 })', code: 'SHAPE_MISMATCH' },
  { name: 'cuSeqlens past rows', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 4, 4, 10]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens decreasing', mutate: '(b) => ({ ...b, cuSeqlens: Int32Array.from([0, 5, 4, 9]) })', code: 'OUT_OF_RANGE' },
  { name: 'cuSeqlens a Float32Array', mutate: '(b) => ({ ...b, cuSeqlens: new Float32Array(4) })', code: 'BAD_DTYPE' },
  { name: 'slot out of range', mutate: '(b) => ({ ...b, stateIndices: Int32Array.from([2, -1, 4]) })', code: 'OUT_OF_RANGE' },
  { name: 'slot repeated', mutate: '(b) => ({ ...b, stateIndices: Int32Array.from([2, -1, 2]) })', code: 'BAD_ARGUMENT' },
  { name: 'hasInitialState an Int32Array', mutate: '(b) => ({ ...b, hasInitialState: new Int32Array(3) })', code: 'BAD_DTYPE' },
  { name: 'y overlapping x', mutate: '(b) => ({ ...b, y: b.x })', code: 'BAD_ARGUMENT' },
  { name: 'state overlapping x', mutate: '(b) => { const s = new Float32Array(120); return { ...b, state: s.subarray(0, 60), x: s.subarray(50, 95) }; }', code: 'BAD_ARGUMENT' },
  { name: "activation 'gelu'", mutate: "(b) => ({ ...b, activation: 'gelu' })", code: 'BAD_ARGUMENT' },
  { name: 'dtype float16 over Float32Arrays', mutate: "(b) => ({ ...b, dtype: 'float16' })", code: 'BAD_DTYPE' },
];
describe('the raw causalConv1d addon refuses bad arguments', () => {
  for (const r of RAW) {
    it(r.name, () => {
      const res = rawCall(r.mutate);
      if (r.code === '') expect(res.result?.ok, res.stderr).toBe(true);
      else expectRawFailure(res, r.code);
    });
  }
});

// ---- fast-check: random calls, good and bad
describe('fuzz: random causalConv1d calls give a SeqkernError or the reference answer', () => {
  it('400 random calls (fast-check seed 14)', () => {
    let valid = 0;
    let refused = 0;
    const spec = fc.record({
      B: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 0, max: 70 }), D: fc.integer({ min: 1, max: 70 }), W: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 8 }), weight: 6 }, { arbitrary: fc.constantFrom(0, 9), weight: 1 }),
      wD: fc.oneof({ arbitrary: fc.constant(0), weight: 8 }, { arbitrary: fc.constantFrom(-1, 1), weight: 1 }), slots: fc.integer({ min: 0, max: 6 }), pool: fc.boolean(), silu: fc.boolean(),
      idx: fc.option(fc.oneof({ arbitrary: fc.shuffledSubarray([-1, 0, 1, 2, 3, 4], { minLength: 1, maxLength: 3 }), weight: 3 }, { arbitrary: fc.array(fc.integer({ min: -2, max: 5 }), { maxLength: 4 }), weight: 1 })), dtype: fc.constantFrom('float32', 'bfloat16', 'float16'),
      seed: fc.integer({ min: 0, max: 1000 }),
    });
    fc.assert(
      fc.property(spec, (s) => {
        const invalid: string[] = [];
        const x = randn([s.B, s.T, s.D], { seed: s.seed, dtype: s.dtype as 'float32' });
        const w = randn([s.D + s.wD, s.W], { seed: s.seed + 1 });
        const pool = s.pool ? randn([s.slots, s.D, Math.max(0, s.W - 1)], { seed: s.seed + 2 }) : undefined;
        if (s.W < 1 || s.W > 8) invalid.push('W');
        if (s.wD !== 0) invalid.push('weight D');
        if (!pool && s.idx) invalid.push('indices without a pool');
        if (pool && s.idx) {
          if (s.idx.length !== s.B) invalid.push('indices length');
          if (s.idx.some((v) => v < -1 || v >= s.slots)) invalid.push('index range');
          const live = s.idx.filter((v) => v >= 0);
          if (new Set(live).size !== live.length) invalid.push('repeated');
        }
        if (pool && !s.idx && s.B > s.slots) invalid.push('pool too small');
        const opts = { backend: 'cpu' as const, activation: s.silu ? ('silu' as const) : ('none' as const), convState: pool, stateIndices: s.idx ?? undefined };
        const before = pool ? snapshot(pool) : undefined;
        const r = fuzzCall(s, invalid, () => causalConv1d(x, w, opts));
        const what = r.what;
        if (!r.ok) {
          refused++;
          if (pool && !sameBytes(pool, before!)) throw new Error(`${what}: the pool was written by a refused call`);
          return;
        }
        const y: Tensor = r.value;
        valid++;
        const n = s.D * (s.W - 1);
        let init: Tensor | undefined;
        if (pool) {
          const pv = new Tensor(Float32Array.from(new Float32Array(before!.buffer)), pool.shape, 'float32').toFloat64();
          const d = new Float64Array(s.B * n);
          for (let b = 0; b < s.B; b++) {
            const sl = s.idx ? s.idx[b] : b;
            if (sl >= 0) d.set(pv.subarray(sl * n, (sl + 1) * n), b * n);
          }
          init = new Tensor(d, [s.B, s.D, s.W - 1], 'float64');
        }
        const ref = causalConv1dReference(x, w, { activation: opts.activation, initialStates: init }).y.toFloat64();
        if (pool && s.idx) for (let b = 0; b < s.B; b++) if (s.idx[b] < 0) ref.fill(0, b * s.T * s.D, (b + 1) * s.T * s.D);
        const e = relErr(y.toFloat64(), ref);
        const tol = s.dtype === 'float32' ? 1e-5 : 1e-2;
        if (!(e <= tol)) throw new Error(`${what}: relative error ${e}`);
      }),
      { numRuns: 400, seed: 14, endOnFailure: true },
    );
    expect(valid).toBeGreaterThan(60);
    expect(refused).toBeGreaterThan(60);
  });
});
