// A Qwen3-Next-shaped hybrid model, small by default: layers of Gated DeltaNet and gated attention in the
// pattern of `config.pattern` (3 x GDN + 1 x attention, repeated), each followed by a SwiGLU MLP, byte-level
// tokens, greedy decoding. Weights come from a safetensors file (random ones are written on first use).
//
// A GDN layer (Qwen3-Next's Gated DeltaNet): rmsnorm -> in-projection to q, k, v, z (output gate), b (beta
// logits), a (decay input) -> short causal convolution with SiLU over q, k, v -> beta = sigmoid(b),
// g = -exp(A_log) * softplus(a + dt_bias) -> gated delta rule (q, k L2-normalised in the kernel) ->
// rmsnorm(o) * silu(z) per head -> out-projection. An attention layer (gated attention): q and its gate,
// k, v -> rotary on the first rotaryDim dims -> causal attention over the KV cache, o * sigmoid(gate) ->
// out-projection.
import { existsSync } from 'node:fs';
import * as sk from 'seqkern';
import { cachedAttention, causalConv, linear, rmsNorm, rmsNormGated, rotary } from './ops.mjs';
import { readSafetensors, SafetensorsError, writeSafetensors } from './safetensors.mjs';

export const DEFAULT_CONFIG = {
  vocab: 256, hidden: 128, ffn: 256, repeats: 2, pattern: ['gdn', 'gdn', 'gdn', 'attn'],
  gdn: { H: 2, HV: 4, K: 32, V: 32, conv: 4 },
  attn: { Hq: 4, Hk: 2, D: 32, rotaryDim: 16 },
  maxContext: 4096, seed: 1,
};

export const layerKinds = (cfg) => Array.from({ length: cfg.repeats }, () => cfg.pattern).flat();

/** Every weight the model reads: name -> shape. */
export function weightShapes(cfg) {
  const { hidden: d, ffn, vocab } = cfg;
  const { H, HV, K, V, conv } = cfg.gdn;
  const { Hq, Hk, D } = cfg.attn;
  const shapes = { embed: [vocab, d], final_norm: [d], lm_head: [vocab, d] };
  layerKinds(cfg).forEach((kind, l) => {
    const p = `layers.${l}.`;
    shapes[p + 'norm'] = [d];
    shapes[p + 'mlp_norm'] = [d];
    shapes[p + 'mlp_gate_up'] = [2 * ffn, d];
    shapes[p + 'mlp_down'] = [d, ffn];
    if (kind === 'gdn') {
      shapes[p + 'in_proj'] = [2 * H * K + 2 * HV * V + 2 * HV, d];
      shapes[p + 'conv'] = [2 * H * K + HV * V, conv];
      shapes[p + 'A_log'] = [HV];
      shapes[p + 'dt_bias'] = [HV];
      shapes[p + 'o_norm'] = [V];
      shapes[p + 'out_proj'] = [d, HV * V];
    } else {
      shapes[p + 'q_proj'] = [2 * Hq * D, d];
      shapes[p + 'kv_proj'] = [2 * Hk * D, d];
      shapes[p + 'o_proj'] = [d, Hq * D];
    }
  });
  return shapes;
}

/** Writes random weights of cfg's shapes (scaled by fan-in) to a safetensors file. */
export function writeRandomWeights(path, cfg = DEFAULT_CONFIG) {
  let seed = cfg.seed * 1000;
  const tensors = Object.entries(weightShapes(cfg)).map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    let data;
    if (/norm$/.test(name)) data = new Float32Array(n).fill(1);
    else if (name.endsWith('A_log')) data = Float32Array.from({ length: n }, (_, i) => Math.log(1 + i));
    else if (name.endsWith('dt_bias')) data = new Float32Array(n).fill(0.5);
    else data = sk.randn(shape, { seed: seed++, std: 1 / Math.sqrt(shape[shape.length - 1]) }).data;
    return { name, dtype: 'F32', shape, data };
  });
  writeSafetensors(path, tensors, { format: 'seqkern-hybrid', config: JSON.stringify(cfg) });
}

/** Reads weights for cfg from path, checking that every tensor is there with its shape. */
export function loadWeights(path, cfg) {
  const { tensors } = readSafetensors(path);
  const w = {};
  for (const [name, shape] of Object.entries(weightShapes(cfg))) {
    const t = tensors.get(name);
    if (!t) throw new SafetensorsError(path, `expected tensor ${name} of shape [${shape}], got none`);
    if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) throw new SafetensorsError(path, `expected tensor ${name} of shape [${shape}], got [${t.shape}]`);
    w[name] = t.dtype === 'F32' ? t.data : sk.asTensor('loadWeights', name, { dtype: t.dtype === 'BF16' ? 'bfloat16' : 'float16', shape: t.shape, data: t.data }).toFloat32().data;
  }
  return w;
}

