// Float64 reference of linear: y = x W^T + b, one float64 dot product per output element. The native GEMV
// and GEMM paths are checked against it.
import { fail } from '../errors.js';
import { numel, Tensor, type DType } from '../tensor.js';
import { checkOptions, checkShape, checkTensor, rankOf } from '../validate.js';

const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];

/**
 * linear in float64: y[..., n] = sum_k x[..., k] weight[n, k] + bias[n], for x [..., in] (rank >= 1) and
 * weight [out, in] of any dtype, bias [out] optional. Returns a float64 tensor [..., out]. Other options
 * (`out`, `outDtype`, `backend`) are accepted and ignored.
 */
export function linearReference(x: Tensor, weight: Tensor, opts: { bias?: Tensor | undefined } & Record<string, unknown> = {}): Tensor {
  const op = 'linearReference';
  checkOptions(op, opts);
  const rank = rankOf(x, 1);
  if (rank === 0) fail('SHAPE_MISMATCH', op, 'x', 'of rank >= 1 ([..., in])', 'a scalar, shape []');
  const xt = checkTensor(op, 'x', x, DTYPES, rank);
  const wt = checkTensor(op, 'weight', weight, DTYPES, 2);
  const [N, K] = wt.shape;
  if (xt.shape[rank - 1] !== K) fail('SHAPE_MISMATCH', op, 'x', `with last axis in=${K} (weight [out, in])`, `shape [${xt.shape.join(',')}]`);
  let b: Float64Array | undefined;
  if (opts.bias !== undefined) {
    const bt = checkTensor(op, 'bias', opts.bias, DTYPES, 1);
    checkShape(op, 'bias', bt, [N]);
    b = bt.toFloat64();
  }
  const xv = xt.toFloat64();
  const wv = wt.toFloat64();
  const M = K > 0 ? xv.length / K : numel(xt.shape.slice(0, -1));
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += xv[m * K + k] * wv[n * K + k];
      y[m * N + n] = s + (b ? b[n] : 0);
    }
  }
  return new Tensor(y, [...xt.shape.slice(0, -1), N], 'float64');
}
