// Smoke tests of the `seqkern` CLI pieces: the FLOP/byte formulas against hand-computed values, flag
// parsing, the --json report's fields. No timing is asserted (DESIGN.md 8).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main, parseBenchArgs, caseFromArgs, UsageError, type IO } from '../bench/cli.js';
import { chunkFlops, chunkFlopsPerChunk, deltaPrefillWork, deltaStepWork, recurrentFlops, stateBytes } from '../bench/formulas.js';
import { formatBytes, formatLimits, limitWarnings } from '../bench/limits.js';
import { quantile, summarise } from '../bench/measure.js';
import type { BenchReport } from '../bench/report.js';
import { autoChecks, defaultSuite, scalingChecks } from '../bench/suites.js';

function captureIO(): IO & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    tty: false,
    out(s: string) {
      io.stdout += s;
    },
    err(s: string) {
      io.stderr += s;
    },
  };
  return io;
}

describe('formulas (bench/formulas.ts)', () => {
  it('chunk work per chunk: 2(3C²K + 2C²V + 3CKV) + C³/3 at C=64, K=V=128', () => {
    // 3·4096·128 = 1572864, 2·4096·128 = 1048576, 3·64·16384 = 3145728; 2·5767168 = 11534336; 64³/3 = 87381.33
    expect(chunkFlopsPerChunk(64, 128, 128)).toBeCloseTo(11534336 + 262144 / 3, 6);
  });

  it('a last partial chunk counts at its own length', () => {
    // T = 100: one chunk of 64 and one of 36. c = 36: 2(3·1296·128 + 2·1296·128 + 3·36·16384) + 36³/3
    //   = 2(497664 + 331776 + 1769472) + 15552 = 5213376
    expect(chunkFlopsPerChunk(36, 128, 128)).toBe(5213376);
    expect(chunkFlops(100, 128, 128)).toBeCloseTo(11534336 + 262144 / 3 + 5213376, 6);
    expect(chunkFlops(128, 128, 128)).toBeCloseTo(2 * chunkFlopsPerChunk(64, 128, 128), 6);
    expect(chunkFlops(0, 128, 128)).toBe(0);
  });

  it('recurrence work is 6KV per token', () => {
    expect(recurrentFlops(100, 128, 128)).toBe(9830400);
    expect(recurrentFlops(1, 64, 32)).toBe(12288);
  });

  it('the chunk form does ~1.85x the recurrence at C=64, K=V=128 (DESIGN.md 6.1)', () => {
    expect(chunkFlops(64, 128, 128) / recurrentFlops(64, 128, 128)).toBeCloseTo(1.85, 2);
  });

  it('prefill work and bytes, B=2 T=100 H=2 HV=4 K=8 V=16 float16', () => {
    const w = deltaPrefillWork({ B: 2, T: 100, H: 2, HV: 4, K: 8, V: 16, dtype: 'float16' });
    // per head: c=64: 2(3·4096·8 + 2·4096·16 + 3·64·128) + 64³/3 = 507904 + 87381.33
    //           c=36: 2(3·1296·8 + 2·1296·16 + 3·36·128) + 36³/3 = 172800 + 15552 = 188352
    expect(w.chunkFlops).toBeCloseTo(8 * (507904 + 262144 / 3 + 188352), 4);
    expect(w.recurrentFlops).toBe(8 * 6 * 8 * 16 * 100);
    expect(w.tokens).toBe(200);
    // per token, 2 bytes each: q,k 2·2·8 = 32, v 4·16 = 64, beta,g 2·4 = 8, o 4·16 = 64 -> 168
    expect(w.bytes).toBe(2 * 200 * 168);
    expect(w.workingSet).toBe(w.bytes);
  });

  it('decode-step work and bytes: state read + written, counted once in the working set', () => {
    const w = deltaStepWork({ B: 3, T: 1, H: 2, HV: 4, K: 8, V: 16, dtype: 'float32' });
    const state = 4 * 3 * 4 * 8 * 16; // 6144
    const small = 4 * 3 * (2 * 2 * 8 + 4 * 16 + 2 * 4 + 4 * 16); // 2016
    expect(stateBytes(3, 4, 8, 16)).toBe(state);
    expect(w.bytes).toBe(small + 2 * state);
    expect(w.workingSet).toBe(small + state);
    expect(w.recurrentFlops).toBe(3 * 4 * 6 * 8 * 16);
    expect(w.chunkFlops).toBeUndefined();
    expect(w.tokens).toBe(3);
  });
});

