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
//
// Every step runs on seqkern's native ops: linear, rmsNorm, rmsNormGated, causalConv1d / causalConv1dUpdate
// on a conv-state pool, gatedDeltaRule / gatedDeltaRuleStep on a delta-state pool (the gating, sigmoid and
// softplus, inside the kernel), attentionWithKVCache over paged KV caches (the append and the rotary inside
// it). A sequence owns a slot of every pool (stateIndices) and a list of cache blocks (blockTable), so a
// batched decode is one call per op for all sequences. Only the residual adds, SwiGLU's product and the
// argmax are JS loops (ops.mjs): seqkern has no elementwise ops, which is also why a step is a series of
// sync calls (the model runs on its own worker thread) rather than one chain().
//
// Batch invariance (a request's tokens do not depend on who it is batched with, bit for bit): every op
// computes a sequence's rows on their own, in the same order whatever else is in the batch. That needs
// linear's `batchInvariant` (every row on the GEMV path; the GEMM for more than 8 rows sums in another order)
// and attentionWithKVCache's (a sequence's keys never split across threads); a prefill's attention runs per
// sequence (Tq = its prompt), the rest of a prefill as one varlen call.
import { existsSync } from 'node:fs';
import * as sk from 'seqkern';
import { addInto, argmaxRows, ropeTables, swiglu } from './ops.mjs';
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
export function openModel(path, cfg = DEFAULT_CONFIG, opts = {}) {
  if (!existsSync(path)) writeRandomWeights(path, cfg);
  return new HybridModel(cfg, loadWeights(path, cfg), opts);
}


const INVARIANT = { batchInvariant: true };
const view = (t, shape) => new sk.Tensor(t.data, shape, t.dtype);
/** Rows [r0, r1) of a [rows, ...] Float32Array as a tensor of `shape` (zero-copy). */
const rows = (data, r0, r1, width, shape) => new sk.Tensor(data.subarray(r0 * width, r1 * width), shape, 'float32');

export class HybridModel {
  /** maxSeqs: slots of the state pools (sequences alive at once); blockSize: tokens per KV-cache block. */
  constructor(cfg, weights, { maxSeqs = 80, blockSize = 64 } = {}) {
    this.cfg = cfg;
    this.w = weights;
    this.kinds = layerKinds(cfg);
    const { hidden: d } = cfg;
    const { H, HV, K, V, conv: W } = cfg.gdn;
    const { Hq, Hk, D, rotaryDim } = cfg.attn;
    const t = (name, r0, r1, cols) => rows(weights[name], r0, r1, cols, [r1 - r0, cols]);
    this.final = { norm: new sk.Tensor(weights.final_norm, [d], 'float32'), head: t('lm_head', 0, cfg.vocab, d) };
    this.layers = this.kinds.map((kind, l) => {
      const p = `layers.${l}.`;
      const L = {
        norm: new sk.Tensor(weights[p + 'norm'], [d], 'float32'), mlpNorm: new sk.Tensor(weights[p + 'mlp_norm'], [d], 'float32'),
        gate: t(p + 'mlp_gate_up', 0, cfg.ffn, d), up: t(p + 'mlp_gate_up', cfg.ffn, 2 * cfg.ffn, d), down: t(p + 'mlp_down', 0, d, cfg.ffn),
      };
      if (kind === 'gdn') {
        // in_proj rows: q [H*K], k [H*K], v [HV*V], z [HV*V], b [HV], a [HV]; conv rows: q, k, v channels.
        const cuts = [0, H * K, 2 * H * K, 2 * H * K + HV * V, 2 * H * K + 2 * HV * V, 2 * H * K + 2 * HV * V + HV, 2 * H * K + 2 * HV * V + 2 * HV];
        [L.wq, L.wk, L.wv, L.wz, L.wb, L.wa] = cuts.slice(0, -1).map((c, i) => t(p + 'in_proj', c, cuts[i + 1], d));
        [L.cq, L.ck, L.cv] = [[0, H * K], [H * K, 2 * H * K], [2 * H * K, 2 * H * K + HV * V]].map(([a, b]) => t(p + 'conv', a, b, W));
        L.aLog = new sk.Tensor(weights[p + 'A_log'], [HV], 'float32');
        L.dtBias = new sk.Tensor(weights[p + 'dt_bias'], [HV], 'float32');
        L.oNorm = new sk.Tensor(weights[p + 'o_norm'], [V], 'float32');
        L.out = t(p + 'out_proj', 0, d, HV * V);
        L.convQ = sk.zeros([maxSeqs, H * K, W - 1]);
        L.convK = sk.zeros([maxSeqs, H * K, W - 1]);
        L.convV = sk.zeros([maxSeqs, HV * V, W - 1]);
        L.state = sk.zeros([maxSeqs, HV, K, V]);
      } else {
        L.wq = t(p + 'q_proj', 0, Hq * D, d);
        L.wg = t(p + 'q_proj', Hq * D, 2 * Hq * D, d);
        L.wk = t(p + 'kv_proj', 0, Hk * D, d);
        L.wv = t(p + 'kv_proj', Hk * D, 2 * Hk * D, d);
        L.out = t(p + 'o_proj', 0, d, Hq * D);
      }
      return L;
    });
    this.rope = ropeTables(cfg.maxContext, rotaryDim / 2);
    this.maxSeqs = maxSeqs;
    this.freeSlots = Array.from({ length: maxSeqs }, (_, i) => maxSeqs - 1 - i);
    this.blockSize = blockSize;
    this.numBlocks = 0;
    this.freeBlocks = [];
    this.growCaches(2 * maxSeqs);
  }

