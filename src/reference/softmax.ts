// Float64 reference of softmax. STUB: being written (issue 8).
import type { Tensor } from '../tensor.js';
import type { SoftmaxOptions } from '../types.js';

/** Textbook max-subtracted softmax over the last axis, in float64; returns a float64 tensor. */
export function softmaxReference(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  void x; void opts;
  throw new Error('softmaxReference: not implemented yet');
}
