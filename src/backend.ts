// Loads the native addon once. When it is missing or broken every op falls back to the float64 reference
// backend, with a one-time warning that says why and how to fix it.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SeqkernError, abortError } from './errors.js';
import type { Backend } from './types.js';
import type { NativeLinearArgs } from './ops/linear.js';

/** The raw addon's own type (kept apart from the public API, as node-llama-cpp does). */
export interface NativeInfo {
  simd: string;
  simdBest: string;
  cpuFeatures: string;
  threads: number;
  defaultThreads: number;
  buildSystem: string;
  compiler?: string;
  cuda: boolean;
}

/**
 * The raw addon's delta-rule arguments (native/binding/delta.cc). finalState may be initialState itself (the
 * in-place decode step). callerOut: o is the caller's buffer, so cancel is read once, before the first write,
 * and o ends all old or all new.
 */
export interface NativeDeltaArgs {
  B: number; T: number; H: number; HV: number; K: number; V: number;
  q: ArrayBufferView; k: ArrayBufferView; v: ArrayBufferView; dtype: string;
  beta: ArrayBufferView; betaDtype: string; kaczmarz: boolean; eps: number;
  g?: ArrayBufferView; gDtype?: string; decayKind: 'none' | 'log' | 'sign';
  initialState?: Float32Array; finalState?: Float32Array; o: ArrayBufferView; callerOut?: boolean;
  cuSeqlens?: Int32Array; qkL2Norm: boolean; scale: number; chunkSize: number;
  algorithm: 'chunk' | 'recurrent'; cancel?: Int32Array;
  // The delta-state pool (native/binding/delta.cc): pool [slots,HV,K,V] in place, snapshots every snapEvery tokens.
  pool?: Float32Array | Uint16Array; poolDtype?: string; slots?: number; stateIndices?: Int32Array; hasInitialState?: Uint8Array;
  updateState?: boolean; snaps?: Float32Array | Uint16Array; snapDtype?: string; snapEvery?: number;
  aLog?: Float32Array; dtBias?: Float32Array; betaSigmoid?: boolean; betaScale?: number;
}

/** The raw addon's softmax arguments (native/binding/softmax.cc); x and out are read/written in place. */
export interface NativeSoftmaxArgs {
  x: ArrayBufferView; out: ArrayBufferView; dtype: string; rows: number; cols: number;
  algorithm: 'two-pass' | 'three-pass'; strict: boolean; cancel?: Int32Array;
}

/**
 * The raw addon's attention arguments (native/binding/attention.cc). callerOut: o is the caller's buffer,
 * so cancel is read once, before the first write, and o ends all old or all new.
 */
export interface NativeAttentionArgs {
  B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  q: ArrayBufferView; k: ArrayBufferView; v: ArrayBufferView; dtype: string;
  o: ArrayBufferView; lse?: Float32Array; callerOut?: boolean;
  gate?: ArrayBufferView; gateDtype?: string; gateKind: 'none' | 'elementwise' | 'headwise';
  causal: boolean; scale: number; noSplit?: boolean;
  cuSeqlens?: Int32Array; cuSeqlensK?: Int32Array; cancel?: Int32Array;
}

/**
 * The raw addon's HyperAttention arguments (native/binding/hyper.cc). callerOut: o is the caller's buffer, so
 * cancel is read once, before the first write, and o ends all old or all new.
 */
export interface NativeHyperArgs {
  B: number; T: number; S: number; Hq: number; Hk: number; D: number; Dv: number;
  q: ArrayBufferView; k: ArrayBufferView; v: ArrayBufferView; dtype: string;
  o: ArrayBufferView; lse?: Float32Array; callerOut?: boolean;
  causal: boolean; scale: number; lshBits: number; blockSize: number; sampleSize: number; minSeqLen: number; seed: number;
  cancel?: Int32Array;
}

/**
 * The raw addon's NaLaFormer arguments (native/binding/nala.cc). step: T = S = 1, B = N, rope rows by
 * sequence, finalState is initialState itself (in place). callerOut: o is the caller's buffer, so cancel is
 * read once, before the first write.
 */
export interface NativeNalaArgs {
  B: number; T: number; S: number; H: number; Hk: number; K: number; V: number; step: boolean;
  q: ArrayBufferView; k: ArrayBufferView; v: ArrayBufferView; dtype: string;
  o: ArrayBufferView; callerOut?: boolean;
  causal: boolean; eps: number;
  cuSeqlens?: Int32Array; cuSeqlensK?: Int32Array;
  ropeCos?: Float32Array; ropeSin?: Float32Array; ropeKCos?: Float32Array; ropeKSin?: Float32Array;
  initialState?: Float32Array; finalState?: Float32Array; cancel?: Int32Array;
}

