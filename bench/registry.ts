// The benchmark registry (as fla's): each op registered once with its defaults, its work formulas, how to
// build its inputs, the machine limits its rows are divided by and the test file that checks it.
// `seqkern bench --op <name>` and the default suite both go through here. Op families: delta (gated-delta,
// delta-step), softmax, attention; each has its own shape type (bench/formulas.ts).
import {
  attention, gatedDeltaRule, gatedDeltaRuleStep, hyperAttention, nalaAttention, rand, randn, softmaxInto, tensor, zeros,
  type AttentionOptions, type Tensor,
} from '../src/index.js';
import { attentionWithKVCache, type KVCacheOptions } from '../src/ops/kvcache.js';
import { rotary } from '../src/ops/rotary.js';
import { autoAlgorithm } from '../src/ops/delta.js';
import {
  attentionWork, deltaPrefillWork, deltaStepWork, hyperWork, nalaWork, softmaxWork,
  type AttentionShape, type DeltaShape, type HyperShape, type NalaShape, type SoftmaxShape, type Work,
} from './formulas.js';
import { kvcacheWork, rotaryWork, type KVCacheShape, type RotaryShape } from './formulas.js';
import {
  attnLayerWork, convUpdateWork, gdnLayerWork, linearWork, rmsNormGatedWork,
  type AttnLayerShape, type ConvUpdateShape, type GdnLayerShape, type LinearShape, type RmsNormGatedShape,
} from './formulas.js';
import { attnLayer, convUpdateSetup, gdnLayer, linearSetup, normGatedSetup, scatteredSlots, type LayerPart } from './serving.js';
import { attentionGate, attentionInputs, hyperInputs, nalaInputs, softmaxInput, type HyperInputKind } from './inputs.js';
import { fillUniform, uniformTensor, ATTENTION_RANGE } from './inputs.js';
import { relErr } from './quality.js';

export type OpName = 'gated-delta' | 'delta-step' | 'softmax' | 'attention' | 'hyper' | 'nala'
  | 'kvcache' | 'rotary' | 'delta-pool-step' | 'linear' | 'conv-update' | 'rms-norm-gated' | 'gdn-layer' | 'attn-layer';
export type Family = 'delta' | 'softmax' | 'attention' | 'hyper' | 'nala'
  | 'serving';
export const FAMILIES: readonly Family[] = ['delta', 'softmax', 'attention', 'hyper', 'nala', 'serving'];
/** The serving family's ops (issue 14): one table, rates over the bytes each op moves. */
export const SERVING_OPS: readonly OpName[] = ['kvcache', 'rotary', 'linear', 'conv-update', 'rms-norm-gated', 'gdn-layer', 'attn-layer'];
/** The delta ops' algorithms. */
export type Algorithm = 'auto' | 'chunk' | 'recurrent';
export type SoftmaxAlgorithm = 'auto' | 'two-pass' | 'three-pass';
export const SOFTMAX_ALGORITHMS: readonly SoftmaxAlgorithm[] = ['two-pass', 'three-pass']; // both timed side by side; --algorithm auto times the default
export type GateKind = AttentionShape['gate'];
export type BenchBackend = 'cpu' | 'reference';

/** A delta case: a shape (for the decode step B is N, the sequences, and T is 1) and how to run it. */
export interface DeltaCase extends DeltaShape {
  op: 'gated-delta' | 'delta-step' | 'delta-pool-step';
  algorithm: Algorithm;
  backend: BenchBackend;
}

/** softmaxInto over x [rows, cols] into a preallocated output. */
export interface SoftmaxCase extends SoftmaxShape {
  op: 'softmax';
  algorithm: SoftmaxAlgorithm;
  backend: BenchBackend;
}

/** attention(q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv], { causal, gate }). */
export interface AttentionCase extends AttentionShape {
  op: 'attention';
  backend: BenchBackend;
}

/**
 * hyperAttention(q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv], { causal }) with the default options, on Gaussian
 * or clustered inputs (bench/inputs.ts hyperInputs); compared after timing with exact attention on the same
 * input (its time and the relative error, OpEntry.compare).
 */
export interface HyperCase extends HyperShape {
  op: 'hyper';
  inputs: HyperInputKind;
  backend: BenchBackend;
}

/**
 * attentionWithKVCache decode (or chunk) over B caches of the lengths `lens`: q, kNew, vNew float32 (appended in
 * place at the same positions each call, so every call does the same work), caches of `dtype`, contiguous or
 * paged (a shuffled block table).
 */
export interface KVCacheCase extends KVCacheShape {
  op: 'kvcache';
  backend: BenchBackend;
}

/** rotary(x [B,T,H,D], { cos, sin, rotaryDim, interleaved, out }) into a preallocated out, positions t. */
export interface RotaryCase extends RotaryShape {
  op: 'rotary';
  backend: BenchBackend;
}

/** linear(x [M, K] float32, weight [N, K] of `dtype`, { out }) into a preallocated y [M, N] float32. */
export interface LinearCase extends LinearShape {
  op: 'linear';
  backend: BenchBackend;
}

/** causalConv1dUpdate(x [N, D], pool [slots, D, W - 1], weight [D, W], { silu, stateIndices, out }), scattered slots. */
export interface ConvUpdateCase extends ConvUpdateShape {
  op: 'conv-update';
  backend: BenchBackend;
}