describe('statistics helpers', () => {
  it('quantiles interpolate between order statistics', () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4, 5], 0.25)).toBe(2);
    expect(summarise([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5, q1: 2, q3: 4 });
  });
});

describe('argument parsing', () => {
  it('rejects unknown flags, bad values and flags that do not apply', () => {
    const bad = [
      ['--bogus'],
      ['--dtype', 'float64'],
      ['--algorithm', 'fast', '--op', 'gated-delta'],
      ['--op', 'softmax'],
      ['--op', 'gated-delta', '--T', '0'],
      ['--op', 'gated-delta', '--T', '12x'],
      ['--op', 'gated-delta', '--K', '-4'],
      ['--op', 'gated-delta', '--N', '8'],
      ['--op', 'delta-step', '--T', '16'],
      ['--op', 'delta-step', '--algorithm', 'chunk'],
      ['--T', '128'],
      ['--threads', '0'],
      ['--simd', 'sse'],
      ['--seconds', '-1'],
      ['--seconds', 'abc'],
      ['--json'],
      ['extra-positional'],
    ];
    for (const argv of bad) {
      let err: unknown;
      try {
        parseBenchArgs(argv);
      } catch (e) {
        err = e;
      }
      expect(err, argv.join(' ')).toBeInstanceOf(UsageError);
      expect((err as UsageError).exitCode).toBe(2);
    }
  });

  it('takes a full case and fills defaults from the registry', () => {
    const a = parseBenchArgs(['--op', 'gated-delta', '--T', '256', '--K', '64', '--V', '32', '--dtype', 'bfloat16', '--algorithm', 'chunk', '--threads', '1', '--seconds', '0.5', '--limits']);
    expect(a).toMatchObject({ op: 'gated-delta', T: 256, K: 64, V: 32, dtype: 'bfloat16', algorithm: 'chunk', threads: 1, seconds: 0.5, limits: true });
    expect(caseFromArgs(a)).toEqual({ op: 'gated-delta', B: 1, T: 256, H: 16, HV: 32, K: 64, V: 32, dtype: 'bfloat16', algorithm: 'chunk', backend: 'cpu' });
    const s = caseFromArgs(parseBenchArgs(['--op', 'delta-step', '--N', '128']));
    expect(s).toMatchObject({ op: 'delta-step', B: 128, T: 1, H: 16, HV: 32, K: 128, V: 128 });
  });

  it('the CLI exits 2 with the message on a bad flag or command', async () => {
    for (const argv of [['bench', '--bogus'], ['frobnicate']]) {
      const io = captureIO();
      expect(await main(argv, io)).toBe(2);
      expect(io.stderr).toMatch(/seqkern: /);
      expect(io.stderr).toMatch(/usage: seqkern/);
      expect(io.stdout).toBe('');
    }
  });
});

describe('suite and summaries', () => {
  it('the default suite has every (T, K) with chunk, recurrent and auto, and two decode steps', () => {
    const cases = defaultSuite({ dtype: 'float32', backend: 'cpu' });
    expect(cases.filter((c) => c.op === 'gated-delta')).toHaveLength(3 * 7);
    expect(cases.filter((c) => c.op === 'delta-step').map((c) => c.B * c.HV)).toEqual([256, 4096]);
  });

  it('scaling and auto checks compare the right rows', () => {
    const cases = defaultSuite({ dtype: 'float32', backend: 'cpu' });
    const timed = cases.map((c) => ({ case: c, median: c.op === 'gated-delta' ? c.T * (c.algorithm === 'recurrent' ? 2 : 1) : 1 }));
    const sc = scalingChecks(timed);
    expect(sc).toEqual([{ K: 128, algorithm: 'chunk', from: 4096, to: 16384, ratio: 4 }]);
    const au = autoChecks(timed);
    expect(au).toHaveLength(7);
    expect(au.every((a) => a.ok && a.ratio === 1)).toBe(true);
  });
});

