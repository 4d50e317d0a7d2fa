/**
 * Float64 reference of NaLaFormer's norm-aware linear attention (DESIGN.md 6.5, issue 16), by its defining
 * sums: for each sequence, head and query, a loop over the keys it sees (O(T·S) per head, no state, no
 * chunks), so the chunkwise and two-pass fast paths are checked against an independent formulation. Every
 * input is converted to float64 first and every sum accumulated in float64.
 *
 * Shapes: q [B,T,H,K], k [B,S,Hk,K], v [B,S,Hk,V]; query head h reads kv head floor(h / (H/Hk)). Per head:
 *
 *   n      = |q|_2,  p = 3 (0.5 + tanh n)
 *   phiq   = [ (relu(q)/n)^p , (relu(-q)/n)^p ]       (q = 0: phiq = 0)
 *   phik   = [ relu(k)^3 , relu(-k)^3 ]
 *   o_i    = sum_j (rho_i phiq_i . rho_j phik_j) v_j / ( sum_j phiq_i . phik_j + n_i eps )
 *
 * rho_t rotates each K-half of a feature vector by row t of rope (x cos + rotate_every_two(x) sin, with
 * rotate_every_two(x)[2m] = -x[2m+1], [2m+1] = x[2m]); identity without rope. Non-causal: j over the S_n keys
 * of the sequence, n_i = S_n (keys rotated by ropeK, default rope). Causal (S = T): j <= i, n_i = c0 + i + 1
 * with c0 the key count of initialState, whose sums enter both sides (native/cpu/nala.h, the state layout).
 * A query with no key at all (n_i = 0) gets o = 0. Rope rows are indexed by the token's position on the T
 * (S) axis, shared by the batch rows; packed sequences (cuSeqlens) index the packed axis.
 *
 * Returns o float64 [B,T,H,V] and, causal, finalState float64 [N,Hk,L] (L = 2K·V + 2K + 1). Inputs are not
 * validated: the ops layer does that.
 */
import { Tensor } from '../tensor.js';
import type { NalaAttentionOptions, NalaStepOptions } from '../ops/nala.js';

/** Floats per (sequence, kv head) in the state: numerator sum 2K×V, denominator sum 2K, key count. */
export const nalaStateLength = (K: number, V: number): number => 2 * K * V + 2 * K + 1;

/** phiq of one raw q row (length K) into out (length 2K). */
export function nalaPhiQ(q: ArrayLike<number>, out: Float64Array): void {
  const K = q.length;
  let ss = 0;
  for (let d = 0; d < K; d++) ss += q[d] * q[d];
  const n = Math.sqrt(ss);
  if (n === 0) {
    out.fill(0);
    return;
  }
  const p = 3 * (0.5 + Math.tanh(n));
  for (let d = 0; d < K; d++) {
    out[d] = q[d] > 0 ? (q[d] / n) ** p : 0;
    out[K + d] = q[d] < 0 ? (-q[d] / n) ** p : 0;
  }
}

/** phik of one k row (length K) into out (length 2K). */
export function nalaPhiK(k: ArrayLike<number>, out: Float64Array): void {
  const K = k.length;
  for (let d = 0; d < K; d++) {
    out[d] = k[d] > 0 ? k[d] ** 3 : 0;
    out[K + d] = k[d] < 0 ? (-k[d]) ** 3 : 0;
  }
}

/** rho: each K-half of x (length 2K) rotated by cos, sin (length K), into out. */
export function nalaRotate(x: Float64Array, cos: ArrayLike<number>, sin: ArrayLike<number>, out: Float64Array): void {
  const K = cos.length;
  for (let half = 0; half < 2; half++) {
    const o = half * K;
    for (let m = 0; m + 1 < K; m += 2) {
      const a = x[o + m], b = x[o + m + 1];
      out[o + m] = a * cos[m] - b * sin[m];
      out[o + m + 1] = b * cos[m + 1] + a * sin[m + 1];
    }
  }
}

interface Rope64 { cos: Float64Array; sin: Float64Array }
const rope64 = (r?: { cos: Tensor; sin: Tensor }): Rope64 | undefined => (r ? { cos: r.cos.toFloat64(), sin: r.sin.toFloat64() } : undefined);

