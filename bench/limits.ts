// This machine's limits, measured in the benchmark's own process (DESIGN.md 8): FP32 FMA peak per SIMD
// level and thread count, and copy/triad/update/read bandwidth per working-set size. The native probes live in
// native/cpu/limits*.cc; this file caches their results (a limit is measured once per run) and prints them.
import { native } from '../src/backend.js';

export type SimdName = 'avx512' | 'avx2' | 'portable';
export type BandwidthKind = 'copy' | 'triad' | 'update' | 'read';

/** The bandwidth probes of `seqkern bench --limits`, in the order of its table. */
export const BANDWIDTH_KINDS: readonly BandwidthKind[] = ['copy', 'triad', 'update', 'read'];

/** Widest first. */
export const SIMD_LEVELS: readonly SimdName[] = ['avx512', 'avx2', 'portable'];

/** Working-set sizes of `seqkern bench --limits`: L1, L2, around L3, and DRAM twice. */
export const LIMIT_SIZES: readonly number[] = [32 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30];

export interface PeakResult {
  level: SimdName;
  threads: number;
  /** FP32 FMA GFLOP/s: best of the probe's repeats. */
  gflops: number;
}

export interface BandwidthResult {
  kind: BandwidthKind;
  /** Total working set of all arrays of all threads (copy: 2 arrays, triad: 3, update and read: 1). */
  bytes: number;
  threads: number;
  /**
   * GB/s (1e9 bytes), STREAM counting (copy: read + write, triad: 2 reads + 1 write, update: read + write
   * in place, read: a sum over the array, the read counted), best sample. Write-allocate reads are not counted, so out of cache copy and triad are
   * credited less than they move and update (no write-allocate: its lines are in cache when written) up to
   * 1.5x copy: an op that updates in place is compared with update, and one that only reads (an attention
   * decode) with read as well as copy.
   */
  gbs: number;
  /** The SIMD level of the loads and stores: the widest the CPU has. */
  level: SimdName;
}

export interface Limits {
  peak: PeakResult[];
  bandwidth: BandwidthResult[];
}

export interface Probes {
  peakFlops(level: string, seconds: number, threads: number): number;
  bandwidth(kind: string, bytes: number, threads: number, seconds: number): number;
  info(): { simdBest: string };
}

/** The addon's probes, or null when the addon is missing or too old to have them. */
export function probes(): Probes | null {
  const a = native();
  if (!a || typeof a.peakFlops !== 'function' || typeof a.bandwidth !== 'function') return null;
  return a as unknown as Probes;
}

/** The levels this CPU runs, widest first (what setSimdLevel accepts). */
export function levelsAvailable(): SimdName[] {
  const p = probes();
  if (!p) return [];
  const best = p.info().simdBest as SimdName;
  return SIMD_LEVELS.slice(SIMD_LEVELS.indexOf(best));
}

/** Smallest working set the bandwidth probe accepts (64 floats per array per thread). */
export function minProbeBytes(kind: BandwidthKind, threads: number): number {
  return 256 * { copy: 2, triad: 3, update: 1, read: 1 }[kind] * threads;
}

/** Measures limits on demand and remembers them, so each is measured once per run. */
export class LimitProbe {
  private readonly p = probes();
  private readonly peaks = new Map<string, PeakResult>();
  private readonly bws = new Map<string, BandwidthResult>();

  /** `seconds`: time spent on each probe. */
  constructor(readonly seconds: number) {}

  get available(): boolean {
    return this.p !== null;
  }

  /**
   * The peak at `level` on `threads` threads. `refresh` measures again (for `seconds`, default this.seconds)
   * and keeps the better figure: a peak is a best case, and on a shared machine one probe may have run
   * while another process held a core, so the benchmark re-probes between cases and keeps the maximum.
   */
  peak(level: SimdName, threads: number, refresh?: { seconds?: number }): PeakResult | undefined {
    if (!this.p) return undefined;
    const key = `${level}/${threads}`;
    const had = this.peaks.get(key);
    if (had && !refresh) return had;
    const gflops = this.p.peakFlops(level, refresh?.seconds ?? this.seconds, threads);
    if (!had) {
      const r = { level, threads, gflops };
      this.peaks.set(key, r);
      return r;
    }
    had.gflops = Math.max(had.gflops, gflops);
    return had;
  }

  bandwidth(kind: BandwidthKind, bytes: number, threads: number): BandwidthResult | undefined {
    if (!this.p) return undefined;
    const size = Math.max(Math.round(bytes), minProbeBytes(kind, threads));
    const key = `${kind}/${size}/${threads}`;
    let r = this.bws.get(key);
    if (!r) {
      const level = this.p.info().simdBest as SimdName;
      r = { kind, bytes: size, threads, gbs: this.p.bandwidth(kind, size, threads, this.seconds), level };
      this.bws.set(key, r);
    }
    return r;
  }

