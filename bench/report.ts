// Rows of `seqkern bench`: one timed case with its rates and its ratios to the limits measured in the same
// run; the table printed on stdout and the JSON report written by `--json FILE`.
import type { Info } from '../src/index.js';
import { gbs, gflops } from './formulas.js';
import { formatBytes, type BandwidthResult, type Limits, type PeakResult } from './limits.js';
import type { Timing } from './measure.js';
import { OPS, shapeLabel, type BenchCase } from './registry.js';
import type { AutoCheck, Scaling } from './suites.js';

/** One row of the table and of the JSON report's `rows`. Times in milliseconds, rates per second. */
export interface BenchRow {
  op: BenchCase['op'];
  /** "B1 T4096 H16/32 K128 V128" (H q/k heads / HV v heads); the decode step shows N in place of B, T. */
  shape: string;
  B: number;
  T: number;
  H: number;
  HV: number;
  K: number;
  V: number;
  dtype: BenchCase['dtype'];
  /** As asked ('auto' | 'chunk' | 'recurrent'), and what ran ('chunk' | 'recurrent' | 'step'). */
  algorithm: BenchCase['algorithm'];
  algorithmUsed: 'chunk' | 'recurrent' | 'step';
  backend: BenchCase['backend'];
  /** SIMD level and pool threads in effect ('reference' rows: 'none', 1 thread). */
  simd: string;
  threads: number;
  /** Benchmark.js samples and op calls timed. */
  samples: number;
  calls: number;
  timeMs: { median: number; min: number; max: number; q1: number; q3: number; mean: number; rme: number };
  tokensPerSecond: number;
  /** Work per call by bench/formulas.ts: the chunkwise count (null for the step) and the recurrence count. */
  flops: { chunk: number | null; recurrent: number };
  /** GFLOP/s by each count, at the median time. */
  gflopsChunk: number | null;
  gflopsRecurrent: number;
  /** GFLOP/s by the count of the algorithm that ran (chunk count for chunk, recurrence count otherwise). */
  gflops: number;
  bytes: number;
  workingSetBytes: number;
  gbs: number;
  /** The FP32 peak the ratio used (level in effect, same threads), measured in this run; null: no probe. */
  peak: PeakResult | null;
  /** gflops / peak.gflops. */
  peakRatio: number | null;
  /** The copy bandwidth the ratio used, measured in this run at this row's working set; null: no probe. */
  copy: BandwidthResult | null;
  /** gbs / copy.gbs. */
  copyRatio: number | null;
  /** Ops that update in place (the step): the in-place read + write bandwidth at the same size, and gbs / it. */
  update: BandwidthResult | null;
  updateRatio: number | null;
}

/** The `--json FILE` report. */
export interface BenchReport {
  /** info() after --threads / --simd took effect. */
  machine: Info;
  /** Every limit measured in this run (null when the addon has no probes). */
  limits: Limits | null;
  rows: BenchRow[];
  summary: { scaling: Scaling[]; auto: AutoCheck[] };
  /** Limits that look disturbed (bench/limits.ts limitWarnings); also printed on stderr. */
  warnings: string[];
  settings: { argv: string[]; seconds: number; limitSeconds: number; seed: number; date: string; node: string };
}

/** The limits one row is divided by (absent: no probe, or the reference backend). */
export interface CaseLimits {
  peak?: PeakResult;
  copy?: BandwidthResult;
  update?: BandwidthResult;
}

