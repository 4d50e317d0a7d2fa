// attention's `out` option: o written into a caller's tensor. The answer equals the allocating call bit for
// bit (every dtype, GQA, causal, gates, lse, a split-key decode) and result.o is out itself; a reused out
// holds the latest call's answer; the reference backend copies into it; attentionAsync with out honours an
// abort only before the first write (rejected: out untouched; resolved: out complete); a bad out is a
// SeqkernError naming `out` that leaves its bytes alone; the raw addon re-checks overlaps and callerOut.
// out is always filled with garbage first (NaN and random values, never zeros), so an element the kernel
// does not write shows whether or not SEQKERN_POISON is set.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { attention, attentionAsync, randn, Tensor, type AttentionOptions, type DType } from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import {
  abortOnceWritten, catchError, catchRejection, checkSeqkernError, expectIsOut, expectOutRefused, expectSameBits, garbage, sameBytes, snapshot,
  untouchedOrPoisoned,
} from './helpers.js';

interface Case {
  name: string;
  B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  seed: number;
  dtype?: DType;
  causal?: boolean;
  gate?: 'elementwise' | 'headwise';
  lens?: number[];
}

function inputs(c: Case) {
  const dtype = c.dtype ?? 'float32';
  const q = randn([c.B, c.T, c.Hq, c.D], { seed: c.seed + 1, dtype });
  const k = randn([c.B, c.S, c.Hk, c.D], { seed: c.seed + 2, dtype });
  const v = randn([c.B, c.S, c.Hk, c.Dv], { seed: c.seed + 3, dtype });
  const opts: AttentionOptions = { causal: c.causal === true, returnLse: true, backend: 'cpu' };
  if (c.gate) opts.gate = randn(c.gate === 'elementwise' ? [c.B, c.T, c.Hq, c.Dv] : [c.B, c.T, c.Hq], { seed: c.seed + 4, std: 2, dtype });
  if (c.lens) opts.cuSeqlens = Int32Array.from([0, ...c.lens.map((_, i) => c.lens!.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  return { q, k, v, opts };
}

const oShape = (c: Case) => [c.B, c.T, c.Hq, c.Dv];

const CASES: Case[] = [
  { name: 'float32, GQA 8:2, causal', B: 2, T: 70, S: 70, Hq: 8, Hk: 2, D: 64, Dv: 48, seed: 10, causal: true },
  { name: 'float32, MQA, not causal, S > T', B: 1, T: 33, S: 129, Hq: 4, Hk: 1, D: 32, Dv: 32, seed: 20 },
  { name: 'float16, GQA, causal, elementwise gate', B: 1, T: 65, S: 100, Hq: 6, Hk: 3, D: 64, Dv: 64, seed: 30, dtype: 'float16', causal: true, gate: 'elementwise' },
  { name: 'bfloat16, GQA, causal, headwise gate', B: 2, T: 40, S: 40, Hq: 4, Hk: 2, D: 128, Dv: 64, seed: 40, dtype: 'bfloat16', causal: true, gate: 'headwise' },
  { name: 'float32, causal, S < T (queries that see no key get o = 0)', B: 1, T: 50, S: 20, Hq: 2, Hk: 2, D: 16, Dv: 16, seed: 50, causal: true },
  { name: 'float32, packed sequences with a zero-length one', B: 1, T: 60, S: 60, Hq: 4, Hk: 2, D: 32, Dv: 24, seed: 60, causal: true, lens: [25, 0, 34, 1] },
  { name: 'decode T=1, S=4097, Hq=8, Hk=2 (keys split across threads), causal', B: 1, T: 1, S: 4097, Hq: 8, Hk: 2, D: 64, Dv: 64, seed: 70, causal: true },
  { name: 'decode T=1, S=4097, Hq=8, Hk=2, bfloat16, 3 sequences', B: 3, T: 1, S: 4097, Hq: 8, Hk: 2, D: 64, Dv: 64, seed: 80, dtype: 'bfloat16' },
];

describe('attention with out equals the allocating call bit for bit', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const { q, k, v, opts } = inputs(c);
      const want = attention(q, k, v, opts);
      const out = garbage(oShape(c), c.dtype ?? 'float32', c.seed + 9);
      const got = attention(q, k, v, { ...opts, out });
      expectIsOut(got.o, out);
      expectSameBits(out, want.o, `${c.name}: o`);
      expectSameBits(got.lse!, want.lse!, `${c.name}: lse`);
    });
  }

  it('without returnLse the result is { o: out } alone', () => {
    const c = CASES[0];
    const { q, k, v, opts } = inputs(c);
    const out = garbage(oShape(c), 'float32', 1);
    const r = attention(q, k, v, { ...opts, returnLse: false, out });
    expect(Object.keys(r)).toEqual(['o']);
    expectIsOut(r.o, out);
    expectSameBits(out, attention(q, k, v, { ...opts, returnLse: false }).o, 'o');
  });

  it('an out that is a view inside a larger buffer: written exactly, the bytes around it untouched', () => {
    const c = CASES[2];
    const { q, k, v, opts } = inputs(c);
    const n = c.B * c.T * c.Hq * c.Dv;
    // One element of guard before (an odd offset for a float16 view) and 37 after.
    const big = garbage([n + 38], 'float16', 5);
    const out = new Tensor(big.data.subarray(1, 1 + n), oShape(c), 'float16');
    const guards = [snapshot({ data: big.data.subarray(0, 1) }), snapshot({ data: big.data.subarray(1 + n) })];
    const r = attention(q, k, v, { ...opts, out });
    expectIsOut(r.o, out);
    expectSameBits(out, attention(q, k, v, opts).o, 'o');
    expect(sameBytes({ data: big.data.subarray(0, 1) }, guards[0]), 'guard before out').toBe(true);
    expect(sameBytes({ data: big.data.subarray(1 + n) }, guards[1]), 'guard after out').toBe(true);
  });

  it('empty calls (T = 0, S = 0) with out', () => {
    const q0 = randn([2, 0, 4, 8], { seed: 1 });
    const k = randn([2, 5, 2, 8], { seed: 2 });
    const v = randn([2, 5, 2, 6], { seed: 3 });
    const out0 = garbage([2, 0, 4, 6], 'float32', 4);
    expectIsOut(attention(q0, k, v, { out: out0 }).o, out0);
    // S = 0: every query sees no key, o = 0 (written over the garbage).
    const q = randn([2, 3, 4, 8], { seed: 5 });
    const out = garbage([2, 3, 4, 6], 'float32', 6);
    const r = attention(q, randn([2, 0, 2, 8]), randn([2, 0, 2, 6]), { out, returnLse: true });
    expectIsOut(r.o, out);
    expect(Array.from(out.data).every((x) => x === 0), 'o = 0 everywhere').toBe(true);
    expect(Array.from(r.lse!.data).every((x) => x === -Infinity)).toBe(true);
  });
});

