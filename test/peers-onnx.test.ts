// bench/peers without onnxruntime: the hand-written ONNX protobuf encoding (bench/peers/onnx.mjs) decoded
// field by field, and run.mjs's "not installed" path (instructions, exit status 0). Where onnxruntime-node
// happens to be installed in bench/peers, the models are also run through it against a JavaScript reference;
// without it those tests are skipped (onnxruntime is never needed here).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: plain JavaScript module without types
import { attentionModel, mhaModel, softmaxModel } from '../bench/peers/onnx.mjs';
// @ts-expect-error: plain JavaScript module without types
import { gemmModel } from '../bench/peers/onnx.mjs';

const PEERS = path.resolve(__dirname, '..', 'bench', 'peers');

/** A protobuf message as { field: [values] }: varints as bigint, length-delimited as Uint8Array, fixed32 as float. */
type Fields = Map<number, (bigint | Uint8Array | number)[]>;

function decode(buf: Uint8Array): Fields {
  const out: Fields = new Map();
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const field = tag >> 3;
    const wire = tag & 7;
    let value: bigint | Uint8Array | number;
    if (wire === 0) value = varint();
    else if (wire === 2) {
      const n = Number(varint());
      value = buf.subarray(i, i + n);
      i += n;
    } else if (wire === 5) {
      value = new DataView(buf.buffer, buf.byteOffset + i, 4).getFloat32(0, true);
      i += 4;
    } else throw new Error(`unexpected wire type ${wire}`);
    if (!out.has(field)) out.set(field, []);
    out.get(field)!.push(value);
  }
  return out;
}

const text = (b: unknown) => new TextDecoder().decode(b as Uint8Array);
const msg = (b: unknown) => decode(b as Uint8Array);
const one = <T>(f: Fields, n: number) => f.get(n)?.[0] as T;

/** The parts of a one-node ModelProto the peers rely on. */
function model(bytes: Uint8Array) {
  const m = decode(bytes);
  const graph = msg(one(m, 7));
  const node = msg(one(graph, 1));
  const attrs = Object.fromEntries(
    (node.get(5) ?? []).map((a) => {
      const f = msg(a);
      const type = Number(one<bigint>(f, 20));
      return [text(one(f, 1)), type === 1 ? one<number>(f, 2) : BigInt.asIntN(64, one<bigint>(f, 3))];
    }),
  );
  const valueInfo = (v: unknown) => {
    const f = msg(v);
    const tensorType = msg(one(msg(one(f, 2)), 1));
    const dims = (msg(one(tensorType, 2)).get(1) ?? []).map((d) => {
      const df = msg(d);
      return df.has(1) ? Number(one<bigint>(df, 1)) : text(one(df, 2));
    });
    return { name: text(one(f, 1)), elemType: Number(one<bigint>(tensorType, 1)), dims };
  };
  return {
    irVersion: Number(one<bigint>(m, 1)),
    opsets: (m.get(8) ?? []).map((o) => {
      const f = msg(o);
      return { domain: f.has(1) ? text(one(f, 1)) : '', version: Number(one<bigint>(f, 2)) };
    }),
    opType: text(one(node, 4)),
    domain: node.has(7) ? text(one(node, 7)) : '',
    inputs: (node.get(1) ?? []).map(text),
    outputs: (node.get(2) ?? []).map(text),
    attrs,
    graphInputs: (graph.get(11) ?? []).map(valueInfo),
    graphOutputs: (graph.get(12) ?? []).map(valueInfo),
  };
}

