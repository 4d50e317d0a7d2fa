// The default suite of `seqkern bench` and the comparisons printed under its tables. Sized to finish in
// about three minutes on two cores.
// - delta: Qwen3-Next-like heads (H = 16 q/k heads, HV = 32 v heads, K = V = 128) from a short prompt to a
//   long one, K = V = 64 as the smaller-head case, and decode steps whose state fits in L3 (N·HV = 256,
//   16 MiB) and does not (N·HV = 4096, 256 MiB) on most machines.
// - softmax (issue 8): rows of 1K, 32K and 1M floats kept hot in cache (1 MiB, 1 MiB and 4 MiB of input), and a
//   1 GiB batch of 32K-float rows out of cache on every machine we have seen (one had a 480 MiB L3); each with
//   both algorithms, adjacent, so they share their inputs and the ratio compares like with like.
// - attention (issue 8): causal prefill B=1, H=8, T=4096, D=128 with and without the elementwise gate, and a
//   decode step T=1 against S=32768 keys, Hq=32, Hk=8, D=128 (256 MiB of K and V).
// - hyper (issue 16): B=1, H=2, D=64, T = S in {8192, 32768}, causal and not, Gaussian and clustered inputs,
//   each beside exact attention on the same input (its time, the speedup, the relative error). Exact attention
//   at T = S = 32768 takes seconds per call, so it is timed once or a few times (OpEntry.compare).
// - nala (issue 16): B=1, H=Hk=8, K=V=64, T in {4096, 16384, 65536}, non-causal and causal; the legend gives
//   time(T=65536)/time(T=16384) (4 = linear).
import type { BenchDType } from './formulas.js';
import {
  SOFTMAX_ALGORITHMS,
  type Algorithm, type AttentionCase, type BenchBackend, type BenchCase, type DeltaCase, type Family, type HyperCase, type NalaCase,
  type SoftmaxAlgorithm, type SoftmaxCase,
} from './registry.js';
import type { AttnLayerCase, ConvUpdateCase, GdnLayerCase, KVCacheCase, LinearCase, RmsNormGatedCase, RotaryCase } from './registry.js';

export type SuiteName = Family | 'all';
export const SUITES: readonly SuiteName[] = ['delta', 'softmax', 'attention', 'hyper', 'nala', 'serving', 'all'];

export interface SuiteOptions {
  dtype: BenchDType;
  backend: BenchBackend;
  /** Which family (default all). */
  suite?: SuiteName;
}

export const SUITE_PREFILL: readonly { K: number; T: readonly number[] }[] = [
  { K: 128, T: [64, 512, 4096, 16384] },
  { K: 64, T: [64, 512, 4096] },
];
export const SUITE_STEP_N: readonly number[] = [8, 128];
const ALGORITHMS: readonly Algorithm[] = ['chunk', 'recurrent', 'auto'];

/** Float32 elements kept hot per softmax case: 1 MiB (rows of 1K and 32K); a row of 1M is one row (4 MiB). */
export const SOFTMAX_HOT_ELEMENTS = 1 << 18;

/** Rows of `cols` floats making SOFTMAX_HOT_ELEMENTS (at least one row). */
export function softmaxHotRows(cols: number): number {
  return Math.max(1, Math.floor(SOFTMAX_HOT_ELEMENTS / cols));
}

/** The softmax shapes: hot rows of 1K, 32K, 1M floats, then the 1 GiB batch (8192 rows of 32K). */
export const SUITE_SOFTMAX: readonly { rows: number; cols: number; hot: boolean }[] = [
  { rows: softmaxHotRows(1 << 10), cols: 1 << 10, hot: true },
  { rows: softmaxHotRows(1 << 15), cols: 1 << 15, hot: true },
  { rows: softmaxHotRows(1 << 20), cols: 1 << 20, hot: true },
  { rows: 8192, cols: 1 << 15, hot: false },
];

/** The attention cases: causal prefill with and without the elementwise gate, and the decode step. */
export const SUITE_ATTENTION: readonly Omit<AttentionCase, 'op' | 'dtype' | 'backend'>[] = [
  { B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'none' },
  { B: 1, T: 4096, S: 4096, Hq: 8, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'elementwise' },
  { B: 1, T: 1, S: 32768, Hq: 32, Hk: 8, D: 128, Dv: 128, causal: true, gate: 'none' },
];

