// Builds the one-node ONNX models the peers run, at run time, by writing the protobuf encoding by hand: a
// ModelProto with one NodeProto is a few hundred bytes, and writing it here saves a dependency (onnx-proto +
// protobufjs) for the dozen fields used. Field numbers are those of onnx/onnx.proto (IR version 11).
//
//   softmaxModel({ cols, dtype })                 Softmax, opset 13, axis -1, input x [rows, cols] (rows symbolic)
//   attentionModel({ B, T, S, Hq, Hk, D, Dv, causal, scale, dtype })
//                                                 Attention, opset 23, 3-D layout q [B,T,Hq·D], k [B,S,Hk·D],
//                                                 v [B,S,Hk·Dv] -> Y [B,T,Hq·Dv] (the memory layout of seqkern's
//                                                 [B,T,H,D] tensors, so the same buffers feed both)
//   mhaModel({ ... })                             com.microsoft MultiHeadAttention (the fallback when a runtime
//                                                 has no opset-23 Attention): same 3-D layout, Hq = Hk only
//
// Every builder returns { bytes: Uint8Array, op: string } where op names what runs, e.g. 'Attention (opset 23)'.

/** onnx.TensorProto.DataType */
export const ELEM_TYPE = { float32: 1, float16: 10, bfloat16: 16 };

// ---- protobuf wire format: varints, length-delimited fields, fixed32 floats ----