describe('bench/peers/onnx.mjs: the ModelProto encoding', () => {
  it('Gemm (the linear peer): opset 13, transB = 1, a [M, K], b [N, K] -> y [M, N]', () => {
    const { bytes, op } = gemmModel({ M: 8, K: 4096, N: 1024 });
    expect(op).toMatch(/Gemm \(opset 13, transB=1\)/);
    const m = model(bytes);
    expect(m.opsets).toEqual([{ domain: '', version: 13 }]);
    expect(m.opType).toBe('Gemm');
    expect(m.attrs).toEqual({ transB: 1n });
    expect(m.graphInputs).toEqual([{ name: 'a', elemType: 1, dims: [8, 4096] }, { name: 'b', elemType: 1, dims: [1024, 4096] }]);
    expect(m.graphOutputs).toEqual([{ name: 'y', elemType: 1, dims: [8, 1024] }]);
  });

  it('Softmax: opset 13, axis -1 (a negative int64), x [rows, cols] with rows symbolic', () => {
    const { bytes, op } = softmaxModel({ cols: 1024 });
    expect(op).toMatch(/Softmax \(opset 13/);
    const m = model(bytes);
    expect(m.irVersion).toBe(11);
    expect(m.opsets).toEqual([{ domain: '', version: 13 }]);
    expect(m.opType).toBe('Softmax');
    expect(m.attrs).toEqual({ axis: -1n });
    expect(m.graphInputs).toEqual([{ name: 'x', elemType: 1, dims: ['rows', 1024] }]);
    expect(m.graphOutputs).toEqual([{ name: 'y', elemType: 1, dims: ['rows', 1024] }]);
    expect([m.inputs, m.outputs]).toEqual([['x'], ['y']]);
  });

  it('Attention: opset 23, 3-D layout [B, T, H·D] with q_num_heads/kv_num_heads, is_causal, scale', () => {
    const { bytes, op } = attentionModel({ B: 1, T: 4096, S: 4096, Hq: 8, Hk: 2, D: 128, Dv: 64, causal: true, scale: 0.125 });
    expect(op).toMatch(/Attention \(opset 23/);
    const m = model(bytes);
    expect(m.opsets).toEqual([{ domain: '', version: 23 }]);
    expect(m.opType).toBe('Attention');
    expect(m.attrs).toEqual({ is_causal: 1n, q_num_heads: 8n, kv_num_heads: 2n, scale: 0.125 });
    expect(m.graphInputs).toEqual([
      { name: 'q', elemType: 1, dims: [1, 4096, 1024] },
      { name: 'k', elemType: 1, dims: [1, 4096, 256] },
      { name: 'v', elemType: 1, dims: [1, 4096, 128] },
    ]);
    expect(m.graphOutputs).toEqual([{ name: 'y', elemType: 1, dims: [1, 4096, 512] }]);
  });

  it('MultiHeadAttention fallback: com.microsoft domain imported beside the default one', () => {
    const m = model(mhaModel({ B: 2, T: 5, S: 7, Hq: 4, Hk: 4, D: 8, Dv: 8, causal: false }).bytes);
    expect(m.opType).toBe('MultiHeadAttention');
    expect(m.domain).toBe('com.microsoft');
    expect(m.opsets).toEqual([{ domain: '', version: 21 }, { domain: 'com.microsoft', version: 1 }]);
    expect(m.attrs).toEqual({ num_heads: 4n, unidirectional: 0n });
    expect(() => mhaModel({ B: 1, T: 1, S: 1, Hq: 4, Hk: 2, D: 8, Dv: 8, causal: false })).toThrow(/Hq = Hk/);
  });
});

describe('bench/peers/run.mjs without onnxruntime-node', () => {
  it('prints how to install it and exits 0', () => {
    // A copy of the script in a folder with no node_modules above it: onnxruntime-node cannot resolve.
    const dir = mkdtempSync(path.join(tmpdir(), 'seqkern-peers-'));
    try {
      for (const f of ['run.mjs', 'onnx.mjs', 'package.json']) copyFileSync(path.join(PEERS, f), path.join(dir, f));
      const r = spawnSync(process.execPath, [path.join(dir, 'run.mjs')], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/onnxruntime-node is not installed/);
      expect(r.stdout).toMatch(/cd bench\/peers && ONNXRUNTIME_NODE_INSTALL=skip npm install && node run\.mjs/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads only suite tables that bench/suites.ts exports, as arrays', async () => {
    // run.mjs reaches the suites through sk.suites.NAME at run time, which no type check sees (SUITE_LINEAR
    // went missing once and the peers run died after its softmax and attention cases).
    const src = readFileSync(path.join(PEERS, 'run.mjs'), 'utf8');
    const names = [...new Set([...src.matchAll(/sk\.suites\.(\w+)/g)].map((m) => m[1]))];
    expect(names.length).toBeGreaterThan(0);
    const suites: Record<string, unknown> = await import('../bench/suites.js');
    for (const n of names) expect(Array.isArray(suites[n]), `bench/suites.ts exports ${n} as an array`).toBe(true);
  });

  it('rejects bad flags with exit status 2', () => {
    const r = spawnSync(process.execPath, [path.join(PEERS, 'run.mjs'), '--bogus'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/peers: .*bogus/);
  });
});

// Only where bench/peers has its optional dependency installed.
const ort = (() => {
  if (!existsSync(path.join(PEERS, 'node_modules', 'onnxruntime-node'))) return null;
  try {
    return createRequire(path.join(PEERS, 'package.json'))('onnxruntime-node');
  } catch {
    return null;
  }
})();

describe.skipIf(!ort)('the models in onnxruntime-node (installed in bench/peers)', () => {
  const rand = (n: number, seed: number) => {
    let s = seed;
    return Float32Array.from({ length: n }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return (s / 2 ** 32) * 4 - 2;
    });
  };
  const session = (bytes: Uint8Array) => ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });

  it('Softmax matches a float64 softmax of each row', async () => {
    const rows = 3;
    const cols = 37;
    const x = rand(rows * cols, 1);
    const s = await session(softmaxModel({ cols }).bytes);
    const { y } = await s.run({ x: new ort.Tensor('float32', x, [rows, cols]) });
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * cols, (r + 1) * cols));
      const m = Math.max(...row);
      const sum = row.reduce((a, v) => a + Math.exp(v - m), 0);
      for (let i = 0; i < cols; i++) expect(y.data[r * cols + i]).toBeCloseTo(Math.exp(row[i] - m) / sum, 6);
    }
    await s.release();
  });

  it('Attention (opset 23, causal, GQA, Dv != D) matches float64 attention with the mask top-left aligned', async () => {
    const [B, T, S, Hq, Hk, D, Dv] = [1, 5, 5, 4, 2, 8, 6];
    const q = rand(B * T * Hq * D, 2);
    const k = rand(B * S * Hk * D, 3);
    const v = rand(B * S * Hk * Dv, 4);
    const s = await session(attentionModel({ B, T, S, Hq, Hk, D, Dv, causal: true }).bytes);
    const { y } = await s.run({
      q: new ort.Tensor('float32', q, [B, T, Hq * D]),
      k: new ort.Tensor('float32', k, [B, S, Hk * D]),
      v: new ort.Tensor('float32', v, [B, S, Hk * Dv]),
    });
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < Hq; h++) {
        const kh = Math.floor(h / (Hq / Hk));
        const p: number[] = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let x = 0; x < D; x++) d += q[(t * Hq + h) * D + x] * k[(j * Hk + kh) * D + x];
          p.push(d / Math.sqrt(D));
        }
        const m = Math.max(...p);
        const e = p.map((z) => Math.exp(z - m));
        const sum = e.reduce((a, c) => a + c, 0);
        for (let x = 0; x < Dv; x++) {
          let o = 0;
          for (let j = 0; j <= t; j++) o += (e[j] / sum) * v[(j * Hk + kh) * Dv + x];
          expect(y.data[(t * Hq + h) * Dv + x]).toBeCloseTo(o, 5);
        }
      }
    }
    await s.release();
  });
});
