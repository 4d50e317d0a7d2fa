// Smoke tests of the `seqkern` CLI pieces: the FLOP/byte formulas against hand-computed values, flag
// parsing, the --json report's fields. No timing is asserted (DESIGN.md 8).
//
// The softmax and attention ops are wrapped (vi.mock) so the CLI's handling of them can be run whatever this
// build has: 'real' passes through (the default: every other test sees the real ops), 'fake' computes them in
// plain JavaScript, 'unimplemented' throws as the stubs of a family being written do, 'fail' throws another
// SeqkernError.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main, parseBenchArgs, caseFromArgs, casesFromArgs, UsageError, type IO } from '../bench/cli.js';
import {
  attentionPairs, attentionWork, chunkFlops, chunkFlopsPerChunk, deltaPrefillWork, deltaStepWork, recurrentFlops, softmaxWork, stateBytes,
} from '../bench/formulas.js';
import { fillUniform, softmaxInput, attentionInputs, attentionGate } from '../bench/inputs.js';
import { BANDWIDTH_KINDS, formatBytes, formatLimits, limitWarnings, minProbeBytes, probes as limitProbes } from '../bench/limits.js';
import { measure, pool, quantile, summarise, type Timing } from '../bench/measure.js';
import type { AttentionCase, SoftmaxCase } from '../bench/registry.js';
import { formatReport, formatSummary, makeRow, type AttentionRow, type BenchReport, type SoftmaxRow } from '../bench/report.js';
import {
  attentionSuite, autoChecks, defaultSuite, gateChecks, scalingChecks, softmaxChecks, softmaxSuite, SUITE_SOFTMAX,
} from '../bench/suites.js';

type FakeMode = 'real' | 'fake' | 'unimplemented' | 'fail';
const fakeOps = vi.hoisted(() => ({ mode: 'real' as FakeMode }));

vi.mock('../src/ops/softmax.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/ops/softmax.js')>();
  const { SeqkernError } = await import('../src/errors.js');
  const softmaxInto: typeof real.softmaxInto = (x, out, opts) => {
    if (fakeOps.mode === 'real') return real.softmaxInto(x, out, opts);
    if (fakeOps.mode === 'unimplemented') throw new SeqkernError('NATIVE_ERROR', 'softmaxInto: not implemented yet');
    if (fakeOps.mode === 'fail') throw new SeqkernError('NATIVE_ERROR', 'softmaxInto: boom');
    const n = x.shape[x.shape.length - 1];
    const xd = x.data;
    const yd = out.data;
    for (let r = 0; r < xd.length; r += n) {
      let m = -Infinity;
      for (let i = 0; i < n; i++) m = Math.max(m, xd[r + i]);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += Math.exp(xd[r + i] - m);
      for (let i = 0; i < n; i++) yd[r + i] = Math.exp(xd[r + i] - m) / sum;
    }
    return out;
  };
  return { ...real, softmaxInto };
});

