// `seqkern bench --op hyper` and the hyper suite (issue 16 item 5): the work formula follows the plan, the
// flags build the case, the suite has every (T, mask, inputs), the row carries exact attention's time, the
// speedup and the error, and a real (small) run prints them.
import { describe, expect, it } from 'vitest';
import { attention, hyperAttention } from '../src/index.js';
import { hyperPlan } from '../src/ops/hyper.js';
import { attentionPairs, hyperWork } from '../bench/formulas.js';
import { hyperInputs } from '../bench/inputs.js';
import { caseFromArgs, main, parseBenchArgs, UsageError } from '../bench/cli.js';
import { InputPool, OPS, type HyperCase } from '../bench/registry.js';
import { formatReport, makeRow, type HyperRow } from '../bench/report.js';
import { defaultSuite, hyperSuite } from '../bench/suites.js';
import { relErr } from './helpers.js';

const shape = { B: 1, T: 8192, S: 8192, Hq: 2, Hk: 2, D: 64, Dv: 64, dtype: 'float32' as const };

describe('hyper bench: the work formula', () => {
  it('below minSeqLen: exact attention\'s pairs', () => {
    for (const causal of [false, true]) {
      const s = { ...shape, T: 1000, S: 1000, causal };
      expect(hyperWork(s).pairs).toBe(2 * attentionPairs(1000, 1000, causal));
      expect(hyperWork(s).exactPairs).toBe(hyperWork(s).pairs);
    }
  });
  it('non-causal T = S = 8192: 32 blocks of 256 x 256 plus 255/256 of 256 samples per query, per head', () => {
    const w = hyperWork({ ...shape, causal: false });
    expect(w.pairs).toBeCloseTo(2 * (32 * 256 * 256 + 8192 * 256 * (1 - 1 / 32)), 6);
    expect(w.flops).toBe(w.pairs * 256);
    expect(w.exactPairs).toBe(2 * 8192 * 8192);
  });
  it('causal T = S = 8192: two exact causal leaves of 4096 and one lower-left problem of 4096 x 4096', () => {
    const plan = hyperPlan(8192, 8192, true);
    expect(plan.leaves).toEqual([0, 4096, 8192]);
    expect(plan.problems.map((p) => [p.q0, p.nq, p.k0, p.nk, p.depth, p.exact, p.nb, p.qbs, p.m])).toEqual([[4096, 4096, 0, 4096, 0, false, 16, 256, 256]]);
    const w = hyperWork({ ...shape, causal: true });
    expect(w.pairs).toBeCloseTo(2 * (2 * attentionPairs(4096, 4096, true) + 16 * 256 * 256 + 4096 * 256 * (1 - 1 / 16)), 6);
  });
  it('causal T = S = 32768: leaves of 4096, lower-left problems at three depths', () => {
    const plan = hyperPlan(32768, 32768, true);
    expect(plan.leaves).toHaveLength(9);
    expect(plan.problems.map((p) => p.nk).sort((a, b) => a - b)).toEqual([4096, 4096, 4096, 4096, 8192, 8192, 16384]);
  });
});

describe('hyper bench: flags and suite', () => {
  it('--op hyper builds the case (defaults B=1 T=8192 H=2 D=64, gaussian), --inputs, --causal', () => {
    expect(caseFromArgs(parseBenchArgs(['--op', 'hyper']))).toEqual({
      op: 'hyper', B: 1, T: 8192, S: 8192, Hq: 2, Hk: 2, D: 64, Dv: 64, causal: false, inputs: 'gaussian', dtype: 'float32', backend: 'cpu',
    });
    expect(caseFromArgs(parseBenchArgs(['--op', 'hyper', '--T', '32768', '--causal', '--inputs', 'clustered', '--H', '4']))).toMatchObject({
      T: 32768, S: 32768, causal: true, inputs: 'clustered', Hq: 4, Hk: 4,
    });
  });
  it('bad hyper flags are usage errors', () => {
    for (const argv of [['--op', 'hyper', '--inputs', 'uniform'], ['--op', 'hyper', '--gate', 'headwise'], ['--op', 'hyper', '--causal', '--S', '100'],
      ['--op', 'attention', '--inputs', 'clustered'], ['--op', 'hyper', '--Hq', '3', '--Hk', '2']]) {
      expect(() => parseBenchArgs(argv), argv.join(' ')).toThrow(UsageError);
    }
  });
  it('the suite: T = S in {8192, 32768}, causal and not, Gaussian and clustered, B=1 H=2 D=64; in the default suite', () => {
    const cases = hyperSuite({ dtype: 'float32', backend: 'cpu' });
    expect(cases.map((c) => [c.T, c.causal, c.inputs])).toEqual([
      [8192, false, 'gaussian'], [8192, false, 'clustered'], [8192, true, 'gaussian'], [8192, true, 'clustered'],
      [32768, false, 'gaussian'], [32768, false, 'clustered'], [32768, true, 'gaussian'], [32768, true, 'clustered'],
    ]);
    expect(cases.every((c) => c.B === 1 && c.Hq === 2 && c.Hk === 2 && c.D === 64 && c.Dv === 64)).toBe(true);
    expect(defaultSuite({ dtype: 'float32', backend: 'cpu', suite: 'hyper' })).toEqual(cases);
    expect(defaultSuite({ dtype: 'float32', backend: 'cpu' }).filter((c) => c.op === 'hyper')).toEqual(cases);
  });
});