/** The raw addon's generator probe (tests): R [D, lshBits] and draws of the sample stream (b, hk, q0) in [0, n). */
export interface NativeHyperRandomArgs {
  seed: number; D?: number; lshBits?: number; R?: Float32Array;
  b?: number; hk?: number; q0?: number; n?: number; samples?: Int32Array;
}

export interface NativeAddon {
  info(): NativeInfo;
  setNumThreads(n: number): number;
  setSimd(level: string): string;
  deltaRule(args: NativeDeltaArgs): void;
  deltaRuleAsync(args: NativeDeltaArgs): Promise<void>;
  softmax(args: NativeSoftmaxArgs): void;
  softmaxAsync(args: NativeSoftmaxArgs): Promise<void>;
  attention(args: NativeAttentionArgs): void;
  attentionAsync(args: NativeAttentionArgs): Promise<void>;
  hyperAttention(args: NativeHyperArgs): void;
  hyperAttentionAsync(args: NativeHyperArgs): Promise<void>;
  hyperRandom(args: NativeHyperRandomArgs): void;
  nala(args: NativeNalaArgs): void;
  nalaAsync(args: NativeNalaArgs): Promise<void>;
  /** Whole-array dtype conversion (the tensor helpers): float32 / float16 / bfloat16, round to nearest even. */
  castArray(args: { src: Float32Array | Uint16Array; srcDtype: string; dst: Float32Array | Uint16Array; dstDtype: string }): void;
  /** Chained ops (native/binding/runtime.cc): each { fn: an op's sync name, args: its argument object }. */
  chain(args: { ops: { fn: string; args: Record<string, unknown> }[]; cancel?: Int32Array | undefined }): void;
  chainAsync(args: { ops: { fn: string; args: Record<string, unknown> }[]; cancel?: Int32Array | undefined }): Promise<void>;
  /** The delta chunk/recurrent race: result[0] 0 (chunk) or 1 (recurrent); times: best ns of each. */
  deltaCalibrate(args: { K: number; V: number; result: Int32Array; times?: Float64Array }): void;
  deltaCalibrateAsync(args: { K: number; V: number; result: Int32Array; times?: Float64Array }): Promise<void>;
  linear(args: NativeLinearArgs): void;
  linearAsync(args: NativeLinearArgs): Promise<void>;
  /** Machine-limit probes used by `seqkern bench --limits` (present in builds that have them). */
  [probe: string]: unknown;
}

let addon: NativeAddon | null | undefined;
let addonPath: string | undefined;
let loadError: string | undefined;
let warned = false;

/** The package root: the nearest folder above this file whose package.json is seqkern's. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'seqkern') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

let simdCached: string | undefined;

/**
 * The SIMD level the kernels use now, without a call to info() (which builds its whole report: ~10 us, as
 * much as a small op). Cached until setSimdLevel changes it (simdLevelChanged); 'none' without the addon.
 */
export function simdLevelNow(): string {
  if (simdCached !== undefined) return simdCached;
  const a = native();
  return (simdCached = a ? a.info().simd : 'none');
}

/** Called by setSimdLevel with the level now in effect. */
export function simdLevelChanged(level: string): void {
  simdCached = level;
}

/** The addon, or null when it cannot be loaded (then `addonLoadError()` says why). */
export function native(): NativeAddon | null {
  if (addon !== undefined) return addon;
  if (process.env.SEQKERN_BACKEND === 'reference') {
    loadError = 'SEQKERN_BACKEND=reference';
    return (addon = null);
  }
  const root = packageRoot();
  // A local build first; else the prebuilt addon of an installed tarball (scripts/prebuild.mjs).
  const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, `seqkern.abi${process.versions.modules}.node`);
  const candidates = [process.env.SEQKERN_ADDON, path.join(root, 'build', 'Release', 'seqkern.node'), prebuilt].filter(
    (p): p is string => !!p,
  );
  const req = createRequire(import.meta.url);
  for (const p of candidates) {
    if (!existsSync(p)) continue;
    try {
      addon = cancelOnExit(req(p) as NativeAddon);
      addonPath = p;
      return addon;
    } catch (e) {
      loadError = `${p}: ${(e as Error).message}`;
    }
  }
  loadError ??= `no addon at ${candidates.join(' or ')}`;
  return (addon = null);
}

