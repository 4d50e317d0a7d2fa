// Device tensors (DESIGN.md 3): `t.to('cuda')` copies a tensor into GPU memory and returns a CudaTensor;
// `to('cpu')` copies it back. The memory is freed by `dispose()` / `[Symbol.dispose]` (a `using` binding),
// with a FinalizationRegistry as a safety net for a tensor dropped undisposed. The CUDA addon is the main
// addon when it was built with CUDA, or the simulator addon seqkern_sim.node (the same kernels executed on
// the CPU) when SEQKERN_CUDA_SIM=1.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { native, packageRoot } from './backend.js';
import { fail, SeqkernError } from './errors.js';
import { deviceHooks, numel, Tensor, DTYPE_BYTES, type Device, type DType, type TensorData } from './tensor.js';

/** The raw CUDA entry points (cuda/binding.cc). Handles are numbers naming device buffers. */
export interface CudaAddon {
  cudaInfo(): CudaInfo;
  cudaAlloc(bytes: number): number;
  cudaFree(handle: number): boolean;
  cudaUpload(handle: number, data: ArrayBufferView): void;
  cudaDownload(handle: number, data: ArrayBufferView): void;
  cudaDownloadAsync(handle: number, data: ArrayBufferView): Promise<void>;
  cudaSynchronize(): void;
  cudaSoftmax(args: object): void;
  cudaSoftmaxAsync(args: object): Promise<void>;
  cudaAttention(args: object): void;
  cudaAttentionAsync(args: object): Promise<void>;
  cudaDelta(args: object): void;
  cudaDeltaAsync(args: object): Promise<void>;
  cudaLimits(args: { copyBytes: number; reps: number; mmaBlocks: number; mmaIters: number }): { copyMs: number; mmaMs: number; sms: number };
  /** Simulator only. */
  simSetSchedules?(spec?: string): string;
  simLastFault?(): string;
  simSelfTest?(name: string): string;
}

/** What `info().cuda` reports. */
export interface CudaInfo {
  available: boolean;
  /** true: the CPU execution of the CUDA kernels (SEQKERN_CUDA_SIM=1), not a GPU. */
  simulated: boolean;
  /** Why CUDA is unavailable (no CUDA build, no driver, no device, the simulator missing). */
  reason?: string;
  device?: string;
  computeCapability?: string;
  memoryBytes?: number;
  freeBytes?: number;
  multiprocessors?: number;
  driverVersion?: number;
  runtimeVersion?: number;
  addonPath?: string;
}

let cuda: CudaAddon | null | undefined;
let cudaReason = '';
let cudaPath: string | undefined;

/** The CUDA addon, or null (then `cudaInfo().reason` says why). */
export function cudaAddon(): CudaAddon | null {
  if (cuda !== undefined) return cuda;
  if (process.env.SEQKERN_CUDA_SIM === '1') {
    const p = process.env.SEQKERN_SIM_ADDON ?? path.join(packageRoot(), 'build', 'Release', 'seqkern_sim.node');
    if (!existsSync(p)) {
      cudaReason = `SEQKERN_CUDA_SIM=1 but the simulator addon ${p} is missing (run npm rebuild)`;
      return (cuda = null);
    }
    try {
      cuda = createRequire(import.meta.url)(p) as CudaAddon;
      cudaPath = p;
      return cuda;
    } catch (e) {
      cudaReason = `the simulator addon ${p} did not load: ${(e as Error).message}`;
      return (cuda = null);
    }
  }
  const n = native() as unknown as Partial<CudaAddon> | null;
  if (n && typeof n.cudaInfo === 'function') {
    const i = n.cudaInfo();
    if (i.available) return (cuda = n as CudaAddon);
    cudaReason = i.reason ?? 'CUDA is unavailable';
    return (cuda = null);
  }
  cudaReason = n ? 'this build is CPU-only (no CUDA toolkit at install; SEQKERN_CUDA=1 npm rebuild builds it; SEQKERN_CUDA_SIM=1 runs the CUDA kernels on the CPU)' : 'the native addon did not load';
  return (cuda = null);
}

/** CUDA availability and the device, as `info().cuda` reports them. */
export function cudaInfo(): CudaInfo {
  const a = cudaAddon();
  if (!a) return { available: false, simulated: false, reason: cudaReason };
  return { ...a.cudaInfo(), addonPath: cudaPath ?? undefined };
}

/** The CUDA addon for an op, or a NO_CUDA SeqkernError naming the op. */
export function requireCuda(op: string): CudaAddon {
  const a = cudaAddon();
  if (!a) {
    throw new SeqkernError('NO_CUDA', `${op}: expected CUDA for backend 'cuda' or a device tensor, got none: ${cudaReason}`, {
      argument: 'backend', expected: 'a CUDA build with a GPU, or SEQKERN_CUDA_SIM=1', got: cudaReason,
    });
  }
  return a;
}

/** Turns the addon's coded errors into SeqkernErrors. */
export function cudaCall<R>(op: string, f: () => R): R {
  try {
    return f();
  } catch (e) {
    throw fromCuda(op, e);
  }
}

export function fromCuda(op: string, e: unknown): Error {
  const err = e as { code?: string; message?: string };
  if (err && typeof err.code === 'string') {
    const msg = err.message?.startsWith(op) ? err.message : `${op}: ${err.message}`;
    return new SeqkernError(err.code as SeqkernError['code'], msg);
  }
  return e instanceof Error ? e : new Error(String(e));
}

// ---- device tensors ----

interface Held {
  handle: number;
  freed: boolean;
}

const registry = new FinalizationRegistry<Held>((h) => {
  if (!h.freed && cuda) {
    h.freed = true;
    cuda.cudaFree(h.handle);
  }
});

