// Exact attention and gated attention, flash-style (DESIGN.md 6.3): public ops. Validates in TypeScript, then
// runs the native CPU kernels (or the float64 reference when asked, for float64 inputs, or when the addon is
// missing).
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend, type NativeAttentionArgs } from '../backend.js';
import { attentionReference } from '../reference/attention.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData } from '../tensor.js';
import type { AsyncOptions, AttentionOptions, AttentionResult, AttentionResultWithLse } from '../types.js';
import type { TensorInput } from '../tensor.js';
import { callerInt32, checkFinite, checkOffsets, checkOneOf, checkOptions, checkShape, checkTensor, overlaps, rankOf } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';
import { attentionCuda, wantsCuda } from '../cuda.js';

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const MAX_HEAD_DIM = 1024;
const MAX_ELEMENTS = 2 ** 31 - 1; // DESIGN.md 4: element counts fit int32 work arrays

/** Set by the tests (SEQKERN_POISON=1): outputs are filled with NaN before a call, so unwritten elements show. */
const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeAttentionArgs;
  q: Tensor; k: Tensor; v: Tensor;
  oShape: number[];
  oDtype: DType;
  lseShape: number[];
  wantLse: boolean;
  refOpts: AttentionOptions;
  /** The caller's output tensor (opts.out), checked; o is written into it. */
  out?: Tensor;
}

function describe(x: unknown): string {
  if (x === undefined || x === null) return String(x);
  if (ArrayBuffer.isView(x)) return x.constructor.name;
  return Array.isArray(x) ? 'an array' : typeof x;
}

/** Every option attention knows (strict options: anything else is a BAD_ARGUMENT). */
const ATTENTION_OPTIONS = ['backend', 'causal', 'scale', 'gate', 'gateType', 'cuSeqlens', 'cuSeqlensK', 'returnLse', 'out', 'batchInvariant'] as const;

