// The example hybrid-model server (examples/hybrid-server, issue 15.7): a request's tokens are the same bit
// for bit alone or batched with others (in the model and over HTTP), a full queue answers 503, a client that
// disconnects is cancelled, and the safetensors reader refuses malformed files with a clear message.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error the example is plain JavaScript
import { DEFAULT_CONFIG, encode, loadWeights, openModel, writeRandomWeights } from '../examples/hybrid-server/model.mjs';
// @ts-expect-error the example is plain JavaScript
import { startServer } from '../examples/hybrid-server/server.mjs';
// @ts-expect-error the example is plain JavaScript
import { readSafetensors, writeSafetensors } from '../examples/hybrid-server/safetensors.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'seqkern-example-'));
const weights = path.join(dir, 'w.safetensors');
writeRandomWeights(weights, DEFAULT_CONFIG);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Model = { newSequence(): unknown; forward(seqs: unknown[], tokens: number[][]): number[] };

function generateAlone(model: Model, prompt: string, n: number): number[] {
  const s = model.newSequence();
  const out = [model.forward([s], [encode(prompt)])[0]];
  while (out.length < n) out.push(model.forward([s], [[out[out.length - 1]]])[0]);
  return out;
}

async function sse(url: string, prompt: string, maxTokens: number, signal?: AbortSignal): Promise<{ status: number; tokens: number[] }> {
  const r = await fetch(`${url}/generate`, { method: 'POST', body: JSON.stringify({ prompt, maxTokens }), signal });
  const text = await r.text();
  return { status: r.status, tokens: [...text.matchAll(/"token":(\d+)/g)].map((m) => Number(m[1])) };
}

describe('example server: batching does not change a request\'s tokens', () => {
  it('in the model: a sequence alone equals the same sequence prefilled with another and decoded beside one that joins later', () => {
    const model = openModel(weights) as Model;
    const alone = generateAlone(model, 'hello world', 16);
    const a = model.newSequence(), b = model.newSequence(), c = model.newSequence();
    let t = model.forward([b, a], [encode('a longer prompt of another request'), encode('hello world')]);
    const got = [t[1]];
    let tb = t[0], tc = -1;
    for (let i = 1; i < 16; i++) {
      if (i === 5) tc = model.forward([c], [encode('x')])[0]; // joins mid-way (continuous batching)
      const seqs = tc >= 0 ? [b, a, c] : [b, a];
      const toks = tc >= 0 ? [[tb], [got[got.length - 1]], [tc]] : [[tb], [got[got.length - 1]]];
      t = model.forward(seqs, toks);
      tb = t[0];
      got.push(t[1]);
      if (tc >= 0) tc = t[2];
    }
    expect(got).toEqual(alone);
    expect(new Set(alone).size, 'the model produces varied tokens (not a constant)').toBeGreaterThan(3);
  });

  it('in the model: a sequence alone equals the same sequence prefilled and decoded among 11 others (more than 8 rows: the GEMM path a plain linear would take)', () => {
    const model = openModel(weights) as Model;
    const alone = generateAlone(model, 'the quick brown fox', 10);
    const seqs = Array.from({ length: 12 }, () => model.newSequence());
    const prompts = seqs.map((_, i) => (i === 7 ? 'the quick brown fox' : `other request ${i} ${'z'.repeat(i)}`));
    let t = model.forward(seqs, prompts.map(encode));
    const got = [t[7]];
    while (got.length < 10) {
      t = model.forward(seqs, t.map((x) => [x]));
      got.push(t[7]);
    }
    expect(got).toEqual(alone);
  });

  it('over HTTP: the same request alone and among 3 concurrent others streams the same tokens', async () => {
    const s = await startServer({ weights });
    try {
      const alone = await sse(s.url, 'the quick brown fox', 12);
      expect(alone.status).toBe(200);
      expect(alone.tokens.length).toBe(12);
      const [mine, ...others] = await Promise.all([
        sse(s.url, 'the quick brown fox', 12), sse(s.url, 'another prompt', 20), sse(s.url, 'x', 7), sse(s.url, 'a third one, longer than the rest', 15),
      ]);
      expect(mine.tokens).toEqual(alone.tokens);
      expect(others.map((o) => o.tokens.length)).toEqual([20, 7, 15]);
    } finally {
      await s.close();
    }
  });
});