vi.mock('../src/ops/attention.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/ops/attention.js')>();
  const { SeqkernError } = await import('../src/errors.js');
  const { zeros } = await import('../src/tensor.js');
  const attention: typeof real.attention = (q, k, v, opts = {}) => {
    if (fakeOps.mode === 'real') return real.attention(q, k, v, opts);
    if (fakeOps.mode === 'unimplemented') throw new SeqkernError('NATIVE_ERROR', 'attention: not implemented yet');
    if (fakeOps.mode === 'fail') throw new SeqkernError('NATIVE_ERROR', 'attention: boom');
    // Naive float64 attention, causal bottom-right, gate applied as o * sigmoid(z).
    const [B, T, Hq, D] = q.shape;
    const [, S, Hk] = k.shape;
    const Dv = v.shape[3];
    const o = zeros([B, T, Hq, Dv]);
    const scale = opts.scale ?? 1 / Math.sqrt(D);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < Hq; h++) {
          const kh = Math.floor(h / (Hq / Hk));
          const last = opts.causal ? Math.min(S - 1, t + S - T) : S - 1;
          const p: number[] = [];
          for (let j = 0; j <= last; j++) {
            let d = 0;
            for (let x = 0; x < D; x++) d += q.data[((b * T + t) * Hq + h) * D + x] * k.data[((b * S + j) * Hk + kh) * D + x];
            p.push(d * scale);
          }
          const m = Math.max(...p);
          const e = p.map((z) => Math.exp(z - m));
          const sum = e.reduce((a, c) => a + c, 0);
          for (let x = 0; x < Dv; x++) {
            let acc = 0;
            for (let j = 0; j < e.length; j++) acc += (e[j] / sum) * v.data[((b * S + j) * Hk + kh) * Dv + x];
            const gi = opts.gate ? (opts.gate.shape.length === 4 ? ((b * T + t) * Hq + h) * Dv + x : (b * T + t) * Hq + h) : -1;
            o.data[((b * T + t) * Hq + h) * Dv + x] = gi < 0 ? acc : acc / (1 + Math.exp(-opts.gate!.data[gi]));
          }
        }
      }
    }
    return { o };
  };
  return { ...real, attention };
});

afterEach(() => {
  fakeOps.mode = 'real';
});

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

describe('formulas: softmax and attention', () => {
  it('softmax bytes are 2 reads + 1 write of the data, the working set x and y', () => {
    // 3 rows of 5 float32: 60 bytes of data; 180 credited, 120 distinct.
    expect(softmaxWork({ rows: 3, cols: 5, dtype: 'float32' })).toEqual({ rows: 3, elements: 15, dataBytes: 60, bytes: 180, workingSet: 120 });
    expect(softmaxWork({ rows: 3, cols: 5, dtype: 'bfloat16' })).toMatchObject({ dataBytes: 30, bytes: 90, workingSet: 60 });
    // The 1 GiB batch: 8192 rows of 32K floats.
    expect(softmaxWork({ rows: 8192, cols: 32768, dtype: 'float32' })).toMatchObject({ dataBytes: 2 ** 30, bytes: 3 * 2 ** 30 });
  });

  it('attention pairs: T·S without mask, only the unmasked ones causal (bottom-right)', () => {
    expect(attentionPairs(4, 4, false)).toBe(16);
    expect(attentionPairs(4, 4, true)).toBe(10); // 1 + 2 + 3 + 4
    expect(attentionPairs(1, 32768, true)).toBe(32768); // a decode step sees every key
    expect(attentionPairs(2, 5, true)).toBe(9); // query 0 sees keys 0..3, query 1 keys 0..4
    expect(attentionPairs(5, 2, true)).toBe(3); // queries 0..2 see none, 3 sees 1 key, 4 sees 2
    expect(attentionPairs(3, 7, false)).toBe(21);
  });

  it('causal prefill B=1 H=8 T=4096 D=128: 4·D·H·T(T+1)/2, the issue\'s 4·T²·D·H/2 plus half the diagonal', () => {
    const w = attentionWork({ B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'none', dtype: 'float32' });
    // 4·T²·D·H/2 = 4·16777216·128·8/2 = 34359738368; T(T+1)/2 pairs: 8390656 per head.
    expect(w.pairs).toBe(8 * 8390656);
    expect(w.flops).toBe(34368126976);
    expect(w.flops / 34359738368).toBeCloseTo(4097 / 4096, 12);
    // q, k, v, o: 4 tensors of 4096·8·128 floats = 16 MiB each.
    expect(w.bytes).toBe(4 * 16 * 2 ** 20);
    expect(w.tokens).toBe(4096);
    const g = attentionWork({ B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'elementwise', dtype: 'float32' });
    expect(g.bytes - w.bytes).toBe(16 * 2 ** 20); // + the gate [B,T,Hq,Dv]
    expect(g.flops).toBe(w.flops);
    const h = attentionWork({ B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'headwise', dtype: 'float32' });
    expect(h.bytes - w.bytes).toBe(4 * 4096 * 8); // + the gate [B,T,Hq]
  });

  it('decode T=1 S=32768 Hq=32 Hk=8 D=128: K and V are 256 MiB, read once', () => {
    const w = attentionWork({ B: 1, T: 1, S: 32768, Hq: 32, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'none', dtype: 'float32' });
    // K + V: 2 · 32768·8·128·4 = 268435456; q and o: 32·128·4 = 16384 each.
    expect(w.bytes).toBe(268435456 + 2 * 16384);
    expect(w.pairs).toBe(32 * 32768);
    expect(w.flops).toBe(32 * 32768 * 512);
  });

  it('non-causal, Dv != D, GQA, B=2, float16: pairs·(2D + 2Dv) and every tensor once', () => {
    const w = attentionWork({ B: 2, T: 3, S: 5, Hq: 4, Hk: 2, D: 8, Dv: 6, causal: false, gate: 'none', dtype: 'float16' });
    expect(w.pairs).toBe(2 * 4 * 15);
    expect(w.flops).toBe(120 * (16 + 12));
    // q 2·3·4·8 = 192, k 2·5·2·8 = 160, v 2·5·2·6 = 120, o 2·3·4·6 = 144 elements, 2 bytes each.
    expect(w.bytes).toBe(2 * (192 + 160 + 120 + 144));
  });
});