/** rmsNormGated(x [rows, H], gate [rows, H], weight [H], { out }). */
export interface RmsNormGatedCase extends RmsNormGatedShape {
  op: 'rms-norm-gated';
  backend: BenchBackend;
}

/** One Qwen3-Next Gated DeltaNet decode layer step of B tokens (bench/serving.ts gdnLayer). */
export interface GdnLayerCase extends GdnLayerShape {
  op: 'gdn-layer';
  backend: BenchBackend;
}

/** One Qwen3-Next gated-attention decode layer step over caches of `lens` (bench/serving.ts attnLayer). */
export interface AttnLayerCase extends AttnLayerShape {
  op: 'attn-layer';
  backend: BenchBackend;
}

/** nalaAttention(q [B,T,H,K], k [B,T,Hk,K], v [B,T,Hk,V], { causal }), no rope (bench/inputs.ts nalaInputs). */
export interface NalaCase extends NalaShape {
  op: 'nala';
  backend: BenchBackend;
}

/** One benchmark case. */
export type BenchCase = DeltaCase | SoftmaxCase | AttentionCase | HyperCase | NalaCase
  | KVCacheCase | RotaryCase | LinearCase | ConvUpdateCase | RmsNormGatedCase | GdnLayerCase | AttnLayerCase;

export function familyOf(op: OpName): Family {
  if (SERVING_OPS.includes(op)) return 'serving';
  return op === 'softmax' || op === 'attention' || op === 'hyper' || op === 'nala' ? op : 'delta';
}

/**
 * What a case is compared with after it is timed (ops that approximate another: HyperAttention against exact
 * attention on the same input): the other op's time per call (median of `calls` calls) and the relative
 * Frobenius error of this op's output against the other's.
 */
export interface Comparison {
  /** What it is compared with ('attention': seqkern's exact attention, same backend). */
  against: string;
  medianMs: number;
  calls: number;
  /**
   * This op's median ms over calls made right after each of the other op's (paired, so that a machine whose
   * speed drifts between the op's own timing and the comparison hits both sides of the speedup alike).
   */
  pairedMs: number;
  /** |o - o_exact|_F / |o_exact|_F. */
  relErr: number;
}

/**
 * The limits a case's row is divided by, measured in the same run (bench/limits.ts): the FP32 peak at the
 * level in effect, and bandwidth probes at a given total size in bytes.
 */
export interface LimitNeeds {
  peak: boolean;
  /** Copy over arrays totalling this many bytes (the bytes the op moves). */
  copy?: number;
  /** Triad over 3 arrays totalling this many bytes. */
  triad?: number;
  /** In-place update of this many bytes (the op's working set). */
  update?: number;
  /** A read (sum) of one array of this many bytes: the ceiling of an op that mostly reads (a decode). */
  read?: number;
}

export interface OpEntry<C extends BenchCase = BenchCase> {
  name: C['op'];
  family: Family;
  summary: string;
  /** The vitest file that checks this op against the reference. */
  test: string;
  /** Bytes moved per call and distinct bytes touched (bench/formulas.ts). */
  traffic(c: C): { bytes: number; workingSet: number };
  limits(c: C): LimitNeeds;
  /** Builds the inputs (seeded random, never zeros) and returns the call to time. */
  prepare(c: C, inputs: InputPool): () => void;
  /**
   * A case the float64 reference backend would take minutes on: the default suite skips it there (an
   * explicit --op runs it anyway).
   */
  tooBigForReference(c: C): boolean;
  /** After timing: the comparison with the op this one approximates, within about `seconds` (at least one call). */
  compare?(c: C, inputs: InputPool, seconds: number): Comparison;
  /**
   * After timing (ops made of other ops: the decode layers): the component calls of the case `prepare` last
   * built, each timed on its own so the report can set their sum beside the whole call.
   */
  parts?(c: C): LayerPart[];
}

export interface DeltaEntry extends OpEntry<DeltaCase> {
  /** Shape of `--op <name>` with no shape flags. */
  defaults: Omit<DeltaCase, 'op' | 'dtype' | 'algorithm' | 'backend'>;
  work(c: DeltaCase): Work;
  /**
   * The op reads and writes its main data in place (the decode step's state): its GB/s is also compared
   * with the in-place 'update' probe, since copy is credited less than it moves (write-allocate).
   */
  inPlace: boolean;
  /** What a call runs: the algorithm auto resolves to, or 'step'. */
  algorithmUsed(c: DeltaCase): 'chunk' | 'recurrent' | 'step';
}

/**
 * Seeded inputs. Delta: q, k, v randn (the ops L2-normalise q and k: qkL2Norm), beta uniform in [0, 1], g
 * uniform in [-0.1, 0] (decays in [0.905, 1]), the decode step's state randn·0.1. Prefill inputs with B = 1
 * are generated once at the longest T the run needs and viewed as prefixes (a [1, T, ...] tensor is the
 * first T tokens of a longer one), so a suite over T does not regenerate hundreds of MiB per case.
 * Softmax and attention: bench/inputs.ts (a fast LCG; a 1 GiB batch in a quarter of a second), kept while
 * consecutive cases share them (both softmax algorithms, the attention call with and without gate).
 * Asking for one family's inputs lets the others' go, so at most one family's buffers are alive.
 */
