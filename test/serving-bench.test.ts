// The serving bench's cases beyond kvcache/rotary (issue 14 part 8): linear, conv-update, rms-norm-gated and the
// two Qwen3-Next decode layers. Their formulas against hand counts at small shapes, their suite cases and
// limits, the CLI's --op flags, and the prepared calls at tiny shapes against the same ops called directly
// (bit for bit: the same kernels on the same inputs) and against the float64 reference backend. No timings.
import { describe, expect, it } from 'vitest';
import {
  attentionWithKVCache, causalConv1dUpdate, gatedDeltaRuleStep, linear, linearReference, rmsNorm, rmsNormGated, tensor,
  type Tensor,
} from '../src/index.js';
import {
  attnLayerWork, convUpdateWork, gdnLayerWork, linearWork, rmsNormGatedWork, type AttnLayerShape, type GdnLayerShape,
} from '../bench/formulas.js';
import {
  InputPool, OPS, caseLabel, familyOf, shapeLabel,
  type AttnLayerCase, type BenchCase, type ConvUpdateCase, type GdnLayerCase, type LinearCase, type RmsNormGatedCase,
} from '../bench/registry.js';
import { attnLayer, convUpdateSetup, gdnLayer, linearSetup, normGatedSetup, scatteredSlots } from '../bench/serving.js';
import { servingSuite, SUITE_ATTN_LAYER_LENS } from '../bench/suites.js';
import { casesFromArgs, parseBenchArgs } from '../bench/cli.js';
import { formatReport, makeRow, type ServingRow } from '../bench/report.js';
import { expectClose } from './helpers.js';

