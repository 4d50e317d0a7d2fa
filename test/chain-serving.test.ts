// chain() over the serving ops (issue 15 part 2 with the serving kernels of issue 14): a decode step through
// a Gated DeltaNet layer and a gated-attention layer (linear, rmsNorm, causalConv1dUpdate on a conv-state
// pool, gatedDeltaRuleStep on a delta-state pool, rmsNormGated, attentionWithKVCache appending with rotary)
// run as one chain equals the same ops called one by one, bit for bit, outputs and in-place state alike; a
// bad argument names its op and leaves every pool and cache untouched; an abort stops between ops; and each
// newly chainable op gives what its Async form gives.
import { describe, expect, it } from 'vitest';
import {
  attentionWithKVCache, attentionWithKVCacheAsync, causalConv1d, causalConv1dAsync, causalConv1dUpdate, causalConv1dUpdateAsync,
  chain, ChainError, chainOps, gatedDeltaRuleStep, linear, linearAsync, nalaAttention, nalaAttentionAsync, nalaAttentionStep,
  nalaAttentionStepAsync, rand, randn, rmsNorm, rmsNormAsync, rmsNormGated, rmsNormGatedAsync, rotary, rotaryAsync, Tensor, tensor,
  type KVCacheResult,
} from '../src/index.js';
import { expectSameBits, sameBytes, snapshot } from './helpers.js';

const copy = (t: Tensor) => tensor(t.data.slice() as Tensor['data'], t.shape, t.dtype);
const view = (t: Tensor, shape: number[]) => new Tensor(t.data, shape, t.dtype);

/** Rotary tables cos, sin [maxPos, half] (base 10000). */
function ropeTables(maxPos: number, half: number) {
  const cos = new Float32Array(maxPos * half), sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * Math.pow(10000, -i / half);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos: tensor(cos, [maxPos, half]), sin: tensor(sin, [maxPos, half]) };
}

// Awkward sizes: hidden 44, 3 live sequences in a pool of 5 slots (one padding row), conv width 4.
const N = 4, SLOTS = 5, d = 44, H = 2, HV = 4, K = 12, V = 10, W = 4, Hq = 4, Hk = 2, D = 16, CAP = 24;
const slots = new Int32Array([3, 0, -1, 4]);

function model(seed: number) {
  const w = (shape: number[], s: number) => randn(shape, { seed: seed + s, std: 1 / Math.sqrt(shape[shape.length - 1]) });
  return {
    norm: rand([d], { seed: seed + 1, low: 0.5, high: 1.5 }),
    wq: w([H * K, d], 2), wk: w([H * K, d], 3), wv: w([HV * V, d], 4), wz: w([HV * V, d], 5), wb: w([HV, d], 6), wa: w([HV, d], 7),
    cq: w([H * K, W], 8), ck: w([H * K, W], 9), cv: w([HV * V, W], 10),
    aLog: rand([HV], { seed: seed + 11, low: -1, high: 1 }), dtBias: rand([HV], { seed: seed + 12, low: 0, high: 1 }),
    oNorm: rand([V], { seed: seed + 13, low: 0.5, high: 1.5 }), wo: w([d, HV * V], 14),
    wqa: w([Hq * D, d], 15), wga: w([Hq * D, d], 16), wka: w([Hk * D, d], 17), wva: w([Hk * D, d], 18), woa: w([d, Hq * D], 19),
  };
}
type Model = ReturnType<typeof model>;

function pools(seed: number) {
  return {
    convQ: randn([SLOTS, H * K, W - 1], { seed: seed + 1 }), convK: randn([SLOTS, H * K, W - 1], { seed: seed + 2 }),
    convV: randn([SLOTS, HV * V, W - 1], { seed: seed + 3 }), delta: randn([SLOTS, HV, K, V], { seed: seed + 4, std: 0.1 }),
    kCache: randn([N, CAP, Hk, D], { seed: seed + 5, dtype: 'bfloat16' }), vCache: randn([N, CAP, Hk, D], { seed: seed + 6, dtype: 'bfloat16' }),
  };
}
type Pools = ReturnType<typeof pools>;
const clonePools = (p: Pools): Pools => Object.fromEntries(Object.entries(p).map(([k, t]) => [k, copy(t)])) as Pools;