export class InputPool {
  private readonly maxT = new Map<string, number>();
  private cached?: { key: string; T: number; t: Record<string, Tensor> };

  constructor(
    cases: readonly BenchCase[],
    readonly seed = 1,
  ) {
    for (const c of cases) if (c.op === 'gated-delta' && c.B === 1) this.maxT.set(prefillKey(c), Math.max(this.maxT.get(prefillKey(c)) ?? 0, c.T));
    for (const c of cases) if (c.op === 'nala' && c.B === 1) this.nalaLengths.push({ key: `${c.H},${c.Hk},${c.K},${c.V},${c.dtype}`, T: c.T });
  }

  private readonly nalaLengths: { key: string; T: number }[] = [];

  private softmaxSet?: { key: string; x: Tensor; out: Tensor };
  private hyperSet?: { key: string; q: Tensor; k: Tensor; v: Tensor };
  private nalaSet?: { key: string; T: number; q: Tensor; k: Tensor; v: Tensor };
  private attentionSet?: { key: string; q: Tensor; k: Tensor; v: Tensor };
  private gateSet?: { key: string; gate: Tensor };

  /** Lets every family's cached buffers but `keep`'s go. */
  private release(keep: Family): void {
    if (keep !== 'delta') this.cached = undefined;
    if (keep !== 'softmax') this.softmaxSet = undefined;
    if (keep !== 'attention') this.attentionSet = this.gateSet = undefined;
    if (keep !== 'hyper') this.hyperSet = undefined;
    if (keep !== 'nala') this.nalaSet = undefined;
  }

  /**
   * q, k, v of a NaLaFormer case (bench/inputs.ts nalaInputs, seed): generated once at the longest T asked so
   * far for the shape and viewed as prefixes (B = 1: a [1, T, ...] tensor is the first T tokens of a longer one).
   */
  nala(c: NalaCase): { q: Tensor; k: Tensor; v: Tensor } {
    this.release('nala');
    const key = `${c.B},${c.H},${c.Hk},${c.K},${c.V},${c.dtype}`;
    if (this.nalaSet?.key !== key || this.nalaSet.T < c.T || c.B !== 1) {
      this.nalaSet = undefined;
      const T = c.B === 1 ? Math.max(c.T, ...this.nalaTs(c)) : c.T;
      this.nalaSet = { key, T, ...nalaInputs({ ...c, T }, this.seed) };
    }
    const { q, k, v, T } = this.nalaSet;
    if (T === c.T) return { q, k, v };
    const prefix = (x: Tensor, perToken: number, last: number) => tensor(x.data.subarray(0, c.T * perToken), [1, c.T, x.shape[2], last], x.dtype);
    return { q: prefix(q, c.H * c.K, c.K), k: prefix(k, c.Hk * c.K, c.K), v: prefix(v, c.Hk * c.V, c.V) };
  }

  private nalaTs(c: NalaCase): number[] {
    return this.nalaLengths.filter((x) => x.key === `${c.H},${c.Hk},${c.K},${c.V},${c.dtype}`).map((x) => x.T);
  }

  /** q, k, v of c's input kind (bench/inputs.ts hyperInputs, seed), kept while consecutive cases share them. */
  hyper(c: HyperCase): { q: Tensor; k: Tensor; v: Tensor } {
    this.release('hyper');
    const key = `${c.B},${c.T},${c.S},${c.Hq},${c.Hk},${c.D},${c.Dv},${c.dtype},${c.inputs}`;
    if (this.hyperSet?.key !== key) {
      this.hyperSet = undefined;
      this.hyperSet = { key, ...hyperInputs(c, c.inputs, this.seed) };
    }
    return this.hyperSet;
  }

  /** x [rows, cols] (bench/inputs.ts softmaxInput, seed) and an output of the same shape, allocated once. */
  softmax(c: SoftmaxCase): { x: Tensor; out: Tensor } {
    this.release('softmax');
    const key = `${c.rows},${c.cols},${c.dtype}`;
    if (this.softmaxSet?.key !== key) {
      this.softmaxSet = undefined;
      const x = softmaxInput(c, this.seed);
      this.softmaxSet = { key, x, out: zeros([c.rows, c.cols], c.dtype) };
    }
    return this.softmaxSet;
  }

  /** q, k, v (seeds seed..seed+2) and the gate of c.gate (seed+3), bench/inputs.ts. */
  attention(c: AttentionCase): { q: Tensor; k: Tensor; v: Tensor; gate?: Tensor } {
    this.release('attention');
    const key = `${c.B},${c.T},${c.S},${c.Hq},${c.Hk},${c.D},${c.Dv},${c.dtype}`;
    if (this.attentionSet?.key !== key) {
      this.attentionSet = this.gateSet = undefined;
      this.attentionSet = { key, ...attentionInputs(c, this.seed) };
    }
    const { q, k, v } = this.attentionSet;
    if (c.gate === 'none') return { q, k, v };
    const gateKey = `${key},${c.gate}`;
    if (this.gateSet?.key !== gateKey) {
      this.gateSet = undefined;
      this.gateSet = { key: gateKey, gate: attentionGate(c, this.seed)! };
    }
    return { q, k, v, gate: this.gateSet.gate };
  }

