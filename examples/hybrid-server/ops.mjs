// The few pieces of the model seqkern has no op for (it has no elementwise ops): the residual add, SwiGLU's
// product, the greedy argmax and the rotary tables. Each works row by row, element by element, so a row's
// result does not depend on what else is in the batch.
import * as sk from 'seqkern';

/** x += y, elementwise. */
export function addInto(x, y) {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}

/** g = silu(g) * u, elementwise, in place (SwiGLU). */
export function swiglu(g, u) {
  for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
}

/** The index of each row's largest value (the first on ties), logits [rows, n]. */
export function argmaxRows(logits, rows, n) {
  const out = [];
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let v = 1; v < n; v++) if (logits[r * n + v] > logits[r * n + best]) best = v;
    out.push(best);
  }
  return out;
}

/** Rotary tables (GPT-NeoX halves, base 10000): cos, sin [maxPos, half] float32, row p for position p. */
export function ropeTables(maxPos, half, base = 10000) {
  const cos = new Float32Array(maxPos * half), sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * Math.pow(base, -i / half);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos: new sk.Tensor(cos, [maxPos, half], 'float32'), sin: new sk.Tensor(sin, [maxPos, half], 'float32') };
}
