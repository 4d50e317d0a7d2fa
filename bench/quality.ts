// How far an approximate op's output is from the exact one's (HyperAttention against exact attention).
import type { Tensor } from '../src/index.js';

/** Relative Frobenius error |a - b|_F / |b|_F in float64 (absolute when |b| = 0; NaN when either holds a NaN). */
export function relErr(a: Tensor, b: Tensor): number {
  const x = a.toFloat64();
  const y = b.toFloat64();
  if (x.length !== y.length) throw new Error(`relErr: lengths differ (${x.length} vs ${y.length})`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
