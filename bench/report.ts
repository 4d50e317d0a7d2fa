// Rows of `seqkern bench`: one timed case with its rates and its ratios to the limits measured in the same
// run; the tables printed on stdout (one per op family, each with its legend) and the JSON report written by
// `--json FILE`.
import type { Info } from '../src/index.js';
import { attentionWork, gbs, gflops, hyperWork, nalaWork, softmaxWork } from './formulas.js';
import { formatBytes, type BandwidthResult, type Limits, type PeakResult } from './limits.js';
import type { Timing } from './measure.js';
import {
  FAMILIES, familyOf, OPS, shapeLabel,
  type AttentionCase, type BenchCase, type Comparison, type DeltaCase, type GateKind, type HyperCase, type NalaCase, type SoftmaxAlgorithm,
  type SoftmaxCase,
} from './registry.js';
import type { HyperInputKind } from './inputs.js';
import { attnLayerWork, convUpdateWork, gdnLayerWork, kvcacheWork, linearWork, rmsNormGatedWork, rotaryWork } from './formulas.js';
import type { AttnLayerCase, ConvUpdateCase, GdnLayerCase, KVCacheCase, LinearCase, RmsNormGatedCase, RotaryCase } from './registry.js';
import type { AutoCheck, GateCheck, Scaling, SoftmaxCheck } from './suites.js';

/** Fields every row has. Times in milliseconds, rates per second. */
interface RowCommon {
  /** Delta: "B1 T4096 H16/32 K128 V128"; softmax: "R8192 C32768"; attention: "B1 T4096 S4096 H8/8 D128". */
  shape: string;
  dtype: BenchCase['dtype'];
  backend: BenchCase['backend'];
  /** SIMD level and pool threads in effect ('reference' rows: 'none', 1 thread). */
  simd: string;
  threads: number;
  /** Benchmark.js samples and op calls timed. */
  samples: number;
  calls: number;
  timeMs: { median: number; min: number; max: number; q1: number; q3: number; mean: number; rme: number };
  /** Bytes credited per call (bench/formulas.ts) and distinct bytes touched. */
  bytes: number;
  workingSetBytes: number;
  gbs: number;
}

/** A row of the delta family (gated-delta prefill, delta-step decode). */
export interface DeltaRow extends RowCommon {
  op: DeltaCase['op'];
  /** B, T: for the decode step B is N and T is 1. */
  B: number;
  T: number;
  H: number;
  HV: number;
  K: number;
  V: number;
  /** As asked ('auto' | 'chunk' | 'recurrent'), and what ran ('chunk' | 'recurrent' | 'step'). */
  algorithm: DeltaCase['algorithm'];
  algorithmUsed: 'chunk' | 'recurrent' | 'step';
  tokensPerSecond: number;
  /** Work per call by bench/formulas.ts: the chunkwise count (null for the step) and the recurrence count. */
  flops: { chunk: number | null; recurrent: number };
  /** GFLOP/s by each count, at the median time. */
  gflopsChunk: number | null;
  gflopsRecurrent: number;
  /** GFLOP/s by the count of the algorithm that ran (chunk count for chunk, recurrence count otherwise). */
  gflops: number;
  /** The FP32 peak the ratio used (level in effect, same threads), measured in this run; null: no probe. */
  peak: PeakResult | null;
  /** gflops / peak.gflops. */
  peakRatio: number | null;
  /** The copy bandwidth the ratio used, measured in this run on the bytes the op moves; null: no probe. */
  copy: BandwidthResult | null;
  /** gbs / copy.gbs. */
  copyRatio: number | null;
  /** Ops that update in place (the step): the in-place read + write bandwidth at the same size, and gbs / it. */
  update: BandwidthResult | null;
  updateRatio: number | null;
}

/** A softmax row: softmaxInto over x [rows, cols] into a preallocated output. */
export interface SoftmaxRow extends RowCommon {
  op: 'softmax';
  rows: number;
  cols: number;
  algorithm: SoftmaxAlgorithm;
  elements: number;
  /** Bytes of x (= of y). `bytes` is 3·dataBytes: 2 reads + 1 write, for either algorithm. */
  dataBytes: number;
  elementsPerSecond: number;
  /** Triad bandwidth over 3 arrays totalling `bytes`, measured in this run; null: no probe. */
  triad: BandwidthResult | null;
  /** gbs / triad.gbs. */
  triadRatio: number | null;
}

/** An attention row. */
export interface AttentionRow extends RowCommon {
  op: 'attention';
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hk: number;
  D: number;
  Dv: number;
  causal: boolean;
  gate: GateKind;
  /** Queries per second (B·T per call). */
  tokensPerSecond: number;
  /** Unmasked (query, key) pairs over all sequences and q-heads, and FLOPs = pairs·(2D + 2Dv). */
  pairs: number;
  flops: number;
  gflops: number;
  peak: PeakResult | null;
  peakRatio: number | null;
  /** Copy bandwidth over arrays totalling `bytes`, measured in this run, and gbs / it. */
  copy: BandwidthResult | null;
  copyRatio: number | null;
  /** Read bandwidth (a sum over one array) of `bytes`, measured in this run, and gbs / it: a decode's ceiling. */
  read: BandwidthResult | null;
  readRatio: number | null;
}