describe('report formatting', () => {
  it('formats sizes and the limits table', () => {
    expect(formatBytes(32 << 10)).toBe('32 KiB');
    expect(formatBytes(1 << 30)).toBe('1 GiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    const text = formatLimits({
      peak: [{ level: 'avx2', threads: 2, gflops: 100 }, { level: 'avx2', threads: 1, gflops: 50 }],
      bandwidth: [{ kind: 'copy', bytes: 1 << 20, threads: 2, gbs: 80, level: 'avx2' }],
    });
    expect(text).toMatch(/avx2\s+100\.0\s+50\.0/);
    expect(text).toMatch(/1 MiB\s+80\.0/);
  });

  it('warns when a multi-thread peak is not about n times one thread\'s', () => {
    const peak = (threads: number, gflops: number) => ({ level: 'avx512' as const, threads, gflops });
    expect(limitWarnings({ peak: [peak(2, 560), peak(1, 288)], bandwidth: [] })).toEqual([]);
    expect(limitWarnings({ peak: [peak(2, 290), peak(1, 288)], bandwidth: [] })).toHaveLength(1);
  });

  it('info --json prints info()', async () => {
    const io = captureIO();
    expect(await main(['info', '--json'], io)).toBe(0);
    const i = JSON.parse(io.stdout);
    expect(i.version).toBeTypeOf('string');
    expect(['cpu', 'reference']).toContain(i.backend);
  });
});

describe('bench --json', () => {
  it('writes machine, limits and rows with the documented fields (tiny cases)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'seqkern-bench-'));
    try {
      const file = path.join(dir, 'out.json');
      for (const argv of [
        ['--op', 'delta-step', '--N', '2', '--H', '1', '--HV', '2', '--K', '16', '--V', '16'],
        ['--op', 'gated-delta', '--T', '70', '--H', '1', '--HV', '2', '--K', '16', '--V', '8', '--algorithm', 'chunk'],
      ]) {
        const io = captureIO();
        const code = await main(['bench', ...argv, '--seconds', '0.05', '--json', file], io);
        expect(code, io.stderr).toBe(0);
        expect(io.stdout).toMatch(/median ms/);
        const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
        expect(r.machine.version).toBeTypeOf('string');
        expect(r.settings.seconds).toBe(0.05);
        expect(Array.isArray(r.warnings)).toBe(true);
        expect(r.summary).toHaveProperty('auto');
        expect(r.rows).toHaveLength(1);
        const row = r.rows[0];
        for (const k of [
          'op', 'shape', 'dtype', 'algorithm', 'algorithmUsed', 'backend', 'simd', 'threads', 'samples', 'calls', 'timeMs',
          'tokensPerSecond', 'flops', 'gflopsChunk', 'gflopsRecurrent', 'gflops', 'bytes', 'workingSetBytes', 'gbs',
          'peak', 'peakRatio', 'copy', 'copyRatio', 'update', 'updateRatio',
        ]) {
          expect(row, k).toHaveProperty(k);
        }
        expect(row.timeMs.median).toBeGreaterThan(0);
        expect(row.timeMs.min).toBeLessThanOrEqual(row.timeMs.median);
        expect(row.timeMs.max).toBeGreaterThanOrEqual(row.timeMs.median);
        expect(row.samples).toBeGreaterThanOrEqual(5);
        if (row.op === 'gated-delta') {
          expect(row.flops.chunk).toBeCloseTo(2 * (chunkFlopsPerChunk(64, 16, 8) + chunkFlopsPerChunk(6, 16, 8)), 6);
          expect(row.flops.recurrent).toBe(2 * recurrentFlops(70, 16, 8));
          expect(row.algorithmUsed).toBe('chunk');
        } else {
          expect(row.algorithmUsed).toBe('step');
          expect(row.flops.chunk).toBeNull();
        }
        if (r.machine.backend === 'cpu') {
          // The ratios used limits measured in this run, named by level/threads and size.
          expect(r.limits).not.toBeNull();
          expect(row.peak?.level).toBe(r.machine.simd);
          expect(row.peak?.threads).toBe(r.machine.threads);
          expect(row.peak!.gflops).toBeGreaterThan(0);
          expect(row.copy?.kind).toBe('copy');
          expect(row.copy!.bytes).toBeGreaterThanOrEqual(row.workingSetBytes);
          expect(row.peakRatio).toBeCloseTo(row.gflops / row.peak!.gflops, 10);
          expect(row.copyRatio).toBeCloseTo(row.gbs / row.copy!.gbs, 10);
          expect(row.update === null).toBe(row.op !== 'delta-step');
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
