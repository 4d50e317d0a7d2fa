// Exact attention and gated attention, flash-style (DESIGN.md 6.3). STUB: being written (issue 8).
import { SeqkernError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { AsyncOptions, AttentionOptions, AttentionResult } from '../types.js';

export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): AttentionResult {
  void q; void k; void v; void opts;
  throw new SeqkernError('NATIVE_ERROR', 'attention: not implemented yet');
}

export async function attentionAsync(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}, a: AsyncOptions = {}): Promise<AttentionResult> {
  void q; void k; void v; void opts; void a;
  throw new SeqkernError('NATIVE_ERROR', 'attentionAsync: not implemented yet');
}
