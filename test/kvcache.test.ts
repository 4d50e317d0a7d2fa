// attentionWithKVCache against its float64 reference (issue 14 parts 1 and 7): caches of lengths 0, 1, 63, 64,
// 65 and 1000 in one batch, B in {1, 3}, contiguous and paged (block sizes 16 and 64, shuffled block tables),
// Tq in {1, 4}, cache dtype independent of q's, kNew/vNew appended in place (the caches compared after the
// call: new rows as the reference writes them, every other byte untouched), rotary (partial, interleaved),
// gate, lse, causal off; the properties: append-then-attend equals attention over the concatenated cache, a
// paged cache equals the contiguous one; a decode long enough to be split across threads; async and abort.
import { describe, expect, it } from 'vitest';
import {
  attention, attentionWithKVCache, attentionWithKVCacheAsync, randn, setNumThreads, Tensor, tensor, type DType, type KVCacheOptions,
} from '../src/index.js';
import { expectClose, relErr, sameBytes, snapshot } from './helpers.js';

const TOL = 1e-5;
/** q or the caches in float16/bfloat16: their rounding (the output in q's dtype too). */
const TOL_LOW = 2e-2;

interface Case {
  lens: number[]; Tq: number; Hq: number; Hk: number; D: number; Dv: number;
  qDtype?: DType; cacheDtype?: DType; newDtype?: DType;
  append?: boolean; paged?: number; rotary?: 'full' | 'partial' | 'interleaved';
  gate?: 'elementwise' | 'headwise'; causal?: boolean; lse?: boolean; seed: number;
}

const id = (c: Case) =>
  `lens=[${c.lens}] Tq=${c.Tq} Hq=${c.Hq} Hk=${c.Hk} D=${c.D} Dv=${c.Dv} q=${c.qDtype ?? 'float32'} cache=${c.cacheDtype ?? 'float32'}` +
  `${c.append === false ? ' no-append' : ` new=${c.newDtype ?? 'float32'}`}${c.paged ? ` paged bs=${c.paged}` : ''}` +
  `${c.rotary ? ` rotary=${c.rotary}` : ''}${c.gate ? ` gate=${c.gate}` : ''}${c.causal === false ? ' non-causal' : ''} seed=${c.seed}`;

