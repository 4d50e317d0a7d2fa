/**
 * Float64 reference of HyperAttention (Han et al. 2023; DESIGN.md 6.4), the same algorithm as the native
 * kernel with the same hashes, sorts and samples, written as plain loops: for each batch row and query head,
 * each query's block keys and sampled keys listed, attended to in float64, merged by log-sum-exp. The
 * generator is the one the README writes down (splitmix64 words, Marsaglia's polar method), in BigInt.
 *
 * Shapes: q [B,T,Hq,D], k [B,S,Hk,D], v [B,S,Hk,Dv]; query head h reads kv head floor(h / (Hq/Hk)).
 * Options (defaults as the authors'): lshBits 7, blockSize 256, sampleSize 256, minSeqLen 4096, seed 0,
 * scale 1/sqrt(D), causal (then S = T). Returns o float64 [B,T,Hq,Dv] and lse float64 [B,Hq,T].
 *
 * A problem is queries [q0, q0 + nq) against keys [k0, k0 + nk) of one sequence (the whole call when not
 * causal; each lower-left block of the causal recursion). With nk >= minSeqLen:
 *   bucket(x)  = sum_r [x . R[:, r] > 0] 2^r    (x . R summed in float64 in d order: exact products of floats)
 *   sort key   = grayRank(bucket); queries of each query head and keys of each kv head stable-sorted by it
 *   nb = ceil(nk / bs) key blocks of bs = min(blockSize, nk); query blocks of qbs = ceil(nq * bs / nk)
 *   sorted query i (block b = floor(i / qbs)): (o1, l1) = exact attention over sorted keys [b bs, (b+1) bs);
 *   (o2, l2) = exact attention over the samples (sorted positions) outside [b bs, (b+1) bs), when nb > 1 and
 *   sampleSize > 0, l2 += log(nk / sampleSize); o = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2), lse = logaddexp.
 * Otherwise exact attention. Causal: exact causal on [a, a + n) when n <= minSeqLen (or n < 2); else
 * n1 = ceil(n / 2), recurse on [a, a + n1) and [a + n1, a + n), then merge the problem (queries [a + n1, a + n),
 * keys [a, a + n1)) into the second half's rows. Inputs are not validated: the ops layer does that.
 */
import { Tensor } from '../tensor.js';
import type { HyperAttentionOptions } from '../types.js';

const M64 = (1n << 64n) - 1n;
const GAMMA = 0x9e3779b97f4a7c15n;

/** splitmix64's output function on a 64-bit unsigned BigInt. */
export function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** Word i of the splitmix64 stream with state s: mix64(s + (i + 1) * gamma mod 2^64). */
export function hyperWord(s: bigint, i: bigint | number): bigint {
  return mix64((s + (BigInt(i) + 1n) * GAMMA) & M64);
}

/** ln r for r in (0, 1) by the README's sequence of double operations (native/cpu/hyper.cc polar_log). */
function polarLog(r: number): number {
  let e = 0;
  let m = r;
  while (m < 1) {
    m *= 2;
    e--;
  }
  if (m > 1.4142135623730951) {
    m /= 2;
    e++;
  }
  const t = (m - 1) / (m + 1);
  const t2 = t * t;
  let p = 1 / 21;
  for (let k = 9; k >= 0; k--) p = p * t2 + 1 / (2 * k + 1);
  return e * 0.6931471805599453 + 2 * t * p;
}

/** R [D, bits] row-major (entry d * bits + r), float32 values: the polar method on the words of W(seed, 0). */
export function hyperProjections(seed: number, D: number, bits: number): Float32Array {
  const n = D * bits;
  const R = new Float32Array(n);
  const s = hyperWord(BigInt(seed), 0);
  const unit = (w: bigint) => Number(w >> 11n) / 9007199254740992;
  for (let e = 0, i = 0; e < n; i += 2) {
    const u = 2 * unit(hyperWord(s, i)) - 1;
    const v = 2 * unit(hyperWord(s, i + 1)) - 1;
    const r = u * u + v * v;
    if (r >= 1 || r === 0) continue;
    const f = Math.sqrt((-2 * polarLog(r)) / r);
    R[e++] = u * f;
    if (e < n) R[e++] = v * f;
  }
  return R;
}