/**
 * A tensor in GPU memory. Its `data` is not readable on the host: `to('cpu')` copies it back. Free it with
 * `dispose()` (or `using t = x.to('cuda')`); a second dispose does nothing; using it afterwards is a
 * SeqkernError.
 */
export class CudaTensor extends Tensor {
  /** @internal the addon's buffer handle */
  readonly held: Held;

  constructor(handle: number, shape: readonly number[], dtype: DType) {
    super(emptyOf(dtype), shape, dtype);
    Object.defineProperty(this, 'device', { value: 'cuda', enumerable: true });
    Object.defineProperty(this, 'data', {
      enumerable: false,
      get: () => {
        throw new SeqkernError('BAD_ARGUMENT', `expected data of a tensor on the CPU, got ${this.toString()} (on cuda): call .to('cpu') first, or an op with a CUDA kernel`, {
          argument: 'data', expected: 'device cpu', got: 'cuda',
        });
      },
    });
    this.held = { handle, freed: false };
    registry.register(this, this.held, this.held);
  }

  get disposed(): boolean {
    return this.held.freed;
  }

  /** The buffer handle for an op, or a SeqkernError naming the argument when disposed. */
  handleFor(op: string, name: string): number {
    if (this.held.freed) fail('BAD_ARGUMENT', op, name, 'to be a live device tensor', `${this.toString()}, disposed`);
    return this.held.handle;
  }

  override dispose(): void {
    if (this.held.freed) return;
    this.held.freed = true;
    registry.unregister(this.held);
    cuda?.cudaFree(this.held.handle);
  }

  override toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(',')}], cuda)`;
  }
}

function emptyOf(dtype: DType): TensorData {
  return dtype === 'float32' ? new Float32Array(0) : dtype === 'float64' ? new Float64Array(0) : new Uint16Array(0);
}

function storageFor(dtype: DType, n: number): TensorData {
  return dtype === 'float32' ? new Float32Array(n) : new Uint16Array(n);
}

/** A fresh, uninitialised device tensor (poisoned with NaN bits under SEQKERN_POISON=1, as CPU outputs are). */
export function emptyCuda(op: string, shape: readonly number[], dtype: DType): CudaTensor {
  const a = requireCuda(op);
  const bytes = numel(shape) * DTYPE_BYTES[dtype];
  const h = cudaCall(op, () => a.cudaAlloc(bytes));
  const t = new CudaTensor(h, shape, dtype);
  if (process.env.SEQKERN_POISON === '1' && bytes > 0) {
    const host = storageFor(dtype, numel(shape));
    if (host instanceof Float32Array) host.fill(NaN);
    else host.fill(0x7fc0);
    cudaCall(op, () => a.cudaUpload(h, host));
  }
  return t;
}

/** Copies a CPU tensor to the GPU. */
export function toCuda(t: Tensor, op = "to('cuda')"): CudaTensor {
  if (t instanceof CudaTensor) {
    t.handleFor(op, 'tensor');
    return t;
  }
  if (t.dtype === 'float64') fail('BAD_DTYPE', op, 'tensor', 'of dtype float32, float16 or bfloat16 (float64 is reference only)', 'float64');
  const a = requireCuda(op);
  const bytes = t.data.byteLength;
  const h = cudaCall(op, () => a.cudaAlloc(bytes));
  const d = new CudaTensor(h, t.shape, t.dtype);
  try {
    cudaCall(op, () => a.cudaUpload(h, t.data));
  } catch (e) {
    d.dispose();
    throw e;
  }
  return d;
}

/** Copies a device tensor back (synchronises its stream). */
export function toCpu(t: Tensor, op = "to('cpu')"): Tensor {
  if (!(t instanceof CudaTensor)) return t;
  const h = t.handleFor(op, 'tensor');
  const host = storageFor(t.dtype, t.size);
  cudaCall(op, () => requireCuda(op).cudaDownload(h, host));
  return new Tensor(host, t.shape, t.dtype);
}

/** Promise form of toCpu: resolves when the stream has run up to the copy, without blocking the event loop. */
export async function toCpuAsync(t: Tensor): Promise<Tensor> {
  const op = "toAsync('cpu')";
  if (!(t instanceof CudaTensor)) return t;
  const h = t.handleFor(op, 'tensor');
  const host = storageFor(t.dtype, t.size);
  try {
    await requireCuda(op).cudaDownloadAsync(h, host);
  } catch (e) {
    throw fromCuda(op, e);
  }
  return new Tensor(host, t.shape, t.dtype);
}

/** 'cuda' when any of the tensors given is a device tensor. */
export function deviceOf(...ts: unknown[]): Device {
  return ts.some((t) => t instanceof CudaTensor) ? 'cuda' : 'cpu';
}

/** Every tensor argument on one device: a SeqkernError naming the first that is not. */
export function checkSameDevice(op: string, device: Device, args: Record<string, unknown>): void {
  for (const [name, t] of Object.entries(args)) {
    if (!(t instanceof Tensor)) continue;
    const d: Device = t instanceof CudaTensor ? 'cuda' : 'cpu';
    if (d !== device) fail('BAD_ARGUMENT', op, name, `on device ${device} (as the other tensors)`, `${t.toString()} on ${d}`);
  }
}

deviceHooks.to = (t: Tensor, device: Device): Tensor => (device === 'cuda' ? toCuda(t) : toCpu(t));
const disposeSymbol: symbol = (Symbol as unknown as { dispose?: symbol }).dispose ?? Symbol.for('Symbol.dispose');
if (!Object.prototype.hasOwnProperty.call(Tensor.prototype, disposeSymbol)) {
  Object.defineProperty(Tensor.prototype, disposeSymbol, {
    value(this: Tensor) {
      this.dispose();
    },
    configurable: true,
  });
}
