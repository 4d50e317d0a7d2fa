// Softmax over the last axis (DESIGN.md 6.2). STUB: being written (issue 8).
import { SeqkernError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { AsyncOptions, SoftmaxOptions } from '../types.js';

const todo = (op: string): never => {
  throw new SeqkernError('NATIVE_ERROR', `${op}: not implemented yet`);
};

/** Softmax of every row (last axis) of x; same shape and dtype as x (float64 runs on the reference). */
export function softmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  void x; void opts;
  return todo('softmax');
}

/** Softmax into a caller's buffer (same shape and dtype as x; out may be x itself). Returns out. */
export function softmaxInto(x: Tensor, out: Tensor, opts: SoftmaxOptions = {}): Tensor {
  void x; void out; void opts;
  return todo('softmaxInto');
}

export async function softmaxAsync(x: Tensor, opts: SoftmaxOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  void x; void opts; void a;
  return todo('softmaxAsync');
}

export async function softmaxIntoAsync(x: Tensor, out: Tensor, opts: SoftmaxOptions = {}, a: AsyncOptions = {}): Promise<Tensor> {
  void x; void out; void opts; void a;
  return todo('softmaxIntoAsync');
}
