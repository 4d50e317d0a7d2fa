// The `seqkern` command (package.json "bin" -> bin/seqkern.js -> here):
//   seqkern info                      what this build and machine offer
//   seqkern bench                     the default suite (bench/suites.ts), tables on stdout
//   seqkern bench --suite <family>    one family's part of it (delta, softmax, attention)
//   seqkern bench --op <name> ...     one case (softmax with no shape: its suite cases)
//   seqkern bench --limits            this machine's FP32 peak and copy/triad/update/read bandwidth
// Progress goes to stderr, results to stdout, `--json FILE` writes everything measured. Bad flags: exit 2.
import { writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { info, setNumThreads, setSimdLevel, SeqkernError, type Info } from '../src/index.js';
import type { BenchDType } from './formulas.js';
import { runAsyncBench } from './async.js';
import { warmup, type DeltaCalibration } from '../src/index.js';
import { formatLimits, LimitProbe, limitWarnings, measureAllLimits, SIMD_LEVELS, type SimdName } from './limits.js';
import { measure, pool, type Timing } from './measure.js';
import {
  caseLabel, entryOf, InputPool, OPS, shapeLabel, SOFTMAX_ALGORITHMS,
  type Algorithm, type AttentionCase, type BenchBackend, type BenchCase, type Comparison, type GateKind, type HyperCase, type NalaCase, type OpName,
  type SoftmaxAlgorithm,
} from './registry.js';
import type { HyperInputKind } from './inputs.js';
import {
  formatReport, formatSummary, makeRow, type BenchReport, type BenchRow, type CaseLimits, type PartTiming, type SkippedCase,
} from './report.js';
import {
  autoChecks, defaultSuite, gateChecks, scalingChecks, softmaxChecks, softmaxHotRows, softmaxSuite, SUITES, type SuiteName,
} from './suites.js';
import { QWEN3_NEXT_ATTN, QWEN3_NEXT_GDN, servingSuite, SUITE_ATTN_LAYER_LENS } from './suites.js';

export const USAGE = `usage: seqkern <command> [flags]

commands:
  info [--json]            build, SIMD level, CPU features, threads, CUDA
  info --calibrate          also run the one-time calibrations (warmup()) and print what they chose
  bench                    the default suite: delta, softmax, attention, hyper, nala (about five minutes on 2 cores)
  bench --suite <family>   one family of it: ${SUITES.join('|')} (default all)
  bench --op <name> ...    one case; ops: ${Object.keys(OPS).join(', ')}
  bench --limits           FP32 FMA peak per SIMD level, copy/triad/update/read bandwidth per size
  bench --async            an Async call's cost over sync (delta step, attention decode; back to back and 1 ms
                           apart) and a chained 8-layer decode step vs its 8 syncs [--seconds S --threads N --json F]
  help                     this text

bench flags:
  --op gated-delta|delta-step|softmax|attention|hyper|nala|kvcache|rotary|delta-pool-step|linear|conv-update|
       rms-norm-gated|gdn-layer|attn-layer
  --B --T --H --HV --K --V  gated-delta: q,k [B,T,H,K], v [B,T,HV,V] (defaults B=1 T=4096 H=16 HV=32 K=V=128)
  --N --H --HV --K --V      delta-step: q,k [N,H,K], state [N,HV,K,V] (default N=8)
  --algorithm auto|chunk|recurrent        gated-delta (default auto)
  --rows R --cols C         softmax over x [R, C]; neither: the suite's shapes (rows of 1K, 32K, 1M hot, and the
                            1 GiB batch of 32K rows); --cols alone: rows making 1 MiB of float32 (at least 1);
                            --rows alone: C = 32768
  --algorithm two-pass|three-pass         softmax (default: both, and their ratio)
  --B --T --S --Hq --Hk --D --Dv          attention: q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] (defaults B=1 T=4096
                            S=T Hq=8 Hk=Hq D=128 Dv=D; --H sets Hq and Hk)
  --causal                  attention: causal mask, bottom-right aligned when S > T (default: no mask)
  --gate none|elementwise|headwise        attention: gate logits [B,T,Hq,Dv] or [B,T,Hq] (default none)
  --B --T --S --H --Hq --Hk --D --Dv --causal             hyper: as attention (defaults B=1 T=8192 S=T H=2 D=64); the
                            call is hyperAttention with its defaults, then exact attention on the same input (its
                            time, the speedup and the relative error of HyperAttention's output against it)
  --inputs gaussian|clustered             hyper: standard normal q, k, v, or keys in tight clusters of 64 with
  --B --T --H --Hk --K --V --causal       nala: q [B,T,H,K], k [B,T,Hk,K], v [B,T,Hk,V] (defaults B=1 T=16384 H=Hk=8
                            K=V=64), no rope; non-causal unless --causal
                            queries near them (bench/inputs.ts hyperInputs; default gaussian)
  --op kvcache|rotary       the serving suite's cases of that op (kvcache: the caches' dtype from --dtype, q float32)
  --op linear|conv-update|rms-norm-gated|gdn-layer|attn-layer   with no shape flags: the serving suite's cases
                            of that op in --dtype (linear, the layers: the weights' dtype; x, y float32)
  --rows M --K IN --N OUT   linear: x [M, IN] float32, weight [OUT, IN] (defaults M=1 IN=OUT=4096; M <= 8: GEMV)
  --N --D --W               conv-update: x [N, D], weight [D, W], pool of 2N slots (defaults N=8 D=1048576 W=4)
  --rows --H                rms-norm-gated: x, gate [rows, H], weight [H] (defaults rows=131072 H=128)
  --B                       gdn-layer: B tokens (default 8), Qwen3-Next heads at hidden 2048, pools of 2B slots
  --B --S                   attn-layer: B sequences (default 8) with caches of S tokens each (default: the
                            suite's lengths, 4096,1000,2048,3000,8192,512,6000,100, cycled to B)
  --dtype float32|float16|bfloat16        input dtype (default float32)
  --backend cpu|reference|cuda            (default cpu, reference when the addon is not built; cuda: the GPU
                            suite of bench/gpu.ts with the GPU's copy and mma limits, --json FILE for its results)
  --threads N               pool size (default: one per core)
  --simd avx512|avx2|portable             force a SIMD level the CPU has
  --seconds S               Benchmark.js max time per case (default 1); limit probes take min(1, max(0.2, S/2))
  --rounds N                cases compared with each other (same op and shape: two-pass / three-pass, gated /
                            ungated, auto / chunk / recurrent) are timed in N interleaved rounds of S/N seconds
                            each and their samples pooled, so a drift of the machine mid-run (memory bandwidth
                            on a VM) hits both sides of a ratio alike (default 3; 1: one after the other)
  --seed N                  input seed (default 1)
  --json FILE               write {machine, limits, rows, skipped, summary, settings}
  --limits                  print the machine limits (alone, or before the cases given by --op or --suite)

A case whose op this build does not implement yet is listed as skipped (exit status 0); in a suite, a case
that fails is listed as FAILED and the others still run (exit status 1).
`;

/** A command-line mistake: message + usage on stderr, exit status 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

export interface BenchArgs {
  op?: OpName;
  suite?: SuiteName;
  B?: number;
  N?: number;
  T?: number;
  H?: number;
  HV?: number;
  K?: number;
  V?: number;
  rows?: number;
  cols?: number;
  S?: number;
  Hq?: number;
  Hk?: number;
  D?: number;
  Dv?: number;
  /** conv-update: the kernel width. */
  W?: number;
  /** attention: true with --causal, absent otherwise. */
  causal?: boolean;
  gate?: GateKind;
  /** hyper: the input kind. */
  inputs?: HyperInputKind;
  dtype: BenchDType;
  /** gated-delta: auto|chunk|recurrent; softmax: two-pass|three-pass. */
  algorithm?: Algorithm | SoftmaxAlgorithm;
  /** Absent: cpu when the addon loaded, else reference. */
  backend?: BenchBackend;
  threads?: number;
  simd?: SimdName;
  json?: string;
  limits: boolean;
  seconds: number;
  rounds: number;
  seed: number;
  help: boolean;
}