  prefill(c: DeltaCase): Record<'q' | 'k' | 'v' | 'beta' | 'g', Tensor> {
    this.release('delta');
    const key = prefillKey(c);
    const T = c.B === 1 ? Math.max(c.T, this.maxT.get(key) ?? 0) : c.T;
    if (!this.cached || this.cached.key !== `${key}/${c.B}` || this.cached.T < c.T) {
      this.cached = undefined; // let the previous set go before allocating the next
      const s = this.seed;
      const dtype = c.dtype;
      this.cached = {
        key: `${key}/${c.B}`,
        T,
        t: {
          q: randn([c.B, T, c.H, c.K], { seed: s, dtype }),
          k: randn([c.B, T, c.H, c.K], { seed: s + 1, dtype }),
          v: randn([c.B, T, c.HV, c.V], { seed: s + 2, dtype }),
          beta: rand([c.B, T, c.HV], { seed: s + 3, dtype, low: 0, high: 1 }),
          g: rand([c.B, T, c.HV], { seed: s + 4, dtype, low: -0.1, high: 0 }),
        },
      };
    }
    const { t } = this.cached;
    if (this.cached.T === c.T) return t as Record<'q' | 'k' | 'v' | 'beta' | 'g', Tensor>;
    // B = 1: the first c.T tokens, in place.
    const prefix = (x: Tensor, perToken: number, shape: number[]) => tensor(x.data.subarray(0, c.T * perToken), shape, x.dtype);
    return {
      q: prefix(t.q, c.H * c.K, [1, c.T, c.H, c.K]),
      k: prefix(t.k, c.H * c.K, [1, c.T, c.H, c.K]),
      v: prefix(t.v, c.HV * c.V, [1, c.T, c.HV, c.V]),
      beta: prefix(t.beta, c.HV, [1, c.T, c.HV]),
      g: prefix(t.g, c.HV, [1, c.T, c.HV]),
    };
  }

  step(c: DeltaCase): Record<'q' | 'k' | 'v' | 'beta' | 'g' | 'state', Tensor> {
    this.release('delta');
    const s = this.seed;
    const N = c.B;
    const dtype = c.dtype;
    return {
      q: randn([N, c.H, c.K], { seed: s, dtype }),
      k: randn([N, c.H, c.K], { seed: s + 1, dtype }),
      v: randn([N, c.HV, c.V], { seed: s + 2, dtype }),
      beta: rand([N, c.HV], { seed: s + 3, dtype, low: 0, high: 1 }),
      g: rand([N, c.HV], { seed: s + 4, dtype, low: -0.1, high: 0 }),
      state: randn([N, c.HV, c.K, c.V], { seed: s + 5, std: 0.1 }),
    };
  }
}

function prefillKey(c: DeltaCase): string {
  return `${c.H},${c.HV},${c.K},${c.V},${c.dtype}`;
}

const gatedDelta: DeltaEntry = {
  name: 'gated-delta',
  family: 'delta',
  summary: 'gatedDeltaRule prefill: q,k [B,T,H,K], v [B,T,HV,V], beta,g [B,T,HV]; qkL2Norm, no initial state',
  test: 'test/delta.test.ts',
  defaults: { B: 1, T: 4096, H: 16, HV: 32, K: 128, V: 128 },
  work: (c) => deltaPrefillWork(c),
  traffic: (c) => deltaPrefillWork(c),
  inPlace: false,
  // Copy over the same number of bytes the op moves (arrays totalling w.bytes: a copy reading and writing
  // what the op reads and writes).
  limits: (c) => ({ peak: true, copy: deltaPrefillWork(c).bytes }),
  // As the op resolves 'auto' (src/ops/delta.ts): the reference backend always runs the recurrence.
  algorithmUsed: (c) => (c.algorithm !== 'auto' ? c.algorithm : c.backend === 'cpu' ? autoAlgorithm(c.T, c.K, c.V) : 'recurrent'),
  prepare(c, inputs) {
    const opts = { ...inputs.prefill(c), qkL2Norm: true, algorithm: c.algorithm, backend: c.backend };
    return () => {
      gatedDeltaRule(opts);
    };
  },
  tooBigForReference: () => false,
};

const deltaStep: DeltaEntry = {
  name: 'delta-step',
  family: 'delta',
  summary: 'gatedDeltaRuleStep decode: q,k [N,H,K], v [N,HV,V], beta,g [N,HV], state [N,HV,K,V] float32 in place',
  test: 'test/delta.test.ts',
  defaults: { B: 8, T: 1, H: 16, HV: 32, K: 128, V: 128 },
  work: (c) => deltaStepWork(c),
  traffic: (c) => deltaStepWork(c),
  inPlace: true,
  // Copy over the bytes moved (the state read and written), and the in-place update over the working set.
  limits: (c) => {
    const w = deltaStepWork(c);
    return { peak: true, copy: w.bytes, update: w.workingSet };
  },
  algorithmUsed: () => 'step',
  prepare(c, inputs) {
    const opts = { ...inputs.step(c), qkL2Norm: true, backend: c.backend };
    return () => {
      gatedDeltaRuleStep(opts);
    };
  },
  tooBigForReference: () => false,
};

