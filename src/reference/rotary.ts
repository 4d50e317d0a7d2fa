/**
 * Float64 reference of rotary position embedding (RoPE; DESIGN.md 6.6), as FlashAttention's
 * apply_rotary_emb. For each token at position p and each head row x (D values), with c = cos[p], s = sin[p]
 * (rotaryDim / 2 values each):
 *
 *   non-interleaved (GPT-NeoX):  for i < rotaryDim/2:  (x[i], x[i + rotaryDim/2]) <- (a c_i - b s_i, b c_i + a s_i)
 *   interleaved (GPT-J):         for i < rotaryDim/2:  (x[2i], x[2i + 1])         <- (a c_i - b s_i, b c_i + a s_i)
 *
 * where (a, b) is the pair before the rotation; x[rotaryDim:] passes unchanged. Shapes: x [B, T, H, D];
 * cos, sin [maxPos, rotaryDim/2]. Token (b, t)'s position: positions[b * T + t]; else, with cuSeqlens
 * (B = 1), t - cuSeqlens[n] for the sequence n holding t; else t. Returns float64 [B, T, H, D]. Inputs are
 * not validated: the ops layer does that.
 */
import { Tensor } from '../tensor.js';

export interface RotaryReferenceOptions {
  cos: Tensor;
  sin: Tensor;
  positions?: Int32Array | readonly number[];
  cuSeqlens?: Int32Array | readonly number[];
  rotaryDim?: number;
  interleaved?: boolean;
}

/** Rotates one head row of float64 values in place: rot values from x[off], by the table rows at c0 (rot/2 each). */
export function rotateRow(x: Float64Array, off: number, rot: number, cd: Float64Array, sd: Float64Array, c0: number, interleaved: boolean): void {
  const h = rot / 2;
  for (let i = 0; i < h; i++) {
    const ia = off + (interleaved ? 2 * i : i);
    const ib = off + (interleaved ? 2 * i + 1 : i + h);
    const a = x[ia];
    const b = x[ib];
    const c = cd[c0 + i];
    const s = sd[c0 + i];
    x[ia] = a * c - b * s;
    x[ib] = b * c + a * s;
  }
}

/** Position of each of the B*T tokens (see the file comment). */
export function rotaryPositions(B: number, T: number, positions?: ArrayLike<number>, cuSeqlens?: ArrayLike<number>): Int32Array {
  const pos = new Int32Array(B * T);
  if (positions) for (let i = 0; i < B * T; i++) pos[i] = positions[i];
  else if (cuSeqlens) for (let n = 0; n + 1 < cuSeqlens.length; n++) for (let t = cuSeqlens[n]; t < cuSeqlens[n + 1]; t++) pos[t] = t - cuSeqlens[n];
  else for (let i = 0; i < B * T; i++) pos[i] = i % T;
  return pos;
}

export function rotaryReference(x: Tensor, opts: RotaryReferenceOptions): Tensor {
  const [B, T, H, D] = x.shape;
  const rot = opts.rotaryDim ?? 2 * opts.cos.shape[1];
  const half = opts.cos.shape[1];
  const cd = opts.cos.toFloat64();
  const sd = opts.sin.toFloat64();
  const xd = x.toFloat64();
  const pos = rotaryPositions(B, T, opts.positions, opts.cuSeqlens);
  for (let i = 0; i < B * T; i++) {
    for (let h = 0; h < H; h++) rotateRow(xd, (i * H + h) * D, rot, cd, sd, pos[i] * half, opts.interleaved === true);
  }
  return new Tensor(xd, [B, T, H, D], 'float64');
}
