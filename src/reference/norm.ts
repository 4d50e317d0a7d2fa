/**
 * Float64 reference of RMSNorm and gated RMSNorm (fla's FusedRMSNormGated; issue 14 part 4) over the last
 * axis of x [..., H], in groups of groupSize consecutive channels (default H):
 *   y = x / sqrt(mean_group(x^2) + eps) * w               (no gate)
 *   y = x / sqrt(mean_group(x^2) + eps) * w * silu(gate)  (gate of x's shape)
 * Inputs are not validated: the ops layer does that.
 */
import { Tensor } from '../tensor.js';
import { silu64 } from './conv.js';

export interface RmsNormReferenceOptions {
  gate?: Tensor | undefined;
  eps?: number | undefined;
  groupSize?: number | undefined;
}

export function rmsNormReference(x: Tensor, weight: Tensor, opts: RmsNormReferenceOptions = {}): Tensor {
  const H = x.shape[x.shape.length - 1];
  const G = opts.groupSize ?? H;
  const eps = opts.eps ?? 1e-6;
  const xs = x.toFloat64();
  const ws = weight.toFloat64();
  const gs = opts.gate?.toFloat64();
  const y = new Float64Array(xs.length);
  for (let g0 = 0; g0 < xs.length; g0 += G) {
    let ss = 0;
    for (let i = 0; i < G; i++) ss += xs[g0 + i] ** 2;
    const r = 1 / Math.sqrt(ss / G + eps);
    for (let i = 0; i < G; i++) {
      const k = g0 + i;
      const v = xs[k] * r * ws[k % H];
      y[k] = gs ? v * silu64(gs[k]) : v;
    }
  }
  return new Tensor(y, x.shape, 'float64');
}