/**
 * The decode step on a delta-state pool (issue 14 part 2): the same work as delta-step, the N states at
 * scattered slots (a seeded shuffle) of a float32 pool of 2N slots, updated in place through stateIndices.
 * Its GB/s beside delta-step's at the same N is what the pool costs (the issue asks >= 90%).
 */
const deltaPoolStep: DeltaEntry = {
  ...deltaStep,
  name: 'delta-pool-step',
  summary: 'gatedDeltaRuleStep on a pool [2N,HV,K,V] float32: the N states at scattered slots (stateIndices), in place',
  test: 'test/delta-pool.test.ts',
  prepare(c, inputs) {
    const { state, ...rest } = inputs.step(c);
    const N = c.B, per = c.HV * c.K * c.V;
    const stateIndices = scatteredSlots(N, 2 * N);
    const pool = zeros([2 * N, c.HV, c.K, c.V]);
    for (let n = 0; n < N; n++) pool.data.set(state.data.subarray(n * per, (n + 1) * per), stateIndices[n] * per);
    const opts = { ...rest, state: pool, stateIndices, qkL2Norm: true, backend: c.backend };
    return () => {
      gatedDeltaRuleStep(opts);
    };
  },
};

const softmaxEntry: OpEntry<SoftmaxCase> = {
  name: 'softmax',
  family: 'softmax',
  summary: 'softmaxInto over the last axis of x [rows, cols] into a preallocated output (two-pass or three-pass)',
  test: 'test/softmax.test.ts',
  traffic: (c) => softmaxWork(c),
  // Triad (a = b + s·c: 2 reads + 1 write, each array once) over 3 arrays totalling the bytes credited to
  // the op (2 reads + 1 write of the data): the same bytes, moved in the same read/write mix.
  limits: (c) => ({ peak: false, triad: softmaxWork(c).bytes }),
  prepare(c, inputs) {
    const { x, out } = inputs.softmax(c);
    const opts = { algorithm: c.algorithm, backend: c.backend };
    return () => {
      softmaxInto(x, out, opts);
    };
  },
  tooBigForReference: (c) => c.rows * c.cols > 1 << 22,
};

const attentionEntry: OpEntry<AttentionCase> = {
  name: 'attention',
  family: 'attention',
  summary: 'attention q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] (causal bottom-right; gate elementwise/headwise)',
  test: 'test/attention.test.ts',
  traffic: (c) => attentionWork(c),
  // The peak (prefill is compute-bound), and copy and read over the bytes the op moves (a decode step is
  // bandwidth-bound, and nearly all it moves is a read of K and V: read is its ceiling, copy the issue's yardstick).
  limits: (c) => ({ peak: true, copy: attentionWork(c).bytes, read: attentionWork(c).bytes }),
  prepare(c, inputs) {
    const { q, k, v, gate } = inputs.attention(c);
    const opts: AttentionOptions = { causal: c.causal, backend: c.backend };
    if (gate) Object.assign(opts, { gate, gateType: c.gate });
    return () => {
      attention(q, k, v, opts);
    };
  },
  tooBigForReference: (c) => attentionWork(c).flops > 2e9 || attentionWork(c).bytes > 64 << 20,
};

const hyperEntry: OpEntry<HyperCase> = {
  name: 'hyper',
  family: 'hyper',
  summary: 'hyperAttention q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] (defaults; causal: the recursion), beside exact attention',
  test: 'test/hyper.test.ts',
  traffic: (c) => hyperWork(c),
  limits: () => ({ peak: true }),
  prepare(c, inputs) {
    const { q, k, v } = inputs.hyper(c);
    const opts = { causal: c.causal, backend: c.backend };
    return () => {
      hyperAttention(q, k, v, opts);
    };
  },
  // Exact attention on the same input, each call followed by a HyperAttention call (paired times): the first
  // exact call gives the output the error is measured against; more pairs (up to 5) while the time spent stays
  // within `seconds`.
  compare(c, inputs, seconds) {
    const { q, k, v } = inputs.hyper(c);
    const opts = { causal: c.causal, backend: c.backend };
    const exactTimes: number[] = [];
    const hyperTimes: number[] = [];
    let exact: Tensor | undefined;
    let err = NaN;
    let spent = 0;
    const timed = <R>(f: () => R): [R, number] => {
      const t0 = process.hrtime.bigint();
      const r = f();
      return [r, Number(process.hrtime.bigint() - t0) / 1e9];
    };
    while (exactTimes.length === 0 || (exactTimes.length < 5 && spent + exactTimes[0] + hyperTimes[0] <= seconds)) {
      const [e, te] = timed(() => attention(q, k, v, opts).o);
      const [h, th] = timed(() => hyperAttention(q, k, v, opts).o);
      if (!exact) {
        exact = e;
        err = relErr(h, e);
      }
      exactTimes.push(te);
      hyperTimes.push(th);
      spent += te + th;
    }
    const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
    return { against: 'attention', medianMs: 1e3 * median(exactTimes), calls: exactTimes.length, pairedMs: 1e3 * median(hyperTimes), relErr: err };
  },
  // The float64 reference of HyperAttention (and the exact reference beside it) is O(T·S) work in plain loops.
  tooBigForReference: (c) => c.T * c.S > 1 << 22,
};

// ---- serving (issue 14)