function prepare(op: string, q: unknown, k: unknown, v: unknown, o: AttentionOptions): Prepared {
  checkOptions(op, o, ATTENTION_OPTIONS);
  const qT = checkTensor(op, 'q', q, IN_DTYPES, 4);
  const kT = checkTensor(op, 'k', k, IN_DTYPES, 4);
  const vT = checkTensor(op, 'v', v, IN_DTYPES, 4);
  const [B, T, Hq, D] = qT.shape;
  const [, S, Hk] = kT.shape;
  const Dv = vT.shape[3];
  if (Hq < 1 || D < 1) fail('SHAPE_MISMATCH', op, 'q', 'with Hq >= 1 and D >= 1', `[${qT.shape.join(',')}]`);
  if (Hk < 1) fail('SHAPE_MISMATCH', op, 'k', 'with Hk >= 1', `[${kT.shape.join(',')}]`);
  checkShape(op, 'k', kT, [B, S, Hk, D]);
  checkShape(op, 'v', vT, [B, S, Hk, Dv]);
  if (Dv < 1) fail('SHAPE_MISMATCH', op, 'v', 'with Dv >= 1', `[${vT.shape.join(',')}]`);
  if (Hq % Hk !== 0) fail('SHAPE_MISMATCH', op, 'k', `with Hk dividing Hq=${Hq} (grouped heads)`, `Hk=${Hk}`);
  if (kT.dtype !== qT.dtype) fail('BAD_DTYPE', op, 'k', `of dtype ${qT.dtype} (as q)`, kT.dtype);
  if (vT.dtype !== qT.dtype) fail('BAD_DTYPE', op, 'v', `of dtype ${qT.dtype} (as q)`, vT.dtype);
  if (D > MAX_HEAD_DIM || Dv > MAX_HEAD_DIM) fail('TOO_LARGE', op, 'q/v', `head dims D, Dv <= ${MAX_HEAD_DIM}`, `D=${D}, Dv=${Dv}`);

  if (o.causal !== undefined && typeof o.causal !== 'boolean') fail('BAD_ARGUMENT', op, 'causal', 'to be a boolean', describe(o.causal));
  if (o.returnLse !== undefined && typeof o.returnLse !== 'boolean') fail('BAD_ARGUMENT', op, 'returnLse', 'to be a boolean', describe(o.returnLse));
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFinite(op, 'scale', o.scale);

  // Gate: elementwise [B,T,Hq,Dv] or headwise [B,T,Hq]; the kind follows the rank unless gateType says.
  let gateKind: 'none' | 'elementwise' | 'headwise' = 'none';
  let gT: Tensor | undefined;
  if (o.gate !== undefined) {
    const requested = o.gateType === undefined ? undefined : checkOneOf(op, 'gateType', o.gateType, ['elementwise', 'headwise'] as const);
    const rank = rankOf(o.gate, 0);
    gateKind = requested ?? (rank === 3 ? 'headwise' : 'elementwise');
    const want = gateKind === 'elementwise' ? [B, T, Hq, Dv] : [B, T, Hq];
    gT = checkTensor(op, 'gate', o.gate, IN_DTYPES, want.length);
    checkShape(op, 'gate', gT, want);
  } else if (o.gateType !== undefined) {
    fail('BAD_ARGUMENT', op, 'gateType', 'only together with a gate', String(o.gateType));
  }

  // Packed sequences.
  let cu: Int32Array | undefined;
  let cuK: Int32Array | undefined;
  if (o.cuSeqlens !== undefined) {
    cu = checkOffsets(op, 'cuSeqlens', o.cuSeqlens, T, 'T');
    if (B !== 1) fail('SHAPE_MISMATCH', op, 'q', 'with B = 1 when cuSeqlens packs the sequences', `B=${B}`);
    if (o.cuSeqlensK !== undefined) {
      cuK = checkOffsets(op, 'cuSeqlensK', o.cuSeqlensK, S, 'S');
      if (cuK.length !== cu.length) fail('SHAPE_MISMATCH', op, 'cuSeqlensK', `of ${cu.length} offsets (as cuSeqlens)`, `${cuK.length}`);
    } else if (S !== T) {
      fail('SHAPE_MISMATCH', op, 'k', `with S = T = ${T} when cuSeqlens is given without cuSeqlensK`, `S=${S}`);
    }
  } else if (o.cuSeqlensK !== undefined) {
    fail('BAD_ARGUMENT', op, 'cuSeqlensK', 'only together with cuSeqlens', describe(o.cuSeqlensK));
  }

  const oShape = [B, T, Hq, Dv];
  const lseShape = [B, Hq, T];
  // Outputs are allocated here: refuse sizes past the int32 element cap before allocating (an empty input
  // can declare any B).
  for (const [name, shape] of [['q', qT.shape], ['k', kT.shape], ['v', vT.shape], ['o', oShape], ['lse', lseShape]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }

  // A caller's output: o's shape and dtype, and memory apart from every input. The kernel reads the inputs
  // while other threads already write o, so no overlap is safe (unlike softmaxInto, nothing runs in place).
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [vT.dtype], 4);
    checkShape(op, 'out', outT, oShape);
    const inputs: [string, TensorData | Int32Array | undefined][] = [
      // The caller's offset arrays, not the copies the kernel reads: writing o over them is still a mistake.
      ['q', qT.data], ['k', kT.data], ['v', vT.data], ['gate', gT?.data], ['cuSeqlens', callerInt32(o.cuSeqlens)],
      ['cuSeqlensK', callerInt32(o.cuSeqlensK)],
    ];
    for (const [name, data] of inputs) {
      if (data && overlaps(outT.data, data)) {
        fail('BAD_ARGUMENT', op, 'out', `memory apart from the inputs (q, k, v, gate, cuSeqlens)`, `a view overlapping ${name}`);
      }
    }
  }

  const float64 = qT.dtype === 'float64' || gT?.dtype === 'float64';
  const backend = resolveBackend(op, o.backend as AttentionOptions['backend'], float64);
  const args: NativeAttentionArgs = {
    B, T, S, Hq, Hk, D, Dv,
    q: qT.data, k: kT.data, v: vT.data, dtype: qT.dtype,
    o: undefined as unknown as ArrayBufferView,
    gate: gT?.data, gateDtype: gT?.dtype, gateKind,
    causal: o.causal === true, scale, cuSeqlens: cu, cuSeqlensK: cuK, noSplit: o.batchInvariant === true,
  };
  const refOpts: AttentionOptions = {
    causal: o.causal === true, scale, gate: gT, gateType: gT ? (gateKind as 'elementwise' | 'headwise') : undefined,
    cuSeqlens: cu, cuSeqlensK: cuK,
  };
  return { backend, args, q: qT, k: kT, v: vT, oShape, oDtype: vT.dtype, lseShape, wantLse: o.returnLse === true, refOpts, out: outT };
}

/**
 * Allocates the outputs, or takes the caller's `out` for o (the kernel writes straight into it), poisoned
 * under test either way, and wires them into the native arguments. (Under test an abort the worker honours
 * before its first write therefore leaves the poison in out, where normally out is untouched.)
 */
function allocate(p: Prepared): AttentionResult {
  const o = p.out ?? zeros(p.oShape, p.oDtype);
  if (poison) (o.data as Float32Array | Uint16Array).fill(p.oDtype === 'float32' ? NaN : 0x7fc0);
  p.args.o = o.data;
  p.args.callerOut = p.out !== undefined;
  if (!p.wantLse) return { o };
  const lse = zeros(p.lseShape, 'float32');
  if (poison) lse.data.fill(NaN);
  p.args.lse = lse.data as Float32Array;
  return { o, lse };
}