class Writer {
  constructor() {
    this.parts = [];
  }
  varint(n) {
    // n: a non-negative integer below 2^53 (int64 fields here never hold negatives except -1, see int64()).
    let v = BigInt(n);
    const out = [];
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) b |= 0x80;
      out.push(b);
    } while (v !== 0n);
    this.parts.push(Uint8Array.from(out));
    return this;
  }
  tag(field, wire) {
    return this.varint((field << 3) | wire);
  }
  /** int64/int32 field (wire type 0); negatives as 64-bit two's complement, as protobuf encodes them. */
  int(field, n) {
    this.tag(field, 0);
    return this.varint(n < 0 ? (1n << 64n) + BigInt(n) : n);
  }
  float(field, x) {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, x, true);
    this.parts.push(b);
    return this;
  }
  bytes(field, data) {
    this.tag(field, 2);
    this.varint(data.length);
    this.parts.push(data);
    return this;
  }
  string(field, s) {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field, w) {
    return this.bytes(field, w.finish());
  }
  finish() {
    const n = this.parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

// AttributeProto.AttributeType
const ATTR_FLOAT = 1;
const ATTR_INT = 2;

/** AttributeProto: name (1), f (2), i (3), type (20). */
function attribute(name, value) {
  const w = new Writer().string(1, name);
  if (value.float !== undefined) w.float(2, value.float).int(20, ATTR_FLOAT);
  else w.int(3, value.int).int(20, ATTR_INT);
  return w;
}

/** ValueInfoProto: name (1), type (2) = TypeProto{ tensor_type (1) = { elem_type (1), shape (2) = { dim (1)* } } }. */
function valueInfo(name, dtype, dims) {
  const shape = new Writer();
  for (const d of dims) {
    const dim = new Writer();
    if (typeof d === 'number') dim.int(1, d); // dim_value
    else dim.string(2, d); // dim_param (symbolic)
    shape.message(1, dim);
  }
  const tensorType = new Writer().int(1, ELEM_TYPE[dtype]).message(2, shape);
  const type = new Writer().message(1, tensorType);
  return new Writer().string(1, name).message(2, type);
}

/**
 * ModelProto with one node: ir_version (1), producer_name (2), graph (7), opset_import (8).
 * GraphProto: node (1), name (2), input (11), output (12). NodeProto: input (1), output (2), name (3),
 * op_type (4), attribute (5), domain (7).
 */
function oneNodeModel({ opType, domain = '', opset, attributes = {}, inputs, outputs }) {
  const node = new Writer();
  for (const i of inputs) node.string(1, i.name);
  for (const o of outputs) node.string(2, o.name);
  node.string(3, `${opType.toLowerCase()}0`).string(4, opType);
  for (const [name, value] of Object.entries(attributes)) node.message(5, attribute(name, value));
  if (domain) node.string(7, domain);

  const graph = new Writer().message(1, node).string(2, `seqkern-peer-${opType}`);
  for (const i of inputs) graph.message(11, valueInfo(i.name, i.dtype, i.dims));
  for (const o of outputs) graph.message(12, valueInfo(o.name, o.dtype, o.dims));

  const model = new Writer().int(1, 11).string(2, 'seqkern-bench-peers').message(7, graph);
  // The default domain is always imported (ONNX requires it); a contrib op adds its own domain.
  model.message(8, new Writer().string(1, '').int(2, domain ? 21 : opset));
  if (domain) model.message(8, new Writer().string(1, domain).int(2, opset));
  return model.finish();
}

/** Softmax over the last axis of x [rows, cols]; rows is symbolic so one session serves every batch. */
export function softmaxModel({ cols, dtype = 'float32', opset = 13 }) {
  const bytes = oneNodeModel({
    opType: 'Softmax',
    opset,
    attributes: { axis: { int: -1 } },
    inputs: [{ name: 'x', dtype, dims: ['rows', cols] }],
    outputs: [{ name: 'y', dtype, dims: ['rows', cols] }],
  });
  return { bytes, op: `Softmax (opset ${opset}, axis -1)` };
}

/** Attention (opset 23) in its 3-D layout, which needs q_num_heads and kv_num_heads. */
export function attentionModel({ B, T, S, Hq, Hk, D, Dv, causal, scale, dtype = 'float32' }) {
  const attributes = { is_causal: { int: causal ? 1 : 0 }, q_num_heads: { int: Hq }, kv_num_heads: { int: Hk } };
  if (scale !== undefined) attributes.scale = { float: scale };
  const bytes = oneNodeModel({
    opType: 'Attention',
    opset: 23,
    attributes,
    inputs: [
      { name: 'q', dtype, dims: [B, T, Hq * D] },
      { name: 'k', dtype, dims: [B, S, Hk * D] },
      { name: 'v', dtype, dims: [B, S, Hk * Dv] },
    ],
    outputs: [{ name: 'y', dtype, dims: [B, T, Hq * Dv] }],
  });
  return { bytes, op: `Attention (opset 23, 3-D layout, is_causal=${causal ? 1 : 0})` };
}

/** com.microsoft MultiHeadAttention, 3-D layout (Hq = Hk), unidirectional = causal. */
export function mhaModel({ B, T, S, Hq, Hk, D, Dv, causal, scale, dtype = 'float32' }) {
  if (Hq !== Hk) throw new Error('MultiHeadAttention needs Hq = Hk');
  const attributes = { num_heads: { int: Hq }, unidirectional: { int: causal ? 1 : 0 } };
  if (scale !== undefined) attributes.scale = { float: scale };
  const bytes = oneNodeModel({
    opType: 'MultiHeadAttention',
    domain: 'com.microsoft',
    opset: 1,
    attributes,
    inputs: [
      { name: 'q', dtype, dims: [B, T, Hq * D] },
      { name: 'k', dtype, dims: [B, S, Hk * D] },
      { name: 'v', dtype, dims: [B, S, Hk * Dv] },
    ],
    outputs: [{ name: 'y', dtype, dims: [B, T, Hq * Dv] }],
  });
  return { bytes, op: `com.microsoft MultiHeadAttention (unidirectional=${causal ? 1 : 0})` };
}

/**
 * Gemm (opset 13) with transB = 1: Y [M, N] = A [M, K] · B [N, K]ᵀ, seqkern's linear(x, weight) with the
 * weights in PyTorch's [out, in] layout (the same buffer feeds both). The weights are an input, not an
 * initializer, so one model serves any weights.
 */
export function gemmModel({ M, K, N, dtype = 'float32' }) {
  const bytes = oneNodeModel({
    opType: 'Gemm',
    opset: 13,
    attributes: { transB: { int: 1 } },
    inputs: [
      { name: 'a', dtype, dims: [M, K] },
      { name: 'b', dtype, dims: [N, K] },
    ],
    outputs: [{ name: 'y', dtype, dims: [M, N] }],
  });
  return { bytes, op: 'Gemm (opset 13, transB=1)' };
}