describe('a reused out', () => {
  it('two calls with different inputs into one out: it holds the second call\'s answer (each time out itself)', () => {
    for (const c of [CASES[0], CASES[3], CASES[6]]) {
      const a = inputs(c);
      const b = inputs({ ...c, seed: c.seed + 100 });
      const wantA = attention(a.q, a.k, a.v, a.opts);
      const wantB = attention(b.q, b.k, b.v, b.opts);
      const out = garbage(oShape(c), c.dtype ?? 'float32', c.seed + 7);
      expectIsOut(attention(a.q, a.k, a.v, { ...a.opts, out }).o, out);
      expectSameBits(out, wantA.o, `${c.name}: first call`);
      const r = attention(b.q, b.k, b.v, { ...b.opts, out });
      expectIsOut(r.o, out);
      expectSameBits(out, wantB.o, `${c.name}: second call`);
      expectSameBits(r.lse!, wantB.lse!, `${c.name}: second call lse`);
    }
  });

  it('a causal call after a full one: the masked part does not keep the first call\'s values', () => {
    // S < T: the first T - S queries of the causal call see no key; they must be 0, not the old answer.
    const c: Case = { name: 'S<T', B: 1, T: 40, S: 10, Hq: 2, Hk: 1, D: 16, Dv: 16, seed: 90 };
    const { q, k, v, opts } = inputs(c);
    const out = garbage(oShape(c), 'float32', 91);
    attention(q, k, v, { ...opts, causal: false, out });
    attention(q, k, v, { ...opts, causal: true, out });
    expectSameBits(out, attention(q, k, v, { ...opts, causal: true }).o, 'causal after full');
  });
});