/**
 * The KV-cache decode's inputs: caches holding uniform values in the rows attended (lens[b] + Tq of each
 * sequence; the rest of a contiguous cache is never read, so it stays untouched zero pages), a paged cache's
 * blocks in a shuffled order; q, kNew, vNew uniform float32.
 */
function kvcacheInputs(c: KVCacheCase, seed: number): { q: Tensor; kCache: Tensor; vCache: Tensor; opts: KVCacheOptions } {
  const B = c.lens.length;
  const r = ATTENTION_RANGE;
  const need = c.lens.map((L) => L + c.Tq);
  const rowK = c.Hk * c.D;
  const rowV = c.Hk * c.Dv;
  let rows: number[][];
  let kShape: number[];
  let vShape: number[];
  let blockTable: Int32Array | undefined;
  if (c.paged) {
    const bs = c.paged;
    const per = need.map((n) => Math.ceil(n / bs));
    const maxBlocks = Math.max(...per);
    const numBlocks = per.reduce((a, b) => a + b, 0);
    // A fixed shuffle of the blocks (an LCG's Fisher–Yates): sequences' blocks interleaved through the pool.
    const perm = Array.from({ length: numBlocks }, (_, i) => i);
    let s = (seed * 2654435761) >>> 0;
    for (let i = numBlocks - 1; i > 0; i--) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const j = s % (i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    blockTable = new Int32Array(B * maxBlocks);
    let next = 0;
    rows = [];
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < per[b]; i++) blockTable[b * maxBlocks + i] = perm[next++];
      rows.push(Array.from({ length: per[b] }, (_, i) => blockTable![b * maxBlocks + i] * bs));
    }
    kShape = [numBlocks, bs, c.Hk, c.D];
    vShape = [numBlocks, bs, c.Hk, c.Dv];
  } else {
    const cap = Math.max(...need);
    rows = need.map((_, b) => [b * cap]);
    kShape = [B, cap, c.Hk, c.D];
    vShape = [B, cap, c.Hk, c.Dv];
  }
  const span = c.paged || Math.max(...need);
  const fill = (shape: number[], row: number, salt: number): Tensor => {
    const f = new Float32Array(shape.reduce((a, b) => a * b, 1));
    // Only the attended rows: runs of whole blocks (paged) or the first need[b] rows (contiguous).
    rows.forEach((starts, b) => starts.forEach((t0, i) => {
      const n = c.paged ? Math.min(span, need[b] - i * span) : need[b];
      fillUniform(f.subarray(t0 * row, (t0 + n) * row), seed + salt + 7 * b + 131 * i, -r, r);
    }));
    return tensor(f, shape, 'float32').to(c.dtype);
  };
  const kCache = fill(kShape, rowK, 1);
  const vCache = fill(vShape, rowV, 2);
  const q = uniformTensor([B, c.Tq, c.Hq, c.D], 'float32', seed, -r, r);
  const opts: KVCacheOptions = {
    cacheSeqlens: Int32Array.from(c.lens), blockTable, backend: c.backend,
    kNew: uniformTensor([B, c.Tq, c.Hk, c.D], 'float32', seed + 3, -r, r),
    vNew: uniformTensor([B, c.Tq, c.Hk, c.Dv], 'float32', seed + 4, -r, r),
  };
  return { q, kCache, vCache, opts };
}

const kvcacheEntry: OpEntry<KVCacheCase> = {
  name: 'kvcache',
  family: 'serving',
  summary: 'attentionWithKVCache decode: q [B,1,Hq,D] float32 over caches of mixed lengths (contiguous or paged), kNew/vNew appended',
  test: 'test/kvcache.test.ts',
  traffic: (c) => kvcacheWork(c),
  // A decode only reads K and V: the read probe over the bytes attended is its ceiling (the issue's yardstick).
  limits: (c) => ({ peak: false, read: kvcacheWork(c).bytes, copy: kvcacheWork(c).bytes }),
  prepare(c, inputs) {
    const { q, kCache, vCache, opts } = kvcacheInputs(c, inputs.seed);
    return () => {
      attentionWithKVCache(q, kCache, vCache, opts);
    };
  },
  tooBigForReference: (c) => kvcacheWork(c).bytes > 16 << 20,
};

const rotaryEntry: OpEntry<RotaryCase> = {
  name: 'rotary',
  family: 'serving',
  summary: 'rotary x [B,T,H,D] -> out (cos/sin tables of rotaryDim/2 columns, positions t)',
  test: 'test/rotary.test.ts',
  traffic: (c) => rotaryWork(c),
  // Reads x once and writes out once: copy over the same bytes.
  limits: (c) => ({ peak: false, copy: rotaryWork(c).bytes }),
  prepare(c, inputs) {
    const x = uniformTensor([c.B, c.T, c.H, c.D], c.dtype, inputs.seed, -1, 1);
    const half = c.rotaryDim / 2;
    const cos = new Float32Array(c.T * half);
    const sin = new Float32Array(c.T * half);
    for (let p = 0; p < c.T; p++) {
      for (let i = 0; i < half; i++) {
        cos[p * half + i] = Math.cos(p * 10000 ** (-i / half));
        sin[p * half + i] = Math.sin(p * 10000 ** (-i / half));
      }
    }
    const opts = {
      cos: tensor(cos, [c.T, half]), sin: tensor(sin, [c.T, half]), interleaved: c.interleaved,
      out: zeros(x.shape, c.dtype), backend: c.backend,
    };
    return () => {
      rotary(x, opts);
    };
  },
  tooBigForReference: (c) => c.B * c.T * c.H * c.D > 1 << 22,
};

