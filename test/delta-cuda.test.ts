// The gated delta rule on backend 'cuda' (cuda/delta.cu): the recurrence for the prefill and the decode step
// against the float64 reference, every variant (g, signed decay, plain, beta up to 2, KLA, qkL2Norm), grouped
// value heads, K != V, T in {1, 63, 64, 65}, varlen with a zero-length sequence, initial/final state, all
// dtypes; the step's state updated in place on the device; T steps equal one prefill.
import './cuda-helpers.js';
import { describe, expect, it } from 'vitest';
import {
  CudaTensor, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleReference, gatedDeltaRuleStep, gatedDeltaRuleStepReference,
  hyperAttention, kaczmarzDeltaRule, kaczmarzDeltaRuleStep, randn, type DType, type Tensor,
} from '../src/index.js';
import { deltaInputs, expectClose, expectSeqkernError, offsets, shapeId, stepInputs, type DeltaCase, type Variant } from './helpers.js';

const TOL: Record<string, number> = { float32: 1e-4, float16: 2e-2, bfloat16: 2e-2 };

function toDev<T extends Record<string, unknown>>(x: T): T {
  const r: Record<string, unknown> = {};
  for (const [key, val] of Object.entries(x)) r[key] = val && typeof val === 'object' && 'dtype' in (val as object) ? (val as Tensor).to('cuda') : val;
  return r as T;
}
function disposeAll(x: Record<string, unknown>): void {
  for (const val of Object.values(x)) if (val instanceof CudaTensor) val.dispose();
}

function prefill(c: DeltaCase): void {
  const inp = deltaInputs(c);
  const kla = c.variant === 'kla';
  const cuSeqlens = c.lens ? offsets(c.lens) : undefined;
  const ref = gatedDeltaRuleReference({ ...inp, cuSeqlens, outputFinalState: true });
  const dev = toDev(inp);
  try {
    const run = kla ? kaczmarzDeltaRule : gatedDeltaRule;
    const r = run({ ...dev, cuSeqlens, outputFinalState: true, algorithm: 'recurrent' });
    expect(r.o).toBeInstanceOf(CudaTensor);
    const what = `${shapeId(c)} ${c.variant ?? 'gated'} ${c.dtype ?? 'float32'} seed ${c.seed}`;
    expectClose(r.o.to('cpu'), ref.o, TOL[c.dtype ?? 'float32'], `${what}: o`);
    expectClose(r.finalState!.to('cpu'), ref.finalState, TOL[c.dtype ?? 'float32'], `${what}: final state`);
    r.o.dispose();
    r.finalState!.dispose();
  } finally {
    disposeAll(dev);
  }
}

describe('gated delta rule on cuda', () => {
  for (const T of [1, 63, 64, 65]) {
    it(`float32 T=${T}, grouped value heads, K != V, initial state`, () => prefill({ B: 2, T, H: 1, HV: 2, K: 24, V: 40, seed: T, initial: true }));
  }
  const variants: Variant[] = ['plain', 'decay', 'negeig', 'kla', 'l2norm', 'gated-extreme'];
  for (const variant of variants) {
    it(`variant ${variant}`, () => prefill({ B: 1, T: 33, H: 2, HV: 4, K: 32, V: 16, seed: 11, variant, initial: variant !== 'plain' }));
  }
  for (const dtype of ['float16', 'bfloat16'] as DType[]) {
    it(`${dtype} inputs`, () => prefill({ B: 1, T: 40, H: 1, HV: 2, K: 64, V: 33, seed: 12, dtype, initial: true }));
  }
  it('K = 128, V = 64 (the state rows per thread of the largest common head)', () => prefill({ B: 1, T: 9, H: 1, HV: 1, K: 128, V: 64, seed: 13, initial: true }));
  it('varlen with a zero-length sequence', () => prefill({ B: 1, T: 50, H: 1, HV: 2, K: 16, V: 16, seed: 14, lens: [20, 0, 30], initial: true }));

  it('decode steps update the device state in place and equal one prefill', () => {
    const c: DeltaCase = { B: 2, T: 5, H: 1, HV: 2, K: 32, V: 24, seed: 15, initial: true };
    const inp = deltaInputs(c);
    const ref = gatedDeltaRuleReference({ ...inp, outputFinalState: true });
    using state = inp.initialState!.to('cuda');
    const os: number[][] = [];
    for (let t = 0; t < c.T; t++) {
      const { initialState: _, ...one } = stepInputs(inp, t);
      const s = toDev(one as Record<string, unknown>);
      const { o } = gatedDeltaRuleStep({ ...(s as never), state });
      const ot = o.to('cpu');
      os.push(Array.from(ot.toFloat64()));
      o.dispose();
      disposeAll(s);
    }
    expectClose(state.to('cpu'), ref.finalState, 1e-4, 'state after T steps');
    // o of step t is token t of the prefill.
    const want = ref.o.toFloat64();
    const { HV, V } = c;
    for (let t = 0; t < c.T; t++)
      for (let b = 0; b < c.B; b++)
        for (let i = 0; i < HV * V; i++) {
          const w = want[((b * c.T + t) * HV) * V + i];
          expect(Math.abs(os[t][b * HV * V + i] - w), `step ${t} b ${b} i ${i}`).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(w)));
        }
  });

  it('KLA step with CPU tensors on backend cuda writes the CPU state in place', () => {
    const c: DeltaCase = { B: 2, T: 1, H: 1, HV: 1, K: 16, V: 8, seed: 16, variant: 'kla', initial: true };
    const { initialState, ...inp } = stepInputs(deltaInputs(c), 0);
    const state = initialState!;
    const want = gatedDeltaRuleStepReference({ ...inp, state: state.astype('float32') } as never);
    const r = kaczmarzDeltaRuleStep({ ...(inp as never), state, backend: 'cuda' });
    expectClose(r.o, want.o, 1e-4, 'kla step o');
    expectClose(state, want.state, 1e-4, 'kla step state in place');
  });

  it('async prefill; algorithm chunk, hyperAttention and mixing devices are SeqkernErrors naming the op or argument', async () => {
    const inp = deltaInputs({ B: 1, T: 8, H: 1, HV: 1, K: 16, V: 16, seed: 17 });
    const ref = gatedDeltaRuleReference(inp);
    const dev = toDev(inp);
    const r = await gatedDeltaRuleAsync(dev);
    expectClose(r.o.to('cpu'), ref.o, 1e-4, 'async');
    r.o.dispose();
    expectSeqkernError(() => gatedDeltaRule({ ...dev, algorithm: 'chunk' }), 'BAD_ARGUMENT', 'algorithm', 'chunk on cuda');
    expectSeqkernError(() => gatedDeltaRule({ ...dev, k: inp.k }), 'BAD_ARGUMENT', 'k', 'k on the cpu');
    const x = randn([1, 8, 1, 16], { seed: 18 });
    expectSeqkernError(() => hyperAttention(x, x, x, { backend: 'cuda' }), 'NO_CUDA', 'hyperAttention', 'hyper on cuda');
    disposeAll(dev);
  });
});