/** A HyperAttention row: its time and rates, and exact attention's on the same input beside it. */
export interface HyperRow extends RowCommon {
  op: 'hyper';
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hk: number;
  D: number;
  Dv: number;
  causal: boolean;
  inputs: HyperInputKind;
  tokensPerSecond: number;
  /** Pairs HyperAttention computes by its plan (bench/formulas.ts hyperWork) and their FLOPs·(2D + 2Dv). */
  pairs: number;
  flops: number;
  gflops: number;
  peak: PeakResult | null;
  peakRatio: number | null;
  /** Exact attention on the same input: median ms over `calls` calls; null when not compared. */
  exactMs: number | null;
  exactCalls: number | null;
  /** HyperAttention's median over the calls paired with the exact ones (Comparison.pairedMs). */
  pairedMs: number | null;
  /** exactMs / pairedMs. */
  speedup: number | null;
  /** |o_hyper - o_exact|_F / |o_exact|_F. */
  relErr: number | null;
}

/** One row of a table and of the JSON report's `rows`. */
/**
 * A row of the serving family (issue 14): one table for its ops, each credited the bytes it moves
 * (bench/formulas.ts: kvcacheWork, rotaryWork) and compared with the read and copy probes over those bytes.
 */
export interface ServingRow extends RowCommon {
  op: ServingCase['op'];
  /** kvcache, attn-layer: the cache lengths; rotary: halves or interleaved; linear: gemv or gemm; ... */
  variant: string;
  /** Queries (kvcache), tokens (rotary, the layers: B per step), rows (linear, rms-norm-gated) per second. */
  tokensPerSecond: number;
  /** FLOPs by bench/formulas.ts and GF/s (kvcache, linear, conv-update, the layers); null for rotary and the norm. */
  flops: number | null;
  gflops: number | null;
  /** The FP32 peak (the linear GEMM) and gflops / it. */
  peak: PeakResult | null;
  peakRatio: number | null;
  /**
   * The layers: each component call's median ms timed on its own after the layer (OpEntry.parts), and their sum
   * beside the layer's own median; null for single ops.
   */
  parts: { name: string; ms: number }[] | null;
  partsMs: number | null;
  read: BandwidthResult | null;
  readRatio: number | null;
  copy: BandwidthResult | null;
  copyRatio: number | null;
}

/** A NaLaFormer row. */
export interface NalaRow extends RowCommon {
  op: 'nala';
  B: number;
  T: number;
  H: number;
  Hk: number;
  K: number;
  V: number;
  causal: boolean;
  /** Queries per second (B·T per call). */
  tokensPerSecond: number;
  /** FLOPs by bench/formulas.ts nalaWork, and GFLOP/s at the median time. */
  flops: number;
  gflops: number;
  peak: PeakResult | null;
  peakRatio: number | null;
  copy: BandwidthResult | null;
  copyRatio: number | null;
}

export type BenchRow = DeltaRow | SoftmaxRow | AttentionRow | HyperRow | NalaRow
  | ServingRow;

/** A case that did not run: its op is not implemented in this build (skipped) or it threw (failed). */
export interface SkippedCase {
  op: BenchCase['op'];
  shape: string;
  /** caseLabel: op, shape, dtype, variant. */
  label: string;
  status: 'skipped' | 'failed';
  reason: string;
}

/** The `--json FILE` report. */
export interface BenchReport {
  /** info() after --threads / --simd took effect. */
  machine: Info;
  /** Every limit measured in this run (null when the addon has no probes). */
  limits: Limits | null;
  rows: BenchRow[];
  /** Cases that did not run, with the reason. */
  skipped: SkippedCase[];
  summary: { scaling: Scaling[]; auto: AutoCheck[]; softmax: SoftmaxCheck[]; gate: GateCheck[] };
  /** Limits that look disturbed (bench/limits.ts limitWarnings); also printed on stderr. */
  warnings: string[];
  settings: { argv: string[]; seconds: number; limitSeconds: number; seed: number; date: string; node: string };
}

/** The limits one row is divided by (absent: no probe, or the reference backend). */
export interface CaseLimits {
  peak?: PeakResult;
  copy?: BandwidthResult;
  triad?: BandwidthResult;
  update?: BandwidthResult;
  read?: BandwidthResult;
}

const ms = (x: number) => x * 1e3;

function common(c: BenchCase, t: Timing, env: { simd: string; threads: number }, bytes: number, workingSet: number): RowCommon {
  return {
    shape: shapeLabel(c),
    dtype: c.dtype,
    backend: c.backend,
    simd: env.simd,
    threads: env.threads,
    samples: t.samples.length,
    calls: t.calls,
    timeMs: { median: ms(t.median), min: ms(t.min), max: ms(t.max), q1: ms(t.q1), q3: ms(t.q3), mean: ms(t.mean), rme: t.rme },
    bytes,
    workingSetBytes: workingSet,
    gbs: gbs(bytes, t.median),
  };
}

type ServingCase = KVCacheCase | RotaryCase | LinearCase | ConvUpdateCase | RmsNormGatedCase | GdnLayerCase | AttnLayerCase;