export function makeRow(
  c: BenchCase,
  t: Timing,
  env: { simd: string; threads: number },
  peak: PeakResult | undefined,
  copy: BandwidthResult | undefined,
  update?: BandwidthResult,
): BenchRow {
  const entry = OPS[c.op];
  const w = entry.work(c);
  const used = entry.algorithmUsed(c);
  const s = t.median;
  const gChunk = w.chunkFlops === undefined ? null : gflops(w.chunkFlops, s);
  const gRec = gflops(w.recurrentFlops, s);
  const g = used === 'chunk' && gChunk !== null ? gChunk : gRec;
  const rate = gbs(w.bytes, s);
  const ms = (x: number) => x * 1e3;
  return {
    op: c.op,
    shape: shapeLabel(c),
    B: c.B, T: c.T, H: c.H, HV: c.HV, K: c.K, V: c.V,
    dtype: c.dtype,
    algorithm: c.algorithm,
    algorithmUsed: used,
    backend: c.backend,
    simd: env.simd,
    threads: env.threads,
    samples: t.samples.length,
    calls: t.calls,
    timeMs: { median: ms(t.median), min: ms(t.min), max: ms(t.max), q1: ms(t.q1), q3: ms(t.q3), mean: ms(t.mean), rme: t.rme },
    tokensPerSecond: w.tokens / s,
    flops: { chunk: w.chunkFlops ?? null, recurrent: w.recurrentFlops },
    gflopsChunk: gChunk,
    gflopsRecurrent: gRec,
    gflops: g,
    bytes: w.bytes,
    workingSetBytes: w.workingSet,
    gbs: rate,
    peak: peak ?? null,
    peakRatio: peak ? g / peak.gflops : null,
    copy: copy ?? null,
    copyRatio: copy ? rate / copy.gbs : null,
    update: update ?? null,
    updateRatio: update ? rate / update.gbs : null,
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

export function formatRows(rows: readonly BenchRow[]): string {
  const header = [
    'op', 'shape', 'dtype', 'alg', 'simd', 'thr', 'median ms', 'min-max ms', 'tok/s',
    'GF/s chunk', 'GF/s rec', '%peak', 'peak@', 'GB/s', '%copy', '%upd', 'bw@',
  ];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    DT[r.dtype] ?? r.dtype,
    r.algorithm === 'auto' && r.algorithmUsed !== 'step' ? `auto>${r.algorithmUsed}` : r.algorithmUsed,
    r.backend === 'reference' ? 'ref' : r.simd,
    String(r.threads),
    sig(r.timeMs.median),
    `${sig(r.timeMs.min)}-${sig(r.timeMs.max)}`,
    si(r.tokensPerSecond),
    r.gflopsChunk === null ? '-' : sig(r.gflopsChunk),
    sig(r.gflopsRecurrent),
    pct(r.peakRatio),
    r.peak ? `${r.peak.level}x${r.peak.threads}` : '-',
    sig(r.gbs),
    pct(r.copyRatio),
    pct(r.updateRatio),
    r.copy ? formatBytes(r.copy.bytes) : '-',
  ]);
  return formatTable(header, body);
}

/** What the columns mean, with the limits each ratio used. */
export function legend(rows: readonly BenchRow[]): string {
  const peaks = new Map<string, PeakResult>();
  for (const r of rows) if (r.peak) peaks.set(`${r.peak.level}x${r.peak.threads}`, r.peak);
  const peakList = [...peaks.entries()].map(([k, p]) => `${k} = ${p.gflops.toFixed(1)} GFLOP/s`).join(', ');
  const lines = [
    'median/min-max: per call, over Benchmark.js samples. GF/s chunk: chunkwise count 2(3C²K+2C²V+3CKV)+C³/3 per',
    'chunk and v-head (C=64, last chunk at its own length); GF/s rec: 6KV per token and v-head (bench/formulas.ts).',
    `%peak: GF/s by the count of the algorithm that ran ÷ FP32 FMA peak at the SIMD level in effect on the same`,
    `threads (peak@: level x threads), measured in this run${peakList ? `: ${peakList}` : ''}.`,
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

export function formatSummary(scaling: readonly Scaling[], auto: readonly AutoCheck[]): string {
  const lines: string[] = [];
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
    lines.push(
      formatTable(['T', 'K', 'chunk ms', 'recurrent ms', 'auto ms', 'auto/best', 'ok'], body)
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
  }
  return lines.join('\n');
}
