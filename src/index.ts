// seqkern: fast, exact sequence kernels for Node.js. Public API.
import { addonLoadError, loadedAddonPath, native, simdLevelChanged } from './backend.js';
import { SeqkernError } from './errors.js';
import { cudaInfo, type CudaInfo } from './device.js';

export { SeqkernError, type SeqkernErrorCode } from './errors.js';
export { Tensor, tensor, zeros, full, randn, rand, rng, numel, cat, asTensor, type DType, type TensorData, type TensorLike } from './tensor.js';
export type * from './types.js';
export {
  gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, gatedDeltaRuleStepAsync,
  kaczmarzDeltaRule, kaczmarzDeltaRuleAsync, kaczmarzDeltaRuleStep, kaczmarzDeltaRuleStepAsync,
} from './ops/delta.js';
export { gatedDeltaRuleReference, gatedDeltaRuleStepReference } from './reference/delta.js';
export { softmax, softmaxInto, softmaxAsync, softmaxIntoAsync, calibrateSoftmax, softmaxAutoChoice, SOFTMAX_STREAM_BYTES } from './ops/softmax.js';
export { deltaCheckpointLayout, deltaCommitStates, type DeltaCheckpointLayout } from './ops/delta.js';
export { softmaxReference } from './reference/softmax.js';
export { attention, attentionAsync } from './ops/attention.js';
export { attentionReference } from './reference/attention.js';
export { hyperAttention, hyperAttentionAsync } from './ops/hyper.js';
export { CudaTensor, cudaInfo, toCpuAsync, type CudaInfo } from './device.js';
export {
  warmup, warmupAsync, chain, chainOps, Chain, ChainError, registerChainOp, chainBackend, calibrationsMade,
  type ChainPlan, type ChainPlanner, type ChainOpMap, type ChainOpName, type DeltaCalibration, type WarmupOptions, type WarmupResult,
} from './runtime.js';
export { hyperAttentionReference, hyperProjections, hyperSampleStream, hyperSamples, grayRank } from './reference/hyper.js';
export { attentionWithKVCache, attentionWithKVCacheAsync, type KVCacheOptions, type KVCacheResult } from './ops/kvcache.js';
export { attentionWithKVCacheReference } from './reference/kvcache.js';
export { rotary, rotaryAsync, type RotaryOptions } from './ops/rotary.js';
export { rotaryReference } from './reference/rotary.js';
export {
  nalaAttention, nalaAttentionAsync, nalaAttentionStep, nalaAttentionStepAsync,
  type NalaAttentionOptions, type NalaAttentionResult, type NalaRope, type NalaStepOptions, type NalaStepResult,
} from './ops/nala.js';
export { nalaAttentionReference, nalaAttentionStepReference, nalaStateLength } from './reference/nala.js';

export interface Info {
  version: string;
  /** 'cpu' when the native addon loaded, else 'reference'. */
  backend: 'cpu' | 'reference';
  addonPath?: string;
  addonError?: string;
  buildSystem?: string;
  compiler?: string;
  /** SIMD level the kernels use now, and the best this CPU supports. */
  simd?: string;
  simdBest?: string;
  cpuFeatures?: string;
  threads?: number;
  /** CUDA: available (a GPU, or the simulator with SEQKERN_CUDA_SIM=1), the device, or why not. */
  cuda: CudaInfo;
}

/** What this build and machine offer (also `seqkern info`). */
export function info(): Info {
  const n = native();
  const base = { version: '0.1.0', cuda: cudaInfo() };
  if (!n) return { ...base, backend: 'reference', addonError: addonLoadError() };
  const i = n.info();
  return {
    ...base,
    backend: 'cpu',
    addonPath: loadedAddonPath(),
    buildSystem: i.buildSystem,
    compiler: i.compiler,
    simd: i.simd,
    simdBest: i.simdBest,
    cpuFeatures: i.cpuFeatures,
    threads: i.threads,
  };
}

/** Most threads setNumThreads accepts (the native pool's cap). */
export const MAX_THREADS = 1024;

/**
 * Sets the size of the CPU thread pool (n <= 0: one per core; at most MAX_THREADS). Returns the size in
 * effect. Process-wide: one pool serves every worker thread and every op (calls from several threads take
 * turns). If the threads cannot be started, a SeqkernError and the pool stays as it was.
 */
export function setNumThreads(n: number): number {
  const a = native();
  if (!a) return 1;
  if (!Number.isInteger(n)) throw new SeqkernError('BAD_ARGUMENT', `setNumThreads: expected an integer, got ${n}`, { argument: 'n', expected: 'integer', got: String(n) });
  if (n > MAX_THREADS) throw new SeqkernError('OUT_OF_RANGE', `setNumThreads: expected n at most ${MAX_THREADS}, got ${n}`, { argument: 'n', expected: `<= ${MAX_THREADS}`, got: String(n) });
  try {
    return a.setNumThreads(n);
  } catch (e) {
    const err = e as { code?: string; message?: string };
    throw new SeqkernError((err.code ?? 'NATIVE_ERROR') as SeqkernError['code'], `setNumThreads: ${err.message}`, { argument: 'n' });
  }
}

/** Forces a SIMD level ('avx512' | 'avx2' | 'portable'); only levels the CPU supports. Returns the level in effect. */
export function setSimdLevel(level: 'avx512' | 'avx2' | 'portable'): string {
  const a = native();
  if (!a) return 'none';
  try {
    const now = a.setSimd(level);
    simdLevelChanged(now);
    return now;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    throw new SeqkernError((err.code ?? 'BAD_ARGUMENT') as SeqkernError['code'], `setSimdLevel: ${err.message}`, { argument: 'level' });
  }
}
export { linear, linearAsync, type LinearOptions } from './ops/linear.js';
export { linearReference } from './reference/linear.js';
export {
  causalConv1d, causalConv1dAsync, causalConv1dUpdate, causalConv1dUpdateAsync,
  type CausalConv1dOptions, type CausalConv1dUpdateOptions,
} from './ops/conv.js';
export { causalConv1dReference } from './reference/conv.js';
export { rmsNorm, rmsNormAsync, rmsNormGated, rmsNormGatedAsync, type RmsNormOptions } from './ops/norm.js';
export { rmsNormReference } from './reference/norm.js';