/** A shuffled permutation of [0, n) (seeded). */
function shuffled(n: number, seed: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

function copyT(t: Tensor): Tensor {
  return new Tensor(t.data.slice(), t.shape, t.dtype);
}

/** The call of a case: q, caches holding random tokens (also past each length: they must not be read), options. */
function build(c: Case) {
  const B = c.lens.length;
  const append = c.append !== false;
  const need = Math.max(...c.lens) + (append ? c.Tq : 0);
  const cacheDtype = c.cacheDtype ?? 'float32';
  const q = randn([B, c.Tq, c.Hq, c.D], { seed: c.seed + 1, dtype: c.qDtype ?? 'float32' });
  let kCache: Tensor;
  let vCache: Tensor;
  let blockTable: Int32Array | undefined;
  if (c.paged) {
    const bs = c.paged;
    const maxBlocks = Math.ceil(need / bs) + 1; // a spare column: never read
    const numBlocks = B * maxBlocks + 3;
    const perm = shuffled(numBlocks, c.seed + 7);
    blockTable = Int32Array.from({ length: B * maxBlocks }, (_, i) => perm[i]);
    kCache = randn([numBlocks, bs, c.Hk, c.D], { seed: c.seed + 2, dtype: cacheDtype });
    vCache = randn([numBlocks, bs, c.Hk, c.Dv], { seed: c.seed + 3, dtype: cacheDtype });
  } else {
    const cap = need + 5;
    kCache = randn([B, cap, c.Hk, c.D], { seed: c.seed + 2, dtype: cacheDtype });
    vCache = randn([B, cap, c.Hk, c.Dv], { seed: c.seed + 3, dtype: cacheDtype });
  }
  const opts: KVCacheOptions = { cacheSeqlens: Int32Array.from(c.lens), blockTable, causal: c.causal, returnLse: c.lse };
  if (append) {
    opts.kNew = randn([B, c.Tq, c.Hk, c.D], { seed: c.seed + 4, dtype: c.newDtype ?? 'float32' });
    opts.vNew = randn([B, c.Tq, c.Hk, c.Dv], { seed: c.seed + 5, dtype: c.newDtype ?? 'float32' });
  }
  if (c.rotary) {
    const rot = c.rotary === 'partial' ? Math.max(2, (c.D >> 2) << 1) : c.D - (c.D % 2);
    const half = rot / 2;
    const maxPos = need + 3;
    const cos = new Float32Array(maxPos * half);
    const sin = new Float32Array(maxPos * half);
    for (let p = 0; p < maxPos; p++) {
      for (let i = 0; i < half; i++) {
        const th = p * Math.pow(10000, -i / half);
        cos[p * half + i] = Math.cos(th);
        sin[p * half + i] = Math.sin(th);
      }
    }
    opts.rotary = { cos: tensor(cos, [maxPos, half]), sin: tensor(sin, [maxPos, half]) };
    opts.rotaryInterleaved = c.rotary === 'interleaved';
  }
  if (c.gate) {
    opts.gate = randn(c.gate === 'elementwise' ? [B, c.Tq, c.Hq, c.Dv] : [B, c.Tq, c.Hq], { seed: c.seed + 6 });
  }
  return { q, kCache, vCache, opts };
}

/** Runs native and reference on copies of the caches; checks o, lse and the caches after the call. */
function check(c: Case) {
  const { q, kCache, vCache, opts } = build(c);
  const before = { k: snapshot(kCache), v: snapshot(vCache) };
  const kRef = copyT(kCache);
  const vRef = copyT(vCache);
  const got = attentionWithKVCache(q, kCache, vCache, opts);
  const want = attentionWithKVCache(q, kRef, vRef, { ...opts, backend: 'reference' });
  const low = (c.qDtype ?? 'float32') !== 'float32' || (c.cacheDtype ?? 'float32') !== 'float32' || (c.newDtype ?? 'float32') !== 'float32';
  const tol = low ? TOL_LOW : TOL;
  expectClose(got.o, want.o, tol, `o ${id(c)}`);
  if (c.lse) {
    expect(got.lse!.shape).toEqual([c.lens.length, c.Hq, c.Tq]);
    // -Inf where a query sees no key: equal there, close elsewhere.
    const a = got.lse!.toFloat64();
    const b = want.lse!.toFloat64();
    let num = 0;
    let den = 0;
    for (let i = 0; i < a.length; i++) {
      if (b[i] === -Infinity) expect(a[i], `lse[${i}] ${id(c)}`).toBe(-Infinity);
      else {
        expect(Number.isFinite(a[i]), `lse[${i}] finite ${id(c)}`).toBe(true);
        num += (a[i] - b[i]) ** 2;
        den += b[i] ** 2;
      }
    }
    expect(Math.sqrt(num / Math.max(den, 1e-30)), `lse ${id(c)}`).toBeLessThanOrEqual(low ? TOL_LOW : TOL);
  }
  if (c.append !== false) {
    // The new rows as the reference wrote them (rounded to the cache dtype), every other byte as it was.
    expect(relErr(kCache, kRef), `kCache after the append ${id(c)}`).toBeLessThanOrEqual(low ? 1e-2 : 1e-6);
    expect(relErr(vCache, vRef), `vCache after the append ${id(c)}`).toBeLessThanOrEqual(low ? 1e-2 : 1e-7);
    expect(sameBytes(vCache, snapshot(vRef)), `vCache rows written exactly as the reference ${id(c)}`).toBe(true);
    const changed = rowsChanged(kCache, before.k, c.D);
    const expected = appendedRows(c, opts);
    expect(changed.every((r) => expected.has(r)), `kCache: only the appended rows change ${id(c)}`).toBe(true);
  } else {
    expect(sameBytes(kCache, before.k) && sameBytes(vCache, before.v), `caches untouched without kNew ${id(c)}`).toBe(true);
  }
  return got;
}

/** Head rows (of D values) whose bytes differ from the snapshot. */
function rowsChanged(t: Tensor, snap: Uint8Array, D: number): number[] {
  const now = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const rowBytes = D * (t.dtype === 'float32' ? 4 : 2);
  const rows = new Set<number>();
  for (let i = 0; i < now.length; i++) if (now[i] !== snap[i]) rows.add(Math.floor(i / rowBytes));
  return [...rows];
}

/** Head rows an append may write: token rows at cacheSeqlens[b] + t, times Hk heads. */
function appendedRows(c: Case, opts: KVCacheOptions): Set<number> {
  const s = new Set<number>();
  const bt = opts.blockTable as Int32Array | undefined;
  const B = c.lens.length;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < c.Tq; t++) {
      const pos = c.lens[b] + t;
      let row: number;
      if (bt) {
        const maxBlocks = bt.length / B;
        row = bt[b * maxBlocks + Math.floor(pos / c.paged!)] * c.paged! + (pos % c.paged!);
      } else {
        row = b * (Math.max(...c.lens) + c.Tq + 5) + pos; // build's capacity
      }
      for (let h = 0; h < c.Hk; h++) s.add(row * c.Hk + h);
    }
  }
  return s;
}

