// Float64 reference of attention. STUB: being written (issue 8).
import type { Tensor } from '../tensor.js';
import type { AttentionOptions } from '../types.js';

/** Full score matrix, max-subtracted softmax, in float64: { o float64 [B,T,Hq,Dv], lse float64 [B,Hq,T] }. */
export function attentionReference(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { o: Tensor; lse: Tensor } {
  void q; void k; void v; void opts;
  throw new Error('attentionReference: not implemented yet');
}