  /** Adds blocks to every attention layer's paged caches [numBlocks, blockSize, Hk, D] (copying the old ones). */
  growCaches(add) {
    const { Hk, D } = this.cfg.attn;
    const n = this.numBlocks + add;
    for (const L of this.layers) {
      if (!L.wg) continue; // GDN layer: no cache
      const k = sk.zeros([n, this.blockSize, Hk, D]), v = sk.zeros([n, this.blockSize, Hk, D]);
      if (L.kCache) {
        k.data.set(L.kCache.data);
        v.data.set(L.vCache.data);
      }
      L.kCache = k;
      L.vCache = v;
    }
    for (let b = n - 1; b >= this.numBlocks; b--) this.freeBlocks.push(b);
    this.numBlocks = n;
  }

  /** A new sequence: a slot of every state pool (zeroed) and no cache blocks yet. */
  newSequence() {
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new Error(`HybridModel: all ${this.maxSeqs} sequence slots in use (release finished sequences)`);
    for (const L of this.layers) {
      if (!L.state) continue;
      for (const pool of [L.convQ, L.convK, L.convV, L.state]) {
        const per = pool.data.length / this.maxSeqs;
        pool.data.fill(0, slot * per, (slot + 1) * per);
      }
    }
    return { pos: 0, slot, blocks: [] };
  }

  /** Gives a finished (or cancelled) sequence's slot and cache blocks back. */
  release(seq) {
    if (seq.slot < 0) return;
    this.freeSlots.push(seq.slot);
    this.freeBlocks.push(...seq.blocks);
    seq.slot = -1;
    seq.blocks = [];
  }

  /**
   * One forward over a batch: sequence n adds tokens[n] (its prompt in a prefill, one token in a decode).
   * Returns each sequence's next token (greedy) from its last position's logits.
   */
  forward(seqs, tokens) {
    const { hidden: d, vocab } = this.cfg;
    const lens = tokens.map((t) => t.length);
    const T = lens.reduce((a, b) => a + b, 0);
    const x = new Float32Array(T * d);
    let at = 0;
    for (const toks of tokens) for (const t of toks) x.set(this.w.embed.subarray(t * d, (t + 1) * d), d * at++);
    // Cache blocks for the new tokens (every attention layer uses the same block numbers).
    seqs.forEach((s, n) => {
      const need = Math.ceil((s.pos + lens[n]) / this.blockSize);
      while (s.blocks.length < need) {
        if (this.freeBlocks.length === 0) this.growCaches(this.numBlocks);
        s.blocks.push(this.freeBlocks.pop());
      }
    });
    const ctx = {
      seqs, lens, T, N: seqs.length, decode: lens.every((n) => n === 1),
      slots: Int32Array.from(seqs, (s) => s.slot), cu: Int32Array.from([0, ...lens.map((_, i) => lens.slice(0, i + 1).reduce((a, b) => a + b, 0))]),
    };
    const X = new sk.Tensor(x, [T, d], 'float32');
    this.kinds.forEach((kind, l) => {
      const L = this.layers[l];
      const h = sk.rmsNorm(X, L.norm);
      const mix = kind === 'gdn' ? this.gdn(L, h, ctx) : this.attn(L, h, ctx);
      addInto(x, mix.data);
      this.mlp(L, X);
    });
    seqs.forEach((s, n) => { s.pos += lens[n]; });
    // logits of each sequence's last token only
    const last = new Float32Array(seqs.length * d);
    for (let n = 0; n < seqs.length; n++) last.set(x.subarray((ctx.cu[n + 1] - 1) * d, ctx.cu[n + 1] * d), n * d);
    const h = sk.rmsNorm(new sk.Tensor(last, [seqs.length, d], 'float32'), this.final.norm);
    return argmaxRows(sk.linear(h, this.final.head, INVARIANT).data, seqs.length, vocab);
  }