const MIXED = [0, 1, 63, 64, 65, 1000];

describe('attentionWithKVCache vs the float64 reference', () => {
  const cases: Case[] = [];
  let seed = 100;
  for (const paged of [0, 16, 64]) {
    for (const Tq of [1, 4]) {
      cases.push({ lens: MIXED, Tq, Hq: 4, Hk: 2, D: 32, Dv: 24, paged, seed: seed++, lse: true });
      cases.push({ lens: [65], Tq, Hq: 3, Hk: 1, D: 20, Dv: 20, paged, seed: seed++ });
      cases.push({ lens: [0, 63, 1000], Tq, Hq: 8, Hk: 8, D: 16, Dv: 8, paged, seed: seed++, rotary: 'partial', gate: 'headwise' });
    }
    cases.push({ lens: [1, 64, 65], Tq: 4, Hq: 4, Hk: 2, D: 32, Dv: 32, paged, qDtype: 'bfloat16', cacheDtype: 'float16', newDtype: 'float32', seed: seed++ });
    cases.push({ lens: [1000, 0, 64], Tq: 1, Hq: 4, Hk: 2, D: 32, Dv: 32, paged, cacheDtype: 'bfloat16', newDtype: 'bfloat16', rotary: 'interleaved', seed: seed++ });
    cases.push({ lens: MIXED, Tq: 4, Hq: 2, Hk: 2, D: 16, Dv: 16, paged, append: false, causal: false, gate: 'elementwise', lse: true, seed: seed++ });
    // bfloat16 caches read as even/odd halves (several kv heads per unit, D and Dv multiples of 2W): the
    // serving shape's group of 4, Dv not a multiple of 4W (the 2W tail), causal Tq > 1 (masked tiles), and
    // Dv = 40 (not a multiple of 2W: read in order).
    cases.push({ lens: [300, 1, 64], Tq: 1, Hq: 8, Hk: 2, D: 128, Dv: 96, paged, cacheDtype: 'bfloat16', seed: seed++, lse: true });
    cases.push({ lens: [65, 0, 130], Tq: 4, Hq: 4, Hk: 2, D: 64, Dv: 32, paged, cacheDtype: 'bfloat16', newDtype: 'bfloat16', seed: seed++ });
    cases.push({ lens: [100, 7], Tq: 1, Hq: 8, Hk: 2, D: 64, Dv: 40, paged, cacheDtype: 'bfloat16', seed: seed++ });
    cases.push({ lens: [63, 2, 1000], Tq: 4, Hq: 6, Hk: 3, D: 64, Dv: 40, paged, rotary: 'full', causal: false, qDtype: 'float16', cacheDtype: 'float32', seed: seed++ });
  }
  for (const c of cases) it(id(c), () => check(c));

  it('a decode long enough to be split across threads, 1 to 4 threads (paged bs=16 and contiguous)', () => {
    for (const threads of [1, 2, 4]) {
      setNumThreads(threads);
      try {
        check({ lens: [3000], Tq: 1, Hq: 8, Hk: 2, D: 64, Dv: 64, seed: 900 + threads, lse: true });
        check({ lens: [2500, 17], Tq: 1, Hq: 8, Hk: 4, D: 32, Dv: 32, paged: 16, seed: 910 + threads, cacheDtype: 'bfloat16' });
        // Many sequences, one long (the split of a lopsided batch: more units than threads, one holding most keys).
        check({ lens: [1, 2, 3000, 4, 0, 5, 6, 7, 70, 9], Tq: 1, Hq: 4, Hk: 2, D: 32, Dv: 32, seed: 920 + threads, lse: true });
        check({ lens: [1, 2, 3000, 4, 0, 5, 6, 7, 70, 9], Tq: 1, Hq: 4, Hk: 2, D: 32, Dv: 32, paged: 64, seed: 930 + threads });
      } finally {
        setNumThreads(0);
      }
    }
  });
});