/** A component of a case timed on its own (the decode layers' ops): its name and median ms. */
export interface PartTiming {
  name: string;
  ms: number;
}

/** The row of a timed case, with its ratios to `lim` (`parts`: its components' separate timings, if any). */
export function makeRow(
  c: BenchCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits = {}, cmp?: Comparison, parts?: readonly PartTiming[],
): BenchRow {
  switch (c.op) {
    case 'softmax':
      return softmaxRow(c, t, env, lim);
    case 'attention':
      return attentionRow(c, t, env, lim);
    case 'hyper':
      return hyperRow(c, t, env, lim, cmp);
    case 'kvcache':
    case 'rotary':
    case 'linear':
    case 'conv-update':
    case 'rms-norm-gated':
    case 'gdn-layer':
    case 'attn-layer':
      return servingRow(c, t, env, lim, parts);
    case 'nala':
      return nalaRow(c, t, env, lim);
    default:
      return deltaRow(c, t, env, lim);
  }
}

function deltaRow(c: DeltaCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits): DeltaRow {
  const entry = OPS[c.op];
  const w = entry.work(c);
  const used = entry.algorithmUsed(c);
  const s = t.median;
  const gChunk = w.chunkFlops === undefined ? null : gflops(w.chunkFlops, s);
  const gRec = gflops(w.recurrentFlops, s);
  const g = used === 'chunk' && gChunk !== null ? gChunk : gRec;
  const base = common(c, t, env, w.bytes, w.workingSet);
  const { peak, copy, update } = lim;
  // Field order as before the other families existed, so delta reports read the same.
  return {
    op: c.op,
    shape: base.shape,
    B: c.B, T: c.T, H: c.H, HV: c.HV, K: c.K, V: c.V,
    dtype: c.dtype,
    algorithm: c.algorithm,
    algorithmUsed: used,
    backend: c.backend,
    simd: base.simd,
    threads: base.threads,
    samples: base.samples,
    calls: base.calls,
    timeMs: base.timeMs,
    tokensPerSecond: w.tokens / s,
    flops: { chunk: w.chunkFlops ?? null, recurrent: w.recurrentFlops },
    gflopsChunk: gChunk,
    gflopsRecurrent: gRec,
    gflops: g,
    bytes: w.bytes,
    workingSetBytes: w.workingSet,
    gbs: base.gbs,
    peak: peak ?? null,
    peakRatio: peak ? g / peak.gflops : null,
    copy: copy ?? null,
    copyRatio: copy ? base.gbs / copy.gbs : null,
    update: update ?? null,
    updateRatio: update ? base.gbs / update.gbs : null,
  };
}

function softmaxRow(c: SoftmaxCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits): SoftmaxRow {
  const w = softmaxWork(c);
  const base = common(c, t, env, w.bytes, w.workingSet);
  return {
    op: 'softmax',
    ...base,
    rows: c.rows,
    cols: c.cols,
    algorithm: c.algorithm,
    elements: w.elements,
    dataBytes: w.dataBytes,
    elementsPerSecond: w.elements / t.median,
    triad: lim.triad ?? null,
    triadRatio: lim.triad ? base.gbs / lim.triad.gbs : null,
  };
}

function attentionRow(c: AttentionCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits): AttentionRow {
  const w = attentionWork(c);
  const base = common(c, t, env, w.bytes, w.workingSet);
  const g = gflops(w.flops, t.median);
  return {
    op: 'attention',
    ...base,
    B: c.B, T: c.T, S: c.S, Hq: c.Hq, Hk: c.Hk, D: c.D, Dv: c.Dv,
    causal: c.causal,
    gate: c.gate,
    tokensPerSecond: w.tokens / t.median,
    pairs: w.pairs,
    flops: w.flops,
    gflops: g,
    peak: lim.peak ?? null,
    peakRatio: lim.peak ? g / lim.peak.gflops : null,
    copy: lim.copy ?? null,
    copyRatio: lim.copy ? base.gbs / lim.copy.gbs : null,
    read: lim.read ?? null,
    readRatio: lim.read ? base.gbs / lim.read.gbs : null,
  };
}

function hyperRow(c: HyperCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits, cmp?: Comparison): HyperRow {
  const w = hyperWork(c);
  const base = common(c, t, env, w.bytes, w.workingSet);
  const g = gflops(w.flops, t.median);
  return {
    op: 'hyper',
    ...base,
    B: c.B, T: c.T, S: c.S, Hq: c.Hq, Hk: c.Hk, D: c.D, Dv: c.Dv,
    causal: c.causal,
    inputs: c.inputs,
    tokensPerSecond: w.tokens / t.median,
    pairs: w.pairs,
    flops: w.flops,
    gflops: g,
    peak: lim.peak ?? null,
    peakRatio: lim.peak ? g / lim.peak.gflops : null,
    exactMs: cmp ? cmp.medianMs : null,
    exactCalls: cmp ? cmp.calls : null,
    pairedMs: cmp ? cmp.pairedMs : null,
    speedup: cmp ? cmp.medianMs / cmp.pairedMs : null,
    relErr: cmp ? cmp.relErr : null,
  };
}

