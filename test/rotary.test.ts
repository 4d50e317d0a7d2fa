// rotary against its float64 reference (issue 14 part 4): dtypes, odd D with partial rotaryDim, interleaved,
// positions / cuSeqlens / default positions, in place and out; bad input before anything is written; async.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { randn, rotary, rotaryAsync, rotaryReference, Tensor, tensor, type DType } from '../src/index.js';
import { expectClose, expectSeqkernError, expectSeqkernRejection, relErr, sameBytes, snapshot, fuzzCall } from './helpers.js';

function tables(maxPos: number, half: number, base = 10000) {
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const th = p * Math.pow(base, -i / half);
      cos[p * half + i] = Math.cos(th);
      sin[p * half + i] = Math.sin(th);
    }
  }
  return { cos: tensor(cos, [maxPos, half]), sin: tensor(sin, [maxPos, half]) };
}

interface Case { B: number; T: number; H: number; D: number; rot: number; dtype: DType; interleaved: boolean; pos: 'default' | 'positions' | 'cu'; seed: number }

describe('rotary vs the float64 reference', () => {
  const cases: Case[] = [];
  let seed = 1;
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (const interleaved of [false, true]) {
      for (const pos of ['default', 'positions', 'cu'] as const) {
        cases.push({ B: pos === 'cu' ? 1 : 3, T: 65, H: 3, D: 37, rot: 18, dtype, interleaved, pos, seed: seed++ });
        cases.push({ B: pos === 'cu' ? 1 : 2, T: 7, H: 2, D: 128, rot: 128, dtype, interleaved, pos, seed: seed++ });
      }
    }
  }
  for (const c of cases) {
    it(`B=${c.B} T=${c.T} H=${c.H} D=${c.D} rotaryDim=${c.rot} ${c.dtype}${c.interleaved ? ' interleaved' : ''} ${c.pos}`, () => {
      const x = randn([c.B, c.T, c.H, c.D], { seed: c.seed, dtype: c.dtype });
      const { cos, sin } = tables(300, c.rot / 2);
      const opts: Parameters<typeof rotary>[1] = { cos, sin, interleaved: c.interleaved };
      if (c.pos === 'positions') opts.positions = Int32Array.from({ length: c.B * c.T }, (_, i) => (i * 37 + c.seed) % 300);
      if (c.pos === 'cu') opts.cuSeqlens = Int32Array.from([0, 0, 1, Math.floor(c.T / 2), c.T]);
      const got = rotary(x, opts);
      const want = rotaryReference(x, opts);
      expectClose(got, want, c.dtype === 'float32' ? 1e-6 : 1e-2, 'rotary');
      // The values past rotaryDim pass unchanged, bit for bit.
      for (let i = 0; i < c.B * c.T * c.H; i++) {
        for (let d = c.rot; d < c.D; d++) expect(got.data[i * c.D + d]).toBe(x.data[i * c.D + d]);
      }
      // In place (out = x) gives the same bits.
      const y = new Tensor(x.data.slice(), x.shape, x.dtype);
      const r = rotary(y, { ...opts, out: y });
      expect(r).toBe(y);
      expect(sameBytes(y, snapshot(got))).toBe(true);
    });
  }

  it('rotaryDim = D with positions 0 is the identity; a rotation by angle θ then −θ returns x', () => {
    const x = randn([1, 5, 2, 8], { seed: 3 });
    const { cos, sin } = tables(5, 4);
    const zero = rotary(x, { cos, sin, positions: new Int32Array(5) });
    expect(sameBytes(zero, snapshot(x))).toBe(true);
    const neg = { cos, sin: new Tensor((sin.data as Float32Array).map((v) => -v), sin.shape, 'float32') };
    const back = rotary(rotary(x, { cos, sin }), neg);
    expectClose(back, x, 1e-6, 'inverse');
  });

  it('async: same bits; an abort before the start rejects with x untouched', async () => {
    const x = randn([2, 9, 2, 16], { seed: 4 });
    const { cos, sin } = tables(9, 8);
    const a = await rotaryAsync(x, { cos, sin });
    expect(sameBytes(a, snapshot(rotary(x, { cos, sin })))).toBe(true);
    const ac = new AbortController();
    ac.abort();
    const snap = snapshot(x);
    const err = await rotaryAsync(x, { cos, sin, out: x }, { signal: ac.signal }).catch((e) => e);
    expect((err as Error).name).toBe('AbortError');
    expect(sameBytes(x, snap)).toBe(true);
  });
});