/** The HyperAttention cases (issue 16 item 5): T = S, causal and not, each input kind. */
export const SUITE_HYPER_T: readonly number[] = [8192, 32768];

export function hyperSuite(o: SuiteOptions): HyperCase[] {
  const cases: HyperCase[] = [];
  for (const T of SUITE_HYPER_T) {
    for (const causal of [false, true]) {
      for (const inputs of ['gaussian', 'clustered'] as const) {
        cases.push({ op: 'hyper', B: 1, T, S: T, Hq: 2, Hk: 2, D: 64, Dv: 64, causal, inputs, dtype: o.dtype, backend: o.backend });
      }
    }
  }
  return cases;
}

/** The NaLaFormer cases (issue 16 item 5): B=1, H=8, K=V=64, each T non-causal then causal. */
export const SUITE_NALA_T: readonly number[] = [4096, 16384, 65536];

export function nalaSuite(o: SuiteOptions): NalaCase[] {
  return SUITE_NALA_T.flatMap((T) =>
    [false, true].map((causal): NalaCase => ({ op: 'nala', B: 1, T, H: 8, Hk: 8, K: 64, V: 64, causal, dtype: o.dtype, backend: o.backend })),
  );
}

export function deltaSuite(o: SuiteOptions): DeltaCase[] {
  const cases: DeltaCase[] = [];
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

/** Every softmax shape with each of `algorithms` (default both), a shape's algorithms adjacent. */
export function softmaxSuite(o: SuiteOptions, algorithms: readonly SoftmaxAlgorithm[] = SOFTMAX_ALGORITHMS): SoftmaxCase[] {
  return SUITE_SOFTMAX.flatMap(({ rows, cols }) =>
    algorithms.map((algorithm): SoftmaxCase => ({ op: 'softmax', rows, cols, dtype: o.dtype, algorithm, backend: o.backend })),
  );
}

export function attentionSuite(o: SuiteOptions): AttentionCase[] {
  return SUITE_ATTENTION.map((a) => ({ op: 'attention', ...a, dtype: o.dtype, backend: o.backend }));
}

// ---- serving (issue 14; `--suite serving`, not part of `all`): each serving op adds its cases here.

/** Issue 14 part 8: a batch of 8 decodes over caches of these lengths (64560 keys; 504 MiB float32). */
export const SUITE_KVCACHE_LENS: readonly number[] = [512, 1000, 2048, 4096, 8192, 16384, 32768, 100];

/**
 * KV-cache decode, Hq=32, Hk=8, D=128, float32 and bfloat16 caches, contiguous and paged (blockSize 64); rotary
 * out of cache (64 MiB in, 64 MiB out float32): full rotaryDim 128 both pairings, bfloat16, and Qwen3-Next's
 * partial 64 of 256; then linear, the conv update, the gated norm and the two decode layers (servingOpsSuite).
 */
export function servingSuite(o: SuiteOptions): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const paged of [0, 64]) {
      cases.push({ op: 'kvcache', lens: SUITE_KVCACHE_LENS, Tq: 1, Hq: 32, Hk: 8, D: 128, Dv: 128, paged, dtype, backend: o.backend } satisfies KVCacheCase);
    }
  }
  const rot = (H: number, D: number, rotaryDim: number, interleaved: boolean, dtype: BenchDType): RotaryCase =>
    ({ op: 'rotary', B: 1, T: 4096, H, D, rotaryDim, interleaved, dtype, backend: o.backend });
  cases.push(rot(32, 128, 128, false, 'float32'), rot(32, 128, 128, true, 'float32'), rot(32, 128, 128, false, 'bfloat16'));
  cases.push(rot(16, 256, 64, false, 'float32'));
  cases.push(...servingOpsSuite(o));
  return cases;
}

/**
 * The attention layer's caches: B = 8 sequences of some thousands of tokens (24948 keys; 97 MiB of float32 K and
 * V at Hk = 2, D = 256).
 */
export const SUITE_ATTN_LAYER_LENS: readonly number[] = [4096, 1000, 2048, 3000, 8192, 512, 6000, 100];