/** A serving case's work (bench/formulas.ts) and its table's variant cell. */
function servingWork(c: ServingCase): { w: { tokens: number; bytes: number; workingSet: number; flops: number | null }; variant: string } {
  switch (c.op) {
    case 'kvcache':
      return { w: kvcacheWork(c), variant: c.lens.join(',') };
    case 'rotary':
      return { w: { ...rotaryWork(c), flops: null }, variant: c.interleaved ? 'interleaved' : 'halves' };
    case 'linear':
      return { w: linearWork(c), variant: c.M <= 8 ? 'gemv' : 'gemm' };
    case 'conv-update':
      return { w: convUpdateWork(c), variant: 'silu' };
    case 'rms-norm-gated':
      return { w: { ...rmsNormGatedWork(c), flops: null }, variant: 'silu-gate' };
    case 'gdn-layer':
      return { w: gdnLayerWork(c), variant: `W${c.W} slots${c.slots}` };
    case 'attn-layer':
      return { w: attnLayerWork(c), variant: c.lens.join(',') };
  }
}

function servingRow(c: ServingCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits, parts?: readonly PartTiming[]): ServingRow {
  const { w, variant } = servingWork(c);
  const base = common(c, t, env, w.bytes, w.workingSet);
  const g = w.flops === null ? null : gflops(w.flops, t.median);
  return {
    op: c.op,
    ...base,
    variant,
    tokensPerSecond: w.tokens / t.median,
    flops: w.flops,
    gflops: g,
    peak: lim.peak ?? null,
    peakRatio: lim.peak && g !== null ? g / lim.peak.gflops : null,
    parts: parts?.length ? parts.map((p) => ({ ...p })) : null,
    partsMs: parts?.length ? parts.reduce((a, p) => a + p.ms, 0) : null,
    read: lim.read ?? null,
    readRatio: lim.read ? base.gbs / lim.read.gbs : null,
    copy: lim.copy ?? null,
    copyRatio: lim.copy ? base.gbs / lim.copy.gbs : null,
  };
}

function nalaRow(c: NalaCase, t: Timing, env: { simd: string; threads: number }, lim: CaseLimits): NalaRow {
  const w = nalaWork(c);
  const base = common(c, t, env, w.bytes, w.workingSet);
  const g = gflops(w.flops, t.median);
  return {
    op: 'nala',
    ...base,
    B: c.B, T: c.T, H: c.H, Hk: c.Hk, K: c.K, V: c.V,
    causal: c.causal,
    tokensPerSecond: w.tokens / t.median,
    flops: w.flops,
    gflops: g,
    peak: lim.peak ?? null,
    peakRatio: lim.peak ? g / lim.peak.gflops : null,
    copy: lim.copy ?? null,
    copyRatio: lim.copy ? base.gbs / lim.copy.gbs : null,
  };
}

/** 3 significant digits, e.g. 0.0123, 1.23, 123, 1230. */
function sig(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x === 0) return '0';
  const d = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return x.toFixed(Math.min(d, 4));
}

/** 1234567 -> "1.23M". */
function si(x: number): string {
  const units: [number, string][] = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [v, u] of units) if (Math.abs(x) >= v) return `${sig(x / v)}${u}`;
  return sig(x);
}

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
const DT: Record<string, string> = { float32: 'f32', float16: 'f16', bfloat16: 'bf16' };

/** Right-aligned columns (the first two left-aligned), two spaces apart. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((x, i) => (i < 2 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const simdCell = (r: BenchRow) => (r.backend === 'reference' ? 'ref' : r.simd);
const timeCells = (r: BenchRow) => [sig(r.timeMs.median), `${sig(r.timeMs.min)}-${sig(r.timeMs.max)}`];
const peakAt = (p: PeakResult | null) => (p ? `${p.level}x${p.threads}` : '-');

/** The delta table (gated-delta, delta-step). */
export function formatDeltaRows(rows: readonly DeltaRow[]): string {
  const header = [
    'op', 'shape', 'dtype', 'alg', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s',
    'GF/s chunk', 'GF/s rec', '%peak', 'peak@', 'GB/s', '%copy', '%upd', 'bw@',
  ];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.algorithm === 'auto' && r.algorithmUsed !== 'step' ? `auto>${r.algorithmUsed}` : r.algorithmUsed,
    simdCell(r),
    String(r.threads),
    ...timeCells(r),
    si(r.tokensPerSecond),
    r.gflopsChunk === null ? '-' : sig(r.gflopsChunk),
    sig(r.gflopsRecurrent),
    pct(r.peakRatio),
    peakAt(r.peak),
    sig(r.gbs),
    pct(r.copyRatio),
    pct(r.updateRatio),
    r.copy ? formatBytes(r.copy.bytes) : '-',
  ]);
  return formatTable(header, body);
}

/** The softmax table. */
export function formatSoftmaxRows(rows: readonly SoftmaxRow[]): string {
  const header = ['op', 'shape', 'dtype', 'alg', 'simd', 'thr', 'median ms', 'min-max ms', 'data', 'Gelem/s', 'GB/s', '%triad', 'bw@'];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.algorithm,
    simdCell(r),
    String(r.threads),
    ...timeCells(r),
    formatBytes(r.dataBytes),
    sig(r.elementsPerSecond / 1e9),
    sig(r.gbs),
    pct(r.triadRatio),
    r.triad ? formatBytes(r.triad.bytes) : '-',
  ]);
  return formatTable(header, body);
}

