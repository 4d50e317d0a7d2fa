// The default suite of `seqkern bench` and the comparisons printed under its table. Sized to finish in a
// few minutes on two cores: Qwen3-Next-like heads (H = 16 q/k heads, HV = 32 v heads, K = V = 128) from a
// short prompt to a long one, K = V = 64 as the smaller-head case, and decode steps whose state fits in L3
// (N·HV = 256, 16 MiB) and does not (N·HV = 4096, 256 MiB) on most machines.
import type { BenchDType } from './formulas.js';
import type { Algorithm, BenchBackend, BenchCase } from './registry.js';

export interface SuiteOptions {
  dtype: BenchDType;
  backend: BenchBackend;
}

export const SUITE_PREFILL: readonly { K: number; T: readonly number[] }[] = [
  { K: 128, T: [64, 512, 4096, 16384] },
  { K: 64, T: [64, 512, 4096] },
];
export const SUITE_STEP_N: readonly number[] = [8, 128];
const ALGORITHMS: readonly Algorithm[] = ['chunk', 'recurrent', 'auto'];

export function defaultSuite(o: SuiteOptions): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const { K, T: Ts } of SUITE_PREFILL) {
    for (const T of Ts) {
      for (const algorithm of ALGORITHMS) {
        cases.push({ op: 'gated-delta', B: 1, T, H: 16, HV: 32, K, V: K, dtype: o.dtype, algorithm, backend: o.backend });
      }
    }
  }
  for (const N of SUITE_STEP_N) {
    cases.push({ op: 'delta-step', B: N, T: 1, H: 16, HV: 32, K: 128, V: 128, dtype: o.dtype, algorithm: 'auto', backend: o.backend });
  }
  return cases;
}

/** What the comparisons need of a finished row. */
export interface TimedCase {
  case: BenchCase;
  median: number;
}

export interface Scaling {
  K: number;
  algorithm: Algorithm;
  from: number;
  to: number;
  /** time(T = to) / time(T = from); to/from for linear cost. */
  ratio: number;
}

export interface AutoCheck {
  T: number;
  K: number;
  auto: number;
  chunk: number;
  recurrent: number;
  /** auto's median / the faster algorithm's median. */
  ratio: number;
  /** auto within 10% of the faster algorithm. */
  ok: boolean;
}

const sameShape = (a: BenchCase, b: BenchCase) =>
  a.op === b.op && a.B === b.B && a.T === b.T && a.H === b.H && a.HV === b.HV && a.K === b.K && a.V === b.V && a.dtype === b.dtype;

/** time(T=16384)/time(T=4096) of the chunked prefill, per K, where both were run. */
export function scalingChecks(rows: readonly TimedCase[], from = 4096, to = 16384): Scaling[] {
  const out: Scaling[] = [];
  for (const a of rows) {
    const c = a.case;
    if (c.op !== 'gated-delta' || c.algorithm !== 'chunk' || c.T !== from) continue;
    const b = rows.find((r) => r.case.algorithm === 'chunk' && sameShape(r.case, { ...c, T: to }));
    if (b) out.push({ K: c.K, algorithm: 'chunk', from, to, ratio: b.median / a.median });
  }
  return out;
}

/** For each prefill shape run with chunk, recurrent and auto: is auto within 10% of the faster one? */
export function autoChecks(rows: readonly TimedCase[]): AutoCheck[] {
  const out: AutoCheck[] = [];
  for (const a of rows) {
    const c = a.case;
    if (c.op !== 'gated-delta' || c.algorithm !== 'auto') continue;
    const ch = rows.find((r) => r.case.algorithm === 'chunk' && sameShape(r.case, c));
    const re = rows.find((r) => r.case.algorithm === 'recurrent' && sameShape(r.case, c));
    if (!ch || !re) continue;
    const ratio = a.median / Math.min(ch.median, re.median);
    out.push({ T: c.T, K: c.K, auto: a.median, chunk: ch.median, recurrent: re.median, ratio, ok: ratio <= 1.1 });
  }
  return out;
}
