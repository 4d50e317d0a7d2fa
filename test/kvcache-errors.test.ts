// attentionWithKVCache bad input (issue 14 part 6): every argument wrong in turn -> a SeqkernError naming it,
// raised before anything (caches, out) is written, sync and async; the raw addon's own re-checks in a child
// process (anything may call it directly: an error, never a crash or a write out of bounds); a fast-check run
// of random shapes, lengths, tables and mutations against the reference: a SeqkernError or the right answer.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { attentionWithKVCache, attentionWithKVCacheAsync, randn, SeqkernError, Tensor, type DType, type KVCacheOptions } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { expectRawFailure, expectSeqkernError, expectSeqkernRejection, relErr, runInChild, sameBytes, snapshot, type RawResult } from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { q: unknown; k: Tensor; v: Tensor; opts: Opts }

const f32 = (shape: number[], seed = 0, dtype: DType = 'float32') => randn(shape, { seed, dtype });
const tables = (rows: number, half: number) => ({ cos: f32([rows, half], 8), sin: f32([rows, half], 9) });

/** Contiguous: B=2, Tq=2, Hq=4, Hk=2, D=8, Dv=6, capacity 10, lengths 3 and 8 (8 + 2 fills one cache). */
function base(): Call {
  return {
    q: f32([2, 2, 4, 8], 1), k: f32([2, 10, 2, 8], 2), v: f32([2, 10, 2, 6], 3),
    opts: { cacheSeqlens: Int32Array.from([3, 8]), kNew: f32([2, 2, 2, 8], 4), vNew: f32([2, 2, 2, 6], 5), rotary: tables(10, 3) },
  };
}
/** Paged: 6 blocks of 4, maxBlocks 3, lengths 3 and 8. */
function paged(): Call {
  return {
    q: f32([2, 2, 4, 8], 1), k: f32([6, 4, 2, 8], 2), v: f32([6, 4, 2, 6], 3),
    opts: { cacheSeqlens: Int32Array.from([3, 8]), blockTable: Int32Array.from([5, 1, 0, 2, 4, 3]), kNew: f32([2, 2, 2, 8], 4), vNew: f32([2, 2, 2, 6], 5) },
  };
}
const w = (c: Call, o: Opts): Call => ({ ...c, opts: { ...c.opts, ...o } });

