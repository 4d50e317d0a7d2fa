// Attention over a KV cache (DESIGN.md 6.6, issue 14 part 1), after FlashAttention's flash_attn_with_kvcache:
// public op. Validates in TypeScript (every check before anything is written), then runs the native driver
// (native/cpu/kvcache.cc, on the attention kernels) or the float64 reference.
import { abortError, fail } from '../errors.js';
import { callNative, callNativeAsync, fromNative, native, resolveBackend } from '../backend.js';
import { attentionWithKVCacheReference } from '../reference/kvcache.js';
import { numel, Tensor, tensor, zeros, type DType, type TensorData } from '../tensor.js';
import type { AsyncOptions, Backend, CommonOptions } from '../types.js';
import { callerInt32, checkFinite, checkOneOf, checkOptions, checkShape, checkTensor, copyInt32, overlaps, rankOf } from '../validate.js';
import { chainBackend, registerChainOp } from '../runtime.js';

/** Options of attentionWithKVCache (one type for the op and its reference). */
export interface KVCacheOptions extends CommonOptions {
  /** Int32Array [B]: tokens already in each sequence's cache (before this call's kNew). Required. */
  cacheSeqlens: Int32Array | readonly number[];
  /**
   * Paged caches: B × maxBlocks block numbers, row-major (row b lists sequence b's blocks in order; entries
   * past a sequence's last block are not read). The caches are then [numBlocks, blockSize, Hk, D|Dv].
   */
  blockTable?: Int32Array | readonly number[];
  /** New keys and values [B, Tq, Hk, D] / [B, Tq, Hk, Dv], written into the caches in place at cacheSeqlens[b] + t. */
  kNew?: Tensor;
  vNew?: Tensor;
  /** Rotary tables cos, sin [maxPos, rotaryDim/2] float32: q and kNew rotated at their positions (needs kNew). */
  rotary?: { cos: Tensor; sin: Tensor };
  /** GPT-J pairs (x[2i], x[2i+1]) instead of GPT-NeoX halves (x[i], x[i + rotaryDim/2]); default false. */
  rotaryInterleaved?: boolean;
  /** Causal among the new tokens, bottom-right aligned (query t sees keys j <= t + S - Tq); default true. */
  causal?: boolean;
  /** Score scale, default 1/sqrt(D). */
  scale?: number;
  /** Gated attention: logits [B, Tq, Hq, Dv] (elementwise) or [B, Tq, Hq] (headwise); o ⊙ sigmoid(gate). */
  gate?: Tensor;
  gateType?: 'elementwise' | 'headwise';
  /** Also return lse [B, Hq, Tq] float32. */
  returnLse?: boolean;
  /** Write o into this tensor ([B, Tq, Hq, Dv], q's dtype, apart from every input and the caches). */
  out?: Tensor;
  /**
   * Each sequence's result independent of the rest of the batch and of the thread count, bit for bit (as
   * attention's: a sequence's keys are never split across threads), for a server batching decode steps.
   * Slower for a decode of few sequences over long caches. Default false.
   */
  batchInvariant?: boolean;
}

export interface KVCacheResult {
  /** [B, Tq, Hq, Dv] in q's dtype (`out` itself when given). */
  o: Tensor;
  /** [B, Hq, Tq] float32 when returnLse (-Inf for a query that sees no key). */
  lse?: Tensor;
}

/** The raw addon's arguments (native/binding/kvcache.cc). */
export interface NativeKVCacheArgs {
  B: number; Tq: number; Hq: number; Hk: number; D: number; Dv: number;
  paged: boolean; capacity: number; numBlocks: number; blockSize: number; maxBlocks: number;
  q: ArrayBufferView; dtype: string; kCache: ArrayBufferView; vCache: ArrayBufferView; cacheDtype: string;
  cacheSeqlens: Int32Array; blockTable?: Int32Array;
  kNew?: ArrayBufferView; vNew?: ArrayBufferView; newDtype?: string;
  cos?: Float32Array; sin?: Float32Array; rotaryDim: number; maxPos: number; interleaved: boolean;
  o: ArrayBufferView; lse?: Float32Array;
  gate?: ArrayBufferView; gateDtype?: string; gateKind: 'none' | 'elementwise' | 'headwise';
  causal: boolean; scale: number; noSplit?: boolean; cancel?: Int32Array;
}

interface KVCacheAddon {
  attentionWithKVCache(args: NativeKVCacheArgs): void;
  attentionWithKVCacheAsync(args: NativeKVCacheArgs): Promise<void>;
}

