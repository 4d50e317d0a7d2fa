// Tensor helpers (issue 15.6): zero-copy view/reshape/slice, cat, native dtype conversion (bit for bit the
// TypeScript rounding, NaN kept), tensor.to(dtype), and tensor-likes { dtype, shape, data } accepted by ops.
import { describe, expect, it } from 'vitest';
import {
  asTensor, attention, cat, gatedDeltaRule, randn, softmax, Tensor, tensor, type DType,
} from '../src/index.js';
import { loadedAddonPath, native } from '../src/backend.js';
import { expectSeqkernError, runInChild } from './helpers.js';

// Every awkward float32 the conversions must round right: ties both ways, subnormals of both targets,
// overflow, infinities, signed zeros, NaNs with payloads.
function specials(): Float32Array {
  const u = new Uint32Array([
    0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc12345, 0x00000001, 0x807fffff,
    0x3f808000, 0x3f818000, 0x3f80c000, 0x477fe000, 0x477ff000, 0x477fefff, 0x387fc000, 0x33800000, 0x33800001,
    0x33000000, 0x7f7fffff, 0xff7fffff, 0x3f7fffff, 0x38800000, 0x387fffff, 0x00800000, 0x4b7fffff,
  ]);
  return new Float32Array(u.buffer);
}

function mixed(n: number, seed: number): Tensor {
  const x = randn([n], { seed, std: 3 });
  const s = specials().subarray(0, n);
  x.data.set(s, 0);
  for (let i = s.length; i < n; i += 17) (x.data as Float32Array)[i] *= 2 ** ((i % 60) - 30); // a wide exponent range
  return x;
}