const lens = new Int32Array([5, 0, 3, 11]);
const rope = ropeTables(CAP, 4); // partial rotary: 8 of D = 16

/**
 * One decode step through a GDN layer then a gated-attention layer (20 ops). `call` is either the sync op
 * itself or the chain's add, so the same code builds both.
 */
function decodeStep(m: Model, p: Pools, x: Tensor, call: (name: string, ...args: unknown[]) => unknown, cacheSeqlens: Int32Array = lens) {
  const h = call('rmsNorm', x, m.norm) as Tensor;
  const lin = (wt: Tensor) => call('linear', h, wt) as Tensor;
  const q = lin(m.wq), k = lin(m.wk), v = lin(m.wv), z = lin(m.wz), b = lin(m.wb), a = lin(m.wa);
  const conv = (t: Tensor, st: Tensor, wt: Tensor) => call('causalConv1dUpdate', t, st, wt, { activation: 'silu', stateIndices: slots }) as Tensor;
  const qc = conv(q, p.convQ, m.cq), kc = conv(k, p.convK, m.ck), vc = conv(v, p.convV, m.cv);
  const step = call('gatedDeltaRuleStep', {
    q: view(qc, [N, H, K]), k: view(kc, [N, H, K]), v: view(vc, [N, HV, V]), beta: b, g: a, state: p.delta, stateIndices: slots,
    aLog: m.aLog, dtBias: m.dtBias, betaSigmoid: true, qkL2Norm: true,
  }) as { o: Tensor };
  const normed = call('rmsNormGated', view(step.o, [N * HV, V]), view(z, [N * HV, V]), m.oNorm) as Tensor;
  const y = call('linear', view(normed, [N, HV * V]), m.wo) as Tensor;
  const h2 = call('rmsNorm', y, m.norm, { eps: 1e-5 }) as Tensor;
  const lin2 = (wt: Tensor, heads: number) => view(call('linear', h2, wt, { outDtype: 'float32' }) as Tensor, [N, 1, heads, D]);
  const qa = lin2(m.wqa, Hq), ga = lin2(m.wga, Hq), ka = lin2(m.wka, Hk), va = lin2(m.wva, Hk);
  const att = call('attentionWithKVCache', qa, p.kCache, p.vCache, {
    cacheSeqlens, kNew: ka, vNew: va, rotary: rope, gate: ga, batchInvariant: true,
  }) as KVCacheResult;
  const out = call('linear', view(att.o, [N, Hq * D]), m.woa) as Tensor;
  return { h, q, z, qc, kc, vc, o: step.o, normed, y, att: att.o, out };
}

const SYNC: Record<string, (...a: never[]) => unknown> = {
  rmsNorm, linear, causalConv1dUpdate, gatedDeltaRuleStep, rmsNormGated, attentionWithKVCache,
} as never;
const syncCall = (name: string, ...args: unknown[]) => (SYNC[name] as (...a: unknown[]) => unknown)(...args);

function expectPoolsEqual(got: Pools, want: Pools, what: string) {
  for (const key of Object.keys(want) as (keyof Pools)[]) expectSameBits(got[key], want[key], `${what} ${key}`);
}

