// Float64 reference of softmax (DESIGN.md 6.2, 7): the textbook formula, one row at a time. The fast paths
// (two-pass, three-pass) are checked against it.
import { fail } from '../errors.js';
import { numel, Tensor } from '../tensor.js';
import type { SoftmaxOptions } from '../types.js';
import { checkOptions, checkTensor, rankOf } from '../validate.js';

const DTYPES = ['float32', 'float16', 'bfloat16', 'float64'] as const;

/**
 * Softmax over the last axis in float64: y_i = exp(x_i - max) / sum_j exp(x_j - max) per row, for x of any
 * dtype and shape [..., n] (rank >= 1, n >= 1). Returns a float64 tensor of x's shape.
 *
 * The formula itself gives the edge cases: -Inf entries give 0; a row with NaN or +Inf, or of all -Inf,
 * gives a row of NaN. With `strict` those rows are errors instead: NON_FINITE (NaN or +Inf), OUT_OF_RANGE
 * (all -Inf), for the first such row. `algorithm` and `backend` are accepted and ignored.
 */
export function softmaxReference(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const op = 'softmaxReference';
  checkOptions(op, opts);
  const rank = rankOf(x, 1);
  if (rank === 0) fail('SHAPE_MISMATCH', op, 'x', 'of rank >= 1 (softmax runs over the last axis)', 'a scalar, shape []');
  x = checkTensor(op, 'x', x, DTYPES, rank);
  const n = x.shape[rank - 1];
  if (n === 0) fail('SHAPE_MISMATCH', op, 'x', 'with a non-empty last axis', `shape [${x.shape.join(',')}]`);
  const v = x.toFloat64();
  const out = new Float64Array(v.length);
  const rows = numel(x.shape) / n;
  for (let r = 0; r < rows; r++) {
    const off = r * n;
    let max = -Infinity;
    let nan = false;
    for (let i = 0; i < n; i++) {
      const a = v[off + i];
      if (Number.isNaN(a)) nan = true;
      else if (a > max) max = a;
    }
    if (opts.strict === true) {
      if (nan || max === Infinity) fail('NON_FINITE', op, 'x', 'without NaN or +Inf (strict)', `one in row ${r}`);
      if (max === -Infinity) fail('OUT_OF_RANGE', op, 'x', 'with a finite entry in every row (strict)', `row ${r} of all -Inf`);
    }
    if (nan) max = NaN;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(v[off + i] - max); // -Inf - max = -Inf gives 0; Inf - Inf, -Inf + Inf give NaN
      out[off + i] = e;
      sum += e;
    }
    for (let i = 0; i < n; i++) out[off + i] /= sum;
  }
  return new Tensor(out, x.shape, 'float64');
}