describe('out on the reference backend', () => {
  it("backend 'reference': the reference's answer in v's dtype, copied into out", () => {
    for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
      const c: Case = { name: dtype, B: 1, T: 9, S: 12, Hq: 4, Hk: 2, D: 8, Dv: 6, seed: 110, dtype, causal: true, gate: 'headwise' };
      const { q, k, v, opts } = inputs(c);
      const ref = { ...opts, backend: 'reference' as const };
      const out = garbage(oShape(c), dtype, 111);
      const r = attention(q, k, v, { ...ref, out });
      expectIsOut(r.o, out);
      expectSameBits(out, attention(q, k, v, ref).o, `${dtype}: o`);
      expectSameBits(r.lse!, attention(q, k, v, ref).lse!, `${dtype}: lse`);
    }
  });

  it('float64 inputs: out must be float64, and gets the reference answer', async () => {
    const c: Case = { name: 'f64', B: 2, T: 5, S: 7, Hq: 2, Hk: 1, D: 4, Dv: 3, seed: 120, dtype: 'float64', causal: true };
    const { q, k, v } = inputs(c);
    const out = garbage(oShape(c), 'float64', 121);
    const r = attention(q, k, v, { causal: true, out });
    expectIsOut(r.o, out);
    expectSameBits(out, attention(q, k, v, { causal: true }).o, 'o');
    const out2 = garbage(oShape(c), 'float64', 122);
    expectIsOut((await attentionAsync(q, k, v, { causal: true, out: out2 })).o, out2);
    expectSameBits(out2, out, 'async o');
    const f32 = garbage(oShape(c), 'float32', 123);
    const before = snapshot(f32);
    const e = catchError(() => attention(q, k, v, { causal: true, out: f32 }));
    checkSeqkernError(e, 'BAD_DTYPE', 'out', 'float32 out for float64 inputs');
    expect(sameBytes(f32, before)).toBe(true);
  });
});

