// The `seqkern` command (package.json "bin" -> bin/seqkern.js -> here):
//   seqkern info                      what this build and machine offer
//   seqkern bench                     the default suite (bench/suites.ts), table on stdout
//   seqkern bench --op <name> ...     one case
//   seqkern bench --limits            this machine's FP32 peak and copy/triad bandwidth
// Progress goes to stderr, results to stdout, `--json FILE` writes everything measured. Bad flags: exit 2.
import { writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { info, setNumThreads, setSimdLevel, SeqkernError, type Info } from '../src/index.js';
import type { BenchDType } from './formulas.js';
import { formatLimits, LimitProbe, limitWarnings, measureAllLimits, SIMD_LEVELS, type SimdName } from './limits.js';
import { measure, type Timing } from './measure.js';
import { OPS, shapeLabel, InputPool, type Algorithm, type BenchBackend, type BenchCase, type OpName } from './registry.js';
import { formatRows, formatSummary, legend, makeRow, type BenchReport, type BenchRow, type CaseLimits } from './report.js';
import { autoChecks, defaultSuite, scalingChecks } from './suites.js';

export const USAGE = `usage: seqkern <command> [flags]

commands:
  info [--json]            build, SIMD level, CPU features, threads, CUDA
  bench                    the default suite (a few minutes on 2 cores)
  bench --op <name> ...    one case; ops: ${Object.keys(OPS).join(', ')}
  bench --limits           FP32 FMA peak per SIMD level, copy/triad/update bandwidth per size
  help                     this text

bench flags:
  --op gated-delta|delta-step
  --B --T --H --HV --K --V  shape (gated-delta: q,k [B,T,H,K], v [B,T,HV,V]; defaults B=1 T=4096 H=16 HV=32 K=V=128)
  --N                       decode-step sequences (delta-step: q,k [N,H,K], state [N,HV,K,V]; default 8)
  --dtype float32|float16|bfloat16        input dtype (default float32)
  --algorithm auto|chunk|recurrent        gated-delta only (default auto)
  --backend cpu|reference                 (default cpu, reference when the addon is not built)
  --threads N               pool size (default: one per core)
  --simd avx512|avx2|portable             force a SIMD level the CPU has
  --seconds S               Benchmark.js max time per case (default 1); limit probes take min(1, max(0.2, S/2))
  --seed N                  input seed (default 1)
  --json FILE               write {machine, limits, rows, summary, settings}
  --limits                  print the machine limits (alone, or before the case given by --op)
`;

/** A command-line mistake: message + usage on stderr, exit status 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

export interface BenchArgs {
  op?: OpName;
  B?: number;
  N?: number;
  T?: number;
  H?: number;
  HV?: number;
  K?: number;
  V?: number;
  dtype: BenchDType;
  algorithm?: Algorithm;
  /** Absent: cpu when the addon loaded, else reference. */
  backend?: BenchBackend;
  threads?: number;
  simd?: SimdName;
  json?: string;
  limits: boolean;
  seconds: number;
  seed: number;
  help: boolean;
}

const BENCH_OPTIONS = {
  op: { type: 'string' },
  B: { type: 'string' },
  N: { type: 'string' },
  T: { type: 'string' },
  H: { type: 'string' },
  HV: { type: 'string' },
  K: { type: 'string' },
  V: { type: 'string' },
  dtype: { type: 'string' },
  algorithm: { type: 'string' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  simd: { type: 'string' },
  json: { type: 'string' },
  limits: { type: 'boolean' },
  seconds: { type: 'string' },
  seed: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function strictParse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true as const, allowPositionals: false as const });
  } catch (e) {
    // node:util's messages already name the flag ("Unknown option '--foo'").
    throw new UsageError((e as Error).message);
  }
}

function oneOf<T extends string>(flag: string, v: string | undefined, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${flag}: expected one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

function positiveInt(flag: string, v: string | undefined, max = 2 ** 31 - 1): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) throw new UsageError(`--${flag}: expected an integer in [1, ${max}], got '${v}'`);
  return Number(v);
}