/**
 * linear: the GEMV (M <= 8) streams the weight once, so its ceiling is the read probe over the weight's bytes;
 * the GEMM (more rows) is compute-bound: the FP32 peak.
 */
const linearEntry: OpEntry<LinearCase> = {
  name: 'linear',
  family: 'serving',
  summary: 'linear x [M,K] float32, weight [N,K] float32/bfloat16/float16 -> y [M,N] float32 (GEMV for M <= 8, GEMM above)',
  test: 'test/linear.test.ts',
  traffic: (c) => linearWork(c),
  limits: (c) => (c.M <= 8 ? { peak: false, read: linearWork(c).weightBytes } : { peak: true }),
  prepare(c, inputs) {
    const { run } = linearSetup(c, inputs.seed, c.backend);
    return () => {
      run();
    };
  },
  tooBigForReference: (c) => linearWork(c).flops > 2e9,
};

const convUpdateEntry: OpEntry<ConvUpdateCase> = {
  name: 'conv-update',
  family: 'serving',
  summary: 'causalConv1dUpdate x [N,D] on a conv-state pool [slots,D,W-1] at scattered stateIndices, weight [D,W], silu',
  test: 'test/conv.test.ts',
  traffic: (c) => convUpdateWork(c),
  // Reads x and the windows, writes y and the windows: copy over the same bytes (the issue's yardstick).
  limits: (c) => ({ peak: false, copy: convUpdateWork(c).bytes }),
  prepare(c, inputs) {
    const { run } = convUpdateSetup(c, inputs.seed, c.backend);
    return () => {
      run();
    };
  },
  tooBigForReference: (c) => c.N * c.D > 1 << 22,
};

const rmsNormGatedEntry: OpEntry<RmsNormGatedCase> = {
  name: 'rms-norm-gated',
  family: 'serving',
  summary: 'rmsNormGated x, gate [rows,H] -> out, weight [H] shared (Qwen3-Next: H = value head dim 128)',
  test: 'test/norm.test.ts',
  traffic: (c) => rmsNormGatedWork(c),
  // Two reads and a write per element: copy over the same bytes (the issue's yardstick).
  limits: (c) => ({ peak: false, copy: rmsNormGatedWork(c).bytes }),
  prepare(c, inputs) {
    const { run } = normGatedSetup(c, inputs.seed, c.backend);
    return () => {
      run();
    };
  },
  tooBigForReference: (c) => c.rows * c.H > 1 << 22,
};

/** The layer `prepare` built last, for `parts` (the layers' setups hold hundreds of MiB: one at a time). */
let lastLayer: { c: BenchCase; parts: LayerPart[] } | undefined;

/**
 * A decode layer reads its weights, states or caches once per step: the read probe over its bytes, and copy.
 * Its parts (bench/serving.ts) are timed alone after the layer (OpEntry.parts).
 */
function layerEntry<C extends GdnLayerCase | AttnLayerCase>(
  name: C['op'], summary: string, work: (c: C) => { bytes: number; flops: number; workingSet: number },
  build: (c: C, seed: number, backend: C['backend']) => { parts: LayerPart[]; run(): void },
): OpEntry<C> {
  return {
    name,
    family: 'serving',
    summary,
    test: 'test/serving-bench.test.ts',
    traffic: (c) => work(c),
    limits: (c) => ({ peak: false, read: work(c).bytes, copy: work(c).bytes }),
    prepare(c, inputs) {
      lastLayer = undefined;
      const layer = build(c, inputs.seed, c.backend);
      lastLayer = { c, parts: layer.parts };
      return () => {
        layer.run();
      };
    },
    parts: (c) => (lastLayer?.c === c ? lastLayer.parts : []),
    tooBigForReference: (c) => work(c).flops > 2e8,
  };
}

const gdnLayerEntry = layerEntry<GdnLayerCase>('gdn-layer',
  'Qwen3-Next Gated DeltaNet decode layer, B tokens: in-projection, conv update, gated delta step on a pool, gated norm, out-projection',
  gdnLayerWork, gdnLayer);

const attnLayerEntry = layerEntry<AttnLayerCase>('attn-layer',
  'Qwen3-Next gated-attention decode layer, B tokens: q/gate/k/v projections, q/k norm, partial rotary + KV-cache decode with gate, out-projection',
  attnLayerWork, attnLayer);

const nalaEntry: OpEntry<NalaCase> = {
  name: 'nala',
  family: 'nala',
  summary: 'nalaAttention q [B,T,H,K], k [B,T,Hk,K], v [B,T,Hk,V] (non-causal: two passes; causal: chunkwise), no rope',
  test: 'test/nala.test.ts',
  traffic: (c) => nalaWork(c),
  limits: (c) => ({ peak: true, copy: nalaWork(c).bytes }),
  prepare(c, inputs) {
    const { q, k, v } = inputs.nala(c);
    const opts = { causal: c.causal, backend: c.backend };
    return () => {
      nalaAttention(q, k, v, opts);
    };
  },
  // The float64 reference is the defining O(T²) sums per head.
  tooBigForReference: (c) => c.T * c.T * c.H > 1 << 24,
};