describe('properties', () => {
  it('appending with kNew and attending equals attention over the concatenated cache', () => {
    const c: Case = { lens: [0, 1, 63, 64, 65, 200], Tq: 4, Hq: 4, Hk: 2, D: 32, Dv: 16, seed: 7 };
    const { q, kCache, vCache, opts } = build(c);
    const k0 = copyT(kCache);
    const v0 = copyT(vCache);
    const got = attentionWithKVCache(q, kCache, vCache, opts);
    const cap = kCache.shape[1];
    const kn = opts.kNew!.toFloat64();
    const vn = opts.vNew!.toFloat64();
    const kd = k0.toFloat64();
    const vd = v0.toFloat64();
    for (let b = 0; b < c.lens.length; b++) {
      const L = c.lens[b];
      const S = L + c.Tq;
      const kf = new Float32Array(S * c.Hk * c.D);
      const vf = new Float32Array(S * c.Hk * c.Dv);
      kf.set(kd.subarray(b * cap * c.Hk * c.D, (b * cap + L) * c.Hk * c.D));
      kf.set(kn.subarray(b * c.Tq * c.Hk * c.D, (b + 1) * c.Tq * c.Hk * c.D), L * c.Hk * c.D);
      vf.set(vd.subarray(b * cap * c.Hk * c.Dv, (b * cap + L) * c.Hk * c.Dv));
      vf.set(vn.subarray(b * c.Tq * c.Hk * c.Dv, (b + 1) * c.Tq * c.Hk * c.Dv), L * c.Hk * c.Dv);
      const qb = tensor(q.data.slice(b * c.Tq * c.Hq * c.D, (b + 1) * c.Tq * c.Hq * c.D) as Float32Array, [1, c.Tq, c.Hq, c.D]);
      const want = attention(qb, tensor(kf, [1, S, c.Hk, c.D]), tensor(vf, [1, S, c.Hk, c.Dv]), { causal: true });
      const ob = tensor(got.o.data.slice(b * c.Tq * c.Hq * c.Dv, (b + 1) * c.Tq * c.Hq * c.Dv) as Float32Array, [1, c.Tq, c.Hq, c.Dv]);
      expectClose(ob, want.o, 2e-6, `sequence ${b} (L=${L})`);
    }
  });

  it('a paged cache with a shuffled table equals the contiguous cache (bs 16 and 64)', () => {
    const lens = [5, 1000, 64];
    const Tq = 4, Hq = 4, Hk = 2, D = 32, Dv = 32;
    const c: Case = { lens, Tq, Hq, Hk, D, Dv, seed: 31 };
    const { q, kCache, vCache, opts } = build(c);
    const cap = kCache.shape[1];
    const want = attentionWithKVCache(q, copyT(kCache), copyT(vCache), opts).o;
    for (const bs of [16, 64]) {
      const maxBlocks = Math.ceil(cap / bs);
      const numBlocks = lens.length * maxBlocks;
      const perm = shuffled(numBlocks, bs);
      const kp = new Float32Array(numBlocks * bs * Hk * D);
      const vp = new Float32Array(numBlocks * bs * Hk * Dv);
      const kd = kCache.data as Float32Array;
      const vd = vCache.data as Float32Array;
      for (let b = 0; b < lens.length; b++) {
        for (let j = 0; j < cap; j++) {
          const row = perm[b * maxBlocks + Math.floor(j / bs)] * bs + (j % bs);
          kp.set(kd.subarray((b * cap + j) * Hk * D, (b * cap + j + 1) * Hk * D), row * Hk * D);
          vp.set(vd.subarray((b * cap + j) * Hk * Dv, (b * cap + j + 1) * Hk * Dv), row * Hk * Dv);
        }
      }
      const got = attentionWithKVCache(q, tensor(kp, [numBlocks, bs, Hk, D]), tensor(vp, [numBlocks, bs, Hk, Dv]), {
        ...opts, blockTable: Int32Array.from(perm.slice(0, lens.length * maxBlocks)),
      }).o;
      expectClose(got, want, 2e-6, `paged bs=${bs}`);
    }
  });

  it('decode steps over a growing cache equal one chunked call of Tq = 4 (row by row)', () => {
    const c: Case = { lens: [10, 70], Tq: 4, Hq: 4, Hk: 2, D: 16, Dv: 16, seed: 55, rotary: 'partial' };
    const { q, kCache, vCache, opts } = build(c);
    const kStep = copyT(kCache);
    const vStep = copyT(vCache);
    const whole = attentionWithKVCache(q, kCache, vCache, opts).o.toFloat64();
    const B = c.lens.length;
    for (let t = 0; t < c.Tq; t++) {
      const pick = (x: Tensor, H: number, d: number) => {
        const out = new Float32Array(B * H * d);
        for (let b = 0; b < B; b++) out.set((x.data as Float32Array).subarray(((b * c.Tq + t) * H) * d, ((b * c.Tq + t + 1) * H) * d), b * H * d);
        return tensor(out, [B, 1, H, d]);
      };
      const step = attentionWithKVCache(pick(q, c.Hq, c.D), kStep, vStep, {
        ...opts, cacheSeqlens: Int32Array.from(c.lens, (l) => l + t), kNew: pick(opts.kNew!, c.Hk, c.D), vNew: pick(opts.vNew!, c.Hk, c.Dv),
      }).o.toFloat64();
      for (let b = 0; b < B; b++) {
        const w = whole.subarray(((b * c.Tq + t) * c.Hq) * c.Dv, ((b * c.Tq + t + 1) * c.Hq) * c.Dv);
        const s = step.subarray(b * c.Hq * c.Dv, (b + 1) * c.Hq * c.Dv);
        expect(relErr(s, w), `step ${t} sequence ${b}`).toBeLessThanOrEqual(2e-6);
      }
    }
    expect(relErr(kStep, kCache), 'caches after the steps = after the chunk').toBeLessThanOrEqual(1e-7);
  });
});

