/**
 * Float64 reference of the causal depthwise convolution (Mamba's causal_conv1d, fla's ShortConvolution; issue
 * 14 part 3), as plain loops. x [B, T, D] channels last (or one packed row with cuSeqlens), weight [D, W]:
 *   y[t, d] = act(bias[d] + sum_{j<W} w[d, j] * x~[t - (W - 1) + j, d]),   act = silu (v / (1 + e^-v)) or none,
 * x~ being the sequence's x at positions >= 0 and its initial conv state at positions -(W-1) .. -1 (state
 * column i holds position i - (W - 1), oldest first; zeros when none is given). The final state of a sequence
 * is x~ at positions T - (W - 1) .. T - 1. Inputs are not validated: the ops layer does that.
 */
import { Tensor } from '../tensor.js';

export interface CausalConv1dReferenceOptions {
  bias?: Tensor | undefined;
  activation?: 'silu' | 'none' | undefined;
  /** N + 1 offsets into T of a [1, T, D] packed batch. */
  cuSeqlens?: Int32Array | readonly number[] | undefined;
  /** Initial states [N, D, W - 1] (zeros when absent). */
  initialStates?: Tensor | undefined;
}

export interface CausalConv1dReferenceResult {
  /** [B, T, D] float64. */
  y: Tensor;
  /** [N, D, W - 1] float64: the last W - 1 positions of each sequence. */
  finalStates: Tensor;
}

export const silu64 = (v: number): number => v / (1 + Math.exp(-v));

export function causalConv1dReference(x: Tensor, weight: Tensor, opts: CausalConv1dReferenceOptions = {}): CausalConv1dReferenceResult {
  const [B, T, D] = x.shape;
  const W = weight.shape[1];
  const P = W - 1;
  const xs = x.toFloat64();
  const ws = weight.toFloat64();
  const bs = opts.bias?.toFloat64();
  const init = opts.initialStates?.toFloat64();
  const cu = opts.cuSeqlens ? Array.from(opts.cuSeqlens) : Array.from({ length: B + 1 }, (_, b) => b * T);
  const N = cu.length - 1;
  const y = new Float64Array(B * T * D);
  const fin = new Float64Array(N * D * P);
  for (let n = 0; n < N; n++) {
    const s0 = cu[n];
    const len = cu[n + 1] - cu[n];
    const at = (pos: number, d: number): number =>
      pos >= 0 ? xs[(s0 + pos) * D + d] : init ? init[(n * D + d) * P + pos + P] : 0;
    for (let t = 0; t < len; t++) {
      for (let d = 0; d < D; d++) {
        let acc = bs ? bs[d] : 0;
        for (let j = 0; j < W; j++) acc += ws[d * W + j] * at(t - P + j, d);
        y[(s0 + t) * D + d] = opts.activation === 'silu' ? silu64(acc) : acc;
      }
    }
    for (let d = 0; d < D; d++) for (let i = 0; i < P; i++) fin[(n * D + d) * P + i] = at(len - P + i, d);
  }
  return { y: new Tensor(y, [B, T, D], 'float64'), finalStates: new Tensor(fin, [N, D, P], 'float64') };
}