export const OPS: {
  readonly 'gated-delta': DeltaEntry;
  readonly 'delta-step': DeltaEntry;
  readonly softmax: OpEntry<SoftmaxCase>;
  readonly attention: OpEntry<AttentionCase>;
  readonly hyper: OpEntry<HyperCase>;
  readonly kvcache: OpEntry<KVCacheCase>;
  readonly rotary: OpEntry<RotaryCase>;
  readonly nala: OpEntry<NalaCase>;
  readonly 'delta-pool-step': DeltaEntry;
  readonly linear: OpEntry<LinearCase>;
  readonly 'conv-update': OpEntry<ConvUpdateCase>;
  readonly 'rms-norm-gated': OpEntry<RmsNormGatedCase>;
  readonly 'gdn-layer': OpEntry<GdnLayerCase>;
  readonly 'attn-layer': OpEntry<AttnLayerCase>;
} = {
  'gated-delta': gatedDelta, 'delta-step': deltaStep, softmax: softmaxEntry, attention: attentionEntry, hyper: hyperEntry,
  kvcache: kvcacheEntry,
  rotary: rotaryEntry,
  nala: nalaEntry,
  'delta-pool-step': deltaPoolStep,
  linear: linearEntry,
  'conv-update': convUpdateEntry,
  'rms-norm-gated': rmsNormGatedEntry,
  'gdn-layer': gdnLayerEntry,
  'attn-layer': attnLayerEntry,
};

/** The entry of c's op, typed for c (TypeScript cannot correlate OPS[c.op] with c by itself). */
export function entryOf(c: BenchCase): OpEntry {
  return OPS[c.op] as unknown as OpEntry;
}

/**
 * Delta: "B1 T4096 H16/32 K128 V128" (prefill) or "N8 H16/32 K128 V128" (step); H/HV are q/k heads / v heads.
 * Softmax: "R8192 C32768" (rows, cols). Attention: "B1 T4096 S4096 H8/8 D128" (Hq/Hk; "Dv64" after D when Dv != D).
 */
export function shapeLabel(c: BenchCase): string {
  switch (c.op) {
    case 'kvcache':
      return `B${c.lens.length} Tq${c.Tq} H${c.Hq}/${c.Hk} D${c.D}${c.Dv !== c.D ? ` Dv${c.Dv}` : ''} ${c.paged ? `paged${c.paged}` : 'contig'}`;
    case 'rotary':
      return `B${c.B} T${c.T} H${c.H} D${c.D} rot${c.rotaryDim}`;
    case 'linear':
      return `M${c.M} K${c.K} N${c.N}`;
    case 'conv-update':
      return `N${c.N} D${c.D} W${c.W} slots${c.slots}`;
    case 'rms-norm-gated':
      return `R${c.rows} H${c.H}`;
    case 'gdn-layer':
      return `B${c.B} h${c.hidden} H${c.H}/${c.HV} K${c.K} V${c.V}`;
    case 'attn-layer':
      return `B${c.lens.length} h${c.hidden} H${c.Hq}/${c.Hk} D${c.D} rot${c.rotaryDim}`;
    case 'softmax':
      return `R${c.rows} C${c.cols}`;
    case 'attention':
    case 'hyper':
      return `B${c.B} T${c.T} S${c.S} H${c.Hq}/${c.Hk} D${c.D}${c.Dv !== c.D ? ` Dv${c.Dv}` : ''}`;
    case 'nala':
      return `B${c.B} T${c.T} H${c.H}/${c.Hk} K${c.K} V${c.V}`;
    default: {
      const lead = c.op === 'delta-step' || c.op === 'delta-pool-step' ? `N${c.B}` : `B${c.B} T${c.T}`;
      return `${lead} H${c.H}/${c.HV} K${c.K} V${c.V}`;
    }
  }
}

/** What the progress line and the skipped list name a case by: op, shape, dtype and its variant. */
export function caseLabel(c: BenchCase): string {
  const variant =
    c.op === 'softmax' ? c.algorithm
    : c.op === 'attention' ? `${c.causal ? 'causal' : 'full'}${c.gate !== 'none' ? ` gate=${c.gate}` : ''}`
    : c.op === 'hyper' ? `${c.causal ? 'causal' : 'full'} ${c.inputs}`
    : c.op === 'nala' ? (c.causal ? 'causal' : 'full')
    : c.op === 'kvcache' ? `lens ${c.lens.join(',')}`
    : c.op === 'rotary' ? (c.interleaved ? 'interleaved' : 'halves')
    : c.op === 'linear' ? (c.M <= 8 ? 'gemv' : 'gemm')
    : c.op === 'conv-update' ? 'silu'
    : c.op === 'rms-norm-gated' ? 'silu-gate'
    : c.op === 'gdn-layer' ? `W${c.W} slots${c.slots}`
    : c.op === 'attn-layer' ? `lens ${c.lens.join(',')}`
    : c.op === 'delta-step' || c.op === 'delta-pool-step' ? 'step' : c.algorithm;
  return `${c.op} ${shapeLabel(c)} ${c.dtype} ${variant}`;
}