/** The attention table. */
export function formatAttentionRows(rows: readonly AttentionRow[]): string {
  const header = [
    'op', 'shape', 'dtype', 'mask', 'gate', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s', 'GF/s', '%peak', 'peak@',
    'GB/s', '%copy', '%read', 'bw@',
  ];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.causal ? 'causal' : 'none',
    r.gate,
    simdCell(r),
    String(r.threads),
    ...timeCells(r),
    si(r.tokensPerSecond),
    sig(r.gflops),
    pct(r.peakRatio),
    peakAt(r.peak),
    sig(r.gbs),
    pct(r.copyRatio),
    pct(r.readRatio),
    r.copy ? formatBytes(r.copy.bytes) : '-',
  ]);
  return formatTable(header, body);
}

/** The HyperAttention table. */
export function formatHyperRows(rows: readonly HyperRow[]): string {
  const header = [
    'op', 'shape', 'dtype', 'mask', 'inputs', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s', 'GF/s', '%peak', 'exact ms',
    'speedup', 'rel.err',
  ];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.causal ? 'causal' : 'none',
    r.inputs,
    simdCell(r),
    String(r.threads),
    ...timeCells(r),
    si(r.tokensPerSecond),
    sig(r.gflops),
    pct(r.peakRatio),
    r.exactMs === null ? '-' : `${sig(r.exactMs)}${r.exactCalls === 1 ? '*' : ''}`,
    r.speedup === null ? '-' : `${r.speedup.toFixed(1)}x`,
    r.relErr === null ? '-' : r.relErr.toExponential(2),
  ]);
  return formatTable(header, body);
}

/** Issue 16's targets at T = S = 32768, D = 64: speedup over exact attention non-causal and causal. */
export const HYPER_TARGETS = { T: 32768, D: 64, full: 10, causal: 3 } as const;

export function hyperLegend(rows: readonly HyperRow[]): string {
  const peaks = peakList(rows);
  const lines = [
    'hyperAttention(q, k, v, {causal}) with its defaults (lshBits 7, blockSize 256, sampleSize 256, minSeqLen 4096,',
    'seed 0); exact ms: seqkern\'s exact attention on the same input, timed after it (median of up to 5 calls within',
    '--seconds; *: one call), each exact call followed by a HyperAttention call; speedup = exact ms ÷ the median of',
    'those paired calls (so a machine whose speed drifts hits both sides alike); rel.err = |o - o_exact|_F / |o_exact|_F',
    'of HyperAttention\'s output. gaussian: q, k, v standard normal (near-uniform attention: the error of any sampling',
    'estimate is large); clustered: keys in tight clusters of 64 around standard normal centres, queries near keys',
    '(bench/inputs.ts hyperInputs).',
    'GF/s: the pairs HyperAttention computes by its plan (causal leaves, diagonal blocks, sampled keys at their',
    `expectation; bench/formulas.ts hyperWork) x (2D + 2Dv); %peak: ÷ FP32 FMA peak${peaks ? ` (${peaks})` : ''}.`,
  ];
  const t = HYPER_TARGETS;
  for (const causal of [false, true]) {
    const at = rows.filter((r) => r.T === t.T && r.S === t.T && r.D === t.D && r.causal === causal && r.speedup !== null);
    if (!at.length) continue;
    const want = causal ? t.causal : t.full;
    const got = at.map((r) => `${r.speedup!.toFixed(1)}x (${r.inputs})`).join(', ');
    const ok = at.every((r) => r.speedup! >= want);
    lines.push(`target (issue 16), T = S = ${t.T}, D = ${t.D}, ${causal ? 'causal' : 'non-causal'}: >= ${want}x exact attention: ${got}: ${ok ? 'met' : 'NOT met'}.`);
  }
  return lines.join('\n');
}

/** The NaLaFormer table. */
export function formatNalaRows(rows: readonly NalaRow[]): string {
  const header = ['op', 'shape', 'dtype', 'mask', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s', 'GF/s', '%peak', 'peak@', 'GB/s', '%copy'];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.causal ? 'causal' : 'none',
    simdCell(r),
    String(r.threads),
    ...timeCells(r),
    si(r.tokensPerSecond),
    sig(r.gflops),
    pct(r.peakRatio),
    peakAt(r.peak),
    sig(r.gbs),
    pct(r.copyRatio),
  ]);
  return formatTable(header, body);
}

/** Issue 16's targets: >= 40% of the FP32 peak at T = 16384, and time(65536) / time(16384) <= 4.3. */
export const NALA_TARGETS = { T: 16384, peak: 0.4, longT: 65536, ratio: 4.3 } as const;