describe('hyper bench: compare, the row, the table', () => {
  const small: HyperCase = { op: 'hyper', B: 1, T: 600, S: 600, Hq: 2, Hk: 1, D: 16, Dv: 16, causal: true, inputs: 'clustered', dtype: 'float32', backend: 'cpu' };
  it('compare times exact attention on the same input and measures the error of the op\'s output against it', () => {
    const pool = new InputPool([small], 3);
    const cmp = OPS.hyper.compare!(small, pool, 0.05);
    expect(cmp.against).toBe('attention');
    expect(cmp.calls).toBeGreaterThanOrEqual(1);
    expect(cmp.calls).toBeLessThanOrEqual(5);
    expect(cmp.medianMs).toBeGreaterThan(0);
    expect(cmp.pairedMs).toBeGreaterThan(0);
    const { q, k, v } = hyperInputs(small, 'clustered', 3);
    // T = 600 <= minSeqLen (4096): HyperAttention is exact attention here, so the error is float rounding.
    expect(cmp.relErr).toBeLessThan(1e-5);
    expect(relErr(hyperAttention(q, k, v, { causal: true }).o, attention(q, k, v, { causal: true }).o)).toBeLessThan(1e-5);
  });
  it('the row: speedup = exact / median, the error, GF/s by the plan; the table prints them and the target line', () => {
    const t = { samples: [0.01], median: 0.01, min: 0.009, max: 0.012, q1: 0.01, q3: 0.01, mean: 0.01, rme: 1, calls: 5 };
    const c: HyperCase = { ...small, T: 32768, S: 32768, Hk: 2, D: 64, Dv: 64, causal: false };
    const r = makeRow(c, t, { simd: 'avx2', threads: 2 }, {}, { against: 'attention', medianMs: 250, calls: 1, pairedMs: 10, relErr: 0.5 }) as HyperRow;
    expect(r.speedup).toBeCloseTo(25, 10);
    expect(r.pairedMs).toBe(10);
    expect(r.relErr).toBe(0.5);
    expect(r.flops).toBe(hyperWork(c).flops);
    const text = formatReport([r]);
    expect(text).toMatch(/hyper\s+B1 T32768 S32768 H2\/2 D64\s+f32\s+none\s+clustered/);
    expect(text).toMatch(/250\*\s+25\.0x\s+5\.00e-1/);
    expect(text).toMatch(/non-causal: >= 10x exact attention: 25\.0x \(clustered\): met/);
  });
  it('a real run of --op hyper prints the table with exact ms, speedup and rel.err', async () => {
    let out = '';
    const io = { out: (s: string) => (out += s), err: () => undefined, tty: false };
    const code = await main(['bench', '--op', 'hyper', '--T', '512', '--H', '1', '--D', '16', '--seconds', '0.05'], io);
    expect(code).toBe(0);
    expect(out).toMatch(/hyper\s+B1 T512 S512 H1\/1 D16/);
    expect(out).toMatch(/exact ms\s+speedup\s+rel\.err/);
    expect(out).toMatch(/\d+\.\dx\s+\d\.\d\de[-+]\d+/);
  });
});