/**
 * Every async entry point gets a cancel flag (when the op did not pass one) and is tracked while in flight,
 * so that an exiting process stops its kernels at their next cancellation point instead of waiting for
 * results nobody can receive (Node finishes in-flight work before it exits).
 */
function cancelOnExit(a: NativeAddon): NativeAddon {
  const inFlight = new Set<Int32Array>();
  for (const name of Object.keys(a)) {
    const f = a[name];
    if (!name.endsWith('Async') || typeof f !== 'function') continue;
    a[name] = (args: { cancel?: Int32Array }, ...rest: unknown[]) => {
      if (args !== null && typeof args === 'object' && args.cancel === undefined) args.cancel = new Int32Array(1);
      const cancel = args?.cancel;
      const p = (f as (...x: unknown[]) => Promise<void>).call(a, args, ...rest);
      if (cancel instanceof Int32Array && p instanceof Promise) {
        inFlight.add(cancel);
        p.then(() => inFlight.delete(cancel), () => inFlight.delete(cancel));
      }
      return p;
    };
  }
  process.once('exit', () => {
    for (const c of inFlight) Atomics.store(c, 0, 1);
  });
  return a;
}

export function addonLoadError(): string | undefined {
  native();
  return loadError;
}

export function loadedAddonPath(): string | undefined {
  native();
  return addonPath;
}

/** Picks the backend of one call: the requested one, else cpu when the addon loaded, else reference. */
export function resolveBackend(op: string, requested: Backend | undefined, float64Inputs = false): 'cpu' | 'reference' {
  if (requested === 'cuda') {
    throw new SeqkernError('NO_CUDA', `${op}: has no CUDA kernel yet (backend 'cuda' runs softmax, attention and the delta-rule recurrence; a CPU-only build runs none): expected backend 'cpu' or 'reference', got 'cuda'`, {
      argument: 'backend', expected: 'cpu | reference', got: 'cuda',
    });
  }
  if (requested === 'reference') return 'reference';
  if (requested !== undefined && requested !== 'cpu') {
    throw new SeqkernError('BAD_ARGUMENT', `${op}: expected backend 'cpu', 'reference' or 'cuda', got ${String(requested)}`, {
      argument: 'backend', expected: "'cpu' | 'reference' | 'cuda'", got: String(requested),
    });
  }
  if (float64Inputs) {
    if (requested === 'cpu') {
      throw new SeqkernError('BAD_DTYPE', `${op}: expected float32, float16 or bfloat16 inputs for backend 'cpu', got float64 (reference only)`, {
        argument: 'dtype', expected: 'float32 | float16 | bfloat16', got: 'float64',
      });
    }
    return 'reference';
  }
  if (native()) return 'cpu';
  if (requested === 'cpu') {
    throw new SeqkernError('NATIVE_ERROR', `${op}: expected the native addon for backend 'cpu', but it did not load (${loadError})`, {
      argument: 'backend', expected: 'a built addon', got: String(loadError),
    });
  }
  if (!warned) {
    warned = true;
    process.emitWarning(
      `seqkern: native addon not loaded (${loadError}); using the slow float64 reference backend. Run \`npm rebuild seqkern\` to build it.`,
      { code: 'SEQKERN_NO_ADDON' },
    );
  }
  return 'reference';
}

/** Calls into the addon, turning its coded errors into SeqkernErrors. */
export function callNative<R>(op: string, f: () => R): R {
  try {
    return f();
  } catch (e) {
    throw fromNative(op, e);
  }
}

/**
 * Runs an op's native async entry point with a cancel flag in its arguments that the signal sets (the
 * worker polls it between chunks), turning a native failure into a SeqkernError or an AbortError.
 */
export async function callNativeAsync(op: string, args: { cancel?: Int32Array }, signal: AbortSignal | undefined, f: () => Promise<void>): Promise<void> {
  const cancel = new Int32Array(1);
  args.cancel = cancel;
  const onAbort = () => Atomics.store(cancel, 0, 1);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await f();
  } catch (e) {
    throw fromNative(op, e, signal);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

export function fromNative(op: string, e: unknown, signal?: AbortSignal): Error {
  const err = e as { code?: string; message?: string };
  if (err && err.code === 'ABORTED') return abortError(signal);
  if (err && typeof err.code === 'string') {
    return new SeqkernError(err.code as SeqkernError['code'], `${op}: ${err.message}`);
  }
  return e instanceof Error ? e : new Error(String(e));
}
