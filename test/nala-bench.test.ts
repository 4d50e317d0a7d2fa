// The NaLaFormer bench pieces (issue 16 part 5): the suite's cases, the FLOP formula against a count by
// hand, `--op nala` parsing, and one real row through the table (tiny, so it runs in a test; no timing
// assertions).
import { describe, expect, it } from 'vitest';
import { caseFromArgs, parseBenchArgs } from '../bench/cli.js';
import { nalaWork } from '../bench/formulas.js';
import { formatNalaRows, makeRow, nalaLegend, nalaScaling, type NalaRow } from '../bench/report.js';
import { nalaSuite } from '../bench/suites.js';

describe('nala bench', () => {
  it('the suite: B=1, H=8, K=V=64, T in {4096, 16384, 65536}, non-causal and causal', () => {
    const s = nalaSuite({ dtype: 'float32', backend: 'cpu' });
    expect(s.map((c) => [c.T, c.causal])).toEqual([[4096, false], [4096, true], [16384, false], [16384, true], [65536, false], [65536, true]]);
    expect(s.every((c) => c.B === 1 && c.H === 8 && c.Hk === 8 && c.K === 64 && c.V === 64)).toBe(true);
  });
  it('nalaWork: non-causal 4KV per key and kv head + (4KV + 4K) per query and head; causal by chunks', () => {
    const K = 64, V = 32, T = 100;
    const full = nalaWork({ B: 2, T, H: 4, Hk: 2, K, V, causal: false, dtype: 'float32' });
    expect(full.flops).toBe(2 * (2 * T * 4 * K * V + 4 * T * (4 * K * V + 4 * K)));
    expect(full.bytes).toBe(4 * 2 * T * (4 * K + 2 * (K + V) + 4 * V));
    // Causal: chunks of 64 and 36; per chunk and head 2K·c(c+1) + 4cKV + V·c(c+1) + 4Kc; per kv head 4cKV.
    const chunk = (c: number) => 4 * (2 * K * c * (c + 1) + 4 * c * K * V + V * c * (c + 1) + 4 * K * c) + 2 * 4 * c * K * V;
    expect(nalaWork({ B: 1, T, H: 4, Hk: 2, K, V, causal: true, dtype: 'float32' }).flops).toBe(chunk(64) + chunk(36));
  });
  it('--op nala parses its flags, defaults T=16384 H=Hk=8 K=V=64', () => {
    expect(caseFromArgs(parseBenchArgs(['--op', 'nala']))).toMatchObject({ op: 'nala', B: 1, T: 16384, H: 8, Hk: 8, K: 64, V: 64, causal: false });
    expect(caseFromArgs(parseBenchArgs(['--op', 'nala', '--T', '128', '--H', '4', '--Hk', '2', '--causal']))).toMatchObject({ T: 128, H: 4, Hk: 2, causal: true });
    expect(() => parseBenchArgs(['--op', 'nala', '--H', '3', '--Hk', '2'])).toThrow(/multiple/);
    expect(() => parseBenchArgs(['--op', 'nala', '--D', '64'])).toThrow(/does not apply/);
  });
  it('rows, the table, the scaling line and the targets', () => {
    const t = (median: number) => ({ median, min: median, max: median, q1: median, q3: median, mean: median, rme: 0, samples: [median], calls: 1 });
    const peak = { level: 'avx2', threads: 2, gflops: 100 } as never;
    const rows = [16384, 65536].flatMap((T) => [false, true].map((causal) => {
      const c = { op: 'nala' as const, B: 1, T, H: 8, Hk: 8, K: 64, V: 64, causal, dtype: 'float32' as const, backend: 'cpu' as const };
      const w = nalaWork(c);
      // 50 GFLOP/s at T=16384; T=65536 takes 4.2x as long.
      const sec = (w.flops / 50e9) * (T === 65536 ? 4.2 / 4 : 1);
      return makeRow(c, t(sec) as never, { simd: 'avx2', threads: 2 }, { peak }) as NalaRow;
    }));
    expect(rows[0].gflops).toBeCloseTo(50, 6);
    expect(rows[0].peakRatio).toBeCloseTo(0.5, 6);
    expect(nalaScaling(rows).map((s) => s.ratio.toFixed(2))).toEqual(['4.20', '4.20']);
    const table = formatNalaRows(rows);
    expect(table).toMatch(/nala\s+B1 T16384 H8\/8 K64 V64\s+f32\s+none/);
    const legend = nalaLegend(rows);
    expect(legend).toMatch(/non-causal: time\(T=65536\) \/ time\(T=16384\) = 4\.20 .*met/);
    expect(legend).toMatch(/target \(issue 16\), causal T=16384: >= 40% of peak: 50\.0%: met/);
  });
});