/** Opens (or first writes) a weights file and builds the model. */
export function openModel(path, cfg = DEFAULT_CONFIG) {
  if (!existsSync(path)) writeRandomWeights(path, cfg);
  return new HybridModel(cfg, loadWeights(path, cfg));
}

const softplus = (x) => (x > 20 ? x : Math.log1p(Math.exp(x)));
const sigmoid = (x) => 1 / (1 + Math.exp(-x));

export class HybridModel {
  constructor(cfg, weights) {
    this.cfg = cfg;
    this.w = weights;
    this.kinds = layerKinds(cfg);
  }

  /** A new sequence's state: position, and per layer the conv + delta state or the KV cache. */
  newSequence() {
    const { HV, K, V, conv, H } = this.cfg.gdn;
    const { Hk, D } = this.cfg.attn;
    const C = 2 * H * K + HV * V;
    return {
      pos: 0,
      layers: this.kinds.map((kind) =>
        kind === 'gdn'
          ? { conv: new Float32Array(C * (conv - 1)), state: new Float32Array(HV * K * V) }
          : { k: new Float32Array(64 * Hk * D), v: new Float32Array(64 * Hk * D), len: 0 }),
    };
  }

  /**
   * One forward over a batch: sequence n adds tokens[n] (its prompt in a prefill, one token in a decode).
   * Returns each sequence's next token (greedy) from its last position's logits.
   */
  forward(seqs, tokens) {
    const { hidden: d, vocab } = this.cfg;
    const lens = tokens.map((t) => t.length);
    const T = lens.reduce((a, b) => a + b, 0);
    let x = new Float32Array(T * d);
    let at = 0;
    for (const toks of tokens) for (const t of toks) x.set(this.w.embed.subarray(t * d, (t + 1) * d), d * at++);
    this.kinds.forEach((kind, l) => {
      const p = `layers.${l}.`;
      const h = rmsNorm(x, T, d, this.w[p + 'norm']);
      const mix = kind === 'gdn' ? this.gdn(l, p, h, seqs, lens) : this.attn(l, p, h, seqs, lens);
      for (let i = 0; i < x.length; i++) x[i] += mix[i];
      x = this.mlp(p, x, T);
    });
    for (const s of seqs) s.pos += lens[seqs.indexOf(s)];
    // logits of each sequence's last token only
    const last = new Float32Array(seqs.length * d);
    let end = 0;
    lens.forEach((n, i) => {
      end += n;
      last.set(x.subarray((end - 1) * d, end * d), i * d);
    });
    const logits = linear(rmsNorm(last, seqs.length, d, this.w.final_norm), seqs.length, d, this.w.lm_head, vocab);
    return seqs.map((_, i) => {
      let best = 0;
      for (let v = 1; v < vocab; v++) if (logits[i * vocab + v] > logits[i * vocab + best]) best = v;
      return best;
    });
  }