const bits = (t: Tensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const copyOf = (t: Tensor) => tensor(t.data.slice(), t.shape, t.dtype);
const TIMING = { median: 1e-3, min: 1e-3, max: 1e-3, q1: 1e-3, q3: 1e-3, mean: 1e-3, rme: 0, samples: [1e-3], calls: 1 };

const GDN: GdnLayerShape = { B: 3, hidden: 16, H: 2, HV: 4, K: 8, V: 8, W: 4, slots: 7, dtype: 'float32' };
const ATTN: AttnLayerShape = { lens: [5, 0, 17], hidden: 16, Hq: 4, Hk: 2, D: 8, rotaryDim: 4, dtype: 'float32' };

describe('serving bench formulas', () => {
  it('linear: 2MKN FLOPs; the weight in its dtype + x, y float32', () => {
    const w = linearWork({ M: 3, K: 5, N: 7, dtype: 'bfloat16' });
    expect(w.flops).toBe(2 * 3 * 5 * 7);
    expect(w.weightBytes).toBe(2 * 35);
    expect(w.bytes).toBe(70 + 4 * 15 + 4 * 21);
    expect(linearWork({ M: 1, K: 4096, N: 4096, dtype: 'float32' }).weightBytes).toBe(64 << 20);
  });

  it('conv update: x, y once, the windows read and written, weight + bias once', () => {
    const w = convUpdateWork({ N: 2, D: 3, W: 4, slots: 9, dtype: 'float32' });
    // x 6 + y 6 floats; windows 2 x 3 x 3 floats, twice; weight 3 x 4 floats
    expect(w.bytes).toBe(4 * (6 + 6) + 2 * 4 * 18 + 4 * 12);
    expect(w.flops).toBe(2 * 4 * 6);
    expect(w.workingSet).toBe(4 * 12 + 4 * 18 + 4 * 12);
  });

  it('gated norm: x, gate read and y written, the weight once', () => {
    expect(rmsNormGatedWork({ rows: 5, H: 4, dtype: 'float32' }).bytes).toBe(3 * 4 * 20 + 4 * 4);
    expect(rmsNormGatedWork({ rows: 5, H: 4, dtype: 'bfloat16' }).bytes).toBe(3 * 2 * 20 + 4 * 4);
  });

  it('gdn layer: a hand count of every tensor at a small shape', () => {
    const s: GdnLayerShape = { B: 2, hidden: 8, H: 1, HV: 2, K: 4, V: 3, W: 4, slots: 5, dtype: 'bfloat16' };
    // in-projection out features: q 4, k 4, v 6, z 6, b 2, a 2 = 24; conv channels 14; out-projection 6 -> 8
    const weights = 8 * 24 + 6 * 8;
    const state = 2 * 2 * 4 * 3; // B x HV x K x V floats
    const window = 2 * 14 * 3; // B x channels x (W - 1)
    const act = 2 * (
      4 * 8 + 24 // 4 projections read x, write their outputs
      + 14 + 14 // conv reads qkv, writes y
      + 14 + 14 // split copy
      + 14 + 2 + 2 + 6 // the step: q, k, v, b, a in, o out
      + 6 + 6 + 6 // gated norm: o, z in, y out
      + 6 + 8 // out-projection
    );
    const params = 14 * 4 + 2 + 2 + 3; // conv weight, aLog, dtBias, norm weight
    const w = gdnLayerWork(s);
    expect(w.weightBytes).toBe(2 * weights);
    expect(w.stateBytes).toBe(2 * 4 * (state + window));
    expect(w.bytes).toBe(2 * weights + 2 * 4 * (state + window) + 4 * act + 4 * params);
    expect(w.flops).toBe(2 * 2 * weights + 2 * 2 * 6 * 4 * 3 + 2 * 4 * 2 * 14);
    expect(w.tokens).toBe(2);
  });

  it('attention layer: a hand count at a small shape; the caches by the keys attended', () => {
    const s: AttnLayerShape = { lens: [3, 0], hidden: 8, Hq: 2, Hk: 1, D: 4, rotaryDim: 2, dtype: 'float32' };
    const weights = 8 * (8 + 8 + 4 + 4) + 8 * 8; // q, gate, k, v; o
    const keys = 4 + 1;
    const cache = keys * 1 * (4 + 4);
    const kvSmall = 2 * (8 + 4 + 4 + 8); // q, kNew, vNew in, o out
    const act = 2 * (4 * 8 + 8 + 8 + 4 + 4 + 2 * (8 + 4) + 8 + 8 + 8); // x x4, outputs, norms in/out, gate, o, y
    const params = 2 * 4 + 2 * 2; // norm weights, cos + sin rows at 2 positions
    const w = attnLayerWork(s);
    expect(w.stateBytes).toBe(4 * cache);
    expect(w.bytes).toBe(4 * (weights + cache + kvSmall + act + params));
    expect(w.flops).toBe(2 * 2 * weights + 2 * (4 + 1) * (2 * 4 + 2 * 4));
  });
});

describe('serving bench cases', () => {
  const suite = servingSuite({ dtype: 'float32', backend: 'cpu' });

  it('the suite: linear GEMV 1/8 rows f32/bf16 and GEMM 512, conv update and gated norm out of cache, both layers', () => {
    const lin = suite.filter((c) => c.op === 'linear') as LinearCase[];
    expect(lin.map((c) => [c.M, c.K, c.N, c.dtype])).toEqual([
      [1, 4096, 4096, 'float32'], [8, 4096, 4096, 'float32'], [1, 4096, 4096, 'bfloat16'], [8, 4096, 4096, 'bfloat16'],
      [512, 4096, 4096, 'float32'],
    ]);
    expect(OPS.linear.limits(lin[0])).toEqual({ peak: false, read: 64 << 20 });
    expect(OPS.linear.limits(lin[3])).toEqual({ peak: false, read: 32 << 20 });
    expect(OPS.linear.limits(lin[4])).toEqual({ peak: true });
    const conv = suite.filter((c) => c.op === 'conv-update') as ConvUpdateCase[];
    expect(conv).toHaveLength(1);
    expect([conv[0].N, conv[0].W, conv[0].slots]).toEqual([8, 4, 16]);
    // well out of any L3 we have met (32 MiB here, 480 MiB on the largest)
    expect(convUpdateWork(conv[0]).bytes).toBeGreaterThan(256 << 20);
    const norm = suite.filter((c) => c.op === 'rms-norm-gated') as RmsNormGatedCase[];
    expect(norm.map((c) => c.H)).toEqual([128]);
    expect(rmsNormGatedWork(norm[0]).bytes).toBeGreaterThan(128 << 20);
    const gdn = suite.filter((c) => c.op === 'gdn-layer') as GdnLayerCase[];
    expect(gdn.map((c) => [c.B, c.hidden, c.H, c.HV, c.K, c.V, c.W, c.dtype])).toEqual([
      [8, 2048, 16, 32, 128, 128, 4, 'float32'], [8, 2048, 16, 32, 128, 128, 4, 'bfloat16'],
    ]);
    const attn = suite.filter((c) => c.op === 'attn-layer') as AttnLayerCase[];
    expect(attn.map((c) => [c.lens.length, c.hidden, c.Hq, c.Hk, c.D, c.rotaryDim, c.dtype])).toEqual([
      [8, 2048, 16, 2, 256, 64, 'float32'], [8, 2048, 16, 2, 256, 64, 'bfloat16'],
    ]);
    for (const op of ['linear', 'conv-update', 'rms-norm-gated', 'gdn-layer', 'attn-layer'] as const) expect(familyOf(op)).toBe('serving');
    // labels tell the cases apart
    const labels = suite.map(caseLabel);
    expect(new Set(labels).size).toBe(labels.length);
  });

  it('the CLI: --op alone runs the suite cases of the op in --dtype; shape flags make one case', () => {
    const ops = (argv: string[]) => casesFromArgs(parseBenchArgs(argv));
    expect(ops(['--op', 'linear']).map((c) => (c as LinearCase).M)).toEqual([1, 8, 512]);
    expect(ops(['--op', 'linear', '--dtype', 'bfloat16']).map((c) => (c as LinearCase).M)).toEqual([1, 8]);
    expect(ops(['--op', 'linear', '--dtype', 'float16']).map((c) => [(c as LinearCase).M, c.dtype])).toEqual([[1, 'float16'], [8, 'float16'], [512, 'float16']]);
    expect(ops(['--op', 'linear', '--rows', '512', '--K', '64'])).toEqual([{ op: 'linear', M: 512, K: 64, N: 4096, dtype: 'float32', backend: 'cpu' }]);
    expect(ops(['--op', 'conv-update', '--N', '4', '--D', '100', '--W', '3'])).toEqual([
      { op: 'conv-update', N: 4, D: 100, W: 3, slots: 8, dtype: 'float32', backend: 'cpu' },
    ]);
    expect(ops(['--op', 'rms-norm-gated', '--rows', '10'])).toMatchObject([{ rows: 10, H: 128 }]);
    expect(ops(['--op', 'gdn-layer', '--B', '2'])).toMatchObject([{ op: 'gdn-layer', B: 2, slots: 4, hidden: 2048 }]);
    expect((ops(['--op', 'attn-layer', '--B', '3', '--S', '100'])[0] as AttnLayerCase).lens).toEqual([100, 100, 100]);
    expect((ops(['--op', 'attn-layer', '--B', '9'])[0] as AttnLayerCase).lens).toEqual([...SUITE_ATTN_LAYER_LENS, SUITE_ATTN_LAYER_LENS[0]]);
    expect(ops(['--op', 'attn-layer'])).toHaveLength(1);
    expect(() => parseBenchArgs(['--op', 'linear', '--H', '3'])).toThrow(/does not apply/);
    expect(() => parseBenchArgs(['--op', 'gdn-layer', '--S', '3'])).toThrow(/does not apply/);
    expect(() => parseBenchArgs(['--op', 'conv-update', '--W', '9'])).toThrow(/--W/);
  });

  it('scattered slots: distinct, in range, not in order', () => {
    const s = scatteredSlots(8, 16);
    expect(new Set(s).size).toBe(8);
    expect([...s].every((x) => x >= 0 && x < 16)).toBe(true);
    expect([...s]).not.toEqual([...s].sort((a, b) => a - b));
  });
});

describe('serving bench calls at tiny shapes', () => {
  it('linear: the prepared call equals linear called directly, and the reference (GEMV and GEMM, f32 and bf16)', () => {
    for (const c of [{ M: 1, K: 33, N: 17, dtype: 'float32' }, { M: 8, K: 64, N: 9, dtype: 'bfloat16' }, { M: 20, K: 40, N: 30, dtype: 'float32' }] as const) {
      const s = linearSetup(c, 3, 'cpu');
      const y = s.run();
      expect(y).toBe(s.out);
      expect(bits(y)).toEqual(bits(linear(s.x, s.weight, { backend: 'cpu' })));
      expectClose(y, linearReference(s.x, s.weight), 1e-5, `linear M${c.M} ${c.dtype}`);
    }
  });

  it('conv update: the prepared call equals the op called directly on a copy of the pool; only the live slots move', () => {
    const c = { N: 3, D: 37, W: 4, slots: 6, dtype: 'float32' } as const;
    const s = convUpdateSetup(c, 5, 'cpu');
    const pool2 = copyOf(s.pool);
    const before = copyOf(s.pool);
    const y = s.run();
    const want = causalConv1dUpdate(s.x, pool2, s.weight, { activation: 'silu', stateIndices: s.stateIndices, backend: 'cpu' });
    expect(bits(y)).toEqual(bits(want));
    expect(bits(s.pool)).toEqual(bits(pool2));
    const per = c.D * (c.W - 1);
    for (let slot = 0; slot < c.slots; slot++) {
      const moved = !bits(tensor(s.pool.data.subarray(slot * per, (slot + 1) * per), [per])).every((b, i) => b === bits(tensor(before.data.subarray(slot * per, (slot + 1) * per), [per]))[i]);
      expect(moved, `slot ${slot}`).toBe([...s.stateIndices].includes(slot));
    }
    const r = convUpdateSetup(c, 5, 'reference');
    expectClose(r.run(), y, 1e-5, 'conv update vs reference');
  });

  it('gated norm: the prepared call equals rmsNormGated called directly, and the reference', () => {
    const s = normGatedSetup({ rows: 7, H: 128, dtype: 'float32' }, 2, 'cpu');
    const y = s.run();
    expect(bits(y)).toEqual(bits(rmsNormGated(s.x, s.gate, s.weight, { backend: 'cpu' })));
    expectClose(normGatedSetup({ rows: 7, H: 128, dtype: 'float32' }, 2, 'reference').run(), y, 1e-5, 'norm vs reference');
  });

  it('gdn layer: two steps equal the ops called one by one (output and both pools), and the reference backend', () => {
    const L = gdnLayer(GDN, 4, 'cpu');
    const M = gdnLayer(GDN, 4, 'cpu');
    const { B, H, HV, K, V } = GDN;
    const qk = H * K;
    for (let step = 0; step < 2; step++) {
      const y = L.run();
      // the same layer by hand, allocating every output
      const o1 = { backend: 'cpu' as const };
      const qkv = linear(M.x, M.wQkv, o1);
      const z = linear(M.x, M.wZ, o1);
      const b = linear(M.x, M.wB, o1);
      const a = linear(M.x, M.wA, o1);
      const conv = causalConv1dUpdate(qkv, M.convPool, M.convWeight, { activation: 'silu', stateIndices: M.stateIndices, backend: 'cpu' });
      const C = 2 * qk + HV * V;
      const part = (from: number, len: number, shape: number[]) => {
        const out = new Float32Array(B * len);
        for (let n = 0; n < B; n++) out.set((conv.data as Float32Array).subarray(n * C + from, n * C + from + len), n * len);
        return tensor(out, shape);
      };
      const { o } = gatedDeltaRuleStep({
        q: part(0, qk, [B, H, K]), k: part(qk, qk, [B, H, K]), v: part(2 * qk, HV * V, [B, HV, V]), beta: b, g: a,
        state: M.statePool, stateIndices: M.stateIndices, aLog: M.aLog, dtBias: M.dtBias, betaSigmoid: true, qkL2Norm: true, backend: 'cpu',
      });
      const normed = rmsNormGated(o, z.view([B, HV, V]), M.normWeight, o1);
      const want = linear(normed.view([B, HV * V]), M.wO, o1);
      expect(bits(y), `step ${step}`).toEqual(bits(want));
      expect(bits(L.statePool), `state pool, step ${step}`).toEqual(bits(M.statePool));
      expect(bits(L.convPool), `conv pool, step ${step}`).toEqual(bits(M.convPool));
    }
    const R = gdnLayer(GDN, 4, 'reference');
    const C = gdnLayer(GDN, 4, 'cpu');
    expectClose(C.run(), R.run(), 1e-4, 'gdn layer vs reference');
    // the parts run in order are the layer
    const P = gdnLayer(GDN, 4, 'cpu');
    for (const p of P.parts) p.fn();
    expect(bits(P.y)).toEqual(bits(gdnLayer(GDN, 4, 'cpu').run()));
    expect(P.parts.map((p) => p.name)).toEqual(['in-projection', 'conv update', 'split q/k/v', 'delta step', 'gated norm', 'out-projection']);
  });

  it('attention layer: the prepared call equals the ops called one by one (output and caches), and the reference backend', () => {
    const L = attnLayer(ATTN, 6, 'cpu');
    const M = attnLayer(ATTN, 6, 'cpu');
    const { Hq, Hk, D } = ATTN;
    const B = ATTN.lens.length;
    const y = L.run();
    const o1 = { backend: 'cpu' as const };
    const q = rmsNorm(linear(M.x, M.wQ, o1).view([B, 1, Hq, D]), M.qNorm, o1);
    const gate = linear(M.x, M.wG, o1).view([B, 1, Hq, D]);
    const kNew = rmsNorm(linear(M.x, M.wK, o1).view([B, 1, Hk, D]), M.kNorm, o1);
    const vNew = linear(M.x, M.wV, o1).view([B, 1, Hk, D]);
    const { o } = attentionWithKVCache(q, M.kCache, M.vCache, {
      cacheSeqlens: ATTN.lens, kNew, vNew, rotary: M.rot, gate, gateType: 'elementwise', backend: 'cpu',
    });
    const want = linear(o.view([B, Hq * D]), M.wO, o1);
    expect(bits(y)).toEqual(bits(want));
    expect(bits(L.kCache)).toEqual(bits(M.kCache));
    expect(bits(L.vCache)).toEqual(bits(M.vCache));
    expectClose(attnLayer(ATTN, 6, 'reference').run(), y, 1e-4, 'attention layer vs reference');
  });

  it('the entries prepare and run at tiny shapes, and make rows with the parts summed', () => {
    const cases: BenchCase[] = [
      { op: 'linear', M: 2, K: 16, N: 8, dtype: 'bfloat16', backend: 'cpu' },
      { op: 'linear', M: 9, K: 16, N: 8, dtype: 'float32', backend: 'reference' },
      { op: 'conv-update', N: 2, D: 10, W: 4, slots: 4, dtype: 'float32', backend: 'cpu' },
      { op: 'rms-norm-gated', rows: 4, H: 16, dtype: 'bfloat16', backend: 'cpu' },
      { op: 'gdn-layer', ...GDN, backend: 'cpu' },
      { op: 'attn-layer', ...ATTN, backend: 'cpu' },
    ];
    const pool = new InputPool(cases);
    const rows = [];
    for (const c of cases) {
      const entry = OPS[c.op] as unknown as { prepare: (c: unknown, p: InputPool) => () => void; parts?: (c: unknown) => { name: string }[] };
      const call = entry.prepare(c, pool);
      expect(call, caseLabel(c)).not.toThrow();
      const parts = entry.parts?.(c).map((p, i) => ({ name: p.name, ms: 0.25 * (i + 1) }));
      if (c.op === 'gdn-layer') expect(parts).toHaveLength(6);
      rows.push(makeRow(c, TIMING as never, { simd: 'avx2', threads: 2 }, {}, undefined, parts));
    }
    const gdnRow = rows[4] as ServingRow;
    expect(gdnRow.partsMs).toBeCloseTo(0.25 * (1 + 2 + 3 + 4 + 5 + 6));
    expect(gdnRow.tokensPerSecond).toBeCloseTo(GDN.B / 1e-3);
    const text = formatReport(rows);
    expect(text).toContain('sum parts ms');
    expect(text).toContain(shapeLabel(cases[4]));
    expect(text).toContain('in-projection 0.250 + conv update 0.500');
    expect(text).toContain('gemm');
  });
});