describe('example server: limits and cancellation', () => {
  it('answers 503 when maxBatch running + maxQueue waiting are taken, and 400 on a bad body', async () => {
    const s = await startServer({ weights, maxBatch: 1, maxQueue: 0 });
    try {
      const long = sse(s.url, 'long', 200).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 200));
      const second = await sse(s.url, 'second', 5);
      const done = await long;
      expect(second.status).toBe(503);
      expect(done).not.toBeInstanceOf(Error);
      expect((done as { tokens: number[] }).tokens.length).toBe(200);
      expect((await fetch(`${s.url}/generate`, { method: 'POST', body: '{nope' })).status).toBe(400);
      expect((await fetch(`${s.url}/generate`, { method: 'POST', body: JSON.stringify({ prompt: 'x', maxTokens: 0 }) })).status).toBe(400);
    } finally {
      await s.close();
    }
  });

  it('a client that disconnects is cancelled: the server stops generating for it', async () => {
    const s = await startServer({ weights });
    try {
      const ac = new AbortController();
      const p = sse(s.url, 'cancel me', 1000, ac.signal).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 300));
      ac.abort();
      expect(await p).toBeInstanceOf(Error);
      await new Promise((r) => setTimeout(r, 300));
      const a = await (await fetch(`${s.url}/stats`)).json();
      await new Promise((r) => setTimeout(r, 300));
      const b = await (await fetch(`${s.url}/stats`)).json();
      expect(a.running).toBe(0);
      expect(b.tokens).toBe(a.tokens); // nothing more generated
      expect(a.tokens).toBeLessThan(1000);
    } finally {
      await s.close();
    }
  });
});

describe('example server: the safetensors reader', () => {
  const bad = (name: string, bytes: Buffer) => {
    const p = path.join(dir, `${name}.safetensors`);
    writeFileSync(p, bytes);
    return p;
  };
  const header = (h: object, data = Buffer.alloc(0)) => {
    const j = Buffer.from(JSON.stringify(h));
    const n = Buffer.alloc(8);
    n.writeBigUInt64LE(BigInt(j.length));
    return Buffer.concat([n, j, data]);
  };

  it('round-trips F32 and BF16 tensors with metadata', () => {
    const p = path.join(dir, 'rt.safetensors');
    writeSafetensors(p, [
      { name: 'a', dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: 'b', dtype: 'BF16', shape: [2], data: Uint16Array.from([0x3f80, 0xc000]) },
    ], { note: 'x' });
    const r = readSafetensors(p);
    expect(r.metadata.note).toBe('x');
    expect(Array.from(r.tensors.get('a').data)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(r.tensors.get('b').data)).toEqual([0x3f80, 0xc000]);
  });

  it.each([
    ['truncated', Buffer.alloc(5), /at least 8 bytes/],
    ['header longer than the file', (() => { const b = Buffer.alloc(16); b.writeBigUInt64LE(1000n); return b; })(), /header of at most/],
    ['not JSON', header({}).subarray(0, 8).length ? Buffer.concat([(() => { const b = Buffer.alloc(8); b.writeBigUInt64LE(4n); return b; })(), Buffer.from('{no}')]) : Buffer.alloc(0), /JSON header/],
    ['unknown dtype', header({ a: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } }, Buffer.alloc(1)), /dtype F32, F16 or BF16/],
    ['offsets past the data', header({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, Buffer.alloc(8)), /within the 8 bytes/],
    ['size not matching the shape', header({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, Buffer.alloc(8)), /take 12 bytes, got 8/],
    ['overlapping tensors', header({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, Buffer.alloc(12)), /overlapping/],
  ])('refuses a file with %s', (name, bytes, msg) => {
    expect(() => readSafetensors(bad(String(name).replace(/\W/g, '_'), bytes as Buffer))).toThrow(msg as RegExp);
  });

  it('the model refuses a weights file with a missing or misshapen tensor, naming it', () => {
    const good = readFileSync(weights);
    expect(good.length).toBeGreaterThan(8);
    const p = path.join(dir, 'small.safetensors');
    writeSafetensors(p, [{ name: 'embed', dtype: 'F32', shape: [256, 64], data: new Float32Array(256 * 64) }]);
    expect(() => loadWeights(p, DEFAULT_CONFIG)).toThrow(/expected tensor embed of shape \[256,128\], got \[256,64\]/);
    writeSafetensors(p, [{ name: 'embed', dtype: 'F32', shape: [256, 128], data: new Float32Array(256 * 128) }]);
    expect(() => loadWeights(p, DEFAULT_CONFIG)).toThrow(/expected tensor final_norm .* got none/);
  });
});
