import type { Tensor, TensorInput } from './tensor.js';

/** Where an op runs. `reference` is the float64 TypeScript implementation the tests compare against. */
export type Backend = 'cpu' | 'reference' | 'cuda';

/** Options every op takes. */
export interface CommonOptions {
  /** Force a backend (default: cpu when the addon loaded, else reference). */
  backend?: Backend | undefined;
}

/** Options of an async form. */
export interface AsyncOptions {
  /** Checked before starting and between chunks; aborting rejects with an AbortError. */
  signal?: AbortSignal | undefined;
}

/**
 * Shared by the fast path and the float64 reference (one options type, so both are called the same way).
 *
 * Shapes (fla's layout): q, k [B, T, H, K]; v [B, T, HV, V]; beta, g, decay, eta [B, T, HV];
 * initialState [N, HV, K, V] with N = B, or N = cuSeqlens.length - 1 for packed sequences (then B = 1).
 * HV is a multiple of H; v-head j reads q/k head floor(j / (HV / H)).
 */
export interface DeltaRuleOptions extends CommonOptions {
  q: TensorInput;
  k: TensorInput;
  v: TensorInput;
  /** Write strength in [0, 2] (2 gives the negative-eigenvalue transition). Required unless eta is given. */
  beta?: TensorInput | undefined;
  /** KLA: beta_t = eta_t / (|k_t|^2 + eps), computed in the kernel after any qkL2Norm. */
  eta?: TensorInput | undefined;
  /** Log decay, g <= 0: S <- exp(g_t) S. Absent (with no decay): plain DeltaNet. */
  g?: TensorInput | undefined;
  /** Signed decay a_t in [-1, 1] in place of g: S <- a_t S. */
  decay?: TensorInput | undefined;
  /** Float32 [N, HV, K, V]; never modified by the prefill ops. */
  initialState?: TensorInput | undefined;
  /** Return the state after the last token of each sequence as finalState [N, HV, K, V] (float32). */
  outputFinalState?: boolean | undefined;
  /** Offsets of N packed sequences in T (N + 1 values, 0 first, T last, non-decreasing), with B = 1. */
  cuSeqlens?: Int32Array | readonly number[] | undefined;
  /** L2-normalise q and k inside the kernel: x / sqrt(sum x^2 + 1e-6). */
  qkL2Norm?: boolean | undefined;
  /** Query scale, default 1/sqrt(K). */
  scale?: number | undefined;
  /** eps of KLA's beta = eta / (|k|^2 + eps); default 1e-6. */
  eps?: number | undefined;
  /** 'auto' picks by the crossover measured on this machine (see README). */
  algorithm?: 'auto' | 'chunk' | 'recurrent' | undefined;
  /** Chunk length of the chunkwise algorithm, default 64. */
  chunkSize?: number | undefined;
  /**
   * Write o into this tensor instead of a new one (to reuse buffers across calls): shape [B,T,HV,V] and v's
   * dtype, memory apart from q, k, v, beta/eta, g/decay, initialState and cuSeqlens. The result's `o` is this
   * same object (finalState is still a new tensor). With the async form the signal is then checked only
   * before the first write (see gatedDeltaRuleAsync).
   */
  out?: TensorInput | undefined;
  /**
   * In-kernel gating (fla's use_gate_in_kernel, Qwen3-Next): float32 [HV]; `g` then holds the raw projection and
   * the kernel uses g = -exp(aLog) * softplus(g + dtBias). dtBias (float32 [HV]) only with aLog.
   */
  aLog?: TensorInput | undefined;
  dtBias?: TensorInput | undefined;
  /** beta (or eta) holds logits: the kernel uses betaScale * sigmoid(beta) (fla's use_beta_sigmoid_in_kernel). */
  betaSigmoid?: boolean | undefined;
  /** With betaSigmoid, in [0, 2]; default 1 (2: negative eigenvalues). */
  betaScale?: number | undefined;
  /** Slot of sequence n in the pool `state` (Int32Array [N]); -1 = padding: skipped, its o rows set to 0. */
  stateIndices?: Int32Array | readonly number[] | undefined;
  /** The pool's dtype, checked against `state`: float32 (default) or bfloat16 (compute stays float32). */
  stateDtype?: 'float32' | 'bfloat16' | undefined;
  /**
   * The delta-state pool [slots, HV, K, V] (float32 or bfloat16): sequence n starts from slot stateIndices[n]
   * (or slot n without stateIndices; zeros where hasInitialState[n] is 0) and its final state is written back
   * into that slot in place. Not with initialState / outputFinalState.
   */
  state?: TensorInput | undefined;
  /** Uint8Array [N] (or booleans): 0 = start sequence n from zeros. Absent: every sequence reads its slot. */
  hasInitialState?: Uint8Array | readonly (number | boolean)[] | undefined;
  /**
   * Write the state after every checkpointEvery tokens (a multiple of chunkSize) of each sequence into
   * `checkpoints` [count, HV, K, V] (float32 or bfloat16), in the order deltaCheckpointLayout gives; the
   * result's checkpointSequence / checkpointPosition say which row is which.
   */
  checkpointEvery?: number | undefined;
  checkpoints?: TensorInput | undefined;
}

