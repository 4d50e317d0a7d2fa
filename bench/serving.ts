// Inputs and calls of the serving bench cases that build more than one tensor (issue 14 part 8): linear, the
// conv update on a pool, the gated norm, and the two Qwen3-Next-shaped decode layers. Each setup returns the
// tensors it built and `run`, the call the bench times (returning its output, so test/serving-bench.test.ts can
// compare it with the ops called directly). Every output goes to a buffer allocated once (`out`), as a server
// reusing its buffers across steps would, so no allocation is timed.
import {
  attentionWithKVCache, causalConv1dUpdate, gatedDeltaRuleStep, linear, rmsNorm, rmsNormGated, tensor, type Tensor,
} from '../src/index.js';
import {
  gdnInFeatures,
  type AttnLayerShape, type ConvUpdateShape, type GdnLayerShape, type LinearShape, type RmsNormGatedShape,
} from './formulas.js';
import { fillUniform, uniformTensor } from './inputs.js';

type Backend = 'cpu' | 'reference';

/** One named step of a layer (its separate timing is summed beside the layer's, OpEntry.parts). */
export interface LayerPart {
  name: string;
  fn: () => void;
}

/**
 * `n` distinct slots of a pool of `slots`, in a seeded shuffled order (an LCG's Fisher–Yates): the live
 * sequences' states scattered through the pool as a server's would be after requests come and go.
 */