describe('attentionAsync with out', () => {
  for (const c of [CASES[0], CASES[2], CASES[6]]) {
    it(`${c.name}: equals the sync call bit for bit, result.o is out`, async () => {
      const { q, k, v, opts } = inputs(c);
      const want = attention(q, k, v, opts);
      const out = garbage(oShape(c), c.dtype ?? 'float32', 3);
      const r = await attentionAsync(q, k, v, { ...opts, out });
      expectIsOut(r.o, out);
      expectSameBits(out, want.o, 'o');
      expectSameBits(r.lse!, want.lse!, 'lse');
    });
  }

  it('an already-aborted signal rejects with an AbortError and leaves out untouched (cpu and reference)', async () => {
    const c = CASES[0];
    const { q, k, v, opts } = inputs(c);
    for (const backend of ['cpu', 'reference'] as const) {
      const out = garbage(oShape(c), 'float32', 4);
      const before = snapshot(out);
      const ac = new AbortController();
      ac.abort();
      await expect(attentionAsync(q, k, v, { ...opts, backend, out }, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
      expect(sameBytes(out, before), `${backend}: out after an aborted call`).toBe(true);
    }
  });

  it('a signal aborted while the options are read (a getter) still rejects before out is touched', async () => {
    const c = CASES[0];
    const { q, k, v } = inputs(c);
    const out = garbage(oShape(c), 'float32', 5);
    const before = snapshot(out);
    const ac = new AbortController();
    const opts = {
      backend: 'cpu' as const,
      out,
      get causal() {
        ac.abort();
        return true;
      },
    };
    await expect(attentionAsync(q, k, v, opts, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(out, before), 'out after the aborted call').toBe(true);
  });

  it('an abort after the kernel started writing is ignored: the call resolves with out complete', async () => {
    // Long enough that the abort lands while the kernel runs; it is sent only once some element of out holds
    // a finite value, so the kernel has surely started. Without out the same abort rejects
    // (attention.test.ts); with out it must not stop halfway. A machine fast enough to finish before the
    // abort is sent gets a longer call (T = S doubled), up to three times.
    let abortedMidway = false;
    for (let T = 2048; T <= 8192 && !abortedMidway; T *= 2) {
      const c: Case = { name: 'long', B: 1, T, S: T, Hq: 8, Hk: 8, D: 64, Dv: 64, seed: 130 };
      const { q, k, v } = inputs(c);
      const opts: AttentionOptions = { backend: 'cpu' };
      const want = attention(q, k, v, opts);
      const out = new Tensor(new Float32Array(c.T * c.Hq * c.Dv).fill(NaN), oShape(c), 'float32');
      const ac = new AbortController();
      const p = attentionAsync(q, k, v, { ...opts, out }, { signal: ac.signal });
      const d = out.data as Float32Array;
      abortedMidway = await abortOnceWritten(p, () => d.some((x) => !Number.isNaN(x)), ac);
      const r = await p;
      expectIsOut(r.o, out);
      expectSameBits(out, want.o, `o after an abort mid-call (T = ${T})`);
    }
    expect(abortedMidway, 'the abort was sent while the call was still running').toBe(true);
  });

  it('an abort racing the start is all-or-nothing: rejected with out untouched, or resolved with out complete', async () => {
    const c: Case = { name: 'race', B: 1, T: 512, S: 512, Hq: 8, Hk: 2, D: 64, Dv: 64, seed: 140, causal: true };
    const { q, k, v, opts } = inputs(c);
    const want = attention(q, k, v, opts);
    for (let i = 0; i < 6; i++) {
      const out = garbage(oShape(c), 'float32', 141 + i);
      const before = snapshot(out);
      const ac = new AbortController();
      const p = attentionAsync(q, k, v, { ...opts, out }, { signal: ac.signal });
      if (i % 2) queueMicrotask(() => ac.abort());
      else setImmediate(() => ac.abort());
      const r = await p.catch((e: unknown) => e as Error);
      if (r instanceof Error) {
        expect(r.name, `race ${i}: rejection (${r.message})`).toBe('AbortError');
        expect(untouchedOrPoisoned(out, before), `race ${i}: out after a rejected call holds nothing of an answer`).toBe(true);
      } else {
        expectIsOut(r.o, out);
        expectSameBits(out, want.o, `race ${i}: a resolved call`);
      }
    }
  });
});

describe('bad out: a SeqkernError naming out, raised before anything is written', () => {
  // B=2, T=5, S=7, Hq=4, Hk=2, D=8, Dv=6: o is [2,5,4,6] float32 (240 elements). Each input sits at the
  // start of a buffer with room for 240 more floats, so an out can be built partly over its end.
  const roomy = (t: Tensor) => {
    const buf = new Float32Array(t.size + 240).fill(NaN);
    buf.set(t.data as Float32Array);
    return new Tensor(buf.subarray(0, t.size), t.shape, 'float32');
  };
  const base = () => {
    const q = roomy(randn([2, 5, 4, 8], { seed: 1 }));
    const k = roomy(randn([2, 7, 2, 8], { seed: 2 }));
    const v = roomy(randn([2, 7, 2, 6], { seed: 3 }));
    const gate = roomy(randn([2, 5, 4, 6], { seed: 4 }));
    return { q, k, v, opts: { causal: true, backend: 'cpu', gate } as AttentionOptions };
  };
  type B = ReturnType<typeof base>;
  const cases: { name: string; out: (b: B) => unknown; code: string; got: string }[] = [
    { name: 'wrong shape ([B,T,Hq,D] for Dv != D)', out: () => garbage([2, 5, 4, 8], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,5,4,8]' },
    { name: 'wrong shape (T and Hq swapped)', out: () => garbage([2, 4, 5, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,4,5,6]' },
    { name: 'wrong rank', out: () => garbage([2, 5, 24], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,5,24]' },
    { name: 'wrong dtype (float16 for float32 v)', out: () => garbage([2, 5, 4, 6], 'float16', 9), code: 'BAD_DTYPE', got: 'float16' },
    { name: 'wrong dtype (float64 for float32 v)', out: () => garbage([2, 5, 4, 6], 'float64', 9), code: 'BAD_DTYPE', got: 'float64' },
    { name: 'not a Tensor (a Float32Array)', out: () => new Float32Array(240).fill(NaN), code: 'BAD_ARGUMENT', got: 'Float32Array' },
    { name: 'not a Tensor (an object without a dtype)', out: () => ({ shape: [2, 5, 4, 6], data: new Float32Array(240) }), code: 'BAD_ARGUMENT', got: 'Object' },
    { name: 'null', out: () => null, code: 'BAD_ARGUMENT', got: 'null' },
    // q [2,5,4,8] holds 320 floats: an out of o's shape on q's first 240 floats.
    { name: 'aliasing q (built on q\'s buffer)', out: (b) => new Tensor((b.q.data as Float32Array).subarray(0, 240), [2, 5, 4, 6], 'float32'), code: 'BAD_ARGUMENT', got: 'overlapping q' },
    // k holds 224 floats: an out from float 200 shares k's last 24.
    { name: 'overlapping the end of k', out: (b) => new Tensor(new Float32Array(b.k.data.buffer, 4 * 200, 240), [2, 5, 4, 6], 'float32'), code: 'BAD_ARGUMENT', got: 'overlapping k' },
    // v holds 168 floats: an out from float 167 shares one element with v.
    { name: 'sharing one element with v', out: (b) => new Tensor(new Float32Array(b.v.data.buffer, 4 * 167, 240), [2, 5, 4, 6], 'float32'), code: 'BAD_ARGUMENT', got: 'overlapping v' },
    { name: 'the gate itself', out: (b) => b.opts.gate, code: 'BAD_ARGUMENT', got: 'overlapping gate' },
  ];
  for (const bc of cases) {
    it(`${bc.name} -> ${bc.code}, sync and async`, async () => {
      for (const asyncForm of [false, true]) {
        const b = base();
        const out = bc.out(b);
        const view = out as { data?: ArrayBufferView } | null;
        const outBefore = view?.data ? snapshot({ data: view.data as Float32Array }) : undefined;
        const inputsBefore = [b.q, b.k, b.v, b.opts.gate!].map(snapshot);
        const call = { ...b.opts, out: out as Tensor };
        const e = asyncForm
          ? await catchRejection(() => attentionAsync(b.q, b.k, b.v, call))
          : catchError(() => attention(b.q, b.k, b.v, call));
        const what = `${bc.name} (${asyncForm ? 'async' : 'sync'})`;
        expectOutRefused(e, bc.code, bc.got, what, view, outBefore, [b.q, b.k, b.v, b.opts.gate!], inputsBefore, ['q', 'k', 'v', 'gate']);
      }
    });
  }

  it('out overlapping an Int32Array cuSeqlens -> BAD_ARGUMENT', () => {
    const q = randn([1, 6, 2, 4], { seed: 1 });
    const k = randn([1, 6, 2, 4], { seed: 2 });
    const v = randn([1, 6, 2, 4], { seed: 3 });
    const buf = new ArrayBuffer(4 * 48);
    const cu = new Int32Array(buf, 0, 3);
    cu.set([0, 2, 6]);
    const out = new Tensor(new Float32Array(buf), [1, 6, 2, 4], 'float32');
    const e = catchError(() => attention(q, k, v, { cuSeqlens: cu, out }));
    checkSeqkernError(e, 'BAD_ARGUMENT', 'out', 'out over cuSeqlens');
    expect(Array.from(cu)).toEqual([0, 2, 6]);
  });

  it('an out of another buffer, or one next to q in q\'s buffer without overlap, is fine', () => {
    const buf = new Float32Array(320 + 240);
    buf.set(randn([2, 5, 4, 8], { seed: 1 }).data as Float32Array);
    const q = new Tensor(buf.subarray(0, 320), [2, 5, 4, 8], 'float32');
    const k = randn([2, 7, 2, 8], { seed: 2 });
    const v = randn([2, 7, 2, 6], { seed: 3 });
    const out = new Tensor(buf.subarray(320), [2, 5, 4, 6], 'float32');
    out.data.fill(NaN);
    const r = attention(q, k, v, { causal: true, out });
    expectIsOut(r.o, out);
    expectSameBits(out, attention(q, k, v, { causal: true }).o, 'o next to q');
  });
});

describe('raw addon: the binding re-checks overlaps and honours callerOut', () => {
  const raw = () =>
    createRequire(import.meta.url)(loadedAddonPath()!) as { attention(a: object): void; attentionAsync(a: object): Promise<void> };
  const args = () => {
    const F = (n: number, x: number) => new Float32Array(n).fill(x);
    return {
      B: 1, T: 64, S: 640, Hq: 2, Hk: 1, D: 16, Dv: 16, q: F(64 * 2 * 16, 0.5), k: F(640 * 16, 0.25), v: F(640 * 16, 0.5), dtype: 'float32',
      o: F(64 * 2 * 16, NaN), gateKind: 'none', causal: false, scale: 0.25,
    } as Record<string, unknown>;
  };

  it('o overlapping q, k or v, and lse overlapping q: Error with code BAD_ARGUMENT, nothing written', () => {
    for (const name of ['q', 'k', 'v'] as const) {
      const a = args();
      const src = a[name] as Float32Array;
      // The input at the start of a buffer with room after it; o starts one element into the input.
      const buf = new Float32Array(src.length + 2048).fill(NaN);
      buf.set(src);
      a[name] = buf.subarray(0, src.length);
      a.o = buf.subarray(1, 1 + 2048);
      const before = snapshot({ data: buf });
      expect(() => raw().attention(a), name).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
      expect(sameBytes({ data: buf }, before), `${name}: nothing written`).toBe(true);
    }
    const a = args();
    a.lse = new Float32Array((a.q as Float32Array).buffer, 0, 128);
    expect(() => raw().attention(a)).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
  });

  it('callerOut with a set cancel flag: rejects ABORTED before writing (o untouched)', async () => {
    const a: Record<string, unknown> = { ...args(), callerOut: true, cancel: Int32Array.of(1) };
    const before = snapshot({ data: a.o as Float32Array });
    await expect(raw().attentionAsync(a)).rejects.toMatchObject({ code: 'ABORTED' });
    expect(sameBytes({ data: a.o as Float32Array }, before)).toBe(true);
  });
});