describe('options', () => {
  it('out: o written into the caller\'s tensor (the result\'s o is out), equal to a fresh call; scale taken', () => {
    const c: Case = { lens: [5, 80], Tq: 2, Hq: 4, Hk: 2, D: 16, Dv: 8, paged: 16, seed: 91, gate: 'elementwise' };
    const a = build(c);
    const b = build(c);
    const want = attentionWithKVCache(a.q, a.kCache, a.vCache, { ...a.opts, scale: 0.3 }).o;
    const out = new Tensor(new Float32Array(2 * 2 * 4 * 8).fill(NaN), [2, 2, 4, 8], 'float32');
    const got = attentionWithKVCache(b.q, b.kCache, b.vCache, { ...b.opts, scale: 0.3, out });
    expect(got.o).toBe(out);
    expect(relErr(out, want)).toBe(0);
    const d = build(c);
    const other = attentionWithKVCache(d.q, d.kCache, d.vCache, d.opts).o;
    expect(relErr(other, want), 'the scale changes the answer').toBeGreaterThan(1e-3);
  });

  it('float64 q runs the reference (o float64), same answer as the cpu', () => {
    const c: Case = { lens: [7, 1], Tq: 1, Hq: 2, Hk: 1, D: 8, Dv: 8, seed: 93 };
    const a = build(c);
    const b = build(c);
    const q64 = new Tensor(Float64Array.from(b.q.data), b.q.shape, 'float64');
    const got = attentionWithKVCache(q64, b.kCache, b.vCache, b.opts).o;
    expect(got.dtype).toBe('float64');
    expectClose(attentionWithKVCache(a.q, a.kCache, a.vCache, a.opts).o, got, TOL, 'cpu vs float64 reference');
  });
});