export function scatteredSlots(n: number, slots: number, seed = 12345): Int32Array {
  const order = Array.from({ length: slots }, (_, i) => i);
  let r = seed >>> 0;
  for (let i = order.length - 1; i > 0; i--) {
    r = (Math.imul(r, 1103515245) + 12345) >>> 0;
    const j = r % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return Int32Array.from(order.slice(0, n));
}

/** A weight [out, in] uniform in ±sqrt(3 / in) (unit variance of x·w for unit-variance x), in `dtype`. */
function weightTensor(out: number, inF: number, dtype: LinearShape['dtype'], seed: number): Tensor {
  const a = Math.sqrt(3 / inF);
  return uniformTensor([out, inF], dtype, seed, -a, a);
}

const f32 = (n: number) => new Float32Array(n);

// ---- single ops

export function linearSetup(c: LinearShape, seed: number, backend: Backend) {
  const x = uniformTensor([c.M, c.K], 'float32', seed, -1, 1);
  const weight = weightTensor(c.N, c.K, c.dtype, seed + 1);
  const out = tensor(f32(c.M * c.N), [c.M, c.N]);
  const opts = { out, backend };
  return { x, weight, out, run: () => linear(x, weight, opts) };
}

/**
 * The decode conv update on a pool of c.slots slots (float32 weight [D, W], no bias, silu), the N sequences at
 * scattered slots; the pool's windows uniform in [-1, 1].
 */
export function convUpdateSetup(c: ConvUpdateShape, seed: number, backend: Backend) {
  const x = uniformTensor([c.N, c.D], c.dtype, seed, -1, 1);
  const pool = uniformTensor([c.slots, c.D, c.W - 1], c.dtype, seed + 1, -1, 1);
  const weight = uniformTensor([c.D, c.W], 'float32', seed + 2, -0.5, 0.5);
  const stateIndices = scatteredSlots(c.N, c.slots, seed + 3);
  const out = uniformTensor([c.N, c.D], c.dtype, 0, 0, 0);
  const opts = { activation: 'silu' as const, stateIndices, out, backend };
  return { x, pool, weight, stateIndices, out, run: () => causalConv1dUpdate(x, pool, weight, opts) };
}

/** rmsNormGated over x, gate [rows, H] with one weight [H] shared by all rows. */
export function normGatedSetup(c: RmsNormGatedShape, seed: number, backend: Backend) {
  const x = uniformTensor([c.rows, c.H], c.dtype, seed, -2, 2);
  const gate = uniformTensor([c.rows, c.H], c.dtype, seed + 1, -3, 3);
  const weight = uniformTensor([c.H], 'float32', seed + 2, 0.5, 1.5);
  const out = uniformTensor([c.rows, c.H], c.dtype, 0, 0, 0);
  const opts = { out, backend };
  return { x, gate, weight, out, run: () => rmsNormGated(x, gate, weight, opts) };
}

// ---- decode layers

/**
 * A Qwen3-Next Gated DeltaNet decode layer of B tokens (one per sequence), float32 activations and pools:
 * 1. in-projection of x [B, hidden] by four weights: q, k, v together [2HK + HV·V, hidden] (the channels the
 *    conv runs over), z [HV·V, hidden], b and a [HV, hidden];
 * 2. causalConv1dUpdate (silu, width W) of the q, k, v channels on a conv-state pool [slots, 2HK + HV·V, W - 1];
 * 3. q, k, v copied out of the conv's rows into their own tensors (the step takes each contiguous);
 * 4. gatedDeltaRuleStep with qkL2Norm and in-kernel gating (g = -exp(aLog)·softplus(a + dtBias),
 *    beta = sigmoid(b)) on a float32 state pool [slots, HV, K, V], the B states at scattered slots;
 * 5. rmsNormGated(o, z) in groups of V (weight [V] shared by the heads);
 * 6. out-projection [hidden, HV·V] back to hidden.
 * The pools evolve from call to call (each call is the next token); the work is the same every call.
 */
export function gdnLayer(c: GdnLayerShape, seed: number, backend: Backend) {
  const { B, hidden, H, HV, K, V, W } = c;
  const f = gdnInFeatures(c);
  const vOut = HV * V;
  const x = uniformTensor([B, hidden], 'float32', seed, -1, 1);
  const wQkv = weightTensor(f.conv, hidden, c.dtype, seed + 1);
  const wZ = weightTensor(vOut, hidden, c.dtype, seed + 2);
  const wB = weightTensor(HV, hidden, c.dtype, seed + 3);
  const wA = weightTensor(HV, hidden, c.dtype, seed + 4);
  const wO = weightTensor(hidden, vOut, c.dtype, seed + 5);
  const convWeight = uniformTensor([f.conv, W], 'float32', seed + 6, -0.5, 0.5);
  const convPool = uniformTensor([c.slots, f.conv, W - 1], 'float32', seed + 7, -1, 1);
  const statePool = uniformTensor([c.slots, HV, K, V], 'float32', seed + 8, -0.1, 0.1);
  const stateIndices = scatteredSlots(B, c.slots, seed + 9);
  const aLog = tensor(Float32Array.from({ length: HV }, (_, h) => Math.log(1 + (15 * h) / Math.max(1, HV - 1))), [HV]);
  const dtBias = uniformTensor([HV], 'float32', seed + 10, -0.5, 0.5);
  const normWeight = uniformTensor([V], 'float32', seed + 11, 0.5, 1.5);
  const qkv = tensor(f32(B * f.conv), [B, f.conv]);
  const z = tensor(f32(B * vOut), [B, HV, V]);
  const b = tensor(f32(B * HV), [B, HV]);
  const a = tensor(f32(B * HV), [B, HV]);
  const conv = tensor(f32(B * f.conv), [B, f.conv]);
  const q = tensor(f32(B * f.qk), [B, H, K]);
  const k = tensor(f32(B * f.qk), [B, H, K]);
  const v = tensor(f32(B * vOut), [B, HV, V]);
  const o = tensor(f32(B * vOut), [B, HV, V]);
  const normed = tensor(f32(B * vOut), [B, HV, V]);
  const y = tensor(f32(B * hidden), [B, hidden]);
  const zFlat = z.view([B, vOut]);
  const normedFlat = normed.view([B, vOut]);
  const stepOpts = {
    q, k, v, beta: b, g: a, state: statePool, stateIndices, aLog, dtBias, betaSigmoid: true, qkL2Norm: true, out: o, backend,
  };
  const parts: LayerPart[] = [
    { name: 'in-projection', fn: () => {
      linear(x, wQkv, { out: qkv, backend });
      linear(x, wZ, { out: zFlat, backend });
      linear(x, wB, { out: b, backend });
      linear(x, wA, { out: a, backend });
    } },
    { name: 'conv update', fn: () => { causalConv1dUpdate(qkv, convPool, convWeight, { activation: 'silu', stateIndices, out: conv, backend }); } },
    { name: 'split q/k/v', fn: () => {
      const src = conv.data as Float32Array;
      for (let n = 0; n < B; n++) {
        const row = n * f.conv;
        (q.data as Float32Array).set(src.subarray(row, row + f.qk), n * f.qk);
        (k.data as Float32Array).set(src.subarray(row + f.qk, row + 2 * f.qk), n * f.qk);
        (v.data as Float32Array).set(src.subarray(row + 2 * f.qk, row + f.conv), n * vOut);
      }
    } },
    { name: 'delta step', fn: () => { gatedDeltaRuleStep(stepOpts); } },
    { name: 'gated norm', fn: () => { rmsNormGated(o, z, normWeight, { out: normed, backend }); } },
    { name: 'out-projection', fn: () => { linear(normedFlat, wO, { out: y, backend }); } },
  ];
  const run = (): Tensor => {
    for (const p of parts) p.fn();
    return y;
  };
  return { x, wQkv, wZ, wB, wA, wO, convWeight, convPool, statePool, stateIndices, aLog, dtBias, normWeight, y, parts, run };
}

/**
 * A Qwen3-Next gated-attention decode layer of B = lens.length tokens over float32 caches holding `lens`
 * tokens (contiguous [B, max(lens) + 1, Hk, D]; only the rows attended are filled):
 * 1. projections of x [B, hidden]: q and its output gate [Hq·D, hidden] each, k and v [Hk·D, hidden];
 * 2. RMSNorm of each q and k head (weights [D]), in place;
 * 3. attentionWithKVCache: partial rotary (rotaryDim of D, GPT-NeoX halves) of q and kNew at positions lens[b],
 *    kNew/vNew appended at lens[b] (the same positions every call, so each call does the same work), the decode
 *    over lens[b] + 1 keys, o ⊙ sigmoid(gate) elementwise;
 * 4. out-projection [hidden, Hq·D] back to hidden.
 */
export function attnLayer(c: AttnLayerShape, seed: number, backend: Backend) {
  const { hidden, Hq, Hk, D, rotaryDim } = c;
  const B = c.lens.length;
  const qOut = Hq * D;
  const kvOut = Hk * D;
  const x = uniformTensor([B, hidden], 'float32', seed, -1, 1);
  const wQ = weightTensor(qOut, hidden, c.dtype, seed + 1);
  const wG = weightTensor(qOut, hidden, c.dtype, seed + 2);
  const wK = weightTensor(kvOut, hidden, c.dtype, seed + 3);
  const wV = weightTensor(kvOut, hidden, c.dtype, seed + 4);
  const wO = weightTensor(hidden, qOut, c.dtype, seed + 5);
  const qNorm = uniformTensor([D], 'float32', seed + 6, 0.5, 1.5);
  const kNorm = uniformTensor([D], 'float32', seed + 7, 0.5, 1.5);
  const cap = Math.max(...c.lens) + 1;
  const row = Hk * D;
  const kc = f32(B * cap * row);
  const vc = f32(B * cap * row);
  c.lens.forEach((L, i) => {
    fillUniform(kc.subarray(i * cap * row, (i * cap + L) * row), seed + 8 + 2 * i, -1, 1);
    fillUniform(vc.subarray(i * cap * row, (i * cap + L) * row), seed + 9 + 2 * i, -1, 1);
  });
  const kCache = tensor(kc, [B, cap, Hk, D]);
  const vCache = tensor(vc, [B, cap, Hk, D]);
  const half = rotaryDim / 2;
  const cos = f32(cap * half);
  const sin = f32(cap * half);
  for (let p = 0; p < cap; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * 10000 ** (-i / half);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  const rot = { cos: tensor(cos, [cap, half]), sin: tensor(sin, [cap, half]) };
  const cacheSeqlens = Int32Array.from(c.lens);
  const qFlat = tensor(f32(B * qOut), [B, qOut]);
  const gFlat = tensor(f32(B * qOut), [B, qOut]);
  const kFlat = tensor(f32(B * kvOut), [B, kvOut]);
  const vFlat = tensor(f32(B * kvOut), [B, kvOut]);
  // The norms write into their own tensors, not in place: a part timed alone thousands of times (the parts
  // after the layer) would otherwise renormalise its own output again and again, which drives the components
  // whose weight is below 1 into denormals and times those instead (a 25x slower attention part, measured).
  const q = tensor(f32(B * qOut), [B, 1, Hq, D]);
  const kNew = tensor(f32(B * kvOut), [B, 1, Hk, D]);
  const o = tensor(f32(B * qOut), [B, 1, Hq, D]);
  const oFlat = o.view([B, qOut]);
  const y = tensor(f32(B * hidden), [B, hidden]);
  const attnOpts = {
    cacheSeqlens, kNew, vNew: vFlat.view([B, 1, Hk, D]), rotary: rot, gate: gFlat.view([B, 1, Hq, D]), gateType: 'elementwise' as const,
    out: o, backend,
  };
  const parts: LayerPart[] = [
    { name: 'projections', fn: () => {
      linear(x, wQ, { out: qFlat, backend });
      linear(x, wG, { out: gFlat, backend });
      linear(x, wK, { out: kFlat, backend });
      linear(x, wV, { out: vFlat, backend });
    } },
    { name: 'q/k norm', fn: () => {
      rmsNorm(qFlat.view([B, 1, Hq, D]), qNorm, { out: q, backend });
      rmsNorm(kFlat.view([B, 1, Hk, D]), kNorm, { out: kNew, backend });
    } },
    { name: 'attention', fn: () => { attentionWithKVCache(q, kCache, vCache, attnOpts); } },
    { name: 'out-projection', fn: () => { linear(oFlat, wO, { out: y, backend }); } },
  ];
  const run = (): Tensor => {
    for (const p of parts) p.fn();
    return y;
  };
  return { x, wQ, wG, wK, wV, wO, qNorm, kNorm, kCache, vCache, rot, cacheSeqlens, y, parts, run };
}