interface Bad { name: string; make: () => Call; code: string; arg: string }
const CASES: Bad[] = [
  { name: 'q not a tensor', make: () => ({ ...base(), q: [1, 2] }), code: 'BAD_ARGUMENT', arg: 'q' },
  { name: 'q of rank 3', make: () => ({ ...base(), q: f32([2, 2, 32]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'Tq = 0', make: () => w({ ...base(), q: f32([2, 0, 4, 8]) }, { kNew: f32([2, 0, 2, 8]), vNew: f32([2, 0, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'q' },
  { name: 'q of another B than the contiguous cache', make: () => ({ ...base(), q: f32([3, 2, 4, 8]) }), code: 'SHAPE_MISMATCH', arg: 'kCache' },
  { name: 'q of another D', make: () => ({ ...base(), q: f32([2, 2, 4, 6]) }), code: 'SHAPE_MISMATCH', arg: 'kCache' },
  { name: 'Hq not a multiple of Hk', make: () => ({ ...base(), q: f32([2, 2, 3, 8]) }), code: 'SHAPE_MISMATCH', arg: 'kCache' },
  { name: 'vCache of another capacity', make: () => ({ ...base(), v: f32([2, 9, 2, 6]) }), code: 'SHAPE_MISMATCH', arg: 'vCache' },
  { name: 'vCache of another dtype', make: () => ({ ...base(), v: f32([2, 10, 2, 6], 3, 'bfloat16') }), code: 'BAD_DTYPE', arg: 'vCache' },
  { name: 'head dim 2000', make: () => ({ q: f32([1, 1, 1, 2000]), k: f32([1, 1, 1, 2000]), v: f32([1, 1, 1, 1]), opts: { cacheSeqlens: [1] } }), code: 'TOO_LARGE', arg: 'q/vCache' },
  { name: 'cacheSeqlens missing', make: () => w(base(), { cacheSeqlens: undefined }), code: 'BAD_ARGUMENT', arg: 'cacheSeqlens' },
  { name: 'cacheSeqlens a Float32Array', make: () => w(base(), { cacheSeqlens: Float32Array.from([3, 8]) }), code: 'BAD_DTYPE', arg: 'cacheSeqlens' },
  { name: 'cacheSeqlens of B + 1 entries', make: () => w(base(), { cacheSeqlens: Int32Array.from([3, 8, 1]) }), code: 'SHAPE_MISMATCH', arg: 'cacheSeqlens' },
  { name: 'cacheSeqlens negative', make: () => w(base(), { cacheSeqlens: Int32Array.from([3, -1]) }), code: 'OUT_OF_RANGE', arg: 'cacheSeqlens' },
  { name: 'capacity overflow (9 + 2 > 10)', make: () => w(base(), { cacheSeqlens: Int32Array.from([3, 9]) }), code: 'OUT_OF_RANGE', arg: 'cacheSeqlens' },
  { name: 'capacity overflow without kNew (11 > 10)', make: () => w(base(), { cacheSeqlens: Int32Array.from([3, 11]), kNew: undefined, vNew: undefined, rotary: undefined }), code: 'OUT_OF_RANGE', arg: 'cacheSeqlens' },
  { name: 'kNew without vNew', make: () => w(base(), { vNew: undefined }), code: 'BAD_ARGUMENT', arg: 'vNew' },
  { name: 'kNew of another Tq', make: () => w(base(), { kNew: f32([2, 1, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'kNew' },
  { name: 'vNew of another Dv', make: () => w(base(), { vNew: f32([2, 2, 2, 8]) }), code: 'SHAPE_MISMATCH', arg: 'vNew' },
  { name: 'vNew of another dtype than kNew', make: () => w(base(), { vNew: f32([2, 2, 2, 6], 5, 'float16') }), code: 'BAD_DTYPE', arg: 'vNew' },
  { name: 'rotary tables too short (9 rows for length 10)', make: () => w(base(), { rotary: tables(9, 3) }), code: 'OUT_OF_RANGE', arg: 'rotary.cos' },
  { name: 'rotary wider than D', make: () => w(base(), { rotary: tables(10, 5) }), code: 'SHAPE_MISMATCH', arg: 'rotary.cos' },
  { name: 'rotary sin of another shape', make: () => w(base(), { rotary: { cos: f32([10, 3]), sin: f32([10, 2]) } }), code: 'SHAPE_MISMATCH', arg: 'rotary.sin' },
  { name: 'rotary tables float16', make: () => w(base(), { rotary: { cos: f32([10, 3], 1, 'float16'), sin: f32([10, 3], 1, 'float16') } }), code: 'BAD_DTYPE', arg: 'rotary.cos' },
  { name: 'rotary without kNew', make: () => w(base(), { kNew: undefined, vNew: undefined }), code: 'BAD_ARGUMENT', arg: 'rotary' },
  { name: 'rotary with an unknown key', make: () => w(base(), { rotary: { ...tables(10, 3), dim: 6 } }), code: 'BAD_ARGUMENT', arg: 'dim' },
  { name: 'rotaryInterleaved not a boolean', make: () => w(base(), { rotaryInterleaved: 'yes' }), code: 'BAD_ARGUMENT', arg: 'rotaryInterleaved' },
  { name: 'gate of the wrong shape', make: () => w(base(), { gate: f32([2, 2, 4, 5]) }), code: 'SHAPE_MISMATCH', arg: 'gate' },
  { name: 'gateType without a gate', make: () => w(base(), { gateType: 'headwise' }), code: 'BAD_ARGUMENT', arg: 'gateType' },
  { name: 'scale NaN', make: () => w(base(), { scale: NaN }), code: 'NON_FINITE', arg: 'scale' },
  { name: 'causal not a boolean', make: () => w(base(), { causal: 1 }), code: 'BAD_ARGUMENT', arg: 'causal' },
  { name: 'unknown option (cacheSeqlen)', make: () => w(base(), { cacheSeqlen: [1, 2] }), code: 'BAD_ARGUMENT', arg: 'cacheSeqlen' },
  { name: 'out of another dtype', make: () => w(base(), { out: f32([2, 2, 4, 6], 0, 'bfloat16') }), code: 'BAD_DTYPE', arg: 'out' },
  { name: 'out of the wrong shape', make: () => w(base(), { out: f32([2, 2, 4, 8]) }), code: 'SHAPE_MISMATCH', arg: 'out' },
  // paged
  { name: 'blockTable entry out of range', make: () => w(paged(), { blockTable: Int32Array.from([5, 1, 0, 2, 6, 3]) }), code: 'OUT_OF_RANGE', arg: 'blockTable' },
  { name: 'blockTable entry negative', make: () => w(paged(), { blockTable: Int32Array.from([-1, 1, 0, 2, 4, 3]) }), code: 'OUT_OF_RANGE', arg: 'blockTable' },
  { name: 'blockTable too short for cacheSeqlens + Tq (8 + 2 > 2 blocks of 4)', make: () => w(paged(), { blockTable: Int32Array.from([5, 1, 2, 4]) }), code: 'OUT_OF_RANGE', arg: 'cacheSeqlens' },
  { name: 'blockTable not B x maxBlocks', make: () => w(paged(), { blockTable: Int32Array.from([5, 1, 0, 2, 4]) }), code: 'SHAPE_MISMATCH', arg: 'blockTable' },
  { name: 'blockTable a Float64Array', make: () => w(paged(), { blockTable: Float64Array.from([5, 1, 0, 2, 4, 3]) }), code: 'BAD_DTYPE', arg: 'blockTable' },
  { name: 'two sequences appending into one block row', make: () => w(paged(), { cacheSeqlens: Int32Array.from([1, 1]), blockTable: Int32Array.from([5, 1, 0, 5, 4, 3]) }), code: 'BAD_ARGUMENT', arg: 'blockTable' },
  { name: 'a contiguous cache given as paged with no table (numBlocks != B)', make: () => w({ ...paged() }, { blockTable: undefined }), code: 'SHAPE_MISMATCH', arg: 'kCache' },
];

describe('bad input: a SeqkernError naming the argument, nothing written', () => {
  for (const c of CASES) {
    it(`${c.name} -> ${c.code}, sync and async`, async () => {
      for (const form of ['sync', 'async'] as const) {
        const call = c.make();
        const snaps = [snapshot(call.k), snapshot(call.v)];
        const out = call.opts.out as Tensor | undefined;
        const outSnap = out ? snapshot(out) : undefined;
        if (form === 'sync') expectSeqkernError(() => attentionWithKVCache(call.q as Tensor, call.k, call.v, call.opts as never), c.code, c.arg, c.name);
        else await expectSeqkernRejection(() => attentionWithKVCacheAsync(call.q as Tensor, call.k, call.v, call.opts as never), c.code, c.arg, c.name);
        expect(sameBytes(call.k, snaps[0]) && sameBytes(call.v, snaps[1]), `${c.name}: caches untouched`).toBe(true);
        if (out) expect(sameBytes(out, outSnap!), `${c.name}: out untouched`).toBe(true);
      }
    });
  }

  it('the base calls are valid (so every case above fails for its own reason)', () => {
    for (const c of [base(), paged()]) expect(() => attentionWithKVCache(c.q as Tensor, c.k, c.v, c.opts as never)).not.toThrow();
  });

  it('overlaps: out over q or a cache, a cache over kNew, kCache over vCache -> BAD_ARGUMENT, caches untouched', () => {
    const c = base();
    const buf = new Float32Array(2 * 10 * 2 * 8 * 2);
    const k = new Tensor(buf.subarray(0, 320), [2, 10, 2, 8], 'float32');
    const v2 = new Tensor(buf.subarray(200, 440), [2, 10, 2, 6], 'float32');
    expectSeqkernError(() => attentionWithKVCache(c.q as Tensor, k, v2, c.opts as never), 'BAD_ARGUMENT', 'vCache', 'k over v');
    const kn = new Tensor((c.k.data as Float32Array).subarray(0, 64), [2, 2, 2, 8], 'float32');
    const snap = snapshot(c.k);
    expectSeqkernError(() => attentionWithKVCache(c.q as Tensor, c.k, c.v, { ...c.opts, kNew: kn } as never), 'BAD_ARGUMENT', 'kCache', 'kNew in kCache');
    expect(sameBytes(c.k, snap)).toBe(true);
    const out = new Tensor((c.k.data as Float32Array).subarray(0, 96), [2, 2, 4, 6], 'float32');
    expectSeqkernError(() => attentionWithKVCache(c.q as Tensor, c.k, c.v, { ...c.opts, out } as never), 'BAD_ARGUMENT', 'out', 'out in kCache');
    expect(sameBytes(c.k, snap)).toBe(true);
  });
});

// ---- the raw addon re-checks everything

function rawCall(mutate: string, asyncForm: boolean) {
  const src = `
    const a = require(${JSON.stringify(loadedAddonPath())});
    const F = (n, x = 0.5) => new Float32Array(n).fill(x);
    const I = (...x) => Int32Array.from(x);
    const base = { B: 2, Tq: 2, Hq: 4, Hk: 2, D: 8, Dv: 6, paged: true, capacity: 0, numBlocks: 6, blockSize: 4, maxBlocks: 3,
      q: F(128), dtype: 'float32', kCache: F(384, 0.3), vCache: F(288), cacheDtype: 'float32', cacheSeqlens: I(3, 8),
      blockTable: I(5, 1, 0, 2, 4, 3), kNew: F(64, 0.2), vNew: F(48, 0.1), newDtype: 'float32', cos: F(30, 1), sin: F(30, 0),
      rotaryDim: 6, maxPos: 10, interleaved: false, o: F(96, NaN), lse: F(16, NaN), gateKind: 'none', causal: true, scale: 0.5 };
    const args = (${mutate})(base);
    const done = (r) => { process.stdout.write(JSON.stringify(r)); };
    const fromErr = (e, stage) => ({ ok: false, stage, isError: e instanceof Error, code: e && e.code, message: e && e.message });
    try {
      const r = ${asyncForm ? 'a.attentionWithKVCacheAsync' : 'a.attentionWithKVCache'}(...(Array.isArray(args) ? args : [args]));
      if (r && typeof r.then === 'function') r.then(() => done({ ok: true, o: Array.from(args.o) }), (e) => done(fromErr(e, 'rejected')));
      else done({ ok: true, o: Array.from(args.o) });
    } catch (e) { done(fromErr(e, 'threw')); }
  `;
  return runInChild<RawResult & { o?: number[] }>(src);
}

const RAW_CASES: { name: string; mutate: string; code: string }[] = [
  { name: 'blockTable entry past numBlocks', mutate: '(b) => ({ ...b, blockTable: I(5, 1, 0, 2, 9, 3) })', code: 'OUT_OF_RANGE' },
  { name: 'blockTable too short', mutate: '(b) => ({ ...b, blockTable: I(5, 1, 0, 2, 4) })', code: 'SHAPE_MISMATCH' },
  { name: 'no blockTable when paged', mutate: '(b) => ({ ...b, blockTable: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'capacity overflow', mutate: '(b) => ({ ...b, cacheSeqlens: I(3, 11) })', code: 'OUT_OF_RANGE' },
  { name: 'negative length', mutate: '(b) => ({ ...b, cacheSeqlens: I(-3, 1) })', code: 'OUT_OF_RANGE' },
  { name: 'cacheSeqlens of 1 entry', mutate: '(b) => ({ ...b, cacheSeqlens: I(3) })', code: 'SHAPE_MISMATCH' },
  { name: 'rotary tables too short', mutate: '(b) => ({ ...b, maxPos: 9, cos: F(27), sin: F(27) })', code: 'OUT_OF_RANGE' },
  { name: 'rotary table shorter than maxPos says', mutate: '(b) => ({ ...b, cos: F(20) })', code: 'SHAPE_MISMATCH' },
  { name: 'odd rotaryDim', mutate: '(b) => ({ ...b, rotaryDim: 5 })', code: 'SHAPE_MISMATCH' },
  { name: 'kCache shorter than numBlocks x blockSize', mutate: '(b) => ({ ...b, kCache: F(383) })', code: 'SHAPE_MISMATCH' },
  { name: 'kNew without vNew', mutate: '(b) => ({ ...b, vNew: undefined })', code: 'BAD_ARGUMENT' },
  { name: 'kNew short', mutate: '(b) => ({ ...b, kNew: F(63) })', code: 'SHAPE_MISMATCH' },
  { name: 'o short', mutate: '(b) => ({ ...b, o: F(95) })', code: 'SHAPE_MISMATCH' },
  { name: 'o overlapping kCache', mutate: '(b) => ({ ...b, o: b.kCache.subarray(0, 96) })', code: 'BAD_ARGUMENT' },
  { name: 'kCache overlapping kNew', mutate: '(b) => { const k = F(448); return { ...b, kCache: k.subarray(0, 384), kNew: k.subarray(384) .subarray(0, 64).length === 64 ? k.subarray(320, 384) : null }; }', code: 'BAD_ARGUMENT' },
  { name: 'two appends on one row', mutate: '(b) => ({ ...b, cacheSeqlens: I(1, 1), blockTable: I(5, 1, 0, 5, 4, 3) })', code: 'BAD_ARGUMENT' },
  { name: 'cache dtype bfloat16 with Float32Array data', mutate: "(b) => ({ ...b, cacheDtype: 'bfloat16' })", code: 'BAD_DTYPE' },
  { name: 'Hq not a multiple of Hk', mutate: '(b) => ({ ...b, Hq: 3 })', code: 'SHAPE_MISMATCH' },
  { name: 'Tq = 0', mutate: '(b) => ({ ...b, Tq: 0 })', code: 'SHAPE_MISMATCH' },
  { name: 'contiguous capacity overflowing int32 products', mutate: '(b) => ({ ...b, paged: false, capacity: 2 ** 30, blockTable: undefined })', code: 'TOO_LARGE' },
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
    it(`${c.name} -> Error with .code ${c.code}, no crash (sync and async)`, () => {
      for (const asyncForm of [false, true]) expectRawFailure(rawCall(c.mutate, asyncForm), c.code);
    });
  }
});

// ---- fast-check: random calls, valid or not

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20261202);

const specArb = fc.record({
  lens: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 3 }),
  Tq: fc.integer({ min: 1, max: 4 }),
  Hk: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  D: fc.integer({ min: 1, max: 12 }),
  Dv: fc.integer({ min: 1, max: 12 }),
  bs: fc.constantFrom(0, 0, 1, 4, 16),
  spare: fc.integer({ min: -2, max: 3 }),
  append: fc.boolean(),
  rotary: fc.constantFrom('none', 'none', 'plain', 'interleaved', 'short'),
  qDtype: fc.constantFrom<DType>('float32', 'float32', 'bfloat16', 'float16', 'float64'),
  cacheDtype: fc.constantFrom<DType>('float32', 'float32', 'bfloat16', 'float16'),
  gate: fc.constantFrom('none', 'none', 'elementwise', 'headwise', 'wrong'),
  tableBad: fc.constantFrom('none', 'none', 'none', 'none', 'range', 'short'),
  causal: fc.boolean(),
  seed: fc.nat(),
});

describe('fast-check: random calls are a SeqkernError or match the reference, never a crash', () => {
  it('120 runs', () => {
    fc.assert(
      fc.property(specArb, (s) => {
        const B = s.lens.length;
        const Hq = s.Hk * s.group;
        const added = s.append ? s.Tq : 0;
        const need = Math.max(...s.lens) + added;
        const q = f32([B, s.Tq, Hq, s.D], s.seed, s.qDtype);
        let k: Tensor;
        let v: Tensor;
        const opts: KVCacheOptions = { cacheSeqlens: Int32Array.from(s.lens), causal: s.causal };
        const cap = Math.max(0, need + s.spare);
        let valid = s.bs ? true : cap >= need; // paged: its capacity is checked below, in whole blocks
        if (s.bs) {
          const maxBlocks = Math.ceil(cap / s.bs);
          const nb = B * maxBlocks + 1;
          k = f32([nb, s.bs, s.Hk, s.D], s.seed + 1, s.cacheDtype);
          v = f32([nb, s.bs, s.Hk, s.Dv], s.seed + 2, s.cacheDtype);
          const t = Int32Array.from({ length: B * maxBlocks }, (_, i) => (nb - 1 - i + s.seed) % nb); // distinct blocks
          if (s.tableBad === 'range' && t.length) {
            t[0] = nb;
            if (s.lens[0] + added > 0) valid = false;
          }
          opts.blockTable = s.tableBad === 'short' && t.length ? t.subarray(0, t.length - 1) : t;
          if (s.tableBad === 'short' && t.length && B > 0 && (t.length - 1) % B !== 0) valid = false;
          else if (s.tableBad === 'short' && t.length) valid = valid && need <= ((t.length - 1) / B) * s.bs;
          if (Math.ceil(need / s.bs) > maxBlocks) valid = false;
        } else {
          k = f32([B, cap, s.Hk, s.D], s.seed + 1, s.cacheDtype);
          v = f32([B, cap, s.Hk, s.Dv], s.seed + 2, s.cacheDtype);
        }
        if (s.append) {
          opts.kNew = f32([B, s.Tq, s.Hk, s.D], s.seed + 3);
          opts.vNew = f32([B, s.Tq, s.Hk, s.Dv], s.seed + 4);
        }
        if (s.rotary !== 'none') {
          const half = Math.max(1, s.D >> 1);
          const rows = s.rotary === 'short' ? Math.max(0, need - 1) : need;
          opts.rotary = { cos: f32([rows, half], 5), sin: f32([rows, half], 6) };
          opts.rotaryInterleaved = s.rotary === 'interleaved';
          if (!s.append || 2 * half > s.D || rows < need) valid = false;
        }
        if (s.gate !== 'none') {
          opts.gate = f32(s.gate === 'elementwise' ? [B, s.Tq, Hq, s.Dv] : s.gate === 'headwise' ? [B, s.Tq, Hq] : [B, s.Tq, Hq, s.Dv + 1], 7);
          if (s.gate === 'wrong') valid = false;
        }
        const kRef = new Tensor(k.data.slice(), k.shape, k.dtype);
        const vRef = new Tensor(v.data.slice(), v.shape, v.dtype);
        const snapK = snapshot(k);
        let got;
        try {
          got = attentionWithKVCache(q, k, v, opts);
        } catch (e) {
          expect(e, String(e)).toBeInstanceOf(SeqkernError);
          expect(valid, `threw ${String(e)} for a valid call`).toBe(false);
          expect(sameBytes(k, snapK), 'caches untouched by a refused call').toBe(true);
          return;
        }
        expect(valid, 'accepted an invalid call').toBe(true);
        const want = attentionWithKVCache(q, kRef, vRef, { ...opts, backend: 'reference' });
        const low = s.qDtype === 'float16' || s.qDtype === 'bfloat16' || s.cacheDtype !== 'float32';
        expect(relErr(got.o, want.o), 'o vs the reference').toBeLessThanOrEqual(low ? 2e-2 : 1e-5);
      }),
      { numRuns: 120, seed: FC_SEED },
    );
  });
});