const BENCH_OPTIONS = {
  op: { type: 'string' },
  suite: { type: 'string' },
  B: { type: 'string' },
  N: { type: 'string' },
  T: { type: 'string' },
  H: { type: 'string' },
  HV: { type: 'string' },
  K: { type: 'string' },
  V: { type: 'string' },
  rows: { type: 'string' },
  cols: { type: 'string' },
  S: { type: 'string' },
  Hq: { type: 'string' },
  Hk: { type: 'string' },
  D: { type: 'string' },
  Dv: { type: 'string' },
  W: { type: 'string' },
  causal: { type: 'boolean' },
  gate: { type: 'string' },
  inputs: { type: 'string' },
  dtype: { type: 'string' },
  algorithm: { type: 'string' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  simd: { type: 'string' },
  json: { type: 'string' },
  limits: { type: 'boolean' },
  seconds: { type: 'string' },
  rounds: { type: 'string' },
  seed: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The flags that select a case, and which ops take each. */
type CaseFlag = 'B' | 'N' | 'T' | 'H' | 'HV' | 'K' | 'V' | 'rows' | 'cols' | 'S' | 'Hq' | 'Hk' | 'D' | 'Dv' | 'W' | 'causal' | 'gate' | 'algorithm' | 'inputs';
const CASE_FLAGS: readonly CaseFlag[] = ['B', 'N', 'T', 'H', 'HV', 'K', 'V', 'rows', 'cols', 'S', 'Hq', 'Hk', 'D', 'Dv', 'W', 'causal', 'gate', 'algorithm', 'inputs'];
const OP_FLAGS: Record<OpName, readonly CaseFlag[]> = {
  'gated-delta': ['B', 'T', 'H', 'HV', 'K', 'V', 'algorithm'],
  'delta-step': ['N', 'B', 'H', 'HV', 'K', 'V'],
  softmax: ['rows', 'cols', 'algorithm'],
  nala: ['B', 'T', 'H', 'Hk', 'K', 'V', 'causal'],
  attention: ['B', 'T', 'S', 'H', 'Hq', 'Hk', 'D', 'Dv', 'causal', 'gate'],
  hyper: ['B', 'T', 'S', 'H', 'Hq', 'Hk', 'D', 'Dv', 'causal', 'inputs'],
  kvcache: [],
  rotary: [],
  'delta-pool-step': ['N', 'B', 'H', 'HV', 'K', 'V'],
  linear: ['rows', 'K', 'N'],
  'conv-update': ['N', 'D', 'W'],
  'rms-norm-gated': ['rows', 'H'],
  'gdn-layer': ['B'],
  'attn-layer': ['B', 'S'],
};
/** The serving ops whose --op with no shape flags runs the serving suite's cases of that op. */
const SERVING_SUITE_OPS: readonly OpName[] = ['kvcache', 'rotary', 'linear', 'conv-update', 'rms-norm-gated', 'gdn-layer', 'attn-layer'];
const DELTA_ALGORITHMS: readonly Algorithm[] = ['auto', 'chunk', 'recurrent'];

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
  const op = oneOf('op', v.op, Object.keys(OPS) as OpName[]);
  const a: BenchArgs = {
    op,
    suite: oneOf('suite', v.suite, SUITES),
    B: positiveInt('B', v.B),
    N: positiveInt('N', v.N),
    T: positiveInt('T', v.T),
    H: positiveInt('H', v.H),
    HV: positiveInt('HV', v.HV),
    K: positiveInt('K', v.K),
    V: positiveInt('V', v.V),
    rows: positiveInt('rows', v.rows),
    cols: positiveInt('cols', v.cols),
    S: positiveInt('S', v.S),
    Hq: positiveInt('Hq', v.Hq),
    Hk: positiveInt('Hk', v.Hk),
    D: positiveInt('D', v.D),
    Dv: positiveInt('Dv', v.Dv),
    W: positiveInt('W', v.W, 8),
    causal: v.causal === true ? true : undefined,
    gate: oneOf('gate', v.gate, ['none', 'elementwise', 'headwise'] as const),
    inputs: oneOf('inputs', v.inputs, ['gaussian', 'clustered'] as const),
    dtype: oneOf('dtype', v.dtype, ['float32', 'float16', 'bfloat16'] as const) ?? 'float32',
    algorithm: oneOf('algorithm', v.algorithm, op === 'softmax' ? [...SOFTMAX_ALGORITHMS, 'auto'] : op === 'gated-delta' || !op ? DELTA_ALGORITHMS : [...DELTA_ALGORITHMS, ...SOFTMAX_ALGORITHMS]),
    backend: oneOf('backend', v.backend, ['cpu', 'reference', 'cuda'] as const) as BenchBackend | undefined,
    threads: positiveInt('threads', v.threads, 1024),
    simd: oneOf('simd', v.simd, SIMD_LEVELS),
    json: v.json,
    limits: v.limits === true,
    seconds,
    rounds: positiveInt('rounds', v.rounds, 100) ?? 3,
    seed: positiveInt('seed', v.seed) ?? 1,
    help: v.help === true,
  };
  if (a.json === '') throw new UsageError('--json: expected a file name');
  if (a.op && a.suite) throw new UsageError('--op runs one case and --suite a family of them: give one');
  const given = CASE_FLAGS.filter((f) => a[f] !== undefined);
  if (!a.op && given.length) {
    throw new UsageError(`--${given[0]} selects a case: add --op ${Object.keys(OPS).join('|')}`);
  }
  if (a.op === 'gated-delta' && a.N !== undefined) throw new UsageError('--N applies to --op delta-step; gated-delta takes --B');
  if (a.op) {
    const op = a.op;
    for (const f of given) {
      if (!OP_FLAGS[op].includes(f)) {
        const takers = (Object.keys(OP_FLAGS) as OpName[]).filter((o) => OP_FLAGS[o].includes(f));
        throw new UsageError(`--${f} does not apply to --op ${op}${takers.length ? ` (it is for --op ${takers.join(', ')})` : ''}`);
      }
    }
  }
  if (a.op === 'delta-step' && a.B !== undefined && a.N !== undefined && a.B !== a.N) throw new UsageError('--op delta-step: give --N (or --B), not both');
  if (a.op === 'attention' || a.op === 'hyper') {
    const c = caseFromArgs(a) as AttentionCase | HyperCase;
    if (c.Hq % c.Hk !== 0) throw new UsageError(`--op ${a.op}: Hq (${c.Hq}) must be a multiple of Hk (${c.Hk})`);
    if (c.op === 'hyper' && c.causal && c.S !== c.T) throw new UsageError(`--op hyper --causal: S (${c.S}) must equal T (${c.T})`);
  }
  if (a.op === 'nala') {
    const c = caseFromArgs(a) as NalaCase;
    if (c.H % c.Hk !== 0) throw new UsageError(`--op nala: H (${c.H}) must be a multiple of Hk (${c.Hk})`);
  }
  return a;
}

/** The case `--op` selects, defaults from the registry (softmax: one shape, two-pass unless --algorithm). */
export function caseFromArgs(a: BenchArgs, defaultBackend: BenchBackend = 'cpu'): BenchCase {
  if (!a.op) throw new UsageError('no --op');
  const backend = a.backend ?? defaultBackend;
  switch (a.op) {
    case 'softmax': {
      const cols = a.cols ?? 32768;
      const algorithm = (a.algorithm as SoftmaxAlgorithm | undefined) ?? 'auto';
      return { op: 'softmax', rows: a.rows ?? softmaxHotRows(cols), cols, dtype: a.dtype, algorithm, backend };
    }
    case 'attention': {
      const T = a.T ?? 4096;
      const Hq = a.Hq ?? a.H ?? 8;
      const D = a.D ?? 128;
      return {
        op: 'attention',
        B: a.B ?? 1,
        T,
        S: a.S ?? T,
        Hq,
        Hk: a.Hk ?? a.H ?? Hq,
        D,
        Dv: a.Dv ?? D,
        causal: a.causal === true,
        gate: a.gate ?? 'none',
        dtype: a.dtype,
        backend,
      };
    }
    case 'hyper': {
      const T = a.T ?? 8192;
      const Hq = a.Hq ?? a.H ?? 2;
      const D = a.D ?? 64;
      return {
        op: 'hyper', B: a.B ?? 1, T, S: a.S ?? T, Hq, Hk: a.Hk ?? a.H ?? Hq, D, Dv: a.Dv ?? D, causal: a.causal === true,
        inputs: a.inputs ?? 'gaussian', dtype: a.dtype, backend,
      };
    }
    case 'nala': {
      const H = a.H ?? 8;
      return { op: 'nala', B: a.B ?? 1, T: a.T ?? 16384, H, Hk: a.Hk ?? H, K: a.K ?? 64, V: a.V ?? 64, causal: a.causal === true, dtype: a.dtype, backend };
    }
    case 'kvcache':
    case 'rotary':
      return casesFromArgs(a, backend)[0];
    case 'linear':
      return { op: 'linear', M: a.rows ?? 1, K: a.K ?? 4096, N: a.N ?? 4096, dtype: a.dtype, backend };
    case 'conv-update': {
      const N = a.N ?? 8;
      return { op: 'conv-update', N, D: a.D ?? 1 << 20, W: a.W ?? 4, slots: 2 * N, dtype: a.dtype, backend };
    }
    case 'rms-norm-gated':
      return { op: 'rms-norm-gated', rows: a.rows ?? 131072, H: a.H ?? 128, dtype: a.dtype, backend };
    case 'gdn-layer': {
      const B = a.B ?? 8;
      return { op: 'gdn-layer', B, ...QWEN3_NEXT_GDN, slots: 2 * B, dtype: a.dtype, backend };
    }
    case 'attn-layer': {
      const B = a.B ?? 8;
      const lens = Array.from({ length: B }, (_, b) => a.S ?? SUITE_ATTN_LAYER_LENS[b % SUITE_ATTN_LAYER_LENS.length]);
      return { op: 'attn-layer', lens, ...QWEN3_NEXT_ATTN, dtype: a.dtype, backend };
    }
    default: {
      const d = OPS[a.op].defaults;
      return {
        op: a.op,
        B: a.op === 'delta-step' || a.op === 'delta-pool-step' ? (a.N ?? a.B ?? d.B) : (a.B ?? d.B),
        T: a.op === 'delta-step' || a.op === 'delta-pool-step' ? 1 : (a.T ?? d.T),
        H: a.H ?? d.H,
        HV: a.HV ?? d.HV,
        K: a.K ?? d.K,
        V: a.V ?? d.V,
        dtype: a.dtype,
        algorithm: (a.algorithm as Algorithm | undefined) ?? 'auto',
        backend,
      };
    }
  }
}

/**
 * The cases a command line runs: --op: its case (softmax: both algorithms unless --algorithm; with no
 * --rows/--cols, the softmax suite's shapes); --suite or nothing: that suite (all); --limits alone: none.
 */
export function casesFromArgs(a: BenchArgs, defaultBackend: BenchBackend = 'cpu'): BenchCase[] {
  const backend = a.backend ?? defaultBackend;
  if (a.op === 'softmax') {
    const algorithms = a.algorithm ? [a.algorithm as SoftmaxAlgorithm] : SOFTMAX_ALGORITHMS;
    if (a.rows === undefined && a.cols === undefined) return softmaxSuite({ dtype: a.dtype, backend }, algorithms);
    return algorithms.map((algorithm) => caseFromArgs({ ...a, algorithm }, backend));
  }
  // The serving ops alone: their suite's cases of that op (--dtype picks the kvcache caches' and rotary's dtype,
  // linear's and the layers' weights'); a shape flag makes one case of the op instead (not kvcache, rotary).
  const shaped = a.op !== undefined && OP_FLAGS[a.op].some((f) => a[f] !== undefined);
  if (a.op && SERVING_SUITE_OPS.includes(a.op) && !shaped) {
    const cases = servingSuite({ dtype: a.dtype, backend }).filter((c) => c.op === a.op);
    const same = cases.filter((c) => c.dtype === a.dtype);
    if (same.length) return same;
    // No suite case in that dtype: the cases of the suite's first dtype, in this one.
    const first = cases.filter((c) => c.dtype === cases[0].dtype);
    return first.map((c) => ({ ...c, dtype: a.dtype }) as BenchCase);
  }
  if (a.op) return [caseFromArgs(a, backend)];
  if (a.limits && !a.suite) return [];
  return defaultSuite({ dtype: a.dtype, backend, suite: a.suite ?? 'all' });
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

/** `seqkern info --calibrate`: the delta chunk/recurrent races run, one line each. */
export function formatCalibrations(cs: readonly DeltaCalibration[]): string {
  if (!cs.length) return 'calibrations: none (no native addon)';
  return ['calibrations (delta algorithm: \'auto\', prefills of >= 64 tokens per sequence):',
    ...cs.map((c) => `  K=${c.K} V=${c.V}: ${c.algorithm} (chunk ${(c.chunkNs / 1e6).toFixed(2)} ms, recurrent ${(c.recurrentNs / 1e6).toFixed(2)} ms; ${c.simd}, ${c.threads} threads)`),
  ].join('\n');
}

/** Seconds per limit probe, from --seconds. */
export function limitSeconds(seconds: number): number {
  return Math.min(1, Math.max(0.2, seconds / 2));
}

/** The op threw because this build does not have it yet (the stubs of a family being written). */
function notImplemented(e: unknown): boolean {
  return e instanceof Error && /not implemented/i.test(e.message);
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
  const cases = casesFromArgs(a, backend);
  // One case asked for by --op runs whatever its size; a suite on the float64 reference backend skips the
  // cases that would take minutes there.
  const suiteRun = !a.op || cases.length > 1;
  const poolThreads = machine.threads ?? 1;
  const envOf = (c: BenchCase) =>
    c.backend === 'cpu' && machine.backend === 'cpu' ? { simd: machine.simd ?? 'portable', threads: poolThreads } : { simd: 'none', threads: 1 };

  if (a.limits) {
    if (!probe.available) io.err('seqkern: the native addon is not loaded, so there are no limit probes\n');
    measureAllLimits(probe, poolThreads, (what) => progress.show(`limits: ${what} ...`));
    progress.clear();
    io.out(`${formatLimits(probe.results())}\n`);
  }
  const finished: { c: BenchCase; t: Timing; lim: CaseLimits; cmp?: Comparison; parts?: PartTiming[] }[] = [];
  const skipped: SkippedCase[] = [];
  const skip = (c: BenchCase, status: SkippedCase['status'], reason: string) =>
    skipped.push({ op: c.op, shape: shapeLabel(c), label: caseLabel(c), status, reason });

  if (cases.length) {
    const native = (c: BenchCase) => c.backend === 'cpu' && machine.backend === 'cpu';
    // The limits each row is divided by (bench/registry.ts OpEntry.limits): the peak at the level in effect
    // on the pool's threads, copy or triad over the bytes the case moves, update (in-place ops) at its
    // working set. Each is measured right after the first case that needs it rather than all up front: on a
    // shared or virtual machine what the threads get drifts over a run, and a limit taken next to its op is
    // the fairest comparison (after, not before, so a case the op rejects fails before any probe runs). The
    // peak is re-probed briefly after every case that uses it and the best kept (rows are made at the end,
    // with the final figure); one thread's peak is measured too, to tell when the threads did not each get
    // a core.
    const limitsOf = (c: BenchCase, label: string): CaseLimits => {
      if (!native(c)) return {};
      const e = envOf(c);
      const need = entryOf(c).limits(c);
      progress.show(`${label} limits ...`);
      const lim: CaseLimits = {};
      if (need.peak) {
        const level = e.simd as SimdName;
        const known = probe.results().peak.some((p) => p.level === level && p.threads === e.threads);
        lim.peak = probe.peak(level, e.threads, known ? { seconds: 0.1 } : undefined);
        if (e.threads > 1) probe.peak(level, 1);
      }
      if (need.copy !== undefined) lim.copy = probe.bandwidth('copy', need.copy, e.threads);
      if (need.triad !== undefined) lim.triad = probe.bandwidth('triad', need.triad, e.threads);
      if (need.update !== undefined) lim.update = probe.bandwidth('update', need.update, e.threads);
      if (need.read !== undefined) lim.read = probe.bandwidth('read', need.read, e.threads);
      return lim;
    };
    const inputs = new InputPool(cases, a.seed);
    // Cases compared with each other sit next to each other in the list (same op, shape, dtype, backend):
    // each such group is timed in interleaved rounds (--rounds) and each case's samples pooled.
    const groupKey = (c: BenchCase) => `${c.op}|${shapeLabel(c)}|${c.dtype}|${c.backend}`;
    for (let i = 0; i < cases.length; ) {
      let end = i + 1;
      while (end < cases.length && groupKey(cases[end]) === groupKey(cases[i])) end++;
      const members: { c: BenchCase; label: string; fn: () => void; parts: Timing[]; failed: boolean }[] = [];
      const fail = (c: BenchCase, e: unknown) => {
        progress.clear();
        if (notImplemented(e)) return skip(c, 'skipped', (e as Error).message);
        if (suiteRun && e instanceof SeqkernError) return skip(c, 'failed', e.message);
        throw e;
      };
      for (let k = i; k < end; k++) {
        const c = cases[k];
        const label = `[${k + 1}/${cases.length}] ${caseLabel(c)}`;
        if (suiteRun && c.backend === 'reference' && entryOf(c).tooBigForReference(c)) {
          skip(c, 'skipped', 'too large for the float64 reference backend in a suite (run it alone with --op)');
          continue;
        }
        try {
          progress.show(`${label} inputs ...`);
          members.push({ c, label, fn: entryOf(c).prepare(c, inputs), parts: [], failed: false });
        } catch (e) {
          fail(c, e);
        }
      }
      const rounds = members.length > 1 ? a.rounds : 1;
      for (let r = 0; r < rounds; r++) {
        for (const m of members.filter((x) => !x.failed)) {
          try {
            progress.show(`${m.label} timing${rounds > 1 ? ` (round ${r + 1}/${rounds})` : ''} ...`);
            m.parts.push(await measure(m.fn, { seconds: a.seconds / rounds, minSamples: rounds > 1 ? 3 : undefined }));
          } catch (e) {
            m.failed = true;
            fail(m.c, e);
          }
        }
      }
      progress.clear();
      for (const m of members.filter((x) => !x.failed)) {
        const entry = entryOf(m.c);
        let cmp: Comparison | undefined;
        if (entry.compare) {
          progress.show(`${m.label} compared with exact attention ...`);
          try {
            cmp = entry.compare(m.c, inputs, a.seconds);
          } catch (e) {
            fail(m.c, e);
            continue;
          }
        }
        // A case made of other ops (the decode layers): each component timed on its own, right after the whole.
        let parts: PartTiming[] | undefined;
        if (entry.parts) {
          try {
            const ps = entry.parts(m.c);
            parts = [];
            for (const p of ps) {
              progress.show(`${m.label} part ${p.name} ...`);
              parts.push({ name: p.name, ms: 1e3 * (await measure(p.fn, { seconds: a.seconds / Math.max(1, ps.length) })).median });
            }
          } catch (e) {
            fail(m.c, e);
            continue;
          }
        }
        finished.push({ c: m.c, t: pool(m.parts), lim: limitsOf(m.c, m.label), cmp, parts });
      }
      i = end;
    }
    progress.clear();
  }
  const rows: BenchRow[] = finished.map(({ c, t, lim, cmp, parts }) => makeRow(c, t, envOf(c), lim, cmp, parts));
  if (rows.length || skipped.length) {
    if (a.limits) io.out('\n');
    io.out(`${formatReport(rows, skipped)}\n`);
  }
  const timed = finished.map(({ c, t }) => ({ case: c, median: t.median }));
  const summary = { scaling: scalingChecks(timed), auto: autoChecks(timed), softmax: softmaxChecks(timed), gate: gateChecks(timed) };
  if (summary.scaling.length || summary.auto.length || summary.softmax.length || summary.gate.length) {
    io.out(`\n${formatSummary(summary.scaling, summary.auto, summary.softmax, summary.gate)}\n`);
  }
  const warnings = probe.available ? limitWarnings(probe.results()) : [];
  for (const w of warnings) io.err(`seqkern: warning: ${w}\n`);

  if (a.json) {
    const report: BenchReport = {
      machine,
      limits: probe.available ? probe.results() : null,
      rows,
      skipped,
      summary,
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
  return skipped.some((s) => s.status === 'failed') ? 1 : 0;
}

/** Runs the command line `argv` (without node and the script) and returns the exit status. */
export async function main(argv: string[], io: IO = processIO): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info': {
        if (rest.includes('--calibrate')) {
          // The one-time calibrations (src/runtime.ts warmup): run them and print what was chosen.
          const { values } = strictParse(rest, { json: { type: 'boolean' }, calibrate: { type: 'boolean' } } as const);
          const w = warmup();
          io.out(values.json ? `${JSON.stringify({ ...info(), calibrations: w.delta }, null, 2)}\n` : `${formatInfo(info())}\n${formatCalibrations(w.delta)}\n`);
          return 0;
        }
        const { values } = strictParse(rest, { json: { type: 'boolean' } } as const);
        io.out(values.json ? `${JSON.stringify(info(), null, 2)}\n` : `${formatInfo(info())}\n`);
        return 0;
      }
      case 'bench': {
        if (rest.includes('--async')) {
          // The Async-overhead and chain cases (bench/async.ts).
          const { values } = strictParse(rest, {
            async: { type: 'boolean' }, seconds: { type: 'string' }, threads: { type: 'string' }, json: { type: 'string' },
          } as const);
          const seconds = values.seconds === undefined ? 1 : Number(values.seconds);
          if (!(seconds > 0)) throw new UsageError(`--seconds: expected a positive number, got '${values.seconds}'`);
          const threads = values.threads === undefined ? undefined : Number(values.threads);
          if (threads !== undefined && !Number.isInteger(threads)) throw new UsageError(`--threads: expected an integer, got '${values.threads}'`);
          return await runAsyncBench({ seconds, threads, json: values.json }, (t) => io.out(t), (t) => io.err(t));
        }
        const a = parseBenchArgs(rest);
        if (a.help) {
          io.out(USAGE);
          return 0;
        }
        if ((a.backend as string) === 'cuda') return (await import('./gpu.js')).runGpuBench(a.json, (s) => io.out(s));
        return await runBench(a, argv, io);
      }
      case 'check': {
        // Every op on every available backend (or --backend cpu|cuda) against the float64 reference.
        const { values } = strictParse(rest, { backend: { type: 'string' }, json: { type: 'string' } } as const);
        const only = values.backend === undefined ? undefined : [oneOf('backend', values.backend, ['cpu', 'cuda'] as const) as string];
        const { runChecks, formatLine } = await import('./check.js');
        const lines = runChecks(only, (l) => io.out(`${formatLine(l)}\n`));
        const bad = lines.filter((l) => !l.ok).length;
        io.out(`${lines.length - bad} of ${lines.length} checks passed\n`);
        if (values.json) (await import('node:fs')).writeFileSync(values.json, `${JSON.stringify({ info: info(), lines }, null, 2)}\n`);
        return bad === 0 && lines.length > 0 ? 0 : 1;
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
