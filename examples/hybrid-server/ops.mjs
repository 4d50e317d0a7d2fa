// The model's pieces around the mixers: seqkern's kernels where the package has them, small row-wise
// TypeScript-free loops otherwise. Every function here computes each row (token) on its own, in the same order
// whatever else is in the batch, so a request's tokens do not depend on who it is batched with.
import * as sk from 'seqkern';

/** x [rows, n] -> x / rms(x) * w, eps inside the root. */
export function rmsNorm(x, rows, n, w, eps = 1e-6) {
  const y = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] * x[r * n + i];
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) y[r * n + i] = x[r * n + i] * inv * w[i];
  }
  return y;
}

const silu = (z) => z / (1 + Math.exp(-z));

/** fla's FusedRMSNormGated: rmsnorm over each group of n, times w, times silu(gate). x, gate [rows, groups*n]. */
export function rmsNormGated(x, gate, rows, n, w, eps = 1e-6) {
  const y = rmsNorm(x, rows, n, w, eps);
  for (let i = 0; i < y.length; i++) y[i] *= silu(gate[i]);
  return y;
}

/** x [rows, inF] times W [outF, inF] transposed -> [rows, outF]. */
export function linear(x, rows, inF, W, outF) {
  const y = new Float32Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    const xo = r * inF;
    for (let o = 0; o < outF; o++) {
      const wo = o * inF;
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[xo + i] * W[wo + i];
      y[r * outF + o] = s;
    }
  }
  return y;
}

/**
 * Short causal convolution over one sequence's tokens (Qwen3-Next's ShortConvolution, SiLU after):
 * x [T, C], weight [C, W]; state [C, W-1] holds the W-1 inputs before the first token and is updated in place.
 */
export function causalConv(x, T, C, weight, W, state) {
  const y = new Float32Array(T * C);
  const h = W - 1;
  for (let c = 0; c < C; c++) {
    const hist = new Float32Array(h + T);
    for (let j = 0; j < h; j++) hist[j] = state[c * h + j];
    for (let t = 0; t < T; t++) hist[h + t] = x[t * C + c];
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let j = 0; j < W; j++) s += weight[c * W + j] * hist[t + j];
      y[t * C + c] = silu(s);
    }
    for (let j = 0; j < h; j++) state[c * h + j] = hist[T + j];
  }
  return y;
}

/** Rotary embedding on the first rotDim dims of each head (NeoX halves), x [T, heads, D] in place. */
export function rotary(x, T, heads, D, rotDim, positions, base = 10000) {
  const half = rotDim / 2;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const ang = positions[t] * Math.pow(base, -i / half);
      const c = Math.cos(ang), s = Math.sin(ang);
      for (let hd = 0; hd < heads; hd++) {
        const o = (t * heads + hd) * D;
        const a = x[o + i], b = x[o + i + half];
        x[o + i] = a * c - b * s;
        x[o + i + half] = a * s + b * c;
      }
    }
  }
}

/** Gated attention over per-sequence caches (one packed call; batch-invariant kernel). */
export function cachedAttention(q, gate, seqQ, caches, Hq, Hk, D, causal) {
  // q [sumQ, Hq, D]; caches[n] = { k, v, len } with the new tokens already appended.
  const lens = caches.map((c) => c.len);
  const S = lens.reduce((a, b) => a + b, 0);
  const k = new Float32Array(S * Hk * D), v = new Float32Array(S * Hk * D);
  const cuK = [0];
  let at = 0;
  for (const c of caches) {
    k.set(c.k.subarray(0, c.len * Hk * D), at * Hk * D);
    v.set(c.v.subarray(0, c.len * Hk * D), at * Hk * D);
    at += c.len;
    cuK.push(at);
  }
  const cuQ = [0];
  for (const t of seqQ) cuQ.push(cuQ[cuQ.length - 1] + t);
  const T = cuQ[cuQ.length - 1];
  const r = sk.attention(sk.tensor(q, [1, T, Hq, D]), sk.tensor(k, [1, S, Hk, D]), sk.tensor(v, [1, S, Hk, D]), {
    causal, cuSeqlens: cuQ, cuSeqlensK: cuK, gate: sk.tensor(gate, [1, T, Hq, D]), batchInvariant: true,
  });
  return r.o.data;
}
