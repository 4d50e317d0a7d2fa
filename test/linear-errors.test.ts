// Bad input to linear (issue 14 part 6): every argument, sync and async, gives a SeqkernError with the right
// code and a message naming the argument, before anything is written (out keeps its bytes, inputs too). Then
// the raw addon's own checks (in a child process, so a crash is reported instead of killing vitest), and a
// fast-check run of the public API: a SeqkernError or the reference's answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { linear, linearAsync, linearReference, randn, SeqkernError, Tensor, type DType } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { checkSeqkernError, expectRawFailure, expectSeqkernRejection, relErr, runInChild, sameBytes, snapshot, type RawResult } from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { x: unknown; w: unknown; opts: Opts }

const f32 = (shape: number[], seed = 0, dtype: DType = 'float32') => randn(shape, { seed, dtype });
const base = (): Call => ({ x: f32([3, 5], 1), w: f32([4, 5], 2), opts: { backend: 'cpu', bias: f32([4], 3) } });
const withOpts = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });
const detachedT = (shape: number[]) => {
  const t = f32(shape, 9);
  structuredClone(t.data.buffer, { transfer: [t.data.buffer as ArrayBuffer] });
  return t;
};

const CASES: { name: string; make: (c: Call) => Call; code: string; arg: string }[] = [
  { name: 'x null', make: (c) => ({ ...c, x: null }), code: 'BAD_ARGUMENT', arg: 'x' },
  { name: 'x a Float32Array', make: (c) => ({ ...c, x: new Float32Array(15) }), code: 'BAD_ARGUMENT', arg: 'x' },
  { name: 'x a scalar', make: (c) => ({ ...c, x: new Tensor(new Float32Array(1), [], 'float32') }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'x with another in', make: (c) => ({ ...c, x: f32([3, 6]) }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'x data short', make: (c) => ({ ...c, x: { dtype: 'float32', shape: [3, 5], data: new Float32Array(14) } }), code: 'SHAPE_MISMATCH', arg: 'x' },
  { name: 'x of dtype int8', make: (c) => ({ ...c, x: new Tensor(new Float32Array(15), [3, 5], 'int8' as DType) }), code: 'BAD_DTYPE', arg: 'x' },
  { name: 'x bfloat16 in a Float32Array', make: (c) => ({ ...c, x: new Tensor(new Float32Array(15), [3, 5], 'bfloat16') }), code: 'BAD_DTYPE', arg: 'x' },
  { name: 'x detached', make: (c) => ({ ...c, x: detachedT([3, 5]) }), code: 'BAD_ARGUMENT', arg: 'x' },
  { name: 'weight missing', make: (c) => ({ ...c, w: undefined }), code: 'BAD_ARGUMENT', arg: 'weight' },
  { name: 'weight of rank 1', make: (c) => ({ ...c, w: f32([20]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'weight of rank 3', make: (c) => ({ ...c, w: f32([4, 5, 1]) }), code: 'SHAPE_MISMATCH', arg: 'weight' },
  { name: 'weight float16 in a Float32Array', make: (c) => ({ ...c, w: new Tensor(new Float32Array(20), [4, 5], 'float16') }), code: 'BAD_DTYPE', arg: 'weight' },
  { name: 'bias of another length', make: (c) => withOpts(c, { bias: f32([5]) }), code: 'SHAPE_MISMATCH', arg: 'bias' },
  { name: 'bias of rank 2', make: (c) => withOpts(c, { bias: f32([1, 4]) }), code: 'SHAPE_MISMATCH', arg: 'bias' },
  { name: 'bias a number', make: (c) => withOpts(c, { bias: 1 }), code: 'BAD_ARGUMENT', arg: 'bias' },
  { name: 'outDtype float16 for float32 x', make: (c) => withOpts(c, { outDtype: 'float16' }), code: 'BAD_ARGUMENT', arg: 'outDtype' },
  { name: 'outDtype bogus', make: (c) => withOpts(c, { outDtype: 'int8' }), code: 'BAD_ARGUMENT', arg: 'outDtype' },
  { name: 'out of another shape', make: (c) => withOpts(c, { out: f32([3, 5]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out of rank 1', make: (c) => withOpts(c, { out: f32([12]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  { name: 'out of bfloat16 for float32 x', make: (c) => withOpts(c, { out: f32([3, 4], 0, 'bfloat16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'out float32 with outDtype bfloat16', make: (c) => ({ ...withOpts(c, { out: f32([3, 4]), outDtype: 'bfloat16' }), x: f32([3, 5], 1, 'bfloat16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'unknown option', make: (c) => withOpts(c, { biass: f32([4]) }), code: 'BAD_ARGUMENT', arg: 'biass' },
  { name: 'backend cuda', make: (c) => withOpts(c, { backend: 'cuda' }), code: 'NO_CUDA', arg: 'cuda' },
  { name: 'backend cpu with float64 x', make: (c) => ({ ...c, x: f32([3, 5], 1, 'float64') }), code: 'BAD_DTYPE', arg: 'float64' },
  { name: 'options not an object', make: (c) => ({ ...c, opts: 5 as unknown as Opts }), code: 'BAD_ARGUMENT', arg: 'options' },
];

describe('linear bad input', () => {
  for (const bc of CASES) {
    it(bc.name, async () => {
      const c = bc.make(base());
      const out = f32([3, 4], 77);
      const before = snapshot(out);
      const opts = typeof c.opts === 'object' && !('out' in c.opts) ? { ...c.opts } : c.opts;
      let err: unknown;
      try {
        linear(c.x as Tensor, c.w as Tensor, opts);
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, bc.code, bc.arg, bc.name);
      await expectSeqkernRejection(() => linearAsync(c.x as Tensor, c.w as Tensor, opts), bc.code, bc.arg, `${bc.name} (async)`);
      expect(sameBytes(out, before)).toBe(true);
    });
  }

  it('out overlapping x, weight or bias is refused and nothing is written', () => {
    const buf = new Float32Array(200);
    for (let i = 0; i < buf.length; i++) buf[i] = Math.sin(i + 1);
    const x = new Tensor(buf.subarray(0, 15), [3, 5], 'float32');
    const w = new Tensor(buf.subarray(20, 40), [4, 5], 'float32');
    const bias = new Tensor(buf.subarray(40, 44), [4], 'float32');
    for (const [name, at] of [['x', 10], ['weight', 30], ['bias', 38]] as const) {
      const out = new Tensor(buf.subarray(at, at + 12), [3, 4], 'float32');
      const before = snapshot({ data: buf });
      let err: unknown;
      try {
        linear(x, w, { bias, out, backend: 'cpu' });
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, 'BAD_ARGUMENT', name, `out overlapping ${name}`);
      expect(sameBytes({ data: buf }, before), name).toBe(true);
    }
  });
});

/** Runs mutate(base) against the raw addon in a child process: x [3, 5], weight [4, 5], bias [4], out [3, 4]. */
function rawCall(mutate: string, fn = 'linear') {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n, s = 0.5) => Float32Array.from({ length: n }, (_, i) => s * Math.sin(i + 1));
    const base = { M: 3, K: 5, N: 4, x: F(15), xDtype: 'float32', weight: F(20, 0.3), weightDtype: 'float32',
      bias: F(4), biasDtype: 'float32', out: new Float32Array(12).fill(NaN), outDtype: 'float32' };
    const args = (${mutate})(base);
    const done = (r) => { process.stdout.write(JSON.stringify(r)); };
    const fromErr = (e, stage) => ({ ok: false, stage, isError: e instanceof Error, code: e && e.code, message: e && e.message });
    try {
      const r = a.${fn}(args);
      if (r && typeof r.then === 'function') r.then(() => done({ ok: true, o: Array.from(args.out) }), (e) => done(fromErr(e, 'rejected')));
      else done({ ok: true, o: Array.from(args.out) });
    } catch (e) { done(fromErr(e, 'threw')); }
  `;
  return runInChild<RawResult & { o?: number[] }>(src);
}

const RAW: { name: string; mutate: string; code: string }[] = [
  { name: 'x short', mutate: '(b) => ({ ...b, x: F(14) })', code: 'SHAPE_MISMATCH' },
  { name: 'weight long', mutate: '(b) => ({ ...b, weight: F(21) })', code: 'SHAPE_MISMATCH' },
  { name: 'bias short', mutate: '(b) => ({ ...b, bias: F(3) })', code: 'SHAPE_MISMATCH' },
  { name: 'out short', mutate: '(b) => ({ ...b, out: new Float32Array(11) })', code: 'SHAPE_MISMATCH' },
  { name: 'x dtype bfloat16 over a Float32Array', mutate: "(b) => ({ ...b, xDtype: 'bfloat16' })", code: 'BAD_DTYPE' },
  { name: 'weight an Int32Array', mutate: '(b) => ({ ...b, weight: new Int32Array(20) })', code: 'BAD_DTYPE' },
  { name: 'weight dtype int8', mutate: "(b) => ({ ...b, weightDtype: 'int8' })", code: 'BAD_DTYPE' },
  { name: 'M negative', mutate: '(b) => ({ ...b, M: -1 })', code: 'OUT_OF_RANGE' },
  { name: 'K not a number', mutate: "(b) => ({ ...b, K: '5' })", code: 'BAD_ARGUMENT' },
  { name: 'M x K past 2^31', mutate: '(b) => ({ ...b, M: 2 ** 30, K: 4 })', code: 'TOO_LARGE' },
  { name: 'out overlapping x', mutate: '(b) => ({ ...b, out: new Float32Array(b.x.buffer, 4, 12) })', code: 'BAD_ARGUMENT' },
  { name: 'out overlapping weight', mutate: '(b) => ({ ...b, out: new Float32Array(b.weight.buffer, 0, 12) })', code: 'BAD_ARGUMENT' },
  { name: 'x missing', mutate: '(b) => ({ ...b, x: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'cancel not an Int32Array', mutate: '(b) => ({ ...b, cancel: new Float32Array(1) })', code: 'BAD_DTYPE' },
];

describe('linear raw addon checks', () => {
  for (const rc of RAW) {
    it(rc.name, () => {
      for (const fn of ['linear', 'linearAsync']) expectRawFailure(rawCall(rc.mutate, fn), rc.code);
    });
  }
  it('the base call succeeds (so the cases above fail for their reason)', () => {
    const r = rawCall('(b) => b');
    expect(r.result?.ok, r.stderr).toBe(true);
    expect(r.result?.o?.every(Number.isFinite)).toBe(true);
  });
});

describe('linear fuzz (fast-check)', () => {
  const DT: DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
  it('a SeqkernError or the reference answer', () => {
    fc.assert(
      fc.property(
        fc.record({
          lead: fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 0, maxLength: 2 }),
          K: fc.integer({ min: 0, max: 40 }), N: fc.integer({ min: 0, max: 40 }), dK: fc.constantFrom(0, 0, 0, 0, 1),
          x: fc.constantFrom(...DT), w: fc.constantFrom(...DT), b: fc.constantFrom<DType | 'none'>('none', ...DT),
          bN: fc.constantFrom(0, 0, 0, 1), outDtype: fc.constantFrom<unknown>(undefined, undefined, 'float32', 'float16', 'bfloat16', 'x'),
          out: fc.constantFrom('none', 'none', 'fresh', 'badshape'), seed: fc.nat(),
        }),
        (s) => {
          const x = f32([...s.lead, s.K], s.seed, s.x);
          const w = f32([s.N, s.K + s.dK], s.seed + 1, s.w);
          const opts: Opts = {};
          if (s.b !== 'none') opts.bias = f32([s.N + s.bN], s.seed + 2, s.b);
          if (s.outDtype !== undefined) opts.outDtype = s.outDtype === 'x' ? s.x : s.outDtype;
          const yShape = [...s.lead, s.N];
          const yDtype = (opts.outDtype as DType | undefined) ?? (s.x === 'float64' ? 'float64' : 'float32');
          if (s.out !== 'none') opts.out = f32(s.out === 'fresh' ? yShape : [...yShape, 1], 5, yDtype);
          let y: Tensor;
          try {
            y = linear(x, w, opts);
          } catch (e) {
            expect(e).toBeInstanceOf(SeqkernError);
            return;
          }
          expect(s.dK === 0 && (s.b === 'none' || s.bN === 0)).toBe(true);
          expect(y.shape).toEqual(yShape);
          const ref = linearReference(x, w, { bias: opts.bias as Tensor | undefined });
          const tol = yDtype === 'bfloat16' ? 1e-2 : yDtype === 'float16' ? 2e-3 : 1e-5;
          expect(relErr(y, ref)).toBeLessThanOrEqual(tol);
        },
      ),
      { numRuns: 300, seed: 14 },
    );
  });
});