describe('rotary bad input: a SeqkernError naming the argument, x and out untouched', () => {
  const x = randn([2, 4, 2, 8], { seed: 5 });
  const { cos, sin } = tables(4, 3);
  const bad: [string, () => unknown, string, string][] = [
    ['x not a tensor', () => rotary([1, 2] as unknown as Tensor, { cos, sin }), 'BAD_ARGUMENT', 'x'],
    ['x of rank 3', () => rotary(randn([4, 2, 8]), { cos, sin }), 'SHAPE_MISMATCH', 'x'],
    ['cos missing', () => rotary(x, { sin } as never), 'BAD_ARGUMENT', 'cos'],
    ['sin of another shape', () => rotary(x, { cos, sin: randn([4, 2]) }), 'SHAPE_MISMATCH', 'sin'],
    ['cos float16', () => rotary(x, { cos: randn([4, 3], { dtype: 'float16' }), sin }), 'BAD_DTYPE', 'cos'],
    ['rotaryDim past D', () => rotary(x, { cos: randn([4, 5]), sin: randn([4, 5]) }), 'SHAPE_MISMATCH', 'cos'],
    ['rotaryDim not 2 x cos columns', () => rotary(x, { cos, sin, rotaryDim: 4 }), 'SHAPE_MISMATCH', 'rotaryDim'],
    ['tables too short for T', () => rotary(randn([1, 5, 2, 8]), { cos, sin }), 'OUT_OF_RANGE', 'cos'],
    ['a position past the tables', () => rotary(x, { cos, sin, positions: Int32Array.from([0, 1, 2, 3, 4, 0, 0, 0]) }), 'OUT_OF_RANGE', 'positions'],
    ['a negative position', () => rotary(x, { cos, sin, positions: Int32Array.from([0, 1, 2, -1, 0, 0, 0, 0]) }), 'OUT_OF_RANGE', 'positions'],
    ['positions too short', () => rotary(x, { cos, sin, positions: new Int32Array(7) }), 'SHAPE_MISMATCH', 'positions'],
    ['positions and cuSeqlens', () => rotary(x, { cos, sin, positions: new Int32Array(8), cuSeqlens: [0, 4] }), 'BAD_ARGUMENT', 'positions'],
    ['cuSeqlens with B = 2', () => rotary(x, { cos, sin, cuSeqlens: [0, 4] }), 'SHAPE_MISMATCH', 'x'],
    ['cuSeqlens not ending at T', () => rotary(randn([1, 4, 2, 8]), { cos, sin, cuSeqlens: [0, 3] }), 'OUT_OF_RANGE', 'cuSeqlens'],
    ['out of another dtype', () => rotary(x, { cos, sin, out: randn([2, 4, 2, 8], { dtype: 'bfloat16' }) }), 'BAD_DTYPE', 'out'],
    ['unknown option', () => rotary(x, { cos, sin, interleave: true } as never), 'BAD_ARGUMENT', 'interleave'],
    ['interleaved not a boolean', () => rotary(x, { cos, sin, interleaved: 1 as never }), 'BAD_ARGUMENT', 'interleaved'],
  ];
  for (const [what, f, code, arg] of bad) {
    it(what, () => {
      const snap = snapshot(x);
      expectSeqkernError(f, code, arg, what);
      expect(sameBytes(x, snap)).toBe(true);
    });
  }
  it('out overlapping x by half a row -> BAD_ARGUMENT, sync and async', async () => {
    const buf = new Float32Array(2 * 4 * 2 * 8 + 4);
    const xs = new Tensor(buf.subarray(0, 128), [2, 4, 2, 8], 'float32');
    const os = new Tensor(buf.subarray(4, 132), [2, 4, 2, 8], 'float32');
    expectSeqkernError(() => rotary(xs, { cos, sin, out: os }), 'BAD_ARGUMENT', 'out', 'overlap');
    await expectSeqkernRejection(() => rotaryAsync(xs, { cos, sin, out: os }), 'BAD_ARGUMENT', 'out', 'overlap async');
  });
});