/** Runs the float64 reference; o in v's dtype, copied into the caller's `out` when given. */
function runReference(p: Prepared): AttentionResult {
  const r = attentionReference(p.q, p.k, p.v, p.refOpts);
  const o = tensor(r.o.data, p.oShape, p.oDtype);
  if (p.out) p.out.data.set(o.data);
  const out: AttentionResult = { o: p.out ?? o };
  if (p.wantLse) out.lse = tensor(r.lse.data, p.lseShape, 'float32');
  return out;
}

const addon = () => native()!;

/**
 * Exact attention, o = softmax(scale · q kᵀ + mask) v, flash-style (key tiles with an online softmax; no
 * T×S matrix is ever formed). q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv] with Hq a multiple of Hk (query head
 * h reads kv head ⌊h / (Hq/Hk)⌋: GQA, MQA). Options: `causal` (bottom-right aligned: query i sees keys
 * j ≤ i + S − T; a query that sees no key, possible when S < T, gets o = 0 and lse = −Inf), `scale` (default
 * 1/√D), `gate` (gated attention, Qiu et al. 2025: o ⊙ sigmoid(gate), gate [B,T,Hq,Dv] elementwise or
 * [B,T,Hq] headwise, `gateType` inferred from the rank), `cuSeqlens` / `cuSeqlensK` (packed sequences,
 * B = 1), `returnLse`, `out` (a Tensor of o's shape [B,T,Hq,Dv] and v's dtype to write o into, for callers
 * that reuse buffers; it must not overlap q, k, v, gate or the offsets: SHAPE_MISMATCH / BAD_DTYPE /
 * BAD_ARGUMENT otherwise, raised before anything is written). Returns o [B,T,Hq,Dv] in v's dtype (`out`
 * itself when given) and, with returnLse, lse [B,Hq,T] float32 (natural log-sum-exp of each query's scaled,
 * masked scores).
 */
export function attention(q: TensorInput, k: TensorInput, v: TensorInput, opts: AttentionOptions & { returnLse: true }): AttentionResultWithLse;
export function attention(q: TensorInput, k: TensorInput, v: TensorInput, opts?: AttentionOptions): AttentionResult;
export function attention(q: TensorInput, k: TensorInput, v: TensorInput, opts: AttentionOptions = {}): AttentionResult {
  const op = 'attention';
  if (wantsCuda(opts?.backend, q, k, v, opts?.gate, opts?.out)) return attentionCuda(op, q, k, v, opts, false);
  const p = prepare(op, q, k, v, opts);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  callNative(op, () => addon().attention(p.args));
  return out;
}

/**
 * Promise form of attention; runs off the event loop and can be aborted between key tiles (rejecting with an
 * AbortError). With `out`, the abort is honoured only until the kernel starts, so `out` is never left
 * half-written: the signal is checked before the call and once more on the worker before the first write;
 * an abort by then rejects with `out` untouched, and an abort after that is ignored: the call runs to the
 * end and resolves with `out` completely written (as softmaxIntoAsync in place and the decode steps do).
 */
export async function attentionAsync(q: TensorInput, k: TensorInput, v: TensorInput, opts: AttentionOptions & { returnLse: true }, a?: AsyncOptions): Promise<AttentionResultWithLse>;
export async function attentionAsync(q: TensorInput, k: TensorInput, v: TensorInput, opts?: AttentionOptions, a?: AsyncOptions): Promise<AttentionResult>;
export async function attentionAsync(q: TensorInput, k: TensorInput, v: TensorInput, opts: AttentionOptions = {}, a: AsyncOptions = {}): Promise<AttentionResult> {
  const op = 'attentionAsync';
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  if (wantsCuda(opts?.backend, q, k, v, opts?.gate, opts?.out)) return attentionCuda(op, q, k, v, opts, true, a);
  const p = prepare(op, q, k, v, opts);
  // Again after prepare, which may run caller code (option getters), and before out is touched.
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  // The worker polls this flag between key tiles; setting it makes the call reject with an AbortError. With
  // a caller's out (callerOut), the worker reads it once before its first write and then drops it.
  await callNativeAsync(op, p.args, signal, () => addon().attentionAsync(p.args));
  // Fresh outputs: an abort that raced the last tile still rejects. A caller's out is now completely
  // written (the abort came after the start), so resolve with it.
  if (!p.out && signal?.aborted) throw abortError(signal);
  return out;
}

// Chained ops (src/runtime.ts): attention's arguments validated as the sync form does, outputs allocated now.
registerChainOp('attention', (op: string, q: TensorInput, k: TensorInput, v: TensorInput, opts: AttentionOptions = {}) => {
  const p = prepare(op, q, k, v, opts);
  chainBackend(op, p.backend);
  const result = allocate(p);
  return { fn: 'attention', args: p.args as unknown as Record<string, unknown>, result };
});