/** Qwen3-Next's decode-layer shapes at hidden size 2048 (bench/serving.ts gdnLayer, attnLayer). */
export const QWEN3_NEXT_GDN = { hidden: 2048, H: 16, HV: 32, K: 128, V: 128, W: 4 } as const;
export const QWEN3_NEXT_ATTN = { hidden: 2048, Hq: 16, Hk: 2, D: 256, rotaryDim: 64 } as const;

/**
 * The rest of the serving suite (issue 14 part 8):
 * - linear: the GEMV 4096 -> 4096 at 1 and 8 rows, float32 and bfloat16 weights (64 and 32 MiB: out of cache),
 *   and the GEMM 512 x 4096 x 4096 float32;
 * - conv-update: 8 sequences, W = 4, silu, on a pool of 16 slots, D = 2^20 channels (128 Qwen3-Next layers' 8192
 *   q/k/v channels; 288 MiB moved, out of cache) — one layer's update is 2 MiB, in L2/L3 on every machine;
 * - rms-norm-gated: 131072 rows of 128 (a 4096-token prefill's 32 value heads; 192 MiB moved);
 * - gdn-layer, attn-layer: one Qwen3-Next decode layer of each kind at B = 8, float32 and bfloat16 weights.
 */
/** linear's shapes (x [M, K], weight [N, K]): the GEMV at 1 and 8 rows, the GEMM at 512 (bench/peers runs them too). */
export const SUITE_LINEAR: readonly { M: number; K: number; N: number }[] = [
  { M: 1, K: 4096, N: 4096 },
  { M: 8, K: 4096, N: 4096 },
  { M: 512, K: 4096, N: 4096 },
];

export function servingOpsSuite(o: SuiteOptions): BenchCase[] {
  const backend = o.backend;
  const cases: BenchCase[] = [];
  const gemv = SUITE_LINEAR.filter((s) => s.M <= 8);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const s of gemv) cases.push({ op: 'linear', ...s, dtype, backend } satisfies LinearCase);
  }
  for (const s of SUITE_LINEAR.filter((x) => x.M > 8)) cases.push({ op: 'linear', ...s, dtype: 'float32', backend } satisfies LinearCase);
  cases.push({ op: 'conv-update', N: 8, D: 1 << 20, W: 4, slots: 16, dtype: 'float32', backend } satisfies ConvUpdateCase);
  cases.push({ op: 'rms-norm-gated', rows: 131072, H: 128, dtype: 'float32', backend } satisfies RmsNormGatedCase);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    cases.push({ op: 'gdn-layer', B: 8, ...QWEN3_NEXT_GDN, slots: 16, dtype, backend } satisfies GdnLayerCase);
  }
  for (const dtype of ['float32', 'bfloat16'] as const) {
    cases.push({ op: 'attn-layer', lens: SUITE_ATTN_LAYER_LENS, ...QWEN3_NEXT_ATTN, dtype, backend } satisfies AttnLayerCase);
  }
  return cases;
}

/** The suite `o.suite` names (default all: delta, softmax, attention, hyper, nala, in that order). */
export function defaultSuite(o: SuiteOptions): BenchCase[] {
  const suite = o.suite ?? 'all';
  const cases: BenchCase[] = [];
  if (suite === 'all' || suite === 'delta') cases.push(...deltaSuite(o));
  if (suite === 'all' || suite === 'softmax') cases.push(...softmaxSuite(o));
  if (suite === 'all' || suite === 'attention') cases.push(...attentionSuite(o));
  if (suite === 'all' || suite === 'hyper') cases.push(...hyperSuite(o));
  if (suite === 'all' || suite === 'nala') cases.push(...nalaSuite(o));
  if (suite === 'serving') cases.push(...servingSuite(o), ...servingPoolSuite(o));
  return cases;
}

/**
 * The serving suite's delta-state pool cases (issue 14 part 8, not in 'all'): the decode step on scattered
 * pool slots beside the contiguous step, Qwen3-Next heads, N = 8 and 32 (the states 16 and 64 MiB).
 */