/** time(T = longT) / time(T = T) of each mask whose two rows ran (same shape otherwise). */
export function nalaScaling(rows: readonly NalaRow[], from: number = NALA_TARGETS.T, to: number = NALA_TARGETS.longT) {
  const out: { causal: boolean; ratio: number }[] = [];
  for (const a of rows) {
    if (a.T !== from) continue;
    const b = rows.find((r) => r.T === to && r.causal === a.causal && r.B === a.B && r.H === a.H && r.Hk === a.Hk && r.K === a.K && r.V === a.V && r.dtype === a.dtype && r.backend === a.backend);
    if (b) out.push({ causal: a.causal, ratio: b.timeMs.median / a.timeMs.median });
  }
  return out;
}

export function nalaLegend(rows: readonly NalaRow[]): string {
  const peaks = peakList(rows);
  const lines = [
    'nalaAttention(q, k, v, {causal}) without rope; the output is allocated by each call (included). GF/s: the',
    'matrix work by bench/formulas.ts nalaWork (features of 2K per row; non-causal: 2·2K·V per key and kv head +',
    '(2·2K·V + 2·2K) per query and head; causal: the chunkwise count, C = 64); the feature maps\' powers, the rotary',
    `and the divisions are not counted. %peak: ÷ FP32 FMA peak at the SIMD level in effect${peaks ? ` (${peaks})` : ''}.`,
    'GB/s: q, k, v read + o written once; %copy: ÷ copy bandwidth over the same bytes, measured in this run.',
  ];
  const t = NALA_TARGETS;
  for (const s of nalaScaling(rows)) {
    lines.push(`${s.causal ? 'causal' : 'non-causal'}: time(T=${t.longT}) / time(T=${t.T}) = ${s.ratio.toFixed(2)} (4 = linear; target <= ${t.ratio}: ${s.ratio <= t.ratio ? 'met' : 'NOT met'}).`);
  }
  for (const r of rows) {
    if (r.T !== t.T || r.peakRatio === null) continue;
    lines.push(`target (issue 16), ${r.causal ? 'causal' : 'non-causal'} T=${t.T}: >= ${t.peak * 100}% of peak: ${pct(r.peakRatio)}: ${r.peakRatio >= t.peak ? 'met' : 'NOT met'}.`);
  }
  return lines.join('\n');
}

function peakList(rows: readonly (DeltaRow | AttentionRow | HyperRow | NalaRow | ServingRow)[]): string {
  const peaks = new Map<string, PeakResult>();
  for (const r of rows) if (r.peak) peaks.set(`${r.peak.level}x${r.peak.threads}`, r.peak);
  return [...peaks.entries()].map(([k, p]) => `${k} = ${p.gflops.toFixed(1)} GFLOP/s`).join(', ');
}

/** What the delta columns mean, with the limits each ratio used. */
export function deltaLegend(rows: readonly DeltaRow[]): string {
  const peaks = peakList(rows);
  const lines = [
    'median/min-max: per call, over Benchmark.js samples. GF/s chunk: chunkwise count 2(3C²K+2C²V+3CKV)+C³/3 per',
    'chunk and v-head (C=64, last chunk at its own length); GF/s rec: 6KV per token and v-head (bench/formulas.ts).',
    `%peak: GF/s by the count of the algorithm that ran ÷ FP32 FMA peak at the SIMD level in effect on the same`,
    `threads (peak@: level x threads), measured in this run${peaks ? `: ${peaks}` : ''}.`,
    'GB/s: q,k,v,beta,g read + o written (+ state read and written for the step), at the median time.',
    '%copy: GB/s ÷ copy bandwidth (b=a, read + write counted, same threads) measured in this run on the same',
    'number of bytes the op moves (bw@: source + destination = the op\'s bytes read + written; for the step, its',
    'state read and written). %upd (ops that update in place: the step\'s state): GB/s ÷ in-place update',
    'bandwidth (a=s*a) at the op\'s working set (the state once); copy is credited less than it moves (the',
    'write-allocate read of its destination is not counted), an in-place update is not, so out of cache the step',
    'can pass 100% of copy but not of update.',
  ];
  return lines.join('\n');
}

export function softmaxLegend(): string {
  return [
    'softmaxInto(x, out) over rows of `cols` floats into an output allocated once before timing (a warm-up call',
    'first-touches it): no allocation or page fault is timed. Hot rows (x + y of a few MiB) stay in cache between',
    'calls; the 1 GiB batch does not. GB/s: 2 reads + 1 write of the data (3 x `data`), what two-pass moves at',
    'least (pass 1 reads x, pass 2 reads x and writes y); three-pass is credited the same bytes, so GB/s of the two',
    'compare as speeds. %triad: GB/s ÷ triad bandwidth (a=b+s*c, 2 reads + 1 write counted, same threads) measured',
    'in this run over 3 arrays totalling the same bytes (bw@ = 3 x data): the same bytes moved in the same',
    'read/write mix. (The op\'s own working set is 2 x data, x and y: on a hot row the triad\'s 3 arrays may sit one',
    'cache level further out than x and y; out of cache both are DRAM.)',
  ].join('\n');
}