  /** x += down(silu(gate(h)) * up(h)), h = rmsNorm(x), in place. */
  mlp(L, X) {
    const h = sk.rmsNorm(X, L.mlpNorm);
    const g = sk.linear(h, L.gate, INVARIANT), u = sk.linear(h, L.up, INVARIANT);
    swiglu(g.data, u.data);
    addInto(X.data, sk.linear(g, L.down, INVARIANT).data);
  }

  gdn(L, h, { T, N, decode, slots, cu }) {
    const { H, HV, K, V } = this.cfg.gdn;
    const lin = (w) => sk.linear(h, w, INVARIANT);
    const q = lin(L.wq), k = lin(L.wk), v = lin(L.wv), z = lin(L.wz), b = lin(L.wb), a = lin(L.wa);
    const gating = { aLog: L.aLog, dtBias: L.dtBias, betaSigmoid: true, qkL2Norm: true, state: L.state, stateIndices: slots };
    let o;
    if (decode) {
      const conv = (x, pool, w) => sk.causalConv1dUpdate(x, pool, w, { activation: 'silu', stateIndices: slots });
      o = sk.gatedDeltaRuleStep({
        q: view(conv(q, L.convQ, L.cq), [N, H, K]), k: view(conv(k, L.convK, L.ck), [N, H, K]), v: view(conv(v, L.convV, L.cv), [N, HV, V]),
        beta: b, g: a, ...gating,
      }).o;
    } else {
      const conv = (x, pool, w) => sk.causalConv1d(view(x, [1, T, x.shape[1]]), w, { activation: 'silu', cuSeqlens: cu, convState: pool, stateIndices: slots });
      o = sk.gatedDeltaRule({
        q: view(conv(q, L.convQ, L.cq), [1, T, H, K]), k: view(conv(k, L.convK, L.ck), [1, T, H, K]), v: view(conv(v, L.convV, L.cv), [1, T, HV, V]),
        beta: view(b, [1, T, HV]), g: view(a, [1, T, HV]), cuSeqlens: cu, algorithm: 'chunk', ...gating,
      }).o;
    }
    const normed = sk.rmsNormGated(view(o, [T * HV, V]), view(z, [T * HV, V]), L.oNorm);
    return sk.linear(view(normed, [T, HV * V]), L.out, INVARIANT);
  }

  attn(L, h, { seqs, lens, T, N, decode, cu }) {
    const { Hq, Hk, D } = this.cfg.attn;
    const lin = (w) => sk.linear(h, w, INVARIANT).data;
    const q = lin(L.wq), gate = lin(L.wg), k = lin(L.wk), v = lin(L.wv);
    const o = new Float32Array(T * Hq * D);
    // One call over sequences [n0, n1) with Tq tokens each (a decode: all of them, Tq = 1; a prefill: one).
    const call = (n0, n1, Tq) => {
      const B = n1 - n0, r0 = cu[n0], r1 = cu[n1];
      const maxBlocks = Math.max(1, ...seqs.slice(n0, n1).map((s) => s.blocks.length));
      const table = new Int32Array(B * maxBlocks);
      for (let b = 0; b < B; b++) table.set(seqs[n0 + b].blocks, b * maxBlocks);
      sk.attentionWithKVCache(rows(q, r0, r1, Hq * D, [B, Tq, Hq, D]), L.kCache, L.vCache, {
        cacheSeqlens: Int32Array.from(seqs.slice(n0, n1), (s) => s.pos), blockTable: table,
        kNew: rows(k, r0, r1, Hk * D, [B, Tq, Hk, D]), vNew: rows(v, r0, r1, Hk * D, [B, Tq, Hk, D]),
        rotary: this.rope, gate: rows(gate, r0, r1, Hq * D, [B, Tq, Hq, D]), out: rows(o, r0, r1, Hq * D, [B, Tq, Hq, D]),
        batchInvariant: true,
      });
    };
    if (decode) call(0, N, 1);
    else for (let n = 0; n < N; n++) if (lens[n] > 0) call(n, n + 1, lens[n]);
    return sk.linear(new sk.Tensor(o, [T, Hq * D], 'float32'), L.out, INVARIANT);
  }
}

/** Byte-level tokens of a string, and back. */
export const encode = (text) => Array.from(Buffer.from(text, 'utf8'));
export const decode = (tokens) => Buffer.from(tokens).toString('latin1');