export interface DeltaRuleResult {
  /** [B, T, HV, V], dtype of v (float64 inputs run on the reference and give float64). */
  o: Tensor;
  /** [N, HV, K, V] float32, when outputFinalState. */
  finalState?: Tensor | undefined;
  /** With checkpoints: row r of checkpoints is the state of sequence checkpointSequence[r] after checkpointPosition[r] tokens. */
  checkpointSequence?: Int32Array | undefined;
  checkpointPosition?: Int32Array | undefined;
}

/**
 * One decode step for N sequences: q, k [N, H, K]; v [N, HV, V]; beta/eta, g/decay [N, HV];
 * state [N, HV, K, V] float32, updated in place.
 */
export interface DeltaStepOptions extends CommonOptions {
  q: TensorInput;
  k: TensorInput;
  v: TensorInput;
  beta?: TensorInput | undefined;
  eta?: TensorInput | undefined;
  g?: TensorInput | undefined;
  decay?: TensorInput | undefined;
  /** [N, HV, K, V], or the pool [slots, HV, K, V] with stateIndices; float32 or bfloat16; updated in place. */
  state: TensorInput;
  qkL2Norm?: boolean | undefined;
  scale?: number | undefined;
  eps?: number | undefined;
  /**
   * Write o into this tensor instead of a new one (to reuse buffers across steps): shape [N,HV,V] and v's
   * dtype, memory apart from q, k, v, beta/eta, g/decay and state. The result's `o` is this same object.
   */
  out?: TensorInput | undefined;
  /**
   * In-kernel gating (fla's use_gate_in_kernel, Qwen3-Next): float32 [HV]; `g` then holds the raw projection and
   * the kernel uses g = -exp(aLog) * softplus(g + dtBias). dtBias (float32 [HV]) only with aLog.
   */
  aLog?: TensorInput | undefined;
  dtBias?: TensorInput | undefined;
  /** beta (or eta) holds logits: the kernel uses betaScale * sigmoid(beta) (fla's use_beta_sigmoid_in_kernel). */
  betaSigmoid?: boolean | undefined;
  /** With betaSigmoid, in [0, 2]; default 1 (2: negative eigenvalues). */
  betaScale?: number | undefined;
  /** Slot of sequence n in the pool `state` (Int32Array [N]); -1 = padding: skipped, its o rows set to 0. */
  stateIndices?: Int32Array | readonly number[] | undefined;
  /** The pool's dtype, checked against `state`: float32 (default) or bfloat16 (compute stays float32). */
  stateDtype?: 'float32' | 'bfloat16' | undefined;
  /**
   * Speculative verify: with q [N, Tq, H, K] (v [N, Tq, HV, V], beta/g [N, Tq, HV], o [N, Tq, HV, V]) the state
   * after each token i goes to intermediateStates[n, i] ([N, Tq, HV, K, V], float32 or bfloat16).
   */
  intermediateStates?: TensorInput | undefined;
  /** false: the pool is only read (commit the accepted prefix from intermediateStates); default true. */
  updateState?: boolean | undefined;
}

export interface DeltaStepResult {
  /** [N, HV, V], dtype of v. */
  o: Tensor;
}

/** Softmax over the last axis (DESIGN.md 6.2). */
export interface SoftmaxOptions extends CommonOptions {
  /**
   * 'auto' (default): two-pass for batches that stream from memory, and for rows in cache whichever of the two
   * measured faster on this machine and SIMD level (softmaxAutoChoice()); 'two-pass' (Dukhan & Ablavatski
   * 2020: no max pass) or 'three-pass' (max, sum, normalise) to force one.
   */
  algorithm?: 'auto' | 'two-pass' | 'three-pass' | undefined;
  /** A row of all -Inf is an OUT_OF_RANGE error instead of a row of NaN. */
  strict?: boolean | undefined;
}

/**
 * Exact attention, flash-style (DESIGN.md 6.3). q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv], Hq a multiple of
 * Hk (GQA/MQA: q head i reads kv head floor(i / (Hq/Hk))).
 */