describe('chain: a decode step through a GDN and a gated-attention layer', () => {
  it(`N=${N} (one padding row) in a pool of ${SLOTS}, d=${d}, bf16 KV cache with rotary: equals the ops one by one, bit for bit (run async and sync)`, async () => {
    const m = model(100);
    const x = randn([N, d], { seed: 7 });
    for (const mode of ['async', 'sync'] as const) {
      const mine = pools(200), theirs = clonePools(mine);
      const c = chain();
      const got = decodeStep(m, mine, x, (name, ...args) => (c.add as (n: string, ...a: unknown[]) => unknown)(name, ...args));
      expect(c.length).toBe(20);
      if (mode === 'async') await c.run();
      else c.runSync();
      const want = decodeStep(m, theirs, x, syncCall);
      for (const key of Object.keys(want) as (keyof typeof want)[]) expectSameBits(got[key], want[key], `${mode} ${key}`);
      expectPoolsEqual(mine, theirs, mode);
      // Something happened: the pools moved, the padding slot's neighbours and unused slots did not.
      expect(sameBytes(mine.delta, snapshot(pools(200).delta))).toBe(false);
      expect(got.out.data.some((e) => e !== 0)).toBe(true);
      const fresh = pools(200);
      const per = HV * K * V;
      for (const s of [1, 2]) expect(mine.delta.data.slice(s * per, (s + 1) * per)).toEqual(fresh.delta.data.slice(s * per, (s + 1) * per));
    }
  });

  it('two decode steps as two chains (the second reading the pools the first wrote) equal two sync steps', async () => {
    const m = model(300);
    const mine = pools(400), theirs = clonePools(mine);
    let x = randn([N, d], { seed: 9 }), xs = copy(x);
    const lens2 = new Int32Array(lens);
    for (let stepNo = 0; stepNo < 2; stepNo++) {
      const c = chain();
      const got = decodeStep(m, mine, x, (name, ...args) => (c.add as (n: string, ...a: unknown[]) => unknown)(name, ...args), lens2);
      await c.run();
      const want = decodeStep(m, theirs, xs, syncCall, lens2);
      expectSameBits(got.out, want.out, `step ${stepNo} out`);
      expectPoolsEqual(mine, theirs, `step ${stepNo}`);
      x = got.out;
      xs = want.out;
      for (let i = 0; i < N; i++) lens2[i]++;
    }
  });
});