/** The sample stream of (batch b, kv head hk, problem starting at query q0): W(W(W(W(seed, 1), b), hk), q0). */
export function hyperSampleStream(seed: number, b: number, hk: number, q0: number): bigint {
  return hyperWord(hyperWord(hyperWord(hyperWord(BigInt(seed), 1), b), hk), q0);
}

/** Draws j = 0..m-1 of a sample stream, each ((W(stream, j) >> 32) * n) >> 32 in [0, n). */
export function hyperSamples(stream: bigint, m: number, n: number): Int32Array {
  const out = new Int32Array(m);
  const N = BigInt(n);
  for (let j = 0; j < m; j++) out[j] = Number(((hyperWord(stream, j) >> 32n) * N) >> 32n);
  return out;
}

/** Position of `bin` in the reflected Gray sequence (the inverse of i ^ (i >> 1)). */
export function grayRank(bin: number): number {
  let r = bin >>> 0;
  for (let s = 1; s < 32; s <<= 1) r ^= r >>> s;
  return r >>> 0;
}

export function hyperAttentionReference(q: Tensor, k: Tensor, v: Tensor, opts: HyperAttentionOptions = {}): { o: Tensor; lse: Tensor } {
  const [B, T, Hq, D] = q.shape;
  const [, S, Hk] = k.shape;
  const Dv = v.shape[3];
  const group = Hq / Hk;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const bits = opts.lshBits ?? 7;
  const blockSize = opts.blockSize ?? 256;
  const sampleSize = opts.sampleSize ?? 256;
  const minSeqLen = opts.minSeqLen ?? 4096;
  const seed = opts.seed ?? 0;
  const causal = opts.causal === true;
  const qd = q.toFloat64();
  const kd = k.toFloat64();
  const vd = v.toFloat64();
  const o = new Float64Array(B * T * Hq * Dv);
  const lse = new Float64Array(B * Hq * T);
  const R = hyperProjections(seed, D, bits);

  const qrow = (b: number, t: number, h: number) => ((b * T + t) * Hq + h) * D;
  const krow = (b: number, s: number, hk: number) => ((b * S + s) * Hk + hk) * D;
  const vrow = (b: number, s: number, hk: number) => ((b * S + s) * Hk + hk) * Dv;
  const rank = (x: Float64Array, off: number): number => {
    let bin = 0;
    for (let r = 0; r < bits; r++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += x[off + d] * R[d * bits + r];
      if (s > 0) bin |= 1 << r;
    }
    return grayRank(bin);
  };
  /** A stable sort of local rows 0..n-1 by their rank. */
  const sorted = (n: number, rankOf: (i: number) => number): number[] => {
    const ranks = Array.from({ length: n }, (_, i) => rankOf(i));
    return Array.from({ length: n }, (_, i) => i).sort((x, y) => ranks[x] - ranks[y] || x - y);
  };
  /** Exact attention of query (b, t, h) over the key positions `keys`: o (Dv) and lse (natural log). */
  const attend = (b: number, t: number, h: number, keys: number[]): { o: Float64Array; l: number } => {
    const hk = Math.floor(h / group);
    const out = new Float64Array(Dv);
    if (keys.length === 0) return { o: out, l: -Infinity };
    const qo = qrow(b, t, h);
    const s = keys.map((j) => {
      let dot = 0;
      const ko = krow(b, j, hk);
      for (let d = 0; d < D; d++) dot += qd[qo + d] * kd[ko + d];
      return scale * dot;
    });
    const m = Math.max(...s);
    let l = 0;
    keys.forEach((j, n) => {
      const p = Math.exp(s[n] - m);
      l += p;
      const vo = vrow(b, j, hk);
      for (let c = 0; c < Dv; c++) out[c] += p * vd[vo + c];
    });
    for (let c = 0; c < Dv; c++) out[c] /= l;
    return { o: out, l: m + Math.log(l) };
  };
  const merge = (x: { o: Float64Array; l: number }, y: { o: Float64Array; l: number }) => {
    if (y.l === -Infinity) return x;
    if (x.l === -Infinity) return y;
    const mx = Math.max(x.l, y.l);
    const wa = Math.exp(x.l - mx);
    const wb = Math.exp(y.l - mx);
    const out = new Float64Array(Dv);
    for (let c = 0; c < Dv; c++) out[c] = (wa * x.o[c] + wb * y.o[c]) / (wa + wb);
    return { o: out, l: mx + Math.log(wa + wb) };
  };
  const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);
  const put = (b: number, t: number, h: number, r: { o: Float64Array; l: number }) => {
    o.set(r.o, ((b * T + t) * Hq + h) * Dv);
    lse[(b * Hq + h) * T + t] = r.l;
  };
  const get = (b: number, t: number, h: number) => ({
    o: o.slice(((b * T + t) * Hq + h) * Dv, ((b * T + t) * Hq + h + 1) * Dv),
    l: lse[(b * Hq + h) * T + t],
  });

  /** Results of every query of a problem, by query position t (exact when nk < minSeqLen). */
  const problem = (b: number, h: number, q0: number, nq: number, k0: number, nk: number): Map<number, { o: Float64Array; l: number }> => {
    const res = new Map<number, { o: Float64Array; l: number }>();
    if (nk < minSeqLen) {
      for (let t = q0; t < q0 + nq; t++) res.set(t, attend(b, t, h, range(k0, nk)));
      return res;
    }
    const hk = Math.floor(h / group);
    const bs = Math.min(blockSize, nk);
    const nb = Math.ceil(nk / bs);
    const qbs = Number((BigInt(nq) * BigInt(bs) + BigInt(nk) - 1n) / BigInt(nk));
    const kperm = sorted(nk, (j) => rank(kd, krow(b, k0 + j, hk)));
    const qperm = sorted(nq, (i) => rank(qd, qrow(b, q0 + i, h)));
    const m = nb > 1 ? sampleSize : 0;
    const samples = m > 0 ? Array.from(hyperSamples(hyperSampleStream(seed, b, hk, q0), m, nk)) : [];
    const logw = Math.log(nk / m);
    qperm.forEach((i, pos) => {
      const blk = Math.floor(pos / qbs);
      const blockKeys = kperm.slice(blk * bs, Math.min(nk, (blk + 1) * bs)).map((j) => k0 + j);
      let r = attend(b, q0 + i, h, blockKeys);
      if (m > 0) {
        const sampled = samples.filter((x) => Math.floor(x / bs) !== blk).map((x) => k0 + kperm[x]);
        const r2 = attend(b, q0 + i, h, sampled);
        r = merge(r, { o: r2.o, l: r2.l + logw });
      }
      res.set(q0 + i, r);
    });
    return res;
  };

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      if (!causal) {
        if (T >= 1 && S >= 1 && S >= minSeqLen) {
          for (const [t, r] of problem(b, h, 0, T, 0, S)) put(b, t, h, r);
        } else {
          for (let t = 0; t < T; t++) put(b, t, h, attend(b, t, h, range(0, S)));
        }
        continue;
      }
      const rec = (a: number, n: number): void => {
        if (n <= minSeqLen || n < 2) {
          for (let t = a; t < a + n; t++) put(b, t, h, attend(b, t, h, range(a, t - a + 1)));
          return;
        }
        const n1 = n - Math.floor(n / 2);
        rec(a, n1);
        rec(a + n1, n - n1);
        for (const [t, r] of problem(b, h, a + n1, n - n1, a, n1)) put(b, t, h, merge(get(b, t, h), r));
      };
      rec(0, T);
    }
  }
  return { o: new Tensor(o, [B, T, Hq, Dv], 'float64'), lse: new Tensor(lse, [B, Hq, T], 'float64') };
}