/** Feature rows of x [rows, K] (phi, and phi rotated by rope row rowOf(i)). */
function features(x: Float64Array, rows: number[], K: number, phi: (r: Float64Array, out: Float64Array) => void,
  rope: Rope64 | undefined, ropeRow: (i: number) => number) {
  const u = new Float64Array(rows.length * 2 * K);
  const r = new Float64Array(rows.length * 2 * K);
  rows.forEach((off, i) => {
    const ui = u.subarray(i * 2 * K, (i + 1) * 2 * K);
    phi(x.subarray(off, off + K), ui);
    const ri = r.subarray(i * 2 * K, (i + 1) * 2 * K);
    if (rope) {
      const t = ropeRow(i);
      nalaRotate(ui, rope.cos.subarray(t * K, (t + 1) * K), rope.sin.subarray(t * K, (t + 1) * K), ri);
    } else ri.set(ui);
  });
  return { u, r };
}

/** Non-causal and causal prefill, by the defining sums. */
export function nalaAttentionReference(q: Tensor, k: Tensor, v: Tensor, opts: NalaAttentionOptions = {}): { o: Tensor; finalState?: Tensor } {
  const [B, T, H, K] = q.shape;
  const [, S, Hk] = k.shape;
  const V = v.shape[3];
  const G = H / Hk;
  const causal = opts.causal === true;
  const eps = opts.eps ?? 1e-6;
  const qd = q.toFloat64(), kd = k.toFloat64(), vd = v.toFloat64();
  const ropeQ = rope64(opts.rope);
  const ropeK = rope64(opts.ropeK ?? opts.rope);
  const L = nalaStateLength(K, V);
  const s0 = causal && opts.initialState ? opts.initialState.toFloat64() : undefined;

  const seqs: { b: number; q0: number; Tn: number; k0: number; Sn: number }[] = [];
  if (opts.cuSeqlens) {
    const cq = Array.from(opts.cuSeqlens);
    const ck = opts.cuSeqlensK ? Array.from(opts.cuSeqlensK) : cq;
    for (let n = 0; n + 1 < cq.length; n++) seqs.push({ b: 0, q0: cq[n], Tn: cq[n + 1] - cq[n], k0: ck[n], Sn: ck[n + 1] - ck[n] });
  } else {
    for (let b = 0; b < B; b++) seqs.push({ b, q0: 0, Tn: T, k0: 0, Sn: S });
  }

  const o = new Float64Array(B * T * H * V);
  const fs = new Float64Array(seqs.length * Hk * L);
  seqs.forEach(({ b, q0, Tn, k0, Sn }, n) => {
    for (let hk = 0; hk < Hk; hk++) {
      const kRows = Array.from({ length: Sn }, (_, j) => ((b * S + k0 + j) * Hk + hk) * K);
      const fk = features(kd, kRows, K, nalaPhiK, ropeK, (j) => k0 + j);
      const base = (n * Hk + hk) * L;
      // The initial state's sums: numerator (rotated) 2K×V, denominator (unrotated) 2K, count.
      const kv0 = s0 ? s0.subarray(base, base + 2 * K * V) : new Float64Array(2 * K * V);
      const z0 = s0 ? s0.subarray(base + 2 * K * V, base + 2 * K * V + 2 * K) : new Float64Array(2 * K);
      const c0 = s0 ? s0[base + L - 1] : 0;
      for (let g = 0; g < G; g++) {
        const h = hk * G + g;
        const qRows = Array.from({ length: Tn }, (_, i) => ((b * T + q0 + i) * H + h) * K);
        const fq = features(qd, qRows, K, nalaPhiQ, ropeQ, (i) => q0 + i);
        for (let i = 0; i < Tn; i++) {
          const qu = fq.u.subarray(i * 2 * K, (i + 1) * 2 * K);
          const qr = fq.r.subarray(i * 2 * K, (i + 1) * 2 * K);
          const acc = new Float64Array(V);
          let den = 0;
          const jEnd = causal ? i + 1 : Sn;
          for (let j = 0; j < jEnd; j++) {
            let num = 0, d = 0;
            for (let e = 0; e < 2 * K; e++) {
              num += qr[e] * fk.r[j * 2 * K + e];
              d += qu[e] * fk.u[j * 2 * K + e];
            }
            den += d;
            const vo = ((b * S + k0 + j) * Hk + hk) * V;
            for (let c = 0; c < V; c++) acc[c] += num * vd[vo + c];
          }
          let count = jEnd;
          if (causal) {
            // The carried prefix: qr . KV0 in the numerator, qu . z0 and its count in the denominator.
            for (let e = 0; e < 2 * K; e++) {
              for (let c = 0; c < V; c++) acc[c] += qr[e] * kv0[e * V + c];
              den += qu[e] * z0[e];
            }
            count += c0;
          }
          const oo = ((b * T + q0 + i) * H + h) * V;
          const inv = count === 0 ? 0 : 1 / (den + count * eps);
          for (let c = 0; c < V; c++) o[oo + c] = count === 0 ? 0 : acc[c] * inv;
        }
      }
      if (causal) {
        // finalState: the initial sums plus every key of the sequence.
        const st = fs.subarray(base, base + L);
        st.set(kv0, 0);
        st.set(z0, 2 * K * V);
        for (let j = 0; j < Sn; j++) {
          const vo = ((b * S + k0 + j) * Hk + hk) * V;
          for (let e = 0; e < 2 * K; e++) {
            const r = fk.r[j * 2 * K + e];
            for (let c = 0; c < V; c++) st[e * V + c] += r * vd[vo + c];
            st[2 * K * V + e] += fk.u[j * 2 * K + e];
          }
        }
        st[L - 1] = c0 + Sn;
      }
    }
  });
  const out: { o: Tensor; finalState?: Tensor } = { o: new Tensor(o, [B, T, H, V], 'float64') };
  if (causal) out.finalState = new Tensor(fs, [seqs.length, Hk, L], 'float64');
  return out;
}