describe('inputs (bench/inputs.ts)', () => {
  it('the LCG fill is seeded, in range, not constant, and differs between seeds', () => {
    const a = fillUniform(new Float32Array(1000), 1, -8, 8);
    const b = fillUniform(new Float32Array(1000), 1, -8, 8);
    const c = fillUniform(new Float32Array(1000), 2, -8, 8);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(-8);
    expect(Math.max(...a)).toBeLessThanOrEqual(8);
    const mean = a.reduce((x, y) => x + y, 0) / a.length;
    expect(Math.abs(mean)).toBeLessThan(0.6);
    expect(new Set(a).size).toBeGreaterThan(990);
  });

  it('softmax and attention inputs have the case\'s shapes and dtypes', () => {
    const x = softmaxInput({ rows: 3, cols: 7, dtype: 'bfloat16' }, 1);
    expect(x.shape).toEqual([3, 7]);
    expect(x.dtype).toBe('bfloat16');
    const s = { B: 1, T: 2, S: 5, Hq: 4, Hk: 2, D: 8, Dv: 6, causal: true, gate: 'headwise' as const, dtype: 'float32' as const };
    const { q, k, v } = attentionInputs(s, 3);
    expect([q.shape, k.shape, v.shape]).toEqual([[1, 2, 4, 8], [1, 5, 2, 8], [1, 5, 2, 6]]);
    expect(attentionGate(s, 3)!.shape).toEqual([1, 2, 4]);
    expect(attentionGate({ ...s, gate: 'elementwise' }, 3)!.shape).toEqual([1, 2, 4, 6]);
    expect(attentionGate({ ...s, gate: 'none' }, 3)).toBeUndefined();
  });
});

describe('statistics helpers', () => {
  it('quantiles interpolate between order statistics', () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4, 5], 0.25)).toBe(2);
    expect(summarise([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5, q1: 2, q3: 4 });
  });

  it('measure() times a call far faster than its calibration said without overflowing the stack', async () => {
    // A loop the JIT may all but remove: calibrated while slow, it then runs in nanoseconds, and
    // Benchmark.js's deferred calls would chain on one stack by the thousand.
    const fn = () => {
      let x = 0;
      for (let i = 0; i < 50; i++) x += i;
      if (x < 0) throw new Error('unreachable');
    };
    const t = await measure(fn, { seconds: 0.3, warmup: 1 });
    expect(t.calls).toBeGreaterThan(1000);
    expect(t.median).toBeGreaterThan(0);
  });

  it('pool() merges rounds: samples concatenated, statistics over all of them, calls summed', () => {
    const t = (samples: number[], calls: number): Timing => ({ samples, ...summarise(samples), mean: 0, rme: 0, calls });
    const a = t([4, 1, 3], 30);
    expect(pool([a])).toBe(a);
    const p = pool([a, t([2, 9], 20)]);
    expect(p.samples).toEqual([4, 1, 3, 2, 9]);
    expect(p).toMatchObject({ median: 3, min: 1, max: 9, q1: 2, q3: 4, mean: 19 / 5, calls: 50 });
    const sd = Math.sqrt([4, 1, 3, 2, 9].reduce((s, x) => s + (x - 3.8) ** 2, 0) / 4);
    expect(p.rme).toBeCloseTo((100 * 1.96 * sd) / Math.sqrt(5) / 3.8, 10);
  });
});