// Issue 14 part 6: the fast-check run extended to rotary. Random shapes, table sizes, rotaryDim (given or not,
// right or wrong), positions (in range or not, of the right count or not), cuSeqlens, dtypes and in place:
// every call either returns the reference's answer or throws a SeqkernError, and a refused call leaves x as
// it was.
describe('fuzz: random rotary calls give a SeqkernError or the reference answer', () => {
  it('300 random calls (fast-check seed 43)', () => {
    let valid = 0;
    let refused = 0;
    const spec = fc.record({
      B: fc.integer({ min: 0, max: 3 }), T: fc.integer({ min: 0, max: 9 }), H: fc.integer({ min: 1, max: 3 }), D: fc.integer({ min: 1, max: 40 }),
      half: fc.integer({ min: 0, max: 21 }), maxPos: fc.integer({ min: 0, max: 12 }),
      rotaryDim: fc.constantFrom('none', 'right', 'wrong'), pos: fc.constantFrom('default', 'positions', 'cu'),
      posBad: fc.constantFrom('no', 'no', 'no', 'range', 'count'), interleaved: fc.boolean(), inPlace: fc.boolean(),
      dtype: fc.constantFrom<DType>('float32', 'bfloat16', 'float16'), seed: fc.integer({ min: 0, max: 1000 }),
    });
    fc.assert(
      fc.property(spec, (s) => {
        const invalid: string[] = [];
        const B = s.pos === 'cu' ? 1 : s.B;
        const x = randn([B, s.T, s.H, s.D], { seed: s.seed, dtype: s.dtype });
        const cos = randn([s.maxPos, s.half], { seed: s.seed + 1 });
        const sin = randn([s.maxPos, s.half], { seed: s.seed + 2 });
        if (s.half < 1 || 2 * s.half > s.D) invalid.push('cos columns');
        const opts: Record<string, unknown> = { cos, sin, interleaved: s.interleaved, backend: 'cpu' };
        if (s.rotaryDim === 'right') opts.rotaryDim = 2 * s.half;
        if (s.rotaryDim === 'wrong') {
          opts.rotaryDim = 2 * s.half + 2;
          invalid.push('rotaryDim');
        }
        if (s.pos === 'positions') {
          const n = B * s.T + (s.posBad === 'count' ? 1 : 0);
          const positions = Array.from({ length: n }, (_, i) => (i * 7 + s.seed) % Math.max(1, s.maxPos));
          if (s.posBad === 'count') invalid.push('positions count');
          if (s.posBad === 'range' && n > 0) {
            positions[n - 1] = s.maxPos;
            invalid.push('positions range');
          }
          if (s.maxPos === 0 && n > 0 && s.posBad !== 'range') invalid.push('positions range');
          opts.positions = positions;
        } else if (s.pos === 'cu') {
          const cut = Math.floor(s.T / 2);
          opts.cuSeqlens = [0, cut, cut, s.T];
          if (Math.max(cut, s.T - cut) > s.maxPos) invalid.push('tables short for a sequence');
        } else if (B * s.T > 0 && s.T > s.maxPos) {
          invalid.push('tables short');
        }
        if (s.inPlace) opts.out = x;
        const before = snapshot(x);
        const ref = invalid.length === 0 ? rotaryReference(x, { cos, sin, positions: opts.positions as number[] | undefined,
          cuSeqlens: opts.cuSeqlens as number[] | undefined, rotaryDim: 2 * s.half, interleaved: s.interleaved }) : undefined;
        const r = fuzzCall(s, invalid, () => rotary(x, opts as unknown as Parameters<typeof rotary>[1]));
        const what = r.what;
        if (!r.ok) {
          refused++;
          if (!sameBytes(x, before)) throw new Error(`${what}: a refused call wrote x`);
          return;
        }
        const y: Tensor = r.value;
        valid++;
        if (s.inPlace && y !== x) throw new Error(`${what}: in place did not return x`);
        const e = relErr(y, ref!);
        if (!(e <= (s.dtype === 'float32' ? 1e-6 : 1e-2))) throw new Error(`${what}: relative error ${e}`);
      }),
      { numRuns: 300, seed: 43, endOnFailure: true },
    );
    expect(valid).toBeGreaterThan(40);
    expect(refused).toBeGreaterThan(40);
  });
});
