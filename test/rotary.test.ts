// rotary against its float64 reference (issue 14 part 4): dtypes, odd D with partial rotaryDim, interleaved,
// positions / cuSeqlens / default positions, in place and out; bad input before anything is written; async.
import { describe, expect, it } from 'vitest';
import { randn, rotary, rotaryAsync, rotaryReference, Tensor, tensor, type DType } from '../src/index.js';
import { expectClose, expectSeqkernError, expectSeqkernRejection, sameBytes, snapshot } from './helpers.js';

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
