/**
 * Float64 reference of attention over a KV cache (DESIGN.md 6.6, issue 14 part 1), after FlashAttention's
 * flash_attn_with_kvcache, by the plain formula: append, gather each sequence's keys, then the textbook
 * attention of reference/attention.ts (full score rows, max-subtracted softmax, weighted sum).
 *
 * Shapes: q [B, Tq, Hq, D]; caches contiguous kCache [B, capacity, Hk, D], vCache [B, capacity, Hk, Dv], or
 * paged [numBlocks, blockSize, Hk, D|Dv] with blockTable (B x maxBlocks, Int32Array flat): key j of sequence b
 * is row j % blockSize of block blockTable[b * maxBlocks + floor(j / blockSize)]. Sequence b holds
 * L_b = cacheSeqlens[b] tokens.
 *
 *   append (kNew, vNew [B, Tq, Hk, D|Dv] given): cache position L_b + t <- rotary(kNew[b, t]) and vNew[b, t],
 *     rounded to the cache dtype (the caches are written in place, as the op does); S_b = L_b + Tq;
 *     else S_b = L_b
 *   q'[b, t] = rotary(q[b, t]) at position L_b + t (float64, not rounded)
 *   o[b, t, h] = softmax_j(scale q'[b,t,h] . k_j + mask) v_j over j < S_b, kv head floor(h / (Hq/Hk)),
 *     causal: j <= t + S_b - Tq (bottom-right aligned); times sigmoid(gate) when given
 *
 * Returns o float64 [B, Tq, Hq, Dv] and lse float64 [B, Hq, Tq]. Inputs are not validated: the ops layer
 * does that.
 */
import { Tensor, f32ToBf16Bits, f32ToF16Bits, toFloat64Array } from '../tensor.js';
import { rotateRow } from './rotary.js';

export interface KVCacheReferenceOptions {
  cacheSeqlens: Int32Array | readonly number[];
  blockTable?: Int32Array | readonly number[];
  kNew?: Tensor;
  vNew?: Tensor;
  rotary?: { cos: Tensor; sin: Tensor };
  rotaryInterleaved?: boolean;
  causal?: boolean;
  scale?: number;
  gate?: Tensor;
  gateType?: 'elementwise' | 'headwise';
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** Stores a float64 value into a tensor's storage at i, rounded to its dtype. */
function storeValue(t: Tensor, i: number, x: number): void {
  if (t.dtype === 'float16') t.data[i] = f32ToF16Bits(x);
  else if (t.dtype === 'bfloat16') t.data[i] = f32ToBf16Bits(x);
  else t.data[i] = x;
}

export function attentionWithKVCacheReference(q: Tensor, kCache: Tensor, vCache: Tensor, opts: KVCacheReferenceOptions): { o: Tensor; lse: Tensor } {
  const [B, Tq, Hq, D] = q.shape;
  const Hk = kCache.shape[2];
  const Dv = vCache.shape[3];
  const group = Hq / Hk;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const causal = opts.causal !== false;
  const paged = opts.blockTable !== undefined;
  const bs = kCache.shape[1];
  const maxBlocks = paged ? opts.blockTable!.length / B : 0;
  const rowOf = (b: number, j: number): number =>
    paged ? opts.blockTable![b * maxBlocks + Math.floor(j / bs)] * bs + (j % bs) : b * bs + j;
  const lens = Array.from(opts.cacheSeqlens);
  const rot = opts.rotary;
  const half = rot ? rot.cos.shape[1] : 0;
  const cd = rot?.cos.toFloat64();
  const sd = rot?.sin.toFloat64();
  const interleaved = opts.rotaryInterleaved === true;

  // The append, in place.
  if (opts.kNew && opts.vNew) {
    const kn = opts.kNew.toFloat64();
    const vn = opts.vNew.toFloat64();
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < Tq; t++) {
        const pos = lens[b] + t;
        const row = rowOf(b, pos);
        for (let h = 0; h < Hk; h++) {
          const src = ((b * Tq + t) * Hk + h) * D;
          const krow = kn.slice(src, src + D);
          if (rot) rotateRow(krow, 0, 2 * half, cd!, sd!, pos * half, interleaved);
          for (let d = 0; d < D; d++) storeValue(kCache, (row * Hk + h) * D + d, krow[d]);
          const vs = ((b * Tq + t) * Hk + h) * Dv;
          for (let d = 0; d < Dv; d++) storeValue(vCache, (row * Hk + h) * Dv + d, vn[vs + d]);
        }
      }
    }
  }
  const appended = opts.kNew !== undefined;
  const kd = toFloat64Array(kCache.data, kCache.dtype);
  const vd = toFloat64Array(vCache.data, vCache.dtype);
  const qd = q.toFloat64();
  const gate = opts.gate;
  const gateType = gate ? (opts.gateType ?? (gate.shape.length === 4 ? 'elementwise' : 'headwise')) : undefined;
  const zd = gate?.toFloat64();

  const o = new Float64Array(B * Tq * Hq * Dv);
  const lse = new Float64Array(B * Hq * Tq);
  for (let b = 0; b < B; b++) {
    const S = lens[b] + (appended ? Tq : 0);
    const rows = Array.from({ length: S }, (_, j) => rowOf(b, j));
    const p = new Float64Array(S);
    for (let t = 0; t < Tq; t++) {
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / group);
        const qo = ((b * Tq + t) * Hq + h) * D;
        const qv = qd.slice(qo, qo + D);
        if (rot) rotateRow(qv, 0, 2 * half, cd!, sd!, (S - Tq + t) * half, interleaved);
        let m = -Infinity;
        for (let j = 0; j < S; j++) {
          if (causal && j > t + S - Tq) {
            p[j] = -Infinity;
            continue;
          }
          const ko = (rows[j] * Hk + hk) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += qv[d] * kd[ko + d];
          p[j] = scale * s;
          m = Math.max(m, p[j]);
        }
        const tok = b * Tq + t;
        const oo = (tok * Hq + h) * Dv;
        const lo = (b * Hq + h) * Tq + t;
        if (m === -Infinity) {
          lse[lo] = -Infinity; // no visible key: o = 0
          continue;
        }
        let l = 0;
        for (let j = 0; j < S; j++) {
          p[j] = Math.exp(p[j] - m);
          l += p[j];
        }
        for (let j = 0; j < S; j++) {
          if (p[j] === 0) continue;
          const vo = (rows[j] * Hk + hk) * Dv;
          for (let c = 0; c < Dv; c++) o[oo + c] += p[j] * vd[vo + c];
        }
        for (let c = 0; c < Dv; c++) {
          o[oo + c] /= l;
          if (zd) o[oo + c] *= sigmoid(zd[gateType === 'elementwise' ? oo + c : tok * Hq + h]);
        }
        lse[lo] = m + Math.log(l);
      }
    }
  }
  return { o: new Tensor(o, [B, Tq, Hq, Dv], 'float64'), lse: new Tensor(lse, [B, Hq, Tq], 'float64') };
}
