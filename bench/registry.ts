// The benchmark registry (as fla's): each op registered once with its defaults, its work formulas, how to
// build its inputs and the test file that checks it. `seqkern bench --op <name>` and the default suite
// both go through here.
import { gatedDeltaRule, gatedDeltaRuleStep, rand, randn, tensor, type Tensor } from '../src/index.js';
import { autoAlgorithm } from '../src/ops/delta.js';
import { deltaPrefillWork, deltaStepWork, type DeltaShape, type Work } from './formulas.js';

export type OpName = 'gated-delta' | 'delta-step';
export type Algorithm = 'auto' | 'chunk' | 'recurrent';
export type BenchBackend = 'cpu' | 'reference';

/** One benchmark case: a shape (for the decode step B is N, the sequences, and T is 1) and how to run it. */
export interface BenchCase extends DeltaShape {
  op: OpName;
  algorithm: Algorithm;
  backend: BenchBackend;
}

export interface OpEntry {
  name: OpName;
  summary: string;
  /** The vitest file that checks this op against the reference. */
  test: string;
  /** Shape of `--op <name>` with no shape flags. */
  defaults: Omit<BenchCase, 'op' | 'dtype' | 'algorithm' | 'backend'>;
  work(c: BenchCase): Work;
  /**
   * The op reads and writes its main data in place (the decode step's state): its GB/s is also compared
   * with the in-place 'update' probe, since copy is credited less than it moves (write-allocate).
   */
  inPlace: boolean;
  /** What a call runs: the algorithm auto resolves to, or 'step'. */
  algorithmUsed(c: BenchCase): 'chunk' | 'recurrent' | 'step';
  /** Builds the inputs (seeded random, never zeros) and returns the call to time. */
  prepare(c: BenchCase, inputs: InputPool): () => void;
}

/**
 * Seeded inputs: q, k, v randn (the ops L2-normalise q and k: qkL2Norm), beta uniform in [0, 1], g uniform
 * in [-0.1, 0] (decays in [0.905, 1]), the decode step's state randn·0.1. Prefill inputs with B = 1 are
 * generated once at the longest T the run needs and viewed as prefixes (a [1, T, ...] tensor is the first
 * T tokens of a longer one), so a suite over T does not regenerate hundreds of MiB per case.
 */
export class InputPool {
  private readonly maxT = new Map<string, number>();
  private cached?: { key: string; T: number; t: Record<string, Tensor> };

  constructor(
    cases: readonly BenchCase[],
    readonly seed = 1,
  ) {
    for (const c of cases) if (c.op === 'gated-delta' && c.B === 1) this.maxT.set(prefillKey(c), Math.max(this.maxT.get(prefillKey(c)) ?? 0, c.T));
  }

  prefill(c: BenchCase): Record<'q' | 'k' | 'v' | 'beta' | 'g', Tensor> {
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

  step(c: BenchCase): Record<'q' | 'k' | 'v' | 'beta' | 'g' | 'state', Tensor> {
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

function prefillKey(c: BenchCase): string {
  return `${c.H},${c.HV},${c.K},${c.V},${c.dtype}`;
}

const gatedDelta: OpEntry = {
  name: 'gated-delta',
  summary: 'gatedDeltaRule prefill: q,k [B,T,H,K], v [B,T,HV,V], beta,g [B,T,HV]; qkL2Norm, no initial state',
  test: 'test/delta.test.ts',
  defaults: { B: 1, T: 4096, H: 16, HV: 32, K: 128, V: 128 },
  work: (c) => deltaPrefillWork(c),
  inPlace: false,
  // As the op resolves 'auto' (src/ops/delta.ts): the reference backend always runs the recurrence.
  algorithmUsed: (c) => (c.algorithm !== 'auto' ? c.algorithm : c.backend === 'cpu' ? autoAlgorithm(c.T, c.K, c.V) : 'recurrent'),
  prepare(c, inputs) {
    const opts = { ...inputs.prefill(c), qkL2Norm: true, algorithm: c.algorithm, backend: c.backend };
    return () => {
      gatedDeltaRule(opts);
    };
  },
};

const deltaStep: OpEntry = {
  name: 'delta-step',
  summary: 'gatedDeltaRuleStep decode: q,k [N,H,K], v [N,HV,V], beta,g [N,HV], state [N,HV,K,V] float32 in place',
  test: 'test/delta.test.ts',
  defaults: { B: 8, T: 1, H: 16, HV: 32, K: 128, V: 128 },
  work: (c) => deltaStepWork(c),
  inPlace: true,
  algorithmUsed: () => 'step',
  prepare(c, inputs) {
    const opts = { ...inputs.step(c), qkL2Norm: true, backend: c.backend };
    return () => {
      gatedDeltaRuleStep(opts);
    };
  },
};

export const OPS: Readonly<Record<OpName, OpEntry>> = { 'gated-delta': gatedDelta, 'delta-step': deltaStep };

/** "B1 T4096 H16/32 K128 V128" (prefill) or "N8 H16/32 K128 V128" (step); H/HV are q/k heads / v heads. */
export function shapeLabel(c: BenchCase): string {
  const lead = c.op === 'delta-step' ? `N${c.B}` : `B${c.B} T${c.T}`;
  return `${lead} H${c.H}/${c.HV} K${c.K} V${c.V}`;
}