/** Parses the flags after `bench`. Throws UsageError on anything it does not know or cannot use. */
export function parseBenchArgs(argv: string[]): BenchArgs {
  const { values: v } = strictParse(argv, BENCH_OPTIONS);
  const secondsText = v.seconds;
  let seconds = 1;
  if (secondsText !== undefined) {
    seconds = Number(secondsText);
    if (!/^[0-9.eE+-]+$/.test(secondsText) || !(seconds > 0 && seconds <= 600)) {
      throw new UsageError(`--seconds: expected a number in (0, 600], got '${secondsText}'`);
    }
  }
  const a: BenchArgs = {
    op: oneOf('op', v.op, Object.keys(OPS) as OpName[]),
    B: positiveInt('B', v.B),
    N: positiveInt('N', v.N),
    T: positiveInt('T', v.T),
    H: positiveInt('H', v.H),
    HV: positiveInt('HV', v.HV),
    K: positiveInt('K', v.K),
    V: positiveInt('V', v.V),
    dtype: oneOf('dtype', v.dtype, ['float32', 'float16', 'bfloat16'] as const) ?? 'float32',
    algorithm: oneOf('algorithm', v.algorithm, ['auto', 'chunk', 'recurrent'] as const),
    backend: oneOf('backend', v.backend, ['cpu', 'reference'] as const),
    threads: positiveInt('threads', v.threads, 1024),
    simd: oneOf('simd', v.simd, SIMD_LEVELS),
    json: v.json,
    limits: v.limits === true,
    seconds,
    seed: positiveInt('seed', v.seed) ?? 1,
    help: v.help === true,
  };
  if (a.json === '') throw new UsageError('--json: expected a file name');
  const shapeFlags = (['B', 'N', 'T', 'H', 'HV', 'K', 'V', 'algorithm'] as const).filter((f) => a[f] !== undefined);
  if (!a.op && shapeFlags.length) {
    throw new UsageError(`--${shapeFlags[0]} selects a case: add --op ${Object.keys(OPS).join('|')}`);
  }
  if (a.op === 'delta-step') {
    for (const f of ['T', 'algorithm'] as const) if (a[f] !== undefined) throw new UsageError(`--${f} does not apply to --op delta-step`);
    if (a.B !== undefined && a.N !== undefined && a.B !== a.N) throw new UsageError('--op delta-step: give --N (or --B), not both');
  }
  if (a.op === 'gated-delta' && a.N !== undefined) throw new UsageError('--N applies to --op delta-step; gated-delta takes --B');
  return a;
}

/** The case `--op` selects, defaults from the registry. */
export function caseFromArgs(a: BenchArgs, defaultBackend: BenchBackend = 'cpu'): BenchCase {
  if (!a.op) throw new UsageError('no --op');
  const d = OPS[a.op].defaults;
  return {
    op: a.op,
    B: a.op === 'delta-step' ? (a.N ?? a.B ?? d.B) : (a.B ?? d.B),
    T: a.op === 'delta-step' ? 1 : (a.T ?? d.T),
    H: a.H ?? d.H,
    HV: a.HV ?? d.HV,
    K: a.K ?? d.K,
    V: a.V ?? d.V,
    dtype: a.dtype,
    algorithm: a.algorithm ?? 'auto',
    backend: a.backend ?? defaultBackend,
  };
}

export interface IO {
  out(s: string): void;
  err(s: string): void;
  /** stderr is a terminal: progress rewrites one line. */
  tty: boolean;
}

const processIO: IO = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: process.stderr.isTTY === true,
};

/** One progress line on stderr, rewritten in place on a terminal, one line per step otherwise. */
class Progress {
  private width = 0;
  constructor(private readonly io: IO) {}
  show(s: string): void {
    if (this.io.tty) {
      this.io.err(`\r${s.padEnd(this.width)}`);
      this.width = Math.max(this.width, s.length);
    } else {
      this.io.err(`${s}\n`);
    }
  }
  clear(): void {
    if (this.io.tty && this.width) this.io.err(`\r${' '.repeat(this.width)}\r`);
    this.width = 0;
  }
}

export function formatInfo(i: Info): string {
  const rows: [string, string][] = [['backend', i.backend]];
  if (i.addonPath) rows.push(['addon', i.addonPath]);
  if (i.addonError) rows.push(['addon', `not loaded: ${i.addonError}`]);
  if (i.buildSystem || i.compiler) rows.push(['build', [i.buildSystem, i.compiler].filter(Boolean).join(', ')]);
  if (i.simd) rows.push(['SIMD', `${i.simd} in use (best this CPU runs: ${i.simdBest})`]);
  if (i.cpuFeatures) rows.push(['CPU features', i.cpuFeatures]);
  if (i.threads !== undefined) rows.push(['threads', String(i.threads)]);
  rows.push(['CUDA', i.cuda.available ? 'available' : `not available: ${i.cuda.reason}`]);
  return [`seqkern ${i.version}`, ...rows.map(([k, v]) => `  ${k.padEnd(14)}${v}`)].join('\n');
}

/** Seconds per limit probe, from --seconds. */
export function limitSeconds(seconds: number): number {
  return Math.min(1, Math.max(0.2, seconds / 2));
}