describe('attentionWithKVCacheAsync', () => {
  it('cacheSeqlens and blockTable are copied at the call: changing them while the call runs changes nothing', async () => {
    const c: Case = { lens: [30, 200], Tq: 2, Hq: 4, Hk: 2, D: 16, Dv: 16, paged: 16, seed: 78 };
    const a = build(c);
    const b = build(c);
    const want = attentionWithKVCache(a.q, a.kCache, a.vCache, a.opts).o;
    const lens = b.opts.cacheSeqlens as Int32Array;
    const table = b.opts.blockTable as Int32Array;
    const p = attentionWithKVCacheAsync(b.q, b.kCache, b.vCache, b.opts);
    lens.fill(10 ** 6);
    table.fill(-5);
    const got = (await p).o;
    expect(relErr(got, want)).toBe(0);
    expect(sameBytes(b.kCache, snapshot(a.kCache))).toBe(true);
  });

  it('resolves to the sync result; an abort before the start rejects with the caches untouched', async () => {
    const c: Case = { lens: [3, 100], Tq: 1, Hq: 4, Hk: 2, D: 16, Dv: 16, seed: 77 };
    const a = build(c);
    const b = build(c);
    const sync = attentionWithKVCache(a.q, a.kCache, a.vCache, a.opts).o;
    const got = (await attentionWithKVCacheAsync(b.q, b.kCache, b.vCache, b.opts)).o;
    expect(relErr(got, sync)).toBe(0);
    const d = build(c);
    const snapK = snapshot(d.kCache);
    const ac = new AbortController();
    ac.abort(new Error('client left'));
    const err = await attentionWithKVCacheAsync(d.q, d.kCache, d.vCache, d.opts, { signal: ac.signal }).catch((e) => e);
    expect((err as Error).name).toBe('AbortError');
    expect(((err as Error).cause as Error).message).toBe('client left');
    expect(sameBytes(d.kCache, snapK)).toBe(true);
  });
});

describe('attentionWithKVCache: batchInvariant', () => {
  it('a decode of sequence b over a long cache (S=3000) alone equals the same sequence among 5, bit for bit', () => {
    const B = 5, cap = 3072, Hq = 2, Hk = 1, D = 32;
    const q = randn([B, 1, Hq, D], { seed: 1 });
    const kc = randn([B, cap, Hk, D], { seed: 2 }), vc = randn([B, cap, Hk, D], { seed: 3 });
    const lens = [3000, 17, 2900, 1, 64];
    const all = attentionWithKVCache(q, kc, vc, { cacheSeqlens: lens, batchInvariant: true });
    const per = cap * Hk * D;
    for (const b of [0, 2]) {
      const one = attentionWithKVCache(
        new Tensor(q.data.slice(b * Hq * D, (b + 1) * Hq * D), [1, 1, Hq, D], 'float32'),
        new Tensor(kc.data.slice(b * per, (b + 1) * per), [1, cap, Hk, D], 'float32'),
        new Tensor(vc.data.slice(b * per, (b + 1) * per), [1, cap, Hk, D], 'float32'),
        { cacheSeqlens: [lens[b]], batchInvariant: true },
      );
      expect(Array.from(all.o.data.slice(b * Hq * D, (b + 1) * Hq * D)), `sequence ${b}`).toEqual(Array.from(one.o.data));
    }
  });
});