const IN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];
const TABLE_DTYPES: readonly DType[] = ['float32', 'float64'];
const MAX_HEAD_DIM = 1024;
const MAX_ELEMENTS = 2 ** 31 - 1;
const KV_OPTIONS = [
  'backend', 'cacheSeqlens', 'blockTable', 'kNew', 'vNew', 'rotary', 'rotaryInterleaved', 'causal', 'scale', 'gate', 'gateType',
  'returnLse', 'out', 'batchInvariant',
] as const;

const poison = process.env.SEQKERN_POISON === '1';

interface Prepared {
  backend: 'cpu' | 'reference';
  args: NativeKVCacheArgs;
  q: Tensor; kCache: Tensor; vCache: Tensor;
  oShape: number[]; lseShape: number[]; wantLse: boolean;
  ref: Parameters<typeof attentionWithKVCacheReference>[3];
  out?: Tensor;
}

function describe(x: unknown): string {
  if (x === undefined || x === null) return String(x);
  if (ArrayBuffer.isView(x)) return x.constructor.name;
  return Array.isArray(x) ? 'an array' : typeof x;
}

function prepare(op: string, q: unknown, kCache: unknown, vCache: unknown, o: KVCacheOptions): Prepared {
  checkOptions(op, o, KV_OPTIONS);
  const qT = checkTensor(op, 'q', q, IN_DTYPES, 4);
  const kc = checkTensor(op, 'kCache', kCache, IN_DTYPES, 4);
  const vc = checkTensor(op, 'vCache', vCache, IN_DTYPES, 4);
  const [B, Tq, Hq, D] = qT.shape;
  const [X, Y, Hk] = kc.shape;
  const Dv = vc.shape[3];
  if (Tq < 1 || Hq < 1 || D < 1) fail('SHAPE_MISMATCH', op, 'q', 'with Tq >= 1, Hq >= 1 and D >= 1', `[${qT.shape.join(',')}]`);
  if (Hk < 1) fail('SHAPE_MISMATCH', op, 'kCache', 'with Hk >= 1', `[${kc.shape.join(',')}]`);
  if (Dv < 1) fail('SHAPE_MISMATCH', op, 'vCache', 'with Dv >= 1', `[${vc.shape.join(',')}]`);
  if (Hq % Hk !== 0) fail('SHAPE_MISMATCH', op, 'kCache', `with Hk dividing Hq=${Hq} (grouped heads)`, `Hk=${Hk}`);
  if (D > MAX_HEAD_DIM || Dv > MAX_HEAD_DIM) fail('TOO_LARGE', op, 'q/vCache', `head dims D, Dv <= ${MAX_HEAD_DIM}`, `D=${D}, Dv=${Dv}`);
  const paged = o.blockTable !== undefined;
  if (!paged && X !== B) fail('SHAPE_MISMATCH', op, 'kCache', `of shape [B=${B}, capacity, Hk, D=${D}] (contiguous; a paged cache needs blockTable)`, `[${kc.shape.join(',')}]`);
  checkShape(op, 'kCache', kc, [X, Y, Hk, D]);
  checkShape(op, 'vCache', vc, [X, Y, Hk, Dv]);
  if (vc.dtype !== kc.dtype) fail('BAD_DTYPE', op, 'vCache', `of dtype ${kc.dtype} (as kCache)`, vc.dtype);
  for (const [name, shape] of [['q', qT.shape], ['kCache', kc.shape], ['vCache', vc.shape], ['o', [B, Tq, Hq, Dv]]] as const) {
    if (numel(shape) > MAX_ELEMENTS) fail('TOO_LARGE', op, name, `of at most ${MAX_ELEMENTS} elements`, `shape [${shape.join(',')}]`);
  }

  // New tokens.
  if ((o.kNew === undefined) !== (o.vNew === undefined)) fail('BAD_ARGUMENT', op, o.kNew === undefined ? 'kNew' : 'vNew', 'together with ' + (o.kNew === undefined ? 'vNew' : 'kNew'), 'undefined');
  let kn: Tensor | undefined;
  let vn: Tensor | undefined;
  if (o.kNew !== undefined) {
    kn = checkTensor(op, 'kNew', o.kNew, IN_DTYPES, 4);
    vn = checkTensor(op, 'vNew', o.vNew, IN_DTYPES, 4);
    checkShape(op, 'kNew', kn, [B, Tq, Hk, D]);
    checkShape(op, 'vNew', vn, [B, Tq, Hk, Dv]);
    if (vn.dtype !== kn.dtype) fail('BAD_DTYPE', op, 'vNew', `of dtype ${kn.dtype} (as kNew)`, vn.dtype);
  }
  const append = kn !== undefined;
  const added = append ? Tq : 0;

  // Lengths and capacity.
  if (o.cacheSeqlens === undefined) fail('BAD_ARGUMENT', op, 'cacheSeqlens', 'to be an Int32Array of B entries (tokens in each cache)', 'undefined');
  const lens = copyInt32(op, 'cacheSeqlens', o.cacheSeqlens);
  if (lens.length !== B) fail('SHAPE_MISMATCH', op, 'cacheSeqlens', `of ${B} entries (B)`, `${lens.length}`);
  let maxBlocks = 0;
  let table: Int32Array | undefined;
  if (paged) {
    table = copyInt32(op, 'blockTable', o.blockTable);
    if (B === 0 ? table.length !== 0 : table.length % B !== 0) fail('SHAPE_MISMATCH', op, 'blockTable', `of B × maxBlocks entries (B=${B})`, `${table.length}`);
    maxBlocks = B === 0 ? 0 : table.length / B;
  }
  const cap = paged ? maxBlocks * Y : Y;
  let maxLen = 0;
  for (let b = 0; b < B; b++) {
    if (lens[b] < 0) fail('OUT_OF_RANGE', op, 'cacheSeqlens', '>= 0', `${lens[b]} at index ${b}`);
    if (lens[b] + added > cap) {
      fail('OUT_OF_RANGE', op, 'cacheSeqlens', `+ Tq <= ${paged ? 'maxBlocks × blockSize' : 'capacity'} = ${cap} (capacity overflow)`, `${lens[b]} + ${added} at index ${b}`);
    }
    maxLen = Math.max(maxLen, lens[b] + added);
  }
  if (table) {
    const rows = new Set<number>();
    for (let b = 0; b < B; b++) {
      const used = Math.ceil((lens[b] + added) / Y);
      for (let i = 0; i < used; i++) {
        const blk = table[b * maxBlocks + i];
        if (blk < 0 || blk >= X) fail('OUT_OF_RANGE', op, 'blockTable', `entries in [0, numBlocks=${X}) for the blocks sequence ${b} uses`, `${blk} at [${b}][${i}]`);
      }
      for (let t = 0; t < added; t++) {
        const pos = lens[b] + t;
        const row = table[b * maxBlocks + Math.floor(pos / Y)] * Y + (pos % Y);
        if (rows.has(row)) fail('BAD_ARGUMENT', op, 'blockTable', 'to give every appended token its own cache row', `two new tokens on row ${pos % Y} of block ${table[b * maxBlocks + Math.floor(pos / Y)]}`);
        rows.add(row);
      }
    }
  }

  // Rotary.
  let cosT: Tensor | undefined;
  let sinT: Tensor | undefined;
  if (o.rotary !== undefined) {
    if (typeof o.rotary !== 'object' || o.rotary === null) fail('BAD_ARGUMENT', op, 'rotary', 'to be { cos, sin }', describe(o.rotary));
    checkOptions(op, o.rotary, ['cos', 'sin']);
    if (!append) fail('BAD_ARGUMENT', op, 'rotary', 'together with kNew and vNew (it rotates q and kNew at their positions)', 'no kNew');
    cosT = checkTensor(op, 'rotary.cos', o.rotary.cos, TABLE_DTYPES, 2);
    sinT = checkTensor(op, 'rotary.sin', o.rotary.sin, TABLE_DTYPES, 2);
    checkShape(op, 'rotary.sin', sinT, cosT.shape);
    const half = cosT.shape[1];
    if (half < 1 || 2 * half > D) fail('SHAPE_MISMATCH', op, 'rotary.cos', `with rotaryDim/2 columns in [1, D/2 = ${Math.floor(D / 2)}]`, `[${cosT.shape.join(',')}]`);
    if (cosT.shape[0] < maxLen) fail('OUT_OF_RANGE', op, 'rotary.cos', `of at least ${maxLen} rows (cacheSeqlens + Tq: rotary tables too short)`, `${cosT.shape[0]}`);
  }
  if (o.rotaryInterleaved !== undefined && typeof o.rotaryInterleaved !== 'boolean') fail('BAD_ARGUMENT', op, 'rotaryInterleaved', 'to be a boolean', describe(o.rotaryInterleaved));
  if (o.causal !== undefined && typeof o.causal !== 'boolean') fail('BAD_ARGUMENT', op, 'causal', 'to be a boolean', describe(o.causal));
  if (o.batchInvariant !== undefined && typeof o.batchInvariant !== 'boolean') fail('BAD_ARGUMENT', op, 'batchInvariant', 'to be a boolean', describe(o.batchInvariant));
  if (o.returnLse !== undefined && typeof o.returnLse !== 'boolean') fail('BAD_ARGUMENT', op, 'returnLse', 'to be a boolean', describe(o.returnLse));
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFinite(op, 'scale', o.scale);

  // Gate.
  let gateKind: 'none' | 'elementwise' | 'headwise' = 'none';
  let gT: Tensor | undefined;
  if (o.gate !== undefined) {
    const requested = o.gateType === undefined ? undefined : checkOneOf(op, 'gateType', o.gateType, ['elementwise', 'headwise'] as const);
    gateKind = requested ?? (rankOf(o.gate, 4) === 3 ? 'headwise' : 'elementwise');
    const want = gateKind === 'elementwise' ? [B, Tq, Hq, Dv] : [B, Tq, Hq];
    gT = checkTensor(op, 'gate', o.gate, IN_DTYPES, want.length);
    checkShape(op, 'gate', gT, want);
  } else if (o.gateType !== undefined) {
    fail('BAD_ARGUMENT', op, 'gateType', 'only together with a gate', String(o.gateType));
  }

  // Memory: the caches are written while q, kNew, vNew, gate and the tables are read; o after everything.
  const reads: [string, TensorData | Int32Array | undefined][] = [
    ['q', qT.data], ['kNew', kn?.data], ['vNew', vn?.data], ['gate', gT?.data], ['rotary.cos', cosT?.data], ['rotary.sin', sinT?.data],
    ['cacheSeqlens', callerInt32(o.cacheSeqlens)], ['blockTable', callerInt32(o.blockTable)],
  ];
  if (overlaps(kc.data, vc.data)) fail('BAD_ARGUMENT', op, 'vCache', 'in memory apart from kCache', 'a view overlapping kCache');
  for (const [cname, c] of [['kCache', kc], ['vCache', vc]] as const) {
    if (!append) continue;
    for (const [name, data] of reads) {
      if (data && overlaps(c.data, data)) fail('BAD_ARGUMENT', op, cname, 'in memory apart from the inputs it is appended from (written in place)', `a view overlapping ${name}`);
    }
  }
  const oShape = [B, Tq, Hq, Dv];
  let outT: Tensor | undefined;
  if (o.out !== undefined) {
    outT = checkTensor(op, 'out', o.out, [qT.dtype], 4);
    checkShape(op, 'out', outT, oShape);
    for (const [name, data] of [...reads, ['kCache', kc.data], ['vCache', vc.data]] as [string, TensorData | Int32Array | undefined][]) {
      if (data && overlaps(outT.data, data)) fail('BAD_ARGUMENT', op, 'out', 'in memory apart from the inputs and the caches', `a view overlapping ${name}`);
    }
  }

  const float64 = [qT, kc, kn, gT, cosT].some((t) => t?.dtype === 'float64');
  const backend = resolveBackend(op, o.backend as Backend | undefined, float64);
  const args: NativeKVCacheArgs = {
    B, Tq, Hq, Hk, D, Dv, paged, capacity: paged ? 0 : Y, numBlocks: paged ? X : 0, blockSize: paged ? Y : 0, maxBlocks,
    q: qT.data, dtype: qT.dtype, kCache: kc.data, vCache: vc.data, cacheDtype: kc.dtype, cacheSeqlens: lens, blockTable: table,
    kNew: kn?.data, vNew: vn?.data, newDtype: kn?.dtype,
    cos: cosT?.data as Float32Array | undefined, sin: sinT?.data as Float32Array | undefined,
    rotaryDim: cosT ? 2 * cosT.shape[1] : 0, maxPos: cosT ? cosT.shape[0] : 0, interleaved: o.rotaryInterleaved === true,
    o: undefined as unknown as ArrayBufferView, gate: gT?.data, gateDtype: gT?.dtype, gateKind,
    causal: o.causal !== false, scale, noSplit: o.batchInvariant === true,
  };
  const ref = {
    cacheSeqlens: lens, blockTable: table, kNew: kn, vNew: vn, rotary: cosT && sinT ? { cos: cosT, sin: sinT } : undefined,
    rotaryInterleaved: o.rotaryInterleaved === true, causal: o.causal !== false, scale, gate: gT,
    gateType: gT ? (gateKind as 'elementwise' | 'headwise') : undefined,
  };
  return { backend, args, q: qT, kCache: kc, vCache: vc, oShape, lseShape: [B, Hq, Tq], wantLse: o.returnLse === true, ref, out: outT };
}