async function runBench(a: BenchArgs, argv: string[], io: IO): Promise<number> {
  if (a.threads !== undefined) setNumThreads(a.threads);
  if (a.simd !== undefined) {
    try {
      setSimdLevel(a.simd);
    } catch (e) {
      throw new UsageError(`--simd ${a.simd}: ${(e as Error).message}`);
    }
  }
  const machine = info();
  const progress = new Progress(io);
  const probe = new LimitProbe(limitSeconds(a.seconds));
  const backend = a.backend ?? machine.backend;
  const cases = a.op ? [caseFromArgs(a, backend)] : a.limits ? [] : defaultSuite({ dtype: a.dtype, backend });
  const poolThreads = machine.threads ?? 1;
  const envOf = (c: BenchCase) =>
    c.backend === 'cpu' && machine.backend === 'cpu' ? { simd: machine.simd ?? 'portable', threads: poolThreads } : { simd: 'none', threads: 1 };

  if (a.limits) {
    if (!probe.available) io.err('seqkern: the native addon is not loaded, so there are no limit probes\n');
    measureAllLimits(probe, poolThreads, (what) => progress.show(`limits: ${what} ...`));
    progress.clear();
    io.out(`${formatLimits(probe.results())}\n`);
  }
  const finished: { c: BenchCase; t: Timing; lim: CaseLimits }[] = [];

  if (cases.length) {
    const native = (c: BenchCase) => c.backend === 'cpu' && machine.backend === 'cpu';
    // The limits each row is divided by: the peak at the level in effect on the pool's threads, copy over
    // the bytes the case moves (and update, for in-place ops, at its working set). Each is measured right after the first case
    // that needs it rather than all up front: on a shared or virtual machine what the threads get drifts
    // over a run, and a limit taken next to its op is the fairest comparison (after, not before, so a case
    // the op rejects fails before any probe runs). The peak is re-probed briefly after every case and the
    // best kept (rows are made at the end, with the final figure); one thread's peak is measured too, to
    // tell when the threads did not each get a core.
    const limitsOf = (c: BenchCase, label: string): CaseLimits => {
      if (!native(c)) return {};
      const e = envOf(c);
      const w = OPS[c.op].work(c);
      progress.show(`${label} limits ...`);
      const level = e.simd as SimdName;
      const known = probe.results().peak.some((p) => p.level === level && p.threads === e.threads);
      const peak = probe.peak(level, e.threads, known ? { seconds: 0.1 } : undefined);
      if (e.threads > 1) probe.peak(level, 1);
      return {
        peak,
        // Copy over the same number of bytes the op moves (arrays totalling w.bytes: a copy reading and
        // writing what the op reads and writes); the in-place update over the op's own working set.
        copy: probe.bandwidth('copy', w.bytes, e.threads),
        update: OPS[c.op].inPlace ? probe.bandwidth('update', w.workingSet, e.threads) : undefined,
      };
    };
    const inputs = new InputPool(cases, a.seed);
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      const label = `[${i + 1}/${cases.length}] ${c.op} ${shapeLabel(c)} ${c.dtype} ${c.op === 'delta-step' ? 'step' : c.algorithm}`;
      progress.show(`${label} inputs ...`);
      const fn = OPS[c.op].prepare(c, inputs);
      progress.show(`${label} timing ...`);
      let t: Timing;
      try {
        t = await measure(fn, { seconds: a.seconds });
      } finally {
        progress.clear();
      }
      finished.push({ c, t, lim: limitsOf(c, label) });
    }
    progress.clear();
  }
  const rows: BenchRow[] = finished.map(({ c, t, lim }) => makeRow(c, t, envOf(c), lim.peak, lim.copy, lim.update));
  if (rows.length) {
    if (a.limits) io.out('\n');
    io.out(`${formatRows(rows)}\n\n${legend(rows)}\n`);
  }
  const timed = rows.map((r, i) => ({ case: cases[i], median: r.timeMs.median / 1e3 }));
  const scaling = scalingChecks(timed);
  const auto = autoChecks(timed);
  if (scaling.length || auto.length) io.out(`\n${formatSummary(scaling, auto)}\n`);
  const warnings = probe.available ? limitWarnings(probe.results()) : [];
  for (const w of warnings) io.err(`seqkern: warning: ${w}\n`);

  if (a.json) {
    const report: BenchReport = {
      machine,
      limits: probe.available ? probe.results() : null,
      rows,
      summary: { scaling, auto },
      warnings,
      settings: {
        argv,
        seconds: a.seconds,
        limitSeconds: probe.seconds,
        seed: a.seed,
        date: new Date().toISOString(),
        node: process.version,
      },
    };
    writeFileSync(a.json, `${JSON.stringify(report, null, 2)}\n`);
    io.err(`seqkern: wrote ${a.json}\n`);
  }
  return 0;
}

/** Runs the command line `argv` (without node and the script) and returns the exit status. */
export async function main(argv: string[], io: IO = processIO): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info': {
        const { values } = strictParse(rest, { json: { type: 'boolean' } } as const);
        io.out(values.json ? `${JSON.stringify(info(), null, 2)}\n` : `${formatInfo(info())}\n`);
        return 0;
      }
      case 'bench': {
        const a = parseBenchArgs(rest);
        if (a.help) {
          io.out(USAGE);
          return 0;
        }
        return await runBench(a, argv, io);
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`seqkern: ${e.message}\n\n${USAGE}`);
      return e.exitCode;
    }
    if (e instanceof SeqkernError) {
      io.err(`seqkern: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
