/**
 * Float64 reference of exact attention and gated attention (DESIGN.md 6.3), by the textbook formula: for
 * each sequence and query head, the full score matrix, the mask, a max-subtracted softmax per row, then the
 * weighted sum of values. No tiles and no online softmax, so the fast path is checked against an independent
 * formulation. Every input is converted to float64 first and every sum accumulated in float64.
 *
 * Shapes: q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv]; query head h reads kv head floor(h / (Hq/Hk)).
 * Packed sequences (B = 1): queries of sequence n are tokens [cuSeqlens[n], cuSeqlens[n+1]) of q, its keys
 * tokens [cuSeqlensK[n], cuSeqlensK[n+1]) of k and v (cuSeqlensK defaults to cuSeqlens). Per sequence, with
 * T_n queries and S_n keys, and scale default 1/sqrt(D):
 *
 *   s_ij   = scale * q_i . k_j,  or -Inf when causal and j > i + S_n - T_n   (bottom-right aligned)
 *   m_i    = max_j s_ij ;  l_i = sum_j exp(s_ij - m_i)
 *   o_i    = sum_j exp(s_ij - m_i) v_j / l_i          times sigmoid(z_i) when a gate z is given
 *   lse_i  = m_i + log(l_i)                            (natural log)
 *
 * A query that sees no key (causal with S_n < T_n) gets o_i = 0 and lse_i = -Inf. The gate is elementwise
 * ([B,T,Hq,Dv]) or headwise ([B,T,Hq], one value per query and head); gateType, when absent, follows the
 * gate's rank. Returns o float64 [B,T,Hq,Dv] and lse float64 [B,Hq,T]. Options `backend` and `returnLse` are
 * ignored (lse is always returned). Inputs are not validated: the ops layer does that.
 */
import { asTensor, Tensor, withTensors, type TensorInput } from '../tensor.js';
import type { AttentionOptions } from '../types.js';

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

export function attentionReference(qIn: TensorInput, kIn: TensorInput, vIn: TensorInput, options: AttentionOptions = {}): { o: Tensor; lse: Tensor } {
  const q = asTensor('attentionReference', 'q', qIn), k = asTensor('attentionReference', 'k', kIn), v = asTensor('attentionReference', 'v', vIn);
  const opts = withTensors(options);
  const [B, T, Hq, D] = q.shape;
  const [, S, Hk] = k.shape;
  const Dv = v.shape[3];
  const group = Hq / Hk;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const causal = opts.causal === true;
  const qd = q.toFloat64();
  const kd = k.toFloat64();
  const vd = v.toFloat64();
  const gate = opts.gate;
  const gateType = gate ? (opts.gateType ?? (gate.shape.length === 4 ? 'elementwise' : 'headwise')) : undefined;
  const zd = gate?.toFloat64();

  // Sequences as (batch row, first query, queries, first key, keys).
  const seqs: { b: number; q0: number; Tn: number; k0: number; Sn: number }[] = [];
  if (opts.cuSeqlens) {
    const cq = Array.from(opts.cuSeqlens);
    const ck = opts.cuSeqlensK ? Array.from(opts.cuSeqlensK) : cq;
    for (let n = 0; n + 1 < cq.length; n++) seqs.push({ b: 0, q0: cq[n], Tn: cq[n + 1] - cq[n], k0: ck[n], Sn: ck[n + 1] - ck[n] });
  } else {
    for (let b = 0; b < B; b++) seqs.push({ b, q0: 0, Tn: T, k0: 0, Sn: S });
  }

  const o = new Float64Array(B * T * Hq * Dv);
  const lse = new Float64Array(B * Hq * T);
  for (const { b, q0, Tn, k0, Sn } of seqs) {
    const off = Sn - Tn;
    const scores = new Float64Array(Tn * Sn);
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      // The full score matrix of this sequence and head, masked entries -Inf.
      for (let i = 0; i < Tn; i++) {
        const qo = (((b * T) + q0 + i) * Hq + h) * D;
        for (let j = 0; j < Sn; j++) {
          if (causal && j > i + off) {
            scores[i * Sn + j] = -Infinity;
            continue;
          }
          const ko = (((b * S) + k0 + j) * Hk + hk) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += qd[qo + d] * kd[ko + d];
          scores[i * Sn + j] = scale * s;
        }
      }
      for (let i = 0; i < Tn; i++) {
        const row = i * Sn;
        let m = -Infinity;
        for (let j = 0; j < Sn; j++) m = Math.max(m, scores[row + j]);
        const tok = b * T + q0 + i;
        const oo = (tok * Hq + h) * Dv;
        const lo = (b * Hq + h) * T + q0 + i;
        if (m === -Infinity) {
          // No visible key: o = 0 (already), lse = -Inf; a gate multiplies 0.
          lse[lo] = -Infinity;
          if (zd) for (let c = 0; c < Dv; c++) o[oo + c] = 0 * sigmoid(zd[gateType === 'elementwise' ? oo + c : tok * Hq + h]);
          continue;
        }
        let l = 0;
        for (let j = 0; j < Sn; j++) {
          const p = Math.exp(scores[row + j] - m);
          scores[row + j] = p;
          l += p;
        }
        for (let j = 0; j < Sn; j++) {
          const p = scores[row + j];
          if (p === 0) continue;
          const vo = (((b * S) + k0 + j) * Hk + hk) * Dv;
          for (let c = 0; c < Dv; c++) o[oo + c] += p * vd[vo + c];
        }
        for (let c = 0; c < Dv; c++) o[oo + c] /= l;
        if (zd) {
          if (gateType === 'elementwise') for (let c = 0; c < Dv; c++) o[oo + c] *= sigmoid(zd[oo + c]);
          else {
            const g = sigmoid(zd[tok * Hq + h]);
            for (let c = 0; c < Dv; c++) o[oo + c] *= g;
          }
        }
        lse[lo] = m + Math.log(l);
      }
    }
  }
  return { o: new Tensor(o, [B, T, Hq, Dv], 'float64'), lse: new Tensor(lse, [B, Hq, T], 'float64') };
}