function allocate(p: Prepared): KVCacheResult {
  const o = p.out ?? zeros(p.oShape, p.q.dtype);
  if (poison) (o.data as Float32Array | Uint16Array).fill(p.q.dtype === 'float32' ? NaN : 0x7fc0);
  p.args.o = o.data;
  if (!p.wantLse) return { o };
  const lse = zeros(p.lseShape, 'float32');
  if (poison) lse.data.fill(NaN);
  p.args.lse = lse.data as Float32Array;
  return { o, lse };
}

function runReference(p: Prepared): KVCacheResult {
  const r = attentionWithKVCacheReference(p.q, p.kCache, p.vCache, p.ref);
  const o = tensor(r.o.data, p.oShape, p.q.dtype);
  if (p.out) p.out.data.set(o.data);
  const res: KVCacheResult = { o: p.out ?? o };
  if (p.wantLse) res.lse = tensor(r.lse.data, p.lseShape, 'float32');
  return res;
}

const addon = () => native() as unknown as KVCacheAddon;

/**
 * Attention of new queries over per-sequence KV caches, after FlashAttention's `flash_attn_with_kvcache`:
 * batched decode (Tq = 1), chunked prefill or speculative verify (Tq > 1) over caches of different lengths in
 * one call, work proportional to the keys attended.
 *
 * q [B, Tq, Hq, D]; caches contiguous kCache [B, capacity, Hk, D], vCache [B, capacity, Hk, Dv], or paged
 * [numBlocks, blockSize, Hk, D|Dv] with `blockTable`; their dtype (float32, float16, bfloat16) independent of
 * q's. `cacheSeqlens[b]` tokens are in sequence b's cache. With `kNew`/`vNew` [B, Tq, Hk, D|Dv] the new tokens
 * are first written into the caches in place at cacheSeqlens[b] + t (the caller advances cacheSeqlens after
 * the call), and the call attends over cacheSeqlens[b] + Tq keys; `rotary: { cos, sin }` rotates q and kNew at
 * those positions first (partial when rotaryDim = 2 × cos columns < D; `rotaryInterleaved`). Options as in
 * `attention`: `causal` (default true), `scale`, `gate`, `returnLse`, `out`. Every argument is checked before
 * anything (caches, out) is written. Returns { o [B, Tq, Hq, Dv] in q's dtype, lse? [B, Hq, Tq] }.
 */