/**
 * One decode step by the same sums: the new key enters the state (numerator, denominator, count), then each
 * query reads it. q [N,H,K], k [N,Hk,K], v [N,Hk,V], state [N,Hk,L]; rope rows [N,K] (row n: sequence n's
 * new position). Returns o float64 [N,H,V] and the new state float64 (the input is not modified).
 */
export function nalaAttentionStepReference(opts: NalaStepOptions): { o: Tensor; state: Tensor } {
  const { q, k, v, state } = opts;
  const [N, H, K] = q.shape;
  const Hk = k.shape[1];
  const V = v.shape[2];
  const G = H / Hk;
  const L = nalaStateLength(K, V);
  const eps = opts.eps ?? 1e-6;
  const qd = q.toFloat64(), kd = k.toFloat64(), vd = v.toFloat64();
  const rope = rope64(opts.rope);
  const st = state.toFloat64();
  const o = new Float64Array(N * H * V);
  const phi = new Float64Array(2 * K), rot = new Float64Array(2 * K);
  for (let n = 0; n < N; n++) {
    const cs = rope ? rope.cos.subarray(n * K, (n + 1) * K) : undefined;
    const sn = rope ? rope.sin.subarray(n * K, (n + 1) * K) : undefined;
    const turn = (x: Float64Array): Float64Array => {
      if (!cs) return x;
      nalaRotate(x, cs, sn!, rot);
      return rot;
    };
    for (let hk = 0; hk < Hk; hk++) {
      const base = (n * Hk + hk) * L;
      nalaPhiK(kd.subarray((n * Hk + hk) * K, (n * Hk + hk + 1) * K), phi);
      const r = turn(phi);
      const vo = (n * Hk + hk) * V;
      for (let e = 0; e < 2 * K; e++) {
        for (let c = 0; c < V; c++) st[base + e * V + c] += r[e] * vd[vo + c];
        st[base + 2 * K * V + e] += phi[e];
      }
      st[base + L - 1] += 1;
      for (let g = 0; g < G; g++) {
        const h = hk * G + g;
        nalaPhiQ(qd.subarray((n * H + h) * K, (n * H + h + 1) * K), phi);
        let den = 0;
        for (let e = 0; e < 2 * K; e++) den += phi[e] * st[base + 2 * K * V + e];
        const qr = turn(phi);
        const inv = 1 / (den + st[base + L - 1] * eps);
        for (let c = 0; c < V; c++) {
          let s = 0;
          for (let e = 0; e < 2 * K; e++) s += qr[e] * st[base + e * V + c];
          o[(n * H + h) * V + c] = s * inv;
        }
      }
    }
  }
  return { o: new Tensor(o, [N, H, V], 'float64'), state: new Tensor(st, [N, Hk, L], 'float64') };
}
