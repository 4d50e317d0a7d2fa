// `seqkern bench --op linear` and the linear suite (issue 14 part 8): the work formula, the flags, the suite's
// cases (GEMV 1 and 8 rows, GEMM 512 rows, 4096 -> 4096, float32 and bfloat16 weights; also in --suite
// serving), the row's ratios to the limits, and a real (small) run printing the table.
import { describe, expect, it } from 'vitest';
import { linearWork } from '../bench/formulas.js';
import { caseFromArgs, casesFromArgs, main, parseBenchArgs, UsageError } from '../bench/cli.js';
import type { LinearCase } from '../bench/registry.js';
import { formatReport, makeRow, type LinearRow } from '../bench/report.js';
import { defaultSuite } from '../bench/suites.js';

describe('linear bench', () => {
  it('work: 2MKN FLOPs, the weights once (by dtype), x and y float32', () => {
    const w = linearWork({ M: 8, K: 4096, N: 1024, dtype: 'bfloat16' });
    expect(w.flops).toBe(2 * 8 * 4096 * 1024);
    expect(w.weightBytes).toBe(1024 * 4096 * 2);
    expect(w.bytes).toBe(1024 * 4096 * 2 + 4 * 8 * 4096 + 4 * 8 * 1024);
    expect(linearWork({ M: 1, K: 10, N: 3, dtype: 'float32' }).weightBytes).toBe(120);
  });

  it('--op linear: defaults M=1 K=N=4096, --rows --K --N --dtype; other flags refused', () => {
    expect(caseFromArgs(parseBenchArgs(['--op', 'linear']))).toEqual({ op: 'linear', M: 1, K: 4096, N: 4096, dtype: 'float32', backend: 'cpu' });
    expect(caseFromArgs(parseBenchArgs(['--op', 'linear', '--rows', '512', '--K', '7', '--N', '9', '--dtype', 'bfloat16']))).toEqual({
      op: 'linear', M: 512, K: 7, N: 9, dtype: 'bfloat16', backend: 'cpu',
    });
    expect(() => parseBenchArgs(['--op', 'linear', '--T', '4'])).toThrow(UsageError);
  });

  it('--suite linear and --suite serving: GEMV 1 and 8 rows, GEMM 512 rows, 4096 -> 4096, f32 and bf16 weights', () => {
    const want = [1, 8, 512].flatMap((M) => (['float32', 'bfloat16'] as const).map((dtype) => ({ op: 'linear', M, K: 4096, N: 4096, dtype, backend: 'cpu' })));
    expect(casesFromArgs(parseBenchArgs(['--suite', 'linear']))).toEqual(want);
    expect(defaultSuite({ dtype: 'float32', backend: 'cpu', suite: 'serving' }).filter((c) => c.op === 'linear')).toEqual(want);
  });

  it('the row: GF/s vs peak, weight GB/s vs read bandwidth, the path by rows; the legend judges the targets', () => {
    const c: LinearCase = { op: 'linear', M: 8, K: 4096, N: 4096, dtype: 'bfloat16', backend: 'cpu' };
    const t = { median: 0.004, min: 0.004, max: 0.004, q1: 0.004, q3: 0.004, mean: 0.004, rme: 0, samples: [0.004], calls: 10 };
    const peak = { level: 'avx2', threads: 2, gflops: 100 } as never;
    const read = { gbs: 10, bytes: 32 << 20 } as never;
    const r = makeRow(c, t as never, { simd: 'avx2', threads: 2 }, { peak, read }) as LinearRow;
    expect(r.path).toBe('gemv');
    expect(r.gflops).toBeCloseTo((2 * 8 * 4096 * 4096) / 0.004 / 1e9, 6);
    expect(r.weightGbs).toBeCloseTo((4096 * 4096 * 2) / 0.004 / 1e9, 6);
    expect(r.readRatio).toBeCloseTo(r.weightGbs / 10, 9);
    expect(r.peakRatio).toBeCloseTo(r.gflops / 100, 9);
    const text = formatReport([r]);
    expect(text).toMatch(/linear\s+M8 K4096 N4096\s+bf16\s+gemv/);
    expect(text).toMatch(/GEMV 4096 -> 4096: >= 70% of read bandwidth: 83\.9% \(M8 bf16\): met/);
    const slow = { ...t, median: 1, min: 1, max: 1, q1: 1, q3: 1, mean: 1, samples: [1] }; // 17.2 GF/s
    const g = makeRow({ ...c, M: 512 }, slow as never, { simd: 'avx2', threads: 2 }, { peak }) as LinearRow;
    expect(g.path).toBe('gemm');
    expect(formatReport([g])).toMatch(/GEMM 512 x 4096 x 4096: >= 60% of FP32 peak: 17\.2% \(bf16\): NOT met/);
  });

  it('a real run of --op linear prints the table', async () => {
    let out = '';
    const io = { out: (s: string) => (out += s), err: () => undefined, tty: false };
    const code = await main(['bench', '--op', 'linear', '--rows', '3', '--K', '64', '--N', '96', '--dtype', 'bfloat16', '--seconds', '0.05'], io);
    expect(code).toBe(0);
    expect(out).toMatch(/linear\s+M3 K64 N96\s+bf16\s+gemv/);
    expect(out).toMatch(/weight GB\/s\s+%read/);
  });
});
