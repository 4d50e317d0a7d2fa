// Bad input to rmsNorm / rmsNormGated (issue 14 part 6): every argument, sync and async, gives a SeqkernError
// naming it and leaves the inputs and out byte-identical; the raw addon's checks; and a fast-check run.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { randn, rmsNorm, rmsNormGated, rmsNormGatedAsync, rmsNormReference, SeqkernError, Tensor, zeros } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { checkSeqkernError, expectRawFailure, expectSeqkernRejection, relErr, runInChild, sameBytes, snapshot, type RawResult, fuzzCall } from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { x: unknown; g: unknown; w: unknown; opts: Opts }
const f32 = (shape: number[], seed = 0) => randn(shape, { seed });
const base = (): Call => ({ x: f32([3, 8], 1), g: f32([3, 8], 2), w: f32([8], 3), opts: { backend: 'cpu', groupSize: 4 } });
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });

const CASES: { name: string; make: () => Call; code: string; arg: string }[] = [
  { name: 'x of rank 0', make: () => ({ ...base(), x: new Tensor(new Float32Array(1), [], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'x with an empty last axis', make: () => ({ ...base(), x: f32([3, 0]), g: f32([3, 0]), w: f32([0]), opts: { backend: 'cpu' } }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'gate of another shape', make: () => ({ ...base(), g: f32([3, 7]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'gate of another rank', make: () => ({ ...base(), g: f32([24]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'weight of another H', make: () => ({ ...base(), w: f32([7]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'weight of rank 2', make: () => ({ ...base(), w: f32([1, 8]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'x with Uint16Array data as float32', make: () => ({ ...base(), x: new Tensor(new Uint16Array(24), [3, 8], 'float32') }), code: 'BAD_DTYPE', arg: 'x' },
  { name: 'gate undefined', make: () => ({ ...base(), g: undefined }), code: 'BAD_ARGUMENT', arg: 'gate' },
  { name: 'groupSize not dividing H', make: () => withOpts(base(), { groupSize: 3 }), code: 'OUT_OF_RANGE', arg: 'groupSize' },
  { name: 'groupSize 0', make: () => withOpts(base(), { groupSize: 0 }), code: 'OUT_OF_RANGE', arg: 'groupSize' },
  { name: 'groupSize 9 (> H)', make: () => withOpts(base(), { groupSize: 9 }), code: 'OUT_OF_RANGE', arg: 'groupSize' },
  { name: 'groupSize 2.5', make: () => withOpts(base(), { groupSize: 2.5 }), code: 'BAD_ARGUMENT', arg: 'groupSize' },
  { name: 'eps NaN', make: () => withOpts(base(), { eps: NaN }), code: 'NON_FINITE', arg: 'eps' },
  { name: 'eps -1', make: () => withOpts(base(), { eps: -1 }), code: 'OUT_OF_RANGE', arg: 'eps' },
  { name: "eps '1e-6'", make: () => withOpts(base(), { eps: '1e-6' }), code: 'BAD_ARGUMENT', arg: 'eps' },
  { name: 'out of another shape', make: () => withOpts(base(), { out: zeros([3, 4]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out partly overlapping x', make: () => { const buf = randn([26], { seed: 9 }).data as Float32Array; return { ...withOpts(base(), { out: new Tensor(buf.subarray(1, 25), [3, 8], 'float32') }), x: new Tensor(buf.subarray(0, 24), [3, 8], 'float32') }; }, code: 'BAD_ARGUMENT', arg: 'out' },
  { name: 'out overlapping weight', make: () => { const c = base(); const buf = new Float32Array(32); return { ...withOpts(c, { out: new Tensor(buf.subarray(0, 24), [3, 8], 'float32') }), w: new Tensor(buf.subarray(20, 28), [8], 'float32') }; }, code: 'BAD_ARGUMENT', arg: 'out' },
  { name: 'an unknown option (group_size)', make: () => withOpts(base(), { group_size: 4 }), code: 'BAD_ARGUMENT', arg: 'groupSize' },
  { name: "backend 'cuda'", make: () => withOpts(base(), { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
];

function snapAll(c: Call): [Tensor, Uint8Array, string][] {
  const out: [Tensor, Uint8Array, string][] = [];
  for (const [key, val] of Object.entries({ x: c.x, g: c.g, w: c.w, out: c.opts.out })) {
    if (val instanceof Tensor && val.data.buffer.byteLength > 0) out.push([val, snapshot(val), key]);
  }
  return out;
}

describe('bad input to rmsNormGated / rmsNormGatedAsync', () => {
  it('the valid base call succeeds', () => {
    const c = base();
    expect(() => rmsNormGated(c.x as Tensor, c.g as Tensor, c.w as Tensor, c.opts)).not.toThrow();
  });
  for (const bc of CASES) {
    it(`${bc.name} -> ${bc.code}`, async () => {
      const c = bc.make();
      const snaps = snapAll(c);
      let err: unknown;
      try {
        rmsNormGated(c.x as Tensor, c.g as Tensor, c.w as Tensor, c.opts);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, bc.name);
      await expectSeqkernRejection(() => rmsNormGatedAsync(c.x as Tensor, c.g as Tensor, c.w as Tensor, c.opts), bc.code, bc.arg, `${bc.name} (async)`);
      for (const [t, s, key] of snaps) expect(sameBytes(t, s), `${key} was modified`).toBe(true);
    });
  }
});

function rawCall(mutate: string) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1));
    const base = { rows: 3, H: 8, groupSize: 4, eps: 1e-6, x: F(24), dtype: 'float32', gate: F(24), gateDtype: 'float32',
      weight: F(8), wDtype: 'float32', y: new Float32Array(24), yDtype: 'float32' };
    const args = (${mutate})(base);
    const done = (r) => process.stdout.write(JSON.stringify(r));
    try { a.rmsNorm(args); done({ ok: true }); } catch (e) { done({ ok: false, isError: e instanceof Error, code: e.code, message: e.message }); }
  `;
  return runInChild<RawResult>(src);
}
const RAW: { name: string; mutate: string; code: string }[] = [
  { name: 'base', mutate: '(b) => b', code: '' },
  { name: 'y = x (in place)', mutate: '(b) => ({ ...b, y: b.x })', code: '' },
  { name: 'x short', mutate: '(b) => ({ ...b, x: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'gate short', mutate: '(b) => ({ ...b, gate: F(23) })', code: 'SHAPE_MISMATCH' },
  { name: 'weight long', mutate: '(b) => ({ ...b, weight: F(9) })', code: 'SHAPE_MISMATCH' },
  { name: 'H = 0', mutate: '(b) => ({ ...b, H: 0 })', code: 'SHAPE_MISMATCH' },
  { name: 'groupSize 3', mutate: '(b) => ({ ...b, groupSize: 3 })', code: 'OUT_OF_RANGE' },
  { name: 'eps NaN', mutate: '(b) => ({ ...b, eps: NaN })', code: 'OUT_OF_RANGE' },
  { name: 'y partly over x', mutate: '(b) => { const s = new Float32Array(30); return { ...b, x: s.subarray(0, 24), y: s.subarray(4, 28) }; }', code: 'BAD_ARGUMENT' },
  { name: 'y over weight', mutate: '(b) => { const s = new Float32Array(32); return { ...b, y: s.subarray(0, 24), weight: s.subarray(20, 28) }; }', code: 'BAD_ARGUMENT' },
  { name: 'yDtype bfloat16 over a Float32Array', mutate: "(b) => ({ ...b, yDtype: 'bfloat16' })", code: 'BAD_DTYPE' },
  { name: 'rows negative', mutate: '(b) => ({ ...b, rows: -1 })', code: 'OUT_OF_RANGE' },
];
describe('the raw rmsNorm addon refuses bad arguments', () => {
  for (const r of RAW) {
    it(r.name, () => {
      const res = rawCall(r.mutate);
      if (r.code === '') expect(res.result?.ok, res.stderr).toBe(true);
      else expectRawFailure(res, r.code);
    });
  }
});

describe('fuzz: random rmsNorm calls give a SeqkernError or the reference answer', () => {
  it('300 random calls (fast-check seed 41)', () => {
    let valid = 0;
    let refused = 0;
    const spec = fc.record({
      rows: fc.integer({ min: 0, max: 5 }), H: fc.integer({ min: 0, max: 300 }), wH: fc.oneof({ arbitrary: fc.constant(0), weight: 6 }, { arbitrary: fc.constantFrom(-1, 1), weight: 1 }),
      group: fc.option(fc.integer({ min: 0, max: 40 })), gated: fc.boolean(), eps: fc.option(fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(-1, NaN))),
      dtype: fc.constantFrom('float32', 'bfloat16', 'float16'), seed: fc.integer({ min: 0, max: 1000 }),
    });
    fc.assert(
      fc.property(spec, (s) => {
        const invalid: string[] = [];
        const x = randn([s.rows, s.H], { seed: s.seed, dtype: s.dtype as 'float32', std: 2 });
        const g = randn([s.rows, s.H], { seed: s.seed + 1 });
        const w = randn([Math.max(0, s.H + s.wH)], { seed: s.seed + 2 });
        if (s.H < 1) invalid.push('H');
        if (s.H + s.wH !== s.H) invalid.push('weight');
        if (s.group !== null && (s.group < 1 || s.group > s.H || s.H % s.group !== 0)) invalid.push('group');
        if (s.eps !== null && !(s.eps >= 0)) invalid.push('eps');
        const opts = { backend: 'cpu' as const, groupSize: s.group ?? undefined, eps: s.eps ?? undefined };
        const r = fuzzCall(s, invalid, () => s.gated ? rmsNormGated(x, g, w, opts) : rmsNorm(x, w, opts));
        const what = r.what;
        if (!r.ok) {
          refused++;
          return;
        }
        const y: Tensor = r.value;
        valid++;
        const ref = rmsNormReference(x, w, { gate: s.gated ? g : undefined, groupSize: opts.groupSize, eps: opts.eps });
        const e = relErr(y, ref);
        if (!(e <= (s.dtype === 'float32' ? 1e-5 : 1e-2))) throw new Error(`${what}: relative error ${e}`);
      }),
      { numRuns: 300, seed: 41, endOnFailure: true },
    );
    expect(valid).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
  });
});