export function servingPoolSuite(o: SuiteOptions): DeltaCase[] {
  return [8, 32].flatMap((N) => (['delta-step', 'delta-pool-step'] as const).map((op): DeltaCase => (
    { op, B: N, T: 1, H: 16, HV: 32, K: 128, V: 128, dtype: o.dtype, algorithm: 'auto', backend: o.backend })));
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

const sameShape = (a: DeltaCase, b: DeltaCase) =>
  a.op === b.op && a.B === b.B && a.T === b.T && a.H === b.H && a.HV === b.HV && a.K === b.K && a.V === b.V && a.dtype === b.dtype;

/** time(T=16384)/time(T=4096) of the chunked prefill, per K, where both were run. */
export function scalingChecks(rows: readonly TimedCase[], from = 4096, to = 16384): Scaling[] {
  const out: Scaling[] = [];
  for (const a of rows) {
    const c = a.case;
    if (c.op !== 'gated-delta' || c.algorithm !== 'chunk' || c.T !== from) continue;
    const b = rows.find((r) => r.case.op === 'gated-delta' && r.case.algorithm === 'chunk' && sameShape(r.case, { ...c, T: to }));
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
    const ch = rows.find((r) => r.case.op === 'gated-delta' && r.case.algorithm === 'chunk' && sameShape(r.case, c));
    const re = rows.find((r) => r.case.op === 'gated-delta' && r.case.algorithm === 'recurrent' && sameShape(r.case, c));
    if (!ch || !re) continue;
    const ratio = a.median / Math.min(ch.median, re.median);
    out.push({ T: c.T, K: c.K, auto: a.median, chunk: ch.median, recurrent: re.median, ratio, ok: ratio <= 1.1 });
  }
  return out;
}

export interface SoftmaxCheck {
  shape: string;
  rows: number;
  cols: number;
  dtype: BenchDType;
  /** Median seconds of each algorithm. */
  twoPass: number;
  threePass: number;
  /** threePass / twoPass: how much faster two-pass is. */
  ratio: number;
}

/** For each softmax shape run with both algorithms: time(three-pass) / time(two-pass). */
export function softmaxChecks(rows: readonly TimedCase[]): SoftmaxCheck[] {
  const out: SoftmaxCheck[] = [];
  for (const a of rows) {
    const c = a.case;
    if (c.op !== 'softmax' || c.algorithm !== 'two-pass') continue;
    const b = rows.find(
      (r) => r.case.op === 'softmax' && r.case.algorithm === 'three-pass' && r.case.rows === c.rows && r.case.cols === c.cols && r.case.dtype === c.dtype && r.case.backend === c.backend,
    );
    if (b) out.push({ shape: `R${c.rows} C${c.cols}`, rows: c.rows, cols: c.cols, dtype: c.dtype, twoPass: a.median, threePass: b.median, ratio: b.median / a.median });
  }
  return out;
}

export interface GateCheck {
  shape: string;
  causal: boolean;
  gate: 'elementwise' | 'headwise';
  /** Median seconds without and with the gate. */
  ungated: number;
  gated: number;
  /** gated / ungated - 1: the fused gate's cost. */
  overhead: number;
}

/** For each gated attention case whose ungated twin ran: the gate's overhead. */
export function gateChecks(rows: readonly TimedCase[]): GateCheck[] {
  const out: GateCheck[] = [];
  for (const a of rows) {
    const c = a.case;
    if (c.op !== 'attention' || c.gate === 'none') continue;
    const b = rows.find((r) => {
      const d = r.case;
      return d.op === 'attention' && d.gate === 'none' && d.B === c.B && d.T === c.T && d.S === c.S && d.Hq === c.Hq &&
        d.Hk === c.Hk && d.D === c.D && d.Dv === c.Dv && d.causal === c.causal && d.dtype === c.dtype && d.backend === c.backend;
    });
    if (!b) continue;
    const shape = `B${c.B} T${c.T} S${c.S} H${c.Hq}/${c.Hk} D${c.D}${c.Dv !== c.D ? ` Dv${c.Dv}` : ''}`;
    out.push({ shape, causal: c.causal, gate: c.gate, ungated: b.median, gated: a.median, overhead: a.median / b.median - 1 });
  }
  return out;
}