describe('argument parsing', () => {
  it('rejects unknown flags, bad values and flags that do not apply', () => {
    const bad = [
      ['--bogus'],
      ['--dtype', 'float64'],
      ['--algorithm', 'fast', '--op', 'gated-delta'],
      ['--op', 'softmax', '--algorithm', 'chunk'],
      ['--op', 'gated-delta', '--algorithm', 'two-pass'],
      ['--op', 'softmax', '--T', '4'],
      ['--op', 'softmax', '--causal'],
      ['--op', 'softmax', '--rows', '0'],
      ['--op', 'attention', '--K', '4'],
      ['--op', 'attention', '--algorithm', 'chunk'],
      ['--op', 'attention', '--Hq', '6', '--Hk', '4'],
      ['--op', 'attention', '--H', '8', '--Hk', '3'],
      ['--op', 'attention', '--gate', 'sometimes'],
      ['--op', 'delta-step', '--gate', 'none'],
      ['--op', 'gated-delta', '--S', '4'],
      ['--rows', '4'],
      ['--causal'],
      ['--gate', 'headwise'],
      ['--suite', 'nope'],
      ['--suite', 'delta', '--op', 'softmax'],
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
      ['--rounds', '0'],
      ['--rounds', '1.5'],
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

  it('softmax: --rows/--cols, both algorithms unless --algorithm, the suite\'s shapes with neither', () => {
    const one = casesFromArgs(parseBenchArgs(['--op', 'softmax', '--rows', '8192', '--cols', '32768', '--algorithm', 'three-pass']));
    expect(one).toEqual([{ op: 'softmax', rows: 8192, cols: 32768, dtype: 'float32', algorithm: 'three-pass', backend: 'cpu' }]);
    const both = casesFromArgs(parseBenchArgs(['--op', 'softmax', '--cols', '1024', '--dtype', 'float16']), 'reference');
    expect(both.map((c) => c.op === 'softmax' && [c.rows, c.cols, c.algorithm, c.dtype, c.backend])).toEqual([
      [256, 1024, 'two-pass', 'float16', 'reference'],
      [256, 1024, 'three-pass', 'float16', 'reference'],
    ]);
    expect(casesFromArgs(parseBenchArgs(['--op', 'softmax', '--rows', '3']))).toMatchObject([{ rows: 3, cols: 32768 }, { rows: 3, cols: 32768 }]);
    expect(casesFromArgs(parseBenchArgs(['--op', 'softmax']))).toEqual(softmaxSuite({ dtype: 'float32', backend: 'cpu' }));
    const two = casesFromArgs(parseBenchArgs(['--op', 'softmax', '--algorithm', 'two-pass']));
    expect(two).toHaveLength(SUITE_SOFTMAX.length);
    expect(two.every((c) => c.op === 'softmax' && c.algorithm === 'two-pass')).toBe(true);
  });

  it('attention: shape flags, defaults, --H for both head counts, --causal and --gate', () => {
    expect(caseFromArgs(parseBenchArgs(['--op', 'attention']))).toEqual({
      op: 'attention', B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: false, gate: 'none', dtype: 'float32', backend: 'cpu',
    });
    const decode = caseFromArgs(parseBenchArgs(['--op', 'attention', '--T', '1', '--S', '32768', '--Hq', '32', '--Hk', '8', '--causal', '--gate', 'headwise']));
    expect(decode).toMatchObject({ B: 1, T: 1, S: 32768, Hq: 32, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'headwise' });
    expect(caseFromArgs(parseBenchArgs(['--op', 'attention', '--H', '4', '--D', '64', '--Dv', '32', '--B', '2']))).toMatchObject({ B: 2, Hq: 4, Hk: 4, D: 64, Dv: 32 });
    expect(caseFromArgs(parseBenchArgs(['--op', 'attention', '--Hq', '8', '--Hk', '2']))).toMatchObject({ Hq: 8, Hk: 2 });
  });

  it('--suite picks a family; --limits alone runs no case', () => {
    const fam = (argv: string[]) => [...new Set(casesFromArgs(parseBenchArgs(argv)).map((c) => c.op))];
    expect(fam([])).toEqual(['gated-delta', 'delta-step', 'softmax', 'attention', 'hyper', 'nala']);
    expect(fam(['--suite', 'all'])).toEqual(['gated-delta', 'delta-step', 'softmax', 'attention', 'hyper', 'nala']);
    expect(fam(['--suite', 'nala'])).toEqual(['nala']);
    expect(fam(['--suite', 'delta'])).toEqual(['gated-delta', 'delta-step']);
    expect(fam(['--suite', 'softmax'])).toEqual(['softmax']);
    expect(fam(['--suite', 'attention'])).toEqual(['attention']);
    expect(casesFromArgs(parseBenchArgs(['--limits']))).toEqual([]);
    expect(fam(['--limits', '--suite', 'attention'])).toEqual(['attention']);
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

describe('softmax and attention suites', () => {
  it('softmax: rows of 1K, 32K, 1M hot (1, 1, 4 MiB) and the 1 GiB batch, both algorithms adjacent', () => {
    const cases = softmaxSuite({ dtype: 'float32', backend: 'cpu' });
    expect(cases.map((c) => [c.rows, c.cols, c.algorithm])).toEqual([
      [256, 1024, 'two-pass'], [256, 1024, 'three-pass'],
      [8, 32768, 'two-pass'], [8, 32768, 'three-pass'],
      [1, 1048576, 'two-pass'], [1, 1048576, 'three-pass'],
      [8192, 32768, 'two-pass'], [8192, 32768, 'three-pass'],
    ]);
    expect(softmaxWork(cases[6]).dataBytes).toBe(2 ** 30);
  });

  it('attention: causal prefill without and with the elementwise gate, and the decode step', () => {
    const cases = attentionSuite({ dtype: 'float32', backend: 'cpu' });
    expect(cases.map((c) => [c.B, c.T, c.S, c.Hq, c.Hk, c.D, c.Dv, c.causal, c.gate])).toEqual([
      [1, 4096, 4096, 8, 8, 128, 128, true, 'none'],
      [1, 4096, 4096, 8, 8, 128, 128, true, 'elementwise'],
      [1, 1, 32768, 32, 8, 128, 128, true, 'none'],
    ]);
  });

  it('the default suite is delta, softmax, attention, hyper and nala', () => {
    const all = defaultSuite({ dtype: 'float32', backend: 'cpu' });
    expect(all).toHaveLength(3 * 7 + 2 + 8 + 3 + 8 + 6);
    expect(defaultSuite({ dtype: 'float32', backend: 'cpu', suite: 'delta' })).toHaveLength(3 * 7 + 2);
  });

  it('softmax and gate checks pair the right rows', () => {
    const sm = softmaxSuite({ dtype: 'float32', backend: 'cpu' });
    const at = attentionSuite({ dtype: 'float32', backend: 'cpu' });
    const timed = [...sm, ...at].map((c) => ({
      case: c,
      median: c.op === 'softmax' ? (c.algorithm === 'two-pass' ? 2 : 3) : c.op === 'attention' && c.gate === 'elementwise' ? 1.04 : 1,
    }));
    const s = softmaxChecks(timed);
    expect(s.map((x) => [x.rows, x.cols, x.ratio])).toEqual([[256, 1024, 1.5], [8, 32768, 1.5], [1, 1048576, 1.5], [8192, 32768, 1.5]]);
    const g = gateChecks(timed);
    expect(g).toHaveLength(1);
    expect(g[0]).toMatchObject({ shape: 'B1 T4096 S4096 H8/8 D128', causal: true, gate: 'elementwise', ungated: 1, gated: 1.04 });
    expect(g[0].overhead).toBeCloseTo(0.04, 12);
    const text = formatSummary([], [], s, g);
    expect(text).toMatch(/R8192 C32768\s+f32\s+2000\s+3000\s+1\.50x/);
    expect(text).toMatch(/elementwise\s+1000\s+1040\s+\+4\.0%/);
  });
});

describe('native limit probes', () => {
  // npm test always has the addon (scripts/test-all-levels.mjs refuses to run without it).
  it('every bandwidth kind gives a positive figure; a bad kind is named in the error', () => {
    const probes = limitProbes();
    expect(probes).not.toBeNull();
    for (const kind of BANDWIDTH_KINDS) {
      const gbs = probes!.bandwidth(kind, 1 << 20, 1, 0.02);
      expect(gbs, kind).toBeGreaterThan(0);
      expect(Number.isFinite(gbs), kind).toBe(true);
    }
    expect(() => probes!.bandwidth('write', 1 << 20, 1, 0.02)).toThrow(/expected kind copy, triad, update or read, got 'write'/);
    // The smallest working set: 64 floats per array per thread.
    expect(() => probes!.bandwidth('read', 255, 1, 0.02)).toThrow(/expected bytes >= 256 for 1 arrays on 1 threads/);
    expect(probes!.bandwidth('read', 256, 1, 0.02)).toBeGreaterThan(0);
  });
});

describe('report formatting', () => {
  it('formats sizes and the limits table', () => {
    expect(formatBytes(32 << 10)).toBe('32 KiB');
    expect(formatBytes(1 << 30)).toBe('1 GiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    const text = formatLimits({
      peak: [{ level: 'avx2', threads: 2, gflops: 100 }, { level: 'avx2', threads: 1, gflops: 50 }],
      bandwidth: [
        { kind: 'copy', bytes: 1 << 20, threads: 2, gbs: 80, level: 'avx2' },
        { kind: 'read', bytes: 1 << 20, threads: 2, gbs: 60, level: 'avx2' },
      ],
    });
    expect(text).toMatch(/avx2\s+100\.0\s+50\.0/);
    expect(text).toMatch(/copy 2T\s+read 2T/);
    expect(text).toMatch(/1 MiB\s+80\.0\s+60\.0/);
  });

  it('warns when a multi-thread peak is not about n times one thread\'s', () => {
    const peak = (threads: number, gflops: number) => ({ level: 'avx512' as const, threads, gflops });
    expect(limitWarnings({ peak: [peak(2, 560), peak(1, 288)], bandwidth: [] })).toEqual([]);
    expect(limitWarnings({ peak: [peak(2, 290), peak(1, 288)], bandwidth: [] })).toHaveLength(1);
  });

  it('softmax and attention rows: rates and ratios from the formulas and the limits given', () => {
    const t: Timing = { samples: [0.01, 0.01, 0.01], median: 0.01, min: 0.009, max: 0.011, q1: 0.01, q3: 0.01, mean: 0.01, rme: 1, calls: 3 };
    const env = { simd: 'avx2', threads: 2 };
    const sc: SoftmaxCase = { op: 'softmax', rows: 8192, cols: 32768, dtype: 'float32', algorithm: 'two-pass', backend: 'cpu' };
    const triad = { kind: 'triad' as const, bytes: 3 * 2 ** 30, threads: 2, gbs: 400, level: 'avx2' as const };
    const r = makeRow(sc, t, env, { triad }) as SoftmaxRow;
    // 3 GiB in 10 ms = 322.1 GB/s; / 400 = 80.5%.
    expect(r.gbs).toBeCloseTo((3 * 2 ** 30) / 0.01 / 1e9, 9);
    expect(r.triadRatio).toBeCloseTo(r.gbs / 400, 12);
    expect(r).toMatchObject({ op: 'softmax', shape: 'R8192 C32768', rows: 8192, cols: 32768, elements: 2 ** 28, dataBytes: 2 ** 30, bytes: 3 * 2 ** 30, workingSetBytes: 2 ** 31 });
    const ac: AttentionCase = { op: 'attention', B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'none', dtype: 'float32', backend: 'cpu' };
    const peak = { level: 'avx2' as const, threads: 2, gflops: 5000 };
    const a = makeRow(ac, t, env, { peak }) as AttentionRow;
    expect(a.gflops).toBeCloseTo(34368126976 / 0.01 / 1e9, 9);
    expect(a.peakRatio).toBeCloseTo(a.gflops / 5000, 12);
    expect(a.copyRatio).toBeNull();
    expect(a.tokensPerSecond).toBeCloseTo(409600, 6);
    const text = formatReport([r, a], [{ op: 'attention', shape: 'B1 T1 S32768 H32/8 D128', label: 'attention B1 T1 S32768 H32/8 D128 float32 causal', status: 'skipped', reason: 'attention: not implemented yet' }]);
    expect(text).toMatch(/%triad/);
    expect(text).toMatch(/R8192 C32768\s+f32\s+two-pass\s+avx2\s+2\s+10\.0/);
    expect(text).toMatch(/80\.5%\s+3 GiB/);
    expect(text).toMatch(/B1 T4096 S4096 H8\/8 D128\s+f32\s+causal\s+none/);
    expect(text).toMatch(/skipped: attention B1 T1 S32768 H32\/8 D128 float32 causal: attention: not implemented yet/);
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

describe('bench --op softmax | attention (ops wrapped: fake, unimplemented, failing)', () => {
  const withFile = async (f: (file: string) => Promise<void>) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'seqkern-bench-'));
    try {
      await f(path.join(dir, 'out.json'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('an op that is not implemented yet gives skipped rows, exit 0', async () => {
    fakeOps.mode = 'unimplemented';
    await withFile(async (file) => {
      const io = captureIO();
      const code = await main(['bench', '--op', 'softmax', '--rows', '2', '--cols', '16', '--seconds', '0.05', '--json', file], io);
      expect(code, io.stderr).toBe(0);
      expect(io.stdout).toMatch(/skipped: softmax R2 C16 float32 two-pass: softmaxInto: not implemented yet/);
      expect(io.stdout).toMatch(/skipped: softmax R2 C16 float32 three-pass: /);
      const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
      expect(r.rows).toEqual([]);
      expect(r.skipped.map((s) => [s.op, s.shape, s.status])).toEqual([['softmax', 'R2 C16', 'skipped'], ['softmax', 'R2 C16', 'skipped']]);
    });
  });

  it('softmax rows: bytes, triad limit on the same bytes, the two-pass/three-pass ratio', async () => {
    fakeOps.mode = 'fake';
    await withFile(async (file) => {
      const io = captureIO();
      const code = await main(['bench', '--op', 'softmax', '--rows', '4', '--cols', '64', '--seconds', '0.05', '--json', file], io);
      expect(code, io.stderr).toBe(0);
      expect(io.stdout).toMatch(/%triad/);
      expect(io.stdout).toMatch(/two-pass vs three-pass/);
      const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
      expect(r.rows).toHaveLength(2);
      expect(r.summary.softmax).toHaveLength(1);
      for (const row of r.rows as SoftmaxRow[]) {
        expect(row).toMatchObject({ op: 'softmax', rows: 4, cols: 64, elements: 256, dataBytes: 1024, bytes: 3072, workingSetBytes: 2048 });
        expect(row.timeMs.median).toBeGreaterThan(0);
        if (r.machine.backend === 'cpu') {
          expect(row.triad?.kind).toBe('triad');
          expect(row.triad!.bytes).toBe(Math.max(3072, minProbeBytes('triad', row.threads)));
          expect(row.triadRatio).toBeCloseTo(row.gbs / row.triad!.gbs, 10);
        }
      }
      expect(r.rows.map((x) => x.op === 'softmax' && x.algorithm)).toEqual(['two-pass', 'three-pass']);
    });
  });

  it('--rounds: the two algorithms are timed in alternating rounds and each row pools its rounds', async () => {
    fakeOps.mode = 'fake';
    expect(parseBenchArgs([]).rounds).toBe(3);
    await withFile(async (file) => {
      const io = captureIO();
      const code = await main(['bench', '--op', 'softmax', '--rows', '4', '--cols', '64', '--seconds', '0.04', '--rounds', '2', '--json', file], io);
      expect(code, io.stderr).toBe(0);
      // The progress line names the rounds, in the order two-pass, three-pass, two-pass, three-pass.
      const rounds = [...io.stderr.matchAll(/softmax R4 C64 float32 (\S+) timing \(round (\d)\/2\)/g)].map((m) => `${m[1]} ${m[2]}`);
      expect(rounds).toEqual(['two-pass 1', 'three-pass 1', 'two-pass 2', 'three-pass 2']);
      const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
      expect(r.rows).toHaveLength(2);
      for (const row of r.rows) expect(row.samples).toBeGreaterThanOrEqual(2 * 3);
      expect(r.summary.softmax).toHaveLength(1);
    });
  });

  it('attention row: unmasked pairs, FLOPs, bytes with the gate, peak and copy limits', async () => {
    fakeOps.mode = 'fake';
    await withFile(async (file) => {
      const io = captureIO();
      const argv = ['--op', 'attention', '--T', '8', '--S', '8', '--Hq', '2', '--Hk', '1', '--D', '16', '--Dv', '8', '--causal', '--gate', 'elementwise'];
      const code = await main(['bench', ...argv, '--seconds', '0.05', '--json', file], io);
      expect(code, io.stderr).toBe(0);
      const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
      expect(r.rows).toHaveLength(1);
      const row = r.rows[0] as AttentionRow;
      // 2 heads · 36 pairs; (2·16 + 2·8) FLOPs a pair; q 256 + k 128 + v 64 + o 128 + gate 128 floats.
      expect(row).toMatchObject({ op: 'attention', shape: 'B1 T8 S8 H2/1 D16 Dv8', causal: true, gate: 'elementwise', pairs: 72, flops: 3456, bytes: 2816 });
      if (r.machine.backend === 'cpu') {
        expect(row.peak?.level).toBe(r.machine.simd);
        expect(row.copy?.kind).toBe('copy');
        expect(row.peakRatio).toBeCloseTo(row.gflops / row.peak!.gflops, 10);
        expect(row.copyRatio).toBeCloseTo(row.gbs / row.copy!.gbs, 10);
        expect(row.read?.kind).toBe('read');
        expect(row.read!.bytes).toBe(Math.max(2816, minProbeBytes('read', row.threads)));
        expect(row.readRatio).toBeCloseTo(row.gbs / row.read!.gbs, 10);
      }
      expect(io.stdout).toMatch(/%read/);
    });
  });

  it('in a suite a failing case is listed as FAILED and the run exits 1; alone it exits 1 with the message', async () => {
    fakeOps.mode = 'fail';
    const io = captureIO();
    expect(await main(['bench', '--suite', 'attention', '--seconds', '0.05'], io)).toBe(1);
    expect(io.stdout.match(/^FAILED: attention .*: attention: boom$/gm)).toHaveLength(3);
    const one = captureIO();
    expect(await main(['bench', '--op', 'attention', '--T', '4', '--H', '1', '--D', '8', '--seconds', '0.05'], one)).toBe(1);
    expect(one.stderr).toMatch(/seqkern: attention: boom/);
  });
});