export interface AttentionOptions extends CommonOptions {
  /** Causal mask, bottom-right aligned when S > T (query i sees keys j <= i + S - T), as FlashAttention 2. */
  causal?: boolean | undefined;
  /** Score scale, default 1/sqrt(D). */
  scale?: number | undefined;
  /** Gated attention (Qiu et al. 2025, G1): logits z, [B,T,Hq,Dv] (elementwise) or [B,T,Hq] (headwise); o ⊙ sigmoid(z). */
  gate?: TensorInput | undefined;
  /** Inferred from gate's shape when absent. */
  gateType?: 'elementwise' | 'headwise' | undefined;
  /**
   * Packed varlen batch (B = 1): N + 1 offsets of the queries in T. Keys use `cuSeqlensK` (offsets in S), or
   * the same offsets when absent (then S must equal T).
   */
  cuSeqlens?: Int32Array | readonly number[] | undefined;
  cuSeqlensK?: Int32Array | readonly number[] | undefined;
  /** Also return lse [B, Hq, T] float32: the natural log-sum-exp of each query's scaled, masked scores. */
  returnLse?: boolean | undefined;
  /**
   * Each sequence's result independent of the rest of the batch and of the thread count, bit for bit (a
   * decode then never splits a sequence's keys across threads): what a server batching requests needs for
   * a request's tokens not to depend on who it was batched with. Slower for a decode of few sequences.
   */
  batchInvariant?: boolean | undefined;
  /**
   * Write o into this tensor instead of a new one (to reuse buffers across calls): shape [B,T,Hq,Dv] and v's
   * dtype, memory apart from q, k, v, gate and cuSeqlens/cuSeqlensK. The result's `o` is this same object.
   * With attentionAsync the signal is then checked only before the first write (see attentionAsync).
   */
  out?: TensorInput | undefined;
}

export interface AttentionResult {
  /** [B, T, Hq, Dv], dtype of v. */
  o: Tensor;
  /** [B, Hq, T] float32 when returnLse (-Inf for a query that sees no key). */
  lse?: Tensor | undefined;
}

/**
 * HyperAttention (Han et al. 2023; DESIGN.md 6.4): q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv], Hq a multiple of
 * Hk. Defaults as the authors' code. The float64 reference takes the same options.
 */
export interface HyperAttentionOptions extends CommonOptions {
  /** The authors' causal recursion (then S must equal T); default false. */
  causal?: boolean | undefined;
  /** Score scale, default 1/sqrt(D). */
  scale?: number | undefined;
  /** Bits of the angular LSH (sign random projections), default 7; 0 to 16. */
  lshBits?: number | undefined;
  /** Keys per diagonal block of the sorted order, default 256. */
  blockSize?: number | undefined;
  /** Keys sampled uniformly (with replacement) per batch row and kv head, default 256; 0: no sampled part. */
  sampleSize?: number | undefined;
  /** Below this many keys (causal: at this many or fewer), exact attention; default 4096. */
  minSeqLen?: number | undefined;
  /** Seed of the projections and the samples (README "HyperAttention": the generator), default 0. */
  seed?: number | undefined;
  /** Also return lse [B, Hq, T] float32: the log-sum-exp HyperAttention's merge ends with. */
  returnLse?: boolean | undefined;
  /**
   * Write o into this tensor instead of a new one: shape [B,T,Hq,Dv] and v's dtype, memory apart from q, k, v.
   * The result's `o` is this same object. With the async form the signal is then checked only before the start.
   */
  out?: TensorInput | undefined;
}

export interface HyperAttentionResult {
  /** [B, T, Hq, Dv], dtype of v. */
  o: Tensor;
  /** [B, Hq, T] float32 when returnLse. */
  lse?: Tensor | undefined;
}

/** gatedDeltaRule's options: `beta` required, no `eta`. */
export type GatedDeltaRuleOptions = Omit<DeltaRuleOptions, 'beta' | 'eta'> & { beta: TensorInput; eta?: undefined };
/** kaczmarzDeltaRule's options: `eta` required, no `beta`. */
export type KaczmarzDeltaRuleOptions = Omit<DeltaRuleOptions, 'beta' | 'eta'> & { eta: TensorInput; beta?: undefined };
/** gatedDeltaRuleStep's options: `beta` required, no `eta`. */
export type GatedDeltaStepOptions = Omit<DeltaStepOptions, 'beta' | 'eta'> & { beta: TensorInput; eta?: undefined };
/** kaczmarzDeltaRuleStep's options: `eta` required, no `beta`. */
export type KaczmarzDeltaStepOptions = Omit<DeltaStepOptions, 'beta' | 'eta'> & { eta: TensorInput; beta?: undefined };
/** A prefill asked for its final state: the result then has it. */
export interface DeltaRuleResultWithState extends DeltaRuleResult {
  finalState: Tensor;
}
export interface AttentionResultWithLse extends AttentionResult {
  lse: Tensor;
}
export interface HyperAttentionResultWithLse extends HyperAttentionResult {
  lse: Tensor;
}