describe('tensor dtype conversion', () => {
  const sizes = [0, 1, 7, 8, 33, 1000, 300_001]; // below and above the vector width and the threaded size
  for (const n of sizes) {
    it(`float32 -> float16/bfloat16 -> float32 equals the TypeScript rounding bit for bit (n=${n})`, () => {
      const x = mixed(n, n + 1);
      for (const dt of ['float16', 'bfloat16'] as const) {
        const got = x.to(dt);
        const want = tensor(x.toFloat64(), x.shape, dt); // TypeScript round-to-nearest-even
        expect(got.dtype).toBe(dt);
        // bit for bit, except that a NaN's payload may differ (F16C keeps its top bits): NaN of the same sign
        for (let i = 0; i < n; i++) {
          const g = got.data[i], w = want.data[i];
          if (g === w) continue;
          const nan = dt === 'float16' ? (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 : (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
          if (!(nan(g) && nan(w) && (g & 0x8000) === (w & 0x8000))) throw new Error(`${dt} at ${i}: ${g.toString(16)} vs ${w.toString(16)}`);
        }
        const back = got.to('float32');
        const wantBack = new Float32Array(want.toFloat64());
        for (let i = 0; i < n; i++) {
          if (!Object.is(back.data[i], wantBack[i]) && !(Number.isNaN(back.data[i]) && Number.isNaN(wantBack[i]))) throw new Error(`${dt} back at ${i}: ${back.data[i]} vs ${wantBack[i]}`);
        }
      }
    });
  }

  it('keeps NaN as NaN (quiet) through every conversion', () => {
    const x = tensor(new Float32Array(specials().filter(Number.isNaN)), [3]);
    for (const dt of ['float16', 'bfloat16'] as const) {
      const h = x.to(dt);
      expect(Array.from(h.to('float32').data).every(Number.isNaN), dt).toBe(true);
      const other = h.to(dt === 'float16' ? 'bfloat16' : 'float16');
      expect(Array.from(other.to('float32').data).every(Number.isNaN)).toBe(true);
    }
  });

  it('float16 <-> bfloat16 directly equals going through float32', () => {
    const x = mixed(5000, 3);
    const h = x.toFloat16();
    const b = h.toBFloat16();
    expect(Array.from(b.data)).toEqual(Array.from(h.toFloat32().toBFloat16().data));
    expect(Array.from(b.toFloat16().data)).toEqual(Array.from(b.toFloat32().toFloat16().data));
  });

  it('to(own dtype) is the tensor itself; astype always copies; float64 both ways', () => {
    const x = randn([4, 5], { seed: 2 });
    expect(x.to('float32')).toBe(x);
    const c = x.astype('float32');
    expect(c).not.toBe(x);
    expect(c.data).not.toBe(x.data);
    expect(Array.from(c.data)).toEqual(Array.from(x.data));
    const d = x.to('float64');
    expect(d.dtype).toBe('float64');
    expect(Array.from(d.data)).toEqual(Array.from(x.data));
    expect(Array.from(d.to('bfloat16').data)).toEqual(Array.from(x.to('bfloat16').data));
    expectSeqkernError(() => x.to('int8' as DType), 'BAD_DTYPE', 'dtype', 'unknown dtype');
  });

  it('writes into a caller\'s out (returned), in place between the 2-byte dtypes, and checks out', () => {
    const x = mixed(2000, 9).view([40, 50]);
    const out = new Tensor(new Uint16Array(2000).fill(0x7e00), [40, 50], 'bfloat16');
    expect(x.toBFloat16(out)).toBe(out);
    expect(Array.from(out.data)).toEqual(Array.from(x.to('bfloat16').data));
    const h = x.toFloat16();
    const want = h.toBFloat16();
    expect(h.toBFloat16(new Tensor(h.data, h.shape, 'bfloat16')).data).toBe(h.data); // in place
    expect(Array.from(h.data)).toEqual(Array.from(want.data));
    expectSeqkernError(() => x.toFloat16(new Tensor(new Uint16Array(2000), [2000], 'float16')), 'SHAPE_MISMATCH', 'out', 'out shape');
    expectSeqkernError(() => x.toFloat16(new Tensor(new Uint16Array(2000), [40, 50], 'bfloat16')), 'BAD_DTYPE', 'out', 'out dtype');
    const part = new Float32Array(3000);
    const f = new Tensor(new Uint16Array(part.buffer, 0, 2000), [40, 50], 'float16');
    expect(() => new Tensor(part.subarray(0, 2000), [40, 50], 'float32').toFloat16(f)).toThrow(/overlap/);
  });

  it('the raw addon refuses bad arguments with a coded error', () => {
    const a = native();
    if (!a) return expect(a, 'the addon is built in CI').toBeTruthy();
    const src = new Float32Array(8);
    for (const [args, code] of [
      [{ src, srcDtype: 'float32', dst: new Uint16Array(7), dstDtype: 'float16' }, 'SHAPE_MISMATCH'],
      [{ src, srcDtype: 'float16', dst: new Uint16Array(8), dstDtype: 'float32' }, 'BAD_DTYPE'],
      [{ src, srcDtype: 'float32', dst: new Uint16Array(8), dstDtype: 'int8' }, 'BAD_DTYPE'],
      [{ src, srcDtype: 'float32', dst: new Uint16Array(src.buffer, 2, 8), dstDtype: 'bfloat16' }, 'BAD_ARGUMENT'],
      [{ src, srcDtype: 'float32', dstDtype: 'bfloat16' }, 'BAD_ARGUMENT'],
    ] as const) {
      let err: { code?: string } | undefined;
      try {
        a.castArray(args as never);
      } catch (e) {
        err = e as { code?: string };
      }
      expect(err?.code, JSON.stringify(Object.keys(args))).toBe(code);
    }
  });

  it('a detached destination buffer in a child process is an error, not a crash', () => {
    const r = runInChild<{ code?: string }>(`
      const addon = require(${JSON.stringify(loadedAddonPath())});
      const out = (x) => process.stdout.write(JSON.stringify(x));
      const src = new Float32Array(16); const dst = new Uint16Array(16); structuredClone(dst.buffer, { transfer: [dst.buffer] });
      try { addon.castArray({ src, srcDtype: 'float32', dst, dstDtype: 'float16' }); out({ code: 'none' }); } catch (e) { out({ code: e.code }); }`);
    expect(r.status).toBe(0);
    expect(r.result?.code).toBe('SHAPE_MISMATCH');
  });
});

describe('view, reshape, slice, cat', () => {
  it('view and reshape share the data and infer one -1', () => {
    const x = randn([2, 3, 4], { seed: 1 });
    const v = x.view([6, -1]);
    expect(v.shape).toEqual([6, 4]);
    expect(v.data).toBe(x.data);
    (v.data as Float32Array)[5] = 42;
    expect(x.data[5]).toBe(42);
    expect(x.reshape([-1]).shape).toEqual([24]);
    expect(x.reshape([4, -1, 2]).shape).toEqual([4, 3, 2]);
    expect(randn([0, 3], { seed: 1 }).view([3, 0]).shape).toEqual([3, 0]);
  });

  it('view refuses shapes of the wrong size, two -1 and bad dims', () => {
    const x = randn([2, 3], { seed: 1 });
    expectSeqkernError(() => x.view([4, 2]), 'SHAPE_MISMATCH', 'shape', 'wrong size');
    expectSeqkernError(() => x.view([-1, -1]), 'SHAPE_MISMATCH', 'shape', 'two -1');
    expectSeqkernError(() => x.view([5, -1]), 'SHAPE_MISMATCH', 'shape', '-1 that does not divide');
    expectSeqkernError(() => x.view([2.5, 2]), 'SHAPE_MISMATCH', 'shape', 'fraction');
    expectSeqkernError(() => x.view([-2, -3]), 'SHAPE_MISMATCH', 'shape', 'negative');
  });

  it('slice takes rows of the leading axis without a copy, with negative and clamped bounds', () => {
    const x = tensor(Array.from({ length: 24 }, (_, i) => i), [4, 3, 2]);
    const s = x.slice(1, 3);
    expect(s.shape).toEqual([2, 3, 2]);
    expect(Array.from(s.data)).toEqual(Array.from({ length: 12 }, (_, i) => i + 6));
    expect(s.data.buffer).toBe(x.data.buffer);
    (s.data as Float32Array)[0] = -1;
    expect(x.data[6]).toBe(-1);
    expect(x.slice(-1).shape).toEqual([1, 3, 2]);
    expect(Array.from(x.slice(-1).data)).toEqual(Array.from(x.data.subarray(18)));
    expect(x.slice(3, 1).shape).toEqual([0, 3, 2]);
    expect(x.slice(0, 99).shape).toEqual([4, 3, 2]);
    const h = x.to('bfloat16').slice(2);
    expect(h.dtype).toBe('bfloat16');
    expect(Array.from(h.to('float32').data)).toEqual(Array.from(x.data.subarray(12)));
    expectSeqkernError(() => x.slice(0.5), 'BAD_ARGUMENT', 'start', 'fractional start');
    expectSeqkernError(() => tensor([1], []).slice(0), 'SHAPE_MISMATCH', 'tensor', 'scalar');
  });

  it('cat along any axis equals the elementwise definition; slices of a cat give the parts back', () => {
    const a = randn([2, 3, 4], { seed: 1 }), b = randn([2, 5, 4], { seed: 2 }), c = randn([2, 0, 4], { seed: 3 });
    const m = cat([a, c, b], 1);
    expect(m.shape).toEqual([2, 8, 4]);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 8; j++) {
        for (let k = 0; k < 4; k++) {
          const want = j < 3 ? a.data[(i * 3 + j) * 4 + k] : b.data[(i * 5 + j - 3) * 4 + k];
          expect(m.data[(i * 8 + j) * 4 + k]).toBe(want);
        }
      }
    }
    const rows = cat([a, a.slice(1)]);
    expect(rows.shape).toEqual([3, 3, 4]);
    expect(Array.from(rows.slice(2).data)).toEqual(Array.from(a.slice(1).data));
    expect(cat([a, a], -1).shape).toEqual([2, 3, 8]);
    const h = cat([a.to('float16'), { dtype: 'float16', shape: [1, 3, 4], data: a.slice(0, 1).to('float16').data }]);
    expect(h.shape).toEqual([3, 3, 4]);
    expect(Array.from(h.slice(2).data)).toEqual(Array.from(a.slice(0, 1).to('float16').data));
  });

  it('cat refuses mixed dtypes, mismatched shapes, bad axes and empty lists', () => {
    const a = randn([2, 3], { seed: 1 });
    expectSeqkernError(() => cat([a, a.to('bfloat16')]), 'BAD_DTYPE', 'tensors[1]', 'mixed dtypes');
    expectSeqkernError(() => cat([a, randn([2, 4], { seed: 2 })]), 'SHAPE_MISMATCH', 'tensors[1]', 'other dim');
    expectSeqkernError(() => cat([a, randn([2, 3, 1], { seed: 2 })]), 'SHAPE_MISMATCH', 'tensors[1]', 'rank');
    expectSeqkernError(() => cat([a], 2), 'OUT_OF_RANGE', 'axis', 'axis');
    expectSeqkernError(() => cat([]), 'BAD_ARGUMENT', 'tensors', 'empty');
    expectSeqkernError(() => cat([a, { dtype: 'float32', shape: [1, 3], data: new Float32Array(2) }]), 'SHAPE_MISMATCH', 'tensors[1]', 'short data');
  });
});