export function attentionLegend(rows: readonly AttentionRow[]): string {
  const peaks = peakList(rows);
  return [
    'attention(q, k, v, {causal, gate}); the output is allocated by each call (included, as for the delta ops).',
    'GF/s: pairs·(2D + 2Dv) per q-head (q·k and p·v, multiply + add), counting only unmasked (query, key) pairs:',
    'T·S without mask; causal (bottom-right) T(S-T) + T(T+1)/2 for S >= T, S(S+1)/2 for S < T, so T = S gives',
    'T(T+1)/2 = the T²/2 of 4·T²·D·H/2 plus half the diagonal. exp and the gate\'s sigmoid are not counted.',
    `%peak: ÷ FP32 FMA peak at the SIMD level in effect on the same threads${peaks ? ` (${peaks})` : ''}.`,
    'GB/s: q, k, v (+ gate) read once + o written once (a decode step: K and V once). %copy: GB/s ÷ copy bandwidth',
    'measured in this run over arrays totalling the same bytes (bw@); %read: GB/s ÷ read bandwidth (a sum over one',
    'array of the same bytes, the read counted), the ceiling of a decode, which only reads K and V.',
  ].join('\n');
}

/** The serving table (issue 14). */
export function formatServingRows(rows: readonly ServingRow[]): string {
  const header = [
    'op', 'shape', 'dtype', 'variant', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s', 'GF/s', '%peak', 'GB/s', '%read', '%copy', 'bw@', 'sum parts ms',
  ];
  const body = rows.map((r) => [
    r.op, r.shape, DT[r.dtype] ?? r.dtype, r.variant, simdCell(r), String(r.threads), ...timeCells(r), si(r.tokensPerSecond),
    r.gflops === null ? '-' : sig(r.gflops), pct(r.peakRatio), sig(r.gbs), pct(r.readRatio), pct(r.copyRatio), bwAt(r),
    r.partsMs === null ? '-' : sig(r.partsMs),
  ]);
  return formatTable(header, body);
}

/** The size the row's bandwidth ratios were measured at: the read probe's (a GEMV: the weight's bytes), else copy's. */
function bwAt(r: ServingRow): string {
  const at = [r.read, r.copy].filter((b): b is BandwidthResult => b !== null).map((b) => formatBytes(b.bytes));
  return at.length ? [...new Set(at)].join('/') : '-';
}

/** "layer gdn-layer B8 ... f32: in-projection 1.2 + conv update 0.1 + ... = 3.4 ms (layer 3.3 ms)", one line per layer row. */
export function servingParts(rows: readonly ServingRow[]): string[] {
  return rows.filter((r) => r.parts !== null).map((r) =>
    `${r.op} ${r.shape} ${DT[r.dtype] ?? r.dtype}: ${r.parts!.map((p) => `${p.name} ${sig(p.ms)}`).join(' + ')} = ${sig(r.partsMs!)} ms ` +
    `(the layer call: ${sig(r.timeMs.median)} ms; ${sig(r.tokensPerSecond)} tok/s)`);
}

export function servingLegend(rows: readonly ServingRow[] = []): string {
  const peaks = peakList(rows);
  // Each op's lines when it has rows (all of them for no rows).
  const has = (...ops: ServingRow['op'][]) => !rows.length || rows.some((r) => ops.includes(r.op));
  const lines: string[] = [];
  if (has('kvcache')) {
    lines.push(
      'kvcache: attentionWithKVCache(q, kCache, vCache, {cacheSeqlens, kNew, vNew[, blockTable]}): a decode (Tq = 1) of',
      'B sequences whose caches hold the lengths listed (variant), q/kNew/vNew/o float32, caches of the dtype shown,',
      'contiguous or paged (shuffled block table); kNew/vNew appended in place at the same positions each call.',
      'GB/s: the bytes actually attended, K and V of sum(len + 1) keys read once (+ q, kNew, vNew, o), never',
      'B x capacity. %read: GB/s ÷ read bandwidth (a sum over one array of the same bytes) measured in this run,',
      "a decode's ceiling (the issue's target: >= 70%); %copy: ÷ copy bandwidth over the same bytes.",
    );
  }
  if (has('rotary')) {
    lines.push(
      'rotary: rotary(x, {cos, sin, out}) into an out allocated once, positions t; GB/s: x read + out written (+ the',
      "tables' rows); %copy: ÷ copy bandwidth over the same bytes (the issue's target: >= 60% out of cache).",
    );
  }
  if (has('linear')) {
    lines.push(
      'linear: linear(x, weight, {out}), x and y float32, the weight in the dtype shown; GB/s: the weight read once',
      "(+ x, y); gemv (M <= 8): %read ÷ read bandwidth measured at the weight's bytes (bw@; target >= 70%); gemm: GF/s",
      `2·M·K·N, %peak ÷ FP32 FMA peak${peaks ? ` (${peaks})` : ''} (target >= 60%).`,
    );
  }
  if (has('conv-update')) {
    lines.push(
      'conv-update: causalConv1dUpdate(x [N, D], pool, weight [D, W] f32, {silu, stateIndices, out}) on a pool of 2N',
      'slots, the N windows at scattered slots; GB/s: x read, y written, the windows read and written, weight read;',
      "%copy ÷ copy bandwidth over the same bytes (the issue's target: >= 60% out of cache).",
    );
  }
  if (has('rms-norm-gated')) {
    lines.push(
      'rms-norm-gated: rmsNormGated(x, gate, weight [H], {out}) over rows of H; GB/s: x, gate read + y written; %copy ÷',
      "copy bandwidth over the same bytes (the issue's target: >= 60% out of cache).",
    );
  }
  if (has('gdn-layer', 'attn-layer')) {
    lines.push(
      'gdn-layer, attn-layer: one Qwen3-Next decode layer step at hidden 2048 of B tokens (bench/serving.ts), weights',
      'in the dtype shown, activations, pools and caches float32; tok/s = B / median. gdn-layer: in-projection (q, k, v;',
      'z; b; a), conv update on a pool, q/k/v split, gated delta step (aLog, dtBias, betaSigmoid, qkL2Norm) on a state',
      'pool at scattered slots, rmsNormGated with z, out-projection. attn-layer: q, gate, k, v projections, q/k RMSNorm,',
      'attentionWithKVCache with partial rotary (64 of 256) and the elementwise gate over caches of the lengths listed',
      '(variant), out-projection. GB/s: the weights + pools read and written (GDN) or the K, V attended + activations;',
      "%read ÷ read bandwidth over those bytes. sum parts ms: each component's median timed on its own after the layer:",
      ...servingParts(rows).map((l) => `  ${l}`),
    );
  }
  return lines.join('\n');
}