  /** Everything measured so far. */
  results(): Limits {
    return { peak: [...this.peaks.values()], bandwidth: [...this.bws.values()] };
  }
}

/** The full set of `seqkern bench --limits`: peak at every level and copy/triad/update/read at every size, on 1 and `threads` threads. */
export function measureAllLimits(probe: LimitProbe, threads: number, progress: (what: string) => void): void {
  const counts = threads > 1 ? [threads, 1] : [1];
  const peaks = (again: boolean) => {
    for (const level of levelsAvailable()) {
      for (const t of counts) {
        progress(`peak ${level} ${t} thread${t > 1 ? 's' : ''}${again ? ' (again)' : ''}`);
        probe.peak(level, t, again ? {} : undefined);
      }
    }
  };
  peaks(false);
  for (const kind of BANDWIDTH_KINDS) {
    for (const size of LIMIT_SIZES) {
      for (const t of counts) {
        progress(`${kind} ${formatBytes(size)} ${t} thread${t > 1 ? 's' : ''}`);
        probe.bandwidth(kind, size, t);
      }
    }
  }
  // Each peak twice, some seconds apart, keeping the better: see LimitProbe.peak.
  peaks(true);
}

/**
 * Warnings about limits that look disturbed: a peak on n threads below 0.75·n times the one-thread peak
 * means the threads did not all get a core of their own (another process, or more threads than cores),
 * and every %peak ratio of the run comes out high.
 */
export function limitWarnings(limits: Limits): string[] {
  const out: string[] = [];
  for (const p of limits.peak) {
    if (p.threads === 1) continue;
    const one = limits.peak.find((q) => q.level === p.level && q.threads === 1);
    if (one && p.gflops < 0.75 * p.threads * one.gflops) {
      out.push(
        `peak ${p.level} on ${p.threads} threads is ${p.gflops.toFixed(1)} GFLOP/s, only ${(p.gflops / one.gflops).toFixed(2)}x ` +
          `one thread's ${one.gflops.toFixed(1)}: the threads did not each get a core (another process running?), ` +
          'so ratios to this peak read high',
      );
    }
  }
  return out;
}

/** 1536 -> "1.5 KiB", 16777216 -> "16 MiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let x = n;
  while (x >= 1024 && u < units.length - 1) {
    x /= 1024;
    u++;
  }
  const s = x >= 100 || Number.isInteger(x) ? x.toFixed(0) : x.toFixed(1);
  return `${s} ${units[u]}`;
}

/** The limits table of `seqkern bench --limits`. */
export function formatLimits(limits: Limits): string {
  const lines: string[] = [];
  const threadCounts = [...new Set([...limits.peak.map((p) => p.threads), ...limits.bandwidth.map((b) => b.threads)])].sort(
    (a, b) => b - a,
  );
  const th = (t: number) => `${t} thread${t > 1 ? 's' : ''}`;
  if (limits.peak.length) {
    lines.push('FP32 FMA peak, GFLOP/s (independent accumulator chains, best of repeats)');
    lines.push(['  level'.padEnd(12), ...threadCounts.map((t) => th(t).padStart(12))].join(''));
    for (const level of SIMD_LEVELS) {
      const row = threadCounts.map((t) => limits.peak.find((p) => p.level === level && p.threads === t));
      if (row.every((r) => !r)) continue;
      lines.push([`  ${level}`.padEnd(12), ...row.map((r) => (r ? r.gflops.toFixed(1) : '-').padStart(12))].join(''));
    }
  }
  if (limits.bandwidth.length) {
    const level = limits.bandwidth[0].level;
    if (lines.length) lines.push('');
    lines.push(`Bandwidth, GB/s (best sample; ${level} loads/stores, ordinary stores; size = all arrays of all threads;`);
    lines.push('  copy b=a counts read + write, triad a=b+s*c 2 reads + 1 write, update a=s*a read + write in place,');
    lines.push('  read s+=a the read; write-allocate reads not counted, as STREAM)');
    const cols: [BandwidthKind, number][] = [];
    for (const kind of BANDWIDTH_KINDS) for (const t of threadCounts) cols.push([kind, t]);
    const used = cols.filter(([k, t]) => limits.bandwidth.some((b) => b.kind === k && b.threads === t));
    lines.push(['  size'.padEnd(12), ...used.map(([k, t]) => `${k} ${t}T`.padStart(12))].join(''));
    const sizes = [...new Set(limits.bandwidth.map((b) => b.bytes))].sort((a, b) => a - b);
    for (const size of sizes) {
      const cells = used.map(([k, t]) => limits.bandwidth.find((b) => b.kind === k && b.threads === t && b.bytes === size));
      lines.push([`  ${formatBytes(size)}`.padEnd(12), ...cells.map((c) => (c ? c.gbs.toFixed(1) : '-').padStart(12))].join(''));
    }
  }
  return lines.join('\n');
}