  mlp(p, x, T) {
    const { hidden: d, ffn } = this.cfg;
    const h = rmsNorm(x, T, d, this.w[p + 'mlp_norm']);
    const gu = linear(h, T, d, this.w[p + 'mlp_gate_up'], 2 * ffn);
    const act = new Float32Array(T * ffn);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < ffn; i++) {
        const g = gu[t * 2 * ffn + i], u = gu[t * 2 * ffn + ffn + i];
        act[t * ffn + i] = (g / (1 + Math.exp(-g))) * u;
      }
    }
    const y = linear(act, T, ffn, this.w[p + 'mlp_down'], d);
    for (let i = 0; i < y.length; i++) y[i] += x[i];
    return y;
  }

  gdn(l, p, h, seqs, lens) {
    const { hidden: d } = this.cfg;
    const { H, HV, K, V, conv: W } = this.cfg.gdn;
    const T = h.length / d;
    const C = 2 * H * K + HV * V;
    const P = C + HV * V + 2 * HV;
    const proj = linear(h, T, d, this.w[p + 'in_proj'], P);
    // the conv runs over q, k, v of each sequence with its own state
    const qkv = new Float32Array(T * C);
    const z = new Float32Array(T * HV * V), beta = new Float32Array(T * HV), g = new Float32Array(T * HV);
    const aLog = this.w[p + 'A_log'], dtBias = this.w[p + 'dt_bias'];
    for (let t = 0; t < T; t++) {
      qkv.set(proj.subarray(t * P, t * P + C), t * C);
      z.set(proj.subarray(t * P + C, t * P + C + HV * V), t * HV * V);
      for (let j = 0; j < HV; j++) {
        beta[t * HV + j] = sigmoid(proj[t * P + C + HV * V + j]);
        g[t * HV + j] = -Math.exp(aLog[j]) * softplus(proj[t * P + C + HV * V + HV + j] + dtBias[j]);
      }
    }
    const convOut = new Float32Array(T * C);
    let at = 0;
    seqs.forEach((s, n) => {
      const y = causalConv(qkv.subarray(at * C, (at + lens[n]) * C), lens[n], C, this.w[p + 'conv'], W, s.layers[l].conv);
      convOut.set(y, at * C);
      at += lens[n];
    });
    const q = new Float32Array(T * H * K), k = new Float32Array(T * H * K), v = new Float32Array(T * HV * V);
    for (let t = 0; t < T; t++) {
      q.set(convOut.subarray(t * C, t * C + H * K), t * H * K);
      k.set(convOut.subarray(t * C + H * K, t * C + 2 * H * K), t * H * K);
      v.set(convOut.subarray(t * C + 2 * H * K, (t + 1) * C), t * HV * V);
    }
    const N = seqs.length;
    const state = new Float32Array(N * HV * K * V);
    seqs.forEach((s, n) => state.set(s.layers[l].state, n * HV * K * V));
    let o;
    const decode = lens.every((n) => n === 1);
    if (decode) {
      const st = sk.tensor(state, [N, HV, K, V]);
      o = sk.gatedDeltaRuleStep({
        q: sk.tensor(q, [N, H, K]), k: sk.tensor(k, [N, H, K]), v: sk.tensor(v, [N, HV, V]),
        beta: sk.tensor(beta, [N, HV]), g: sk.tensor(g, [N, HV]), state: st, qkL2Norm: true,
      }).o.data;
    } else {
      const cu = [0];
      for (const n of lens) cu.push(cu[cu.length - 1] + n);
      const r = sk.gatedDeltaRule({
        q: sk.tensor(q, [1, T, H, K]), k: sk.tensor(k, [1, T, H, K]), v: sk.tensor(v, [1, T, HV, V]),
        beta: sk.tensor(beta, [1, T, HV]), g: sk.tensor(g, [1, T, HV]), cuSeqlens: cu,
        initialState: sk.tensor(state, [N, HV, K, V]), outputFinalState: true, qkL2Norm: true, algorithm: 'chunk',
      });
      o = r.o.data;
      state.set(r.finalState.data);
    }
    seqs.forEach((s, n) => s.layers[l].state.set(state.subarray(n * HV * K * V, (n + 1) * HV * K * V)));
    const normed = rmsNormGated(o, z, T * HV, V, this.w[p + 'o_norm']);
    return linear(normed, T, HV * V, this.w[p + 'out_proj'], d);
  }

  attn(l, p, h, seqs, lens) {
    const { hidden: d } = this.cfg;
    const { Hq, Hk, D, rotaryDim } = this.cfg.attn;
    const T = h.length / d;
    const qg = linear(h, T, d, this.w[p + 'q_proj'], 2 * Hq * D);
    const kv = linear(h, T, d, this.w[p + 'kv_proj'], 2 * Hk * D);
    const q = new Float32Array(T * Hq * D), gate = new Float32Array(T * Hq * D);
    const k = new Float32Array(T * Hk * D), v = new Float32Array(T * Hk * D);
    for (let t = 0; t < T; t++) {
      q.set(qg.subarray(t * 2 * Hq * D, t * 2 * Hq * D + Hq * D), t * Hq * D);
      gate.set(qg.subarray(t * 2 * Hq * D + Hq * D, (t + 1) * 2 * Hq * D), t * Hq * D);
      k.set(kv.subarray(t * 2 * Hk * D, t * 2 * Hk * D + Hk * D), t * Hk * D);
      v.set(kv.subarray(t * 2 * Hk * D + Hk * D, (t + 1) * 2 * Hk * D), t * Hk * D);
    }
    const positions = [];
    seqs.forEach((s, n) => { for (let i = 0; i < lens[n]; i++) positions.push(s.pos + i); });
    rotary(q, T, Hq, D, rotaryDim, positions);
    rotary(k, T, Hk, D, rotaryDim, positions);
    let at = 0;
    const caches = seqs.map((s, n) => {
      const c = s.layers[l];
      const need = (c.len + lens[n]) * Hk * D;
      if (need > c.k.length) { // grow by doubling
        const cap = Math.max(need, 2 * c.k.length);
        const nk = new Float32Array(cap), nv = new Float32Array(cap);
        nk.set(c.k); nv.set(c.v);
        c.k = nk; c.v = nv;
      }
      c.k.set(k.subarray(at * Hk * D, (at + lens[n]) * Hk * D), c.len * Hk * D);
      c.v.set(v.subarray(at * Hk * D, (at + lens[n]) * Hk * D), c.len * Hk * D);
      c.len += lens[n];
      at += lens[n];
      return c;
    });
    const o = cachedAttention(q, gate, lens, caches, Hq, Hk, D, true);
    return linear(o, T, Hq * D, this.w[p + 'o_proj'], d);
  }
}

/** Byte-level tokens of a string, and back. */
export const encode = (text) => Array.from(Buffer.from(text, 'utf8'));
export const decode = (tokens) => Buffer.from(tokens).toString('latin1');
