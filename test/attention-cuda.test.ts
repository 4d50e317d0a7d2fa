// Attention on backend 'cuda' (cuda/attention.cu) against the float64 reference: the warp-per-row kernel
// (float32, any head size, Dv != D), its split-K decode (T of 1 or 2 against a long cache), the tensor-core
// prefill (float16/bfloat16, D = Dv = 64 or 128), GQA, causal bottom-right, gates, varlen with a
// zero-length sequence, lse. On the CPU execution of the kernels, under three thread schedules.
import './cuda-helpers.js';
import { describe, expect, it } from 'vitest';
import { attention, attentionAsync, attentionReference, CudaTensor, randn, type DType, type Tensor } from '../src/index.js';
import { expectClose, expectSeqkernError } from './helpers.js';

const TOL: Record<string, number> = { float32: 1e-5, float16: 2e-2, bfloat16: 2e-2 };

interface Case {
  dtype: DType; B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  causal?: boolean; gate?: 'elementwise' | 'headwise'; cu?: number[]; cuK?: number[];
}

function run(c: Case, seed: number): void {
  const q = randn([c.B, c.T, c.Hq, c.D], { seed, dtype: c.dtype });
  const k = randn([c.B, c.S, c.Hk, c.D], { seed: seed + 1, dtype: c.dtype });
  const v = randn([c.B, c.S, c.Hk, c.Dv], { seed: seed + 2, dtype: c.dtype });
  const gate = c.gate ? randn(c.gate === 'elementwise' ? [c.B, c.T, c.Hq, c.Dv] : [c.B, c.T, c.Hq], { seed: seed + 3, std: 2 }) : undefined;
  const opts = {
    causal: c.causal, gate, cuSeqlens: c.cu ? Int32Array.from(c.cu) : undefined, cuSeqlensK: c.cuK ? Int32Array.from(c.cuK) : undefined,
  };
  const ref = attentionReference(q, k, v, opts);
  const dev = [q, k, v, gate].map((t) => t?.to('cuda'));
  try {
    const r = attention(dev[0]!, dev[1]!, dev[2]!, { ...opts, gate: dev[3], returnLse: true });
    expect(r.o).toBeInstanceOf(CudaTensor);
    const what = `${JSON.stringify(c)} seed ${seed}`;
    expectClose(r.o.to('cpu'), ref.o, TOL[c.dtype], `${what}: o`);
    const lse = r.lse!.to('cpu').toFloat64();
    const want = ref.lse.toFloat64();
    for (let i = 0; i < want.length; i++) {
      if (want[i] === -Infinity) expect(lse[i], `${what}: lse[${i}]`).toBe(-Infinity);
      else expect(Math.abs(lse[i] - want[i]), `${what}: lse[${i}] ${lse[i]} vs ${want[i]}`).toBeLessThanOrEqual(c.dtype === 'float32' ? 1e-5 : 2e-3);
    }
    r.o.dispose();
    r.lse!.dispose();
  } finally {
    for (const t of dev) t?.dispose();
  }
}

describe('attention on cuda', () => {
  for (const T of [1, 63, 64, 65]) {
    for (const causal of [false, true]) {
      it(`float32 rows kernel T=${T} causal=${causal}, GQA, D=24 Dv=40`, () => run({ dtype: 'float32', B: 2, T, S: T, Hq: 2, Hk: 1, D: 24, Dv: 40, causal }, T));
    }
  }
  it('float32 causal with S > T (bottom-right) and S < T (queries that see no key)', () => {
    run({ dtype: 'float32', B: 1, T: 5, S: 40, Hq: 3, Hk: 3, D: 16, Dv: 16, causal: true }, 7);
    run({ dtype: 'float32', B: 1, T: 40, S: 5, Hq: 2, Hk: 1, D: 16, Dv: 8, causal: true }, 8);
  });
  for (const T of [1, 2]) {
    it(`decode split-K: T=${T} against S=1100, causal, GQA`, () => run({ dtype: 'float32', B: 2, T, S: 1100, Hq: 4, Hk: 2, D: 32, Dv: 48, causal: true }, 20 + T));
  }
  it('decode split-K in bfloat16 with a headwise gate', () => run({ dtype: 'bfloat16', B: 1, T: 1, S: 900, Hq: 2, Hk: 1, D: 64, Dv: 64, gate: 'headwise' }, 30));
  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`${dtype} tensor-core prefill D=64 T=65 causal, elementwise gate`, () => run({ dtype, B: 1, T: 65, S: 65, Hq: 2, Hk: 1, D: 64, Dv: 64, causal: true, gate: 'elementwise' }, 40));
    it(`${dtype} tensor-core prefill D=128 T=33 S=47, headwise gate`, () => run({ dtype, B: 2, T: 33, S: 47, Hq: 2, Hk: 2, D: 128, Dv: 128, gate: 'headwise' }, 41));
    it(`${dtype} rows kernel (D != Dv)`, () => run({ dtype, B: 1, T: 17, S: 17, Hq: 2, Hk: 1, D: 32, Dv: 16, causal: true }, 42));
  }
  for (const dtype of ['float32', 'bfloat16'] as const) {
    it(`${dtype} varlen with a zero-length sequence, shared and separate key offsets`, () => {
      run({ dtype, B: 1, T: 95, S: 95, Hq: 2, Hk: 1, D: 64, Dv: 64, causal: true, cu: [0, 30, 30, 95] }, 50);
      run({ dtype, B: 1, T: 95, S: 100, Hq: 2, Hk: 1, D: 64, Dv: 64, causal: true, cu: [0, 30, 30, 95], cuK: [0, 40, 45, 100] }, 51);
    });
  }

  it('CPU tensors with backend cuda; async; mixing devices; head dims past 256', async () => {
    const q = randn([1, 9, 2, 16], { seed: 60 }), k = randn([1, 9, 1, 16], { seed: 61 }), v = randn([1, 9, 1, 16], { seed: 62 });
    const ref = attentionReference(q, k, v, { causal: true });
    const r = attention(q, k, v, { causal: true, backend: 'cuda' });
    expect(r.o.device).toBe('cpu');
    expectClose(r.o, ref.o, 1e-5, 'cpu tensors, backend cuda');
    const [qd, kd, vd] = [q, k, v].map((t) => t.to('cuda'));
    const ra = await attentionAsync(qd, kd, vd, { causal: true });
    expectClose(ra.o.to('cpu'), ref.o, 1e-5, 'async');
    expectSeqkernError(() => attention(qd, k, vd), 'BAD_ARGUMENT', 'k', 'k on the cpu');
    const big = randn([1, 2, 1, 300], { seed: 63 });
    expectSeqkernError(() => attention(big, big, big, { backend: 'cuda' }), 'TOO_LARGE', 'q/v', 'D = 300');
    for (const t of [qd, kd, vd, ra.o] as Tensor[]) t.dispose();
  });
});