describe('chain: errors in the serving ops name the op and write nothing', () => {
  it.each([
    ['causalConv1dUpdate', 7, 'stateIndices', (o: Record<string, unknown>) => ({ ...o, stateIndices: new Int32Array([3, 3, -1, 4]) })],
    ['gatedDeltaRuleStep', 10, 'stateIndices', (o: Record<string, unknown>) => ({ ...o, stateIndices: new Int32Array([0, 1, 2, 9]) })],
    ['attentionWithKVCache', 18, 'cacheSeqlens', (o: Record<string, unknown>) => ({ ...o, cacheSeqlens: new Int32Array([5, 0, 3, CAP]) })],
    ['attentionWithKVCache', 18, 'rotary.cos', (o: Record<string, unknown>) => ({ ...o, rotary: ropeTables(6, 4) })],
    ['linear', 19, 'x', () => undefined],
  ])('a bad %s (op %i, %s): ChainError with that index; no pool, cache or state written', async (bad, at, arg, mutate) => {
    const m = model(500);
    const mine = pools(600);
    const before = Object.fromEntries(Object.entries(mine).map(([k, t]) => [k, snapshot(t)]));
    const c = chain();
    let i = 0;
    let err: unknown;
    try {
      decodeStep(m, mine, randn([N, d], { seed: 1 }), (name, ...args) => {
        if (i === at && name === bad) {
          if (name === 'linear') args = [randn([N, d + 1], { seed: 2 }), args[1]];
          else args[args.length - 1] = (mutate as (o: Record<string, unknown>) => unknown)(args[args.length - 1] as Record<string, unknown>);
        }
        i++;
        return (c.add as (n: string, ...a: unknown[]) => unknown)(name, ...args);
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChainError);
    const e = err as ChainError;
    expect(e.opIndex).toBe(at);
    expect(e.op).toBe(bad);
    expect(e.argument).toBe(arg);
    expect(e.message).toMatch(new RegExp(`^chain op ${at} \\(${bad}\\): `));
    expect(c.length).toBe(at); // the bad op was not added
    for (const [k, t] of Object.entries(mine)) expect(sameBytes(t, before[k]), `${k} untouched`).toBe(true);
  });

  it('the chain built so far still runs after a refused op (the refusal changed nothing)', async () => {
    const x = randn([2, 8], { seed: 1 }), w = randn([6, 8], { seed: 2 });
    const c = chain().op('linear', x, w);
    expect(() => c.op('rmsNorm', x, randn([7], { seed: 3 }))).toThrow(ChainError);
    const [y] = (await c.run()) as Tensor[];
    expectSameBits(y, linear(x, w), 'linear after a refused op');
  });
});

describe('chain: abort between the serving ops', () => {
  it('an abort while a long first op runs leaves the later in-place ops (conv pool, delta pool, KV cache) unwritten', async () => {
    const m = model(700);
    const mine = pools(800);
    const before = Object.fromEntries(Object.entries(mine).map(([k, t]) => [k, snapshot(t)]));
    const big = randn([1024, 1024], { seed: 3 });
    const c = chain();
    for (let r = 0; r < 8; r++) c.op('linear', big, big); // ~17 GFLOP: long enough to abort inside
    decodeStep(m, mine, randn([N, d], { seed: 1 }), (name, ...args) => (c.add as (n: string, ...a: unknown[]) => unknown)(name, ...args));
    const ac = new AbortController();
    const reason = new Error('client disconnected');
    const p = c.run({ signal: ac.signal });
    setTimeout(() => ac.abort(reason), 15);
    const e = (await p.catch((err: unknown) => err)) as Error;
    expect(e.name).toBe('AbortError');
    expect(e.cause).toBe(reason);
    for (const [k, t] of Object.entries(mine)) expect(sameBytes(t, before[k]), `${k} untouched`).toBe(true);
  });
});

describe('chain: each serving op once, equal to its Async form', () => {
  it('lists the serving ops as chainable', () => {
    for (const n of ['causalConv1d', 'causalConv1dUpdate', 'rmsNorm', 'rmsNormGated', 'rotary', 'linear', 'attentionWithKVCache', 'nalaAttention', 'nalaAttentionStep']) {
      expect(chainOps()).toContain(n);
    }
  });

  it('causalConv1d (packed, pool), causalConv1dUpdate, rmsNorm (groups, float16), rmsNormGated, rotary (in place), linear (bias, bf16 out)', async () => {
    const D1 = 20, T = 13;
    const x = randn([1, T, D1], { seed: 1 }), w = randn([D1, 3], { seed: 2 }), bias = randn([D1], { seed: 3 });
    const cu = new Int32Array([0, 6, 6, 13]);
    const poolA = randn([4, D1, 2], { seed: 4 }), poolB = copy(poolA);
    const prefill = { bias, activation: 'silu' as const, cuSeqlens: cu, convState: poolA, stateIndices: [2, -1, 0], hasInitialState: [1, 0, 0] };
    const xu = randn([2, D1], { seed: 5 });
    const xh = randn([3, 5, 24], { seed: 6, dtype: 'float16' }), nw = rand([24], { seed: 7, low: 0.5, high: 1.5 });
    const gate = randn([3, 5, 24], { seed: 8, dtype: 'float16' });
    const xr = randn([2, 3, 2, 16], { seed: 9 }), xrB = copy(xr);
    const tables = ropeTables(8, 6);
    const xl = randn([3, 37], { seed: 10, dtype: 'bfloat16' }), wl = randn([29, 37], { seed: 11 }), bl = randn([29], { seed: 12 });

    const c = chain();
    const conv = c.add('causalConv1d', x, w, prefill);
    const upd = c.add('causalConv1dUpdate', xu, poolA, w, { stateIndices: [0, 2] });
    const n1 = c.add('rmsNorm', xh, nw, { groupSize: 6 });
    const n2 = c.add('rmsNormGated', xh, gate, nw, { eps: 1e-4 });
    const r = c.add('rotary', xr, { ...tables, out: xr, positions: [0, 1, 2, 7, 6, 5] });
    const l = c.add('linear', xl, wl, { bias: bl, outDtype: 'bfloat16' });
    await c.run();

    const prefillB = { ...prefill, convState: poolB };
    expectSameBits(conv, await causalConv1dAsync(x, w, prefillB), 'causalConv1d');
    expectSameBits(upd, await causalConv1dUpdateAsync(xu, poolB, w, { stateIndices: [0, 2] }), 'causalConv1dUpdate');
    expectSameBits(poolA, poolB, 'conv pool');
    expectSameBits(n1, await rmsNormAsync(xh, nw, { groupSize: 6 }), 'rmsNorm');
    expectSameBits(n2, await rmsNormGatedAsync(xh, gate, nw, { eps: 1e-4 }), 'rmsNormGated');
    expect(r).toBe(xr);
    expectSameBits(xr, await rotaryAsync(xrB, { ...tables, out: xrB, positions: [0, 1, 2, 7, 6, 5] }), 'rotary in place');
    expectSameBits(l, await linearAsync(xl, wl, { bias: bl, outDtype: 'bfloat16' }), 'linear');
    // and the sync forms agree too (the Async forms are the same kernels)
    expectSameBits(n1, rmsNorm(xh, nw, { groupSize: 6 }), 'rmsNorm sync');
    expectSameBits(l, linear(xl, wl, { bias: bl, outDtype: 'bfloat16' }), 'linear sync');
    expect(causalConv1d).toBeTypeOf('function');
    expect(rmsNormGated).toBeTypeOf('function');
    expect(rotary).toBeTypeOf('function');
  });

  it('attentionWithKVCache (paged, append, returnLse), nalaAttention (causal, final state) then nalaAttentionStep on it', async () => {
    const B = 2, Tq = 2, blockSize = 4, maxBlocks = 3;
    const q = randn([B, Tq, 4, 16], { seed: 1 });
    const kc = randn([6, blockSize, 2, 16], { seed: 2 }), vc = randn([6, blockSize, 2, 12], { seed: 3 });
    const kcB = copy(kc), vcB = copy(vc);
    const kNew = randn([B, Tq, 2, 16], { seed: 4 }), vNew = randn([B, Tq, 2, 12], { seed: 5 });
    // B x maxBlocks block numbers; sequence 0 uses 2 blocks (3 + 2 tokens), sequence 1 all 3 (7 + 2).
    const o1 = { cacheSeqlens: [3, 7], blockTable: Array.from({ length: B * maxBlocks }, (_, i) => [5, 0, 2, 1, 3, 4][i]), kNew, vNew, returnLse: true as const };

    const T = 9, Hn = 2, Kn = 8, Vn = 6;
    const nq = randn([1, T, Hn, Kn], { seed: 6 }), nk = randn([1, T, Hn, Kn], { seed: 7 }), nv = randn([1, T, Hn, Vn], { seed: 8 });
    const cu = [0, 4, 9];
    const sq = randn([2, Hn, Kn], { seed: 9 }), sk = randn([2, Hn, Kn], { seed: 10 }), sv = randn([2, Hn, Vn], { seed: 11 });

    const c = chain();
    const kv = c.add('attentionWithKVCache', q, kc, vc, o1);
    const pre = c.add('nalaAttention', nq, nk, nv, { causal: true, cuSeqlens: cu, outputFinalState: true }) as { o: Tensor; finalState: Tensor };
    const st = c.add('nalaAttentionStep', { q: sq, k: sk, v: sv, state: pre.finalState }); // the prefill's state, stepped in place
    await c.run();

    const kvB = await attentionWithKVCacheAsync(q, kcB, vcB, o1);
    expectSameBits(kv.o, kvB.o, 'kvcache o');
    expectSameBits(kv.lse!, kvB.lse!, 'kvcache lse');
    expectSameBits(kc, kcB, 'kCache appended');
    expectSameBits(vc, vcB, 'vCache appended');
    const preB = await nalaAttentionAsync(nq, nk, nv, { causal: true, cuSeqlens: cu, outputFinalState: true });
    expectSameBits(pre.o, preB.o, 'nala o');
    const stB = await nalaAttentionStepAsync({ q: sq, k: sk, v: sv, state: preB.finalState! });
    expectSameBits(st.o, stB.o, 'nala step o');
    expectSameBits(pre.finalState, preB.finalState!, 'nala state after the step');
    expect(nalaAttention).toBeTypeOf('function');
    expect(nalaAttentionStep).toBeTypeOf('function');
  });
});