/** Every family's table followed by its legend, then the cases that did not run. */
export function formatReport(rows: readonly BenchRow[], skipped: readonly SkippedCase[] = []): string {
  const blocks: string[] = [];
  for (const f of FAMILIES) {
    const of = rows.filter((r) => familyOf(r.op) === f);
    if (!of.length) continue;
    if (f === 'delta') blocks.push(`${formatDeltaRows(of as DeltaRow[])}\n\n${deltaLegend(of as DeltaRow[])}`);
    else if (f === 'softmax') blocks.push(`${formatSoftmaxRows(of as SoftmaxRow[])}\n\n${softmaxLegend()}`);
    else if (f === 'hyper') blocks.push(`${formatHyperRows(of as HyperRow[])}\n\n${hyperLegend(of as HyperRow[])}`);
    else if (f === 'serving') blocks.push(`${formatServingRows(of as ServingRow[])}\n\n${servingLegend(of as ServingRow[])}`);
    else if (f === 'nala') blocks.push(`${formatNalaRows(of as NalaRow[])}\n\n${nalaLegend(of as NalaRow[])}`);
    else blocks.push(`${formatAttentionRows(of as AttentionRow[])}\n\n${attentionLegend(of as AttentionRow[])}`);
  }
  if (skipped.length) blocks.push(formatSkipped(skipped));
  return blocks.join('\n\n');
}

/** "skipped: softmax R8 C32768 float32 two-pass: softmaxInto: not implemented yet", one line per case. */
export function formatSkipped(skipped: readonly SkippedCase[]): string {
  return skipped.map((s) => `${s.status === 'failed' ? 'FAILED' : 'skipped'}: ${s.label}: ${s.reason}`).join('\n');
}

export function formatSummary(
  scaling: readonly Scaling[],
  auto: readonly AutoCheck[],
  softmax: readonly SoftmaxCheck[] = [],
  gate: readonly GateCheck[] = [],
): string {
  const lines: string[] = [];
  const indent = (t: string) => t.split('\n').map((l) => `  ${l}`).join('\n');
  for (const s of scaling) {
    lines.push(
      `chunked prefill K=${s.K}: time(T=${s.to}) / time(T=${s.from}) = ${s.ratio.toFixed(2)} (${(s.to / s.from).toFixed(1)} = linear)`,
    );
  }
  if (auto.length) {
    lines.push('auto vs the faster algorithm (within 10%?):');
    const body = auto.map((a) => [
      `T=${a.T}`,
      `K=${a.K}`,
      sig(a.chunk * 1e3),
      sig(a.recurrent * 1e3),
      sig(a.auto * 1e3),
      a.ratio.toFixed(2),
      a.ok ? 'yes' : 'NO',
    ]);
    lines.push(indent(formatTable(['T', 'K', 'chunk ms', 'recurrent ms', 'auto ms', 'auto/best', 'ok'], body)));
  }
  if (softmax.length) {
    lines.push('softmax, two-pass vs three-pass (speed ratio = time(three-pass) / time(two-pass)):');
    const body = softmax.map((s) => [
      s.shape,
      DT[s.dtype] ?? s.dtype,
      sig(s.twoPass * 1e3),
      sig(s.threePass * 1e3),
      `${s.ratio.toFixed(2)}x`,
    ]);
    lines.push(indent(formatTable(['shape', 'dtype', 'two-pass ms', 'three-pass ms', 'two-pass speed'], body)));
  }
  if (gate.length) {
    lines.push('attention, fused gate vs the same call without gate:');
    const body = gate.map((g) => [
      g.shape,
      `${g.causal ? 'causal' : 'none'}`,
      g.gate,
      sig(g.ungated * 1e3),
      sig(g.gated * 1e3),
      `${g.overhead >= 0 ? '+' : ''}${(g.overhead * 100).toFixed(1)}%`,
    ]);
    lines.push(indent(formatTable(['shape', 'mask', 'gate', 'ungated ms', 'gated ms', 'overhead'], body)));
  }
  return lines.join('\n');
}