export function attentionWithKVCache(q: Tensor, kCache: Tensor, vCache: Tensor, opts: KVCacheOptions): KVCacheResult {
  const op = 'attentionWithKVCache';
  const p = prepare(op, q, kCache, vCache, opts ?? ({} as KVCacheOptions));
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  callNative(op, () => addon().attentionWithKVCache(p.args));
  return out;
}

/**
 * Promise form of attentionWithKVCache, off the event loop. The caches are written in place, so the call is
 * all or nothing: the signal is checked before the call and once more on the worker before the append; an
 * abort by then rejects with the caches (and `out`) untouched, and an abort after that is ignored (the call
 * runs to the end and resolves).
 */
export async function attentionWithKVCacheAsync(q: Tensor, kCache: Tensor, vCache: Tensor, opts: KVCacheOptions, a: AsyncOptions = {}): Promise<KVCacheResult> {
  const op = 'attentionWithKVCacheAsync';
  const signal = a?.signal;
  if (signal?.aborted) throw abortError(signal);
  const p = prepare(op, q, kCache, vCache, opts ?? ({} as KVCacheOptions));
  if (signal?.aborted) throw abortError(signal);
  if (p.backend === 'reference') return runReference(p);
  const out = allocate(p);
  await callNativeAsync(op, p.args, signal, () => addon().attentionWithKVCacheAsync(p.args));
  return out;
}

// Chained ops (src/runtime.ts): every check of the sync form (capacity, block table, rows of the append) at
// op(), outputs allocated now; the caches are appended to when the chain runs. cacheSeqlens is copied here,
// so a chain holding this op is one step's: build the next step's chain with the advanced lengths.
registerChainOp('attentionWithKVCache', (op: string, q: Tensor, kCache: Tensor, vCache: Tensor, opts: KVCacheOptions) => {
  const p = prepare(op, q, kCache, vCache, opts ?? ({} as KVCacheOptions));
  chainBackend(op, p.backend);
  const result = allocate(p);
  return { fn: 'attentionWithKVCache', args: p.args as unknown as Record<string, unknown>, result };
});