describe('tensor-likes', () => {
  const like = (t: Tensor) => ({ dtype: t.dtype, shape: [...t.shape], data: t.data });

  it('ops accept { dtype, shape, data } wherever a Tensor goes, with the same result', () => {
    const x = randn([3, 17], { seed: 4 });
    expect(Array.from(softmax(like(x) as unknown as Tensor).data)).toEqual(Array.from(softmax(x).data));
    const q = randn([1, 9, 2, 16], { seed: 5 }), k = randn([1, 9, 1, 16], { seed: 6 }), v = randn([1, 9, 1, 8], { seed: 7 });
    const want = attention(q, k, v, { causal: true });
    const got = attention(like(q) as unknown as Tensor, like(k) as unknown as Tensor, like(v) as unknown as Tensor, { causal: true });
    expect(Array.from(got.o.data)).toEqual(Array.from(want.o.data));
    const dq = randn([1, 5, 1, 8], { seed: 8 }), dk = randn([1, 5, 1, 8], { seed: 9 }), dv = randn([1, 5, 1, 8], { seed: 10 });
    const beta = randn([1, 5, 1], { seed: 11, std: 0.1, mean: 0.5 });
    const a = gatedDeltaRule({ q: dq, k: dk, v: dv, beta, qkL2Norm: true });
    const b = gatedDeltaRule({ q: like(dq), k: like(dk), v: like(dv), beta: like(beta), qkL2Norm: true } as never);
    expect(Array.from(b.o.data)).toEqual(Array.from(a.o.data));
  });

  it('asTensor wraps without a copy and refuses malformed ones, naming the argument', () => {
    const d = new Float32Array(6);
    const t = asTensor('op', 'x', { dtype: 'float32', shape: [2, 3], data: d });
    expect(t).toBeInstanceOf(Tensor);
    expect(t.data).toBe(d);
    expectSeqkernError(() => asTensor('op', 'x', { dtype: 'float16', shape: [6], data: d }), 'BAD_DTYPE', 'x', 'storage');
    expectSeqkernError(() => asTensor('op', 'x', { dtype: 'float32', shape: [7], data: d }), 'SHAPE_MISMATCH', 'x', 'length');
    expectSeqkernError(() => asTensor('op', 'x', { dtype: 'int8', shape: [6], data: d }), 'BAD_DTYPE', 'x', 'dtype');
    expectSeqkernError(() => asTensor('op', 'x', { shape: [6], data: d }), 'BAD_ARGUMENT', 'x', 'missing dtype');
    expectSeqkernError(() => softmax({ dtype: 'float32', shape: [2, 3], data: new Float64Array(6) } as never), 'BAD_DTYPE', 'x', 'softmax storage');
    expectSeqkernError(() => softmax({ dtype: 'float32', shape: 'x', data: d } as never), 'BAD_ARGUMENT', 'x', 'softmax shape');
  });
});
