// The serving bench (issue 14 part 8): the KV-cache and rotary formulas, the serving suite's cases, the CLI's
// --op kvcache|rotary, and the prepared calls of small cases (they run; the caches they build are valid).
import { describe, expect, it } from 'vitest';
import { kvcacheWork, rotaryWork } from '../bench/formulas.js';
import { InputPool, OPS, caseLabel, familyOf, type KVCacheCase, type RotaryCase } from '../bench/registry.js';
import { SUITE_KVCACHE_LENS, servingPoolSuite, servingSuite } from '../bench/suites.js';
import { casesFromArgs, parseBenchArgs } from '../bench/cli.js';
import { formatReport, makeRow } from '../bench/report.js';

describe('serving bench', () => {
  it('kvcache bytes: the keys attended (len + Tq each), K and V once, never B x capacity; pairs causal among the new', () => {
    const w = kvcacheWork({ lens: [0, 10, 100], Tq: 2, Hq: 4, Hk: 2, D: 8, Dv: 6, paged: 0, dtype: 'bfloat16' });
    expect(w.keys).toBe(2 + 12 + 102);
    expect(w.cacheBytes).toBe(116 * 2 * (8 + 6) * 2);
    expect(w.bytes).toBe(w.cacheBytes + 4 * 3 * 2 * (4 * 8 + 2 * 14 + 4 * 6));
    // per sequence and q-head: Tq(S - Tq) + Tq(Tq + 1)/2 with S = len + Tq
    expect(w.pairs).toBe(4 * ((0 + 3) + (2 * 10 + 3) + (2 * 100 + 3)));
    expect(w.flops).toBe(w.pairs * (2 * 8 + 2 * 6));
  });

  it('the issue decode: 64560 keys, 504 MiB of float32 K and V attended', () => {
    const w = kvcacheWork({ lens: SUITE_KVCACHE_LENS, Tq: 1, Hq: 32, Hk: 8, D: 128, Dv: 128, paged: 64, dtype: 'float32' });
    expect(w.keys).toBe(SUITE_KVCACHE_LENS.reduce((a, b) => a + b + 1, 0));
    expect(w.cacheBytes).toBe(w.keys * 8 * 256 * 4);
  });

  it('rotary bytes: x read and out written once, plus the table rows', () => {
    expect(rotaryWork({ B: 2, T: 3, H: 4, D: 8, rotaryDim: 6, interleaved: false, dtype: 'float32' }).bytes).toBe(2 * 2 * 3 * 4 * 8 * 4 + 2 * 3 * 3 * 4);
  });

  it('the serving suite: kvcache float32/bfloat16 x contiguous/paged 64, then rotary; its own family', () => {
    const s = servingSuite({ dtype: 'float32', backend: 'cpu' });
    const kv = s.filter((c) => c.op === 'kvcache') as KVCacheCase[];
    expect(kv.map((c) => [c.dtype, c.paged])).toEqual([['float32', 0], ['float32', 64], ['bfloat16', 0], ['bfloat16', 64]]);
    for (const c of kv) expect([c.lens, c.Tq, c.Hq, c.Hk, c.D, c.Dv]).toEqual([SUITE_KVCACHE_LENS, 1, 32, 8, 128, 128]);
    expect(s.filter((c) => c.op === 'rotary').length).toBe(4);
    expect(familyOf('kvcache')).toBe('serving');
    expect(familyOf('rotary')).toBe('serving');
    // (and the delta-state pool's step cases, bench/suites.ts servingPoolSuite)
    expect(casesFromArgs(parseBenchArgs(['--suite', 'serving']))).toHaveLength(s.length + servingPoolSuite({ dtype: 'float32', backend: 'cpu' }).length);
    expect(casesFromArgs(parseBenchArgs(['--op', 'kvcache', '--dtype', 'bfloat16'])).map((c) => (c as KVCacheCase).paged)).toEqual([0, 64]);
    expect(() => parseBenchArgs(['--op', 'kvcache', '--B', '4'])).toThrow(/does not apply/);
  });

  it('small cases: the prepared calls run (contiguous and paged, float32 and bfloat16) and make rows', () => {
    const cases: (KVCacheCase | RotaryCase)[] = [
      { op: 'kvcache', lens: [3, 70, 0], Tq: 1, Hq: 4, Hk: 2, D: 16, Dv: 16, paged: 0, dtype: 'float32', backend: 'cpu' },
      { op: 'kvcache', lens: [3, 70, 0], Tq: 1, Hq: 4, Hk: 2, D: 16, Dv: 16, paged: 16, dtype: 'bfloat16', backend: 'cpu' },
      { op: 'kvcache', lens: [3, 70], Tq: 2, Hq: 2, Hk: 2, D: 8, Dv: 8, paged: 4, dtype: 'float32', backend: 'reference' },
      { op: 'rotary', B: 1, T: 8, H: 2, D: 16, rotaryDim: 8, interleaved: true, dtype: 'bfloat16', backend: 'cpu' },
    ];
    const pool = new InputPool(cases);
    const rows = [];
    for (const c of cases) {
      const call = (OPS[c.op] as unknown as { prepare: (c: unknown, p: InputPool) => () => void }).prepare(c, pool);
      expect(call, caseLabel(c)).not.toThrow();
      const t = { median: 1e-3, min: 1e-3, max: 1e-3, q1: 1e-3, q3: 1e-3, mean: 1e-3, rme: 0, samples: [1e-3], calls: 1 };
      rows.push(makeRow(c, t as never, { simd: 'avx2', threads: 2 }));
    }
    const text = formatReport(rows);
    expect(text).toContain('kvcache');
    expect(text).toContain('paged16');
    expect(text).toContain('%read');
  });
});
