// Softmax on backend 'cuda' (cuda/softmax.cu): on the CPU execution of the kernels (every launch under three
// thread schedules, guard-paged device memory) or on a GPU with SEQKERN_CUDA_DEVICE=1. Against the float64
// reference at awkward row lengths (a warp per row up to 1024, a block per row past it, rows split across
// blocks past 65536), every dtype, hostile rows; then device-tensor lifecycle, mixing devices, OOM, async
// and abort.
import './cuda-helpers.js';
import { describe, expect, it } from 'vitest';
import { CudaTensor, randn, softmax, softmaxAsync, softmaxInto, softmaxReference, tensor, Tensor, type DType } from '../src/index.js';
import { emptyCuda } from '../src/device.js';
import { expectClose, expectSeqkernError, expectSeqkernRejection } from './helpers.js';

const TOL: Record<DType, number> = { float32: 1e-6, float16: 1e-2, bfloat16: 1e-2, float64: 0 };

function reference(x: Tensor): Tensor {
  return softmaxReference(new Tensor(x.toFloat64(), x.shape, 'float64'));
}

describe('softmax on cuda', () => {
  const shapes: [number, number][] = [[3, 1], [5, 63], [4, 64], [9, 65], [3, 1000], [2, 1025], [1, 70000]];
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    for (const [rows, cols] of shapes) {
      for (const algorithm of ['two-pass', 'three-pass'] as const) {
        if (cols === 70000 && dtype !== 'float32') continue;
        it(`${dtype} [${rows},${cols}] ${algorithm}`, () => {
          const seed = rows * 1000 + cols;
          const x = randn([rows, cols], { seed, std: 4, dtype });
          using d = x.to('cuda');
          using y = softmax(d, { algorithm });
          expect(y).toBeInstanceOf(CudaTensor);
          expect(y.device).toBe('cuda');
          const got = y.to('cpu');
          expectClose(got, reference(x), TOL[dtype], `${dtype} [${rows},${cols}] ${algorithm} seed ${seed}`);
        });
      }
    }
  }

  it('hostile rows: ±1e30, -Inf entries, a row of all -Inf, NaN, all equal', () => {
    const n = 70;
    const rows = [
      Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1e30 : -1e30)),
      Array.from({ length: n }, (_, i) => (i === 5 ? 0 : -Infinity)),
      Array.from({ length: n }, () => -Infinity),
      Array.from({ length: n }, (_, i) => (i === 7 ? NaN : i)),
      Array.from({ length: n }, () => 123.5),
      Array.from({ length: n }, (_, i) => -1e30 - i * 1e28),
    ];
    const x = tensor(rows.flat(), [rows.length, n]);
    for (const algorithm of ['two-pass', 'three-pass'] as const) {
      using d = x.to('cuda');
      const got = softmax(d, { algorithm }).to('cpu').toFloat64();
      const want = reference(x).toFloat64();
      for (let i = 0; i < want.length; i++) {
        if (Number.isNaN(want[i])) expect(got[i], `${algorithm} element ${i}`).toBeNaN();
        else expect(Math.abs(got[i] - want[i]), `${algorithm} element ${i}: ${got[i]} vs ${want[i]}`).toBeLessThanOrEqual(1e-6 * Math.abs(want[i]) + 1e-30);
      }
    }
  });

  it('softmaxInto in place on the device, and backend cuda on CPU tensors', () => {
    const x = randn([7, 200], { seed: 3, std: 2 });
    const d = x.to('cuda');
    expect(softmaxInto(d, d)).toBe(d);
    expectClose(d.to('cpu'), reference(x), 1e-6, 'in place');
    d.dispose();
    const y = softmax(x, { backend: 'cuda' });
    expect(y.device).toBe('cpu');
    expectClose(y, reference(x), 1e-6, 'cpu tensors, backend cuda');
  });

  it('lifecycle: dispose twice is harmless, use after dispose is a SeqkernError, to(cpu) of a CPU tensor is itself', () => {
    const x = randn([2, 8], { seed: 4 });
    expect(x.to('cpu')).toBe(x);
    const d = x.to('cuda');
    expect(d.to('cuda')).toBe(d);
    d.dispose();
    d.dispose();
    expect((d as CudaTensor).disposed).toBe(true);
    expectSeqkernError(() => softmax(d), 'BAD_ARGUMENT', 'x', 'softmax of a disposed tensor');
    expectSeqkernError(() => d.to('cpu'), 'BAD_ARGUMENT', 'tensor', 'to(cpu) of a disposed tensor');
    expectSeqkernError(() => d.data, 'BAD_ARGUMENT', 'data', 'host data of a device tensor');
  });

  it('mixing devices is a SeqkernError naming the argument', () => {
    const x = randn([2, 8], { seed: 5 });
    using d = x.to('cuda');
    expectSeqkernError(() => softmaxInto(d, x.astype('float32')), 'BAD_ARGUMENT', 'out', 'cuda x, cpu out');
    expectSeqkernError(() => softmaxInto(x, d), 'BAD_ARGUMENT', 'out', 'cpu x, cuda out');
    expectSeqkernError(() => softmax(d, { backend: 'cpu' }), 'BAD_ARGUMENT', 'backend', 'device tensor on backend cpu');
  });

  it('OUT_OF_MEMORY says the bytes asked and free', () => {
    try {
      emptyCuda('test', [2 ** 20, 2 ** 16], 'float32'); // 256 GiB
      expect.unreachable();
    } catch (e) {
      expect((e as { code: string }).code).toBe('OUT_OF_MEMORY');
      expect(String((e as Error).message)).toMatch(/274877906944 bytes.*bytes free/);
    }
  });

  it('async resolves with a device tensor; an aborted signal rejects', async () => {
    const x = randn([6, 300], { seed: 6 });
    using d = x.to('cuda');
    using y = await softmaxAsync(d);
    expect(y.device).toBe('cuda');
    expectClose(y.to('cpu'), reference(x), 1e-6, 'async');
    const c = new AbortController();
    c.abort(new Error('client gone'));
    await expect(softmaxAsync(d, {}, { signal: c.signal })).rejects.toMatchObject({ name: 'AbortError' });
    await expectSeqkernRejection(() => softmaxAsync(d, { strict: true }), 'BAD_ARGUMENT', 'strict', 'strict on cuda');
  });
});
