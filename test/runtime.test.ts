// The async runtime (issue 15 parts 1-3): async calls on seqkern's own queue (no libuv thread held while
// they wait), chained ops (validated once, one job, one Promise, abortable between ops, errors naming the
// op), warmup() and the 'auto' calibration run on the worker.
import { readFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  attention, attentionReference, calibrationsMade, chain, ChainError, chainOps, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep,
  hyperAttention, rand, randn, SeqkernError, softmax, softmaxReference, Tensor, tensor, warmup, warmupAsync, zeros,
  type AttentionResult, type DeltaStepResult,
} from '../src/index.js';
import { expectClose, expectSameBits, snapshot, sameBytes } from './helpers.js';
import { deltaPrefill } from '../bench/async.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'src', 'index.js');

function child(body: string, timeoutMs = 60_000) {
  const src = `import * as sk from ${JSON.stringify(dist)};\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], {
    encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, SEQKERN_DELTA_ALGORITHM: '' },
  });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  return { status: r.status, signal: r.signal, out: last, stderr: r.stderr ?? '' };
}
const said = (what: string, r: ReturnType<typeof child>) => `${what}: status ${r.status}, signal ${r.signal}, stdout ${r.out}, stderr ${r.stderr.slice(-600)}`;

const copy = (t: Tensor) => tensor(t.data.slice() as Tensor['data'], t.shape, t.dtype);

/** One decode layer's inputs: q, k [N,H,K], v [N,HV,V], beta, g [N,HV]. */
function stepArgs(N: number, H: number, HV: number, K: number, V: number, seed: number) {
  return {
    q: randn([N, H, K], { seed, std: 0.5 }), k: randn([N, H, K], { seed: seed + 1, std: 0.5 }), v: randn([N, HV, V], { seed: seed + 2 }),
    beta: rand([N, HV], { seed: seed + 3, low: 0.05, high: 0.95 }), g: rand([N, HV], { seed: seed + 4, low: -0.3, high: -0.01 }),
    qkL2Norm: true,
  };
}

describe('chain: same answers as the ops one by one', () => {
  it('a decode step through 3 delta layers and a gated attention (awkward shapes), run twice, equals the sync ops bit for bit', async () => {
    const N = 3, H = 2, HV = 6, K = 33, V = 20;
    const layers = [0, 1, 2].map((l) => stepArgs(N, H, HV, K, V, 10 * l + 1));
    const states = layers.map((_, l) => randn([N, HV, K, V], { seed: 100 + l, std: 0.1 }));
    const want = states.map(copy);
    const q = randn([N, 1, 4, 24], { seed: 7 }), k = randn([N, 37, 2, 24], { seed: 8 }), v = randn([N, 37, 2, 19], { seed: 9 });
    const gate = randn([N, 1, 4, 19], { seed: 11 });
    const c = chain();
    const outs = layers.map((x, l) => c.add('gatedDeltaRuleStep', { ...x, state: states[l] }) as DeltaStepResult);
    const att = c.add('attention', q, k, v, { causal: true, gate }) as AttentionResult;
    for (let run = 0; run < 2; run++) {
      const got = await c.run();
      expect(got.length).toBe(4);
      for (let l = 0; l < 3; l++) {
        const r = gatedDeltaRuleStep({ ...layers[l], state: want[l] });
        expectSameBits(outs[l].o, r.o, `run ${run} layer ${l} o`);
        expectSameBits(states[l], want[l], `run ${run} layer ${l} state`);
        expect(got[l]).toBe(outs[l]);
      }
      expectSameBits(att.o, attention(q, k, v, { causal: true, gate }).o, `run ${run} attention`);
    }
    // And against the float64 reference (the ops' own tolerance).
    expectClose(att.o, attentionReference(q, k, v, { causal: true, gate }).o, 1e-5, 'attention vs reference');
  });

  it("an op's output feeds the next op (placeholders allocated at op()), in float16 and float32", async () => {
    for (const dtype of ['float32', 'float16'] as const) {
      const x = randn([5, 31], { seed: 3, dtype });
      const c = chain();
      const y = c.add('softmax', x) as Tensor;
      c.op('softmaxInto', y, y); // in place, on the first op's output
      const q = randn([1, 7, 3, 16], { seed: 4, dtype });
      const a1 = c.add('attention', q, q, q, { causal: true }) as AttentionResult;
      const a2 = c.add('attention', a1.o, q, q, {}) as AttentionResult; // the first attention's o as q
      c.runSync();
      expectSameBits(y, softmax(softmax(x)), `${dtype} softmax∘softmax`);
      const r1 = attention(q, q, q, { causal: true });
      expectSameBits(a1.o, r1.o, `${dtype} attention 1`);
      expectSameBits(a2.o, attention(r1.o, q, q).o, `${dtype} attention 2`);
      expectClose(y, softmaxReference(softmaxReference(x)), dtype === 'float16' ? 2e-3 : 1e-6, `${dtype} vs reference`);
    }
  });

  it('prefills (gated and kaczmarz, packed, auto) and hyperAttention in a chain equal their sync calls', async () => {
    const T = 90, H = 1, HV = 2, K = 24, V = 16;
    const x = {
      q: randn([1, T, H, K], { seed: 1, std: 0.5 }), k: randn([1, T, H, K], { seed: 2, std: 0.5 }), v: randn([1, T, HV, V], { seed: 3 }),
      g: rand([1, T, HV], { seed: 5, low: -0.2, high: -0.01 }), qkL2Norm: true, cuSeqlens: new Int32Array([0, 70, 70, 90]),
    };
    const beta = rand([1, T, HV], { seed: 4, low: 0.1, high: 0.9 });
    const c = chain();
    const a = c.add('gatedDeltaRule', { ...x, beta, outputFinalState: true, algorithm: 'auto' }) as { o: Tensor; finalState: Tensor };
    const b = c.add('kaczmarzDeltaRule', { ...x, eta: beta, algorithm: 'chunk' }) as { o: Tensor };
    const hq = randn([1, 40, 2, 16], { seed: 6 });
    const h = c.add('hyperAttention', hq, hq, hq, { minSeqLen: 16, blockSize: 8, sampleSize: 8 }) as AttentionResult;
    await c.run();
    const ra = gatedDeltaRule({ ...x, beta, outputFinalState: true, algorithm: 'auto' });
    expectSameBits(a.o, ra.o, 'gated o');
    expectSameBits(a.finalState, ra.finalState!, 'gated finalState');
    expect(a.o.data.some((e) => e !== 0)).toBe(true);
    expectSameBits(b.o, (await import('../src/index.js')).kaczmarzDeltaRule({ ...x, eta: beta, algorithm: 'chunk' }).o, 'kaczmarz o');
    expectSameBits(h.o, hyperAttention(hq, hq, hq, { minSeqLen: 16, blockSize: 8, sampleSize: 8 }).o, 'hyper o');
  });

  it('lists the chainable ops', () => {
    for (const n of ['softmax', 'softmaxInto', 'attention', 'hyperAttention', 'gatedDeltaRule', 'kaczmarzDeltaRule', 'gatedDeltaRuleStep', 'kaczmarzDeltaRuleStep']) {
      expect(chainOps()).toContain(n);
    }
  });
});

describe('chain: errors name the op', () => {
  const x = randn([2, 8], { seed: 1 });
  const q = randn([1, 4, 2, 8], { seed: 2 });

  it('a bad argument at op() is a ChainError with the index, the name and the argument', () => {
    const c = chain().op('softmax', x);
    let err: unknown;
    try {
      c.op('attention', q, q, randn([1, 5, 2, 8], { seed: 3 }), { causal: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChainError);
    expect(err).toBeInstanceOf(SeqkernError);
    const e = err as ChainError;
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.opIndex).toBe(1);
    expect(e.op).toBe('attention');
    expect(e.argument).toBe('v');
    expect(e.message).toMatch(/^chain op 1 \(attention\): expected v/);
    expect(c.length).toBe(1); // the refused op was not added
  });

  it('an unknown op name, an unknown option and the reference backend are refused at op()', () => {
    expect(() => chain().op('nope', x)).toThrow(/one of .*softmax/);
    expect(() => chain().op('softmax', x, { strcit: true })).toThrow(/chain op 0 \(softmax\): unknown option 'strcit' \(did you mean 'strict'\?\)/);
    expect(() => chain().op('softmax', x, { backend: 'reference' })).toThrow(/chain op 0 \(softmax\): expected backend 'cpu'/);
    expect(() => chain().op('softmax', randn([2, 3], { seed: 1, dtype: 'float64' }))).toThrow(/chain op 0 \(softmax\).*backend/);
  });

  it('a failure while running names the op (strict softmax on a NaN written after op())', async () => {
    const y = randn([3, 5], { seed: 4 });
    const c = chain().op('softmax', x).op('softmax', y, { strict: true });
    y.data[7] = NaN;
    for (const run of [() => Promise.resolve().then(() => c.runSync()), () => c.run()]) {
      const e = (await run().then(() => undefined, (err: unknown) => err)) as ChainError;
      expect(e).toBeInstanceOf(ChainError);
      expect(e.code).toBe('NON_FINITE');
      expect([e.opIndex, e.op]).toEqual([1, 'softmax']);
      expect(e.message).toMatch(/^chain op 1 \(softmax\): expected x without NaN/);
    }
  });

  it('one run at a time per chain', async () => {
    const c = chain().op('softmax', randn([64, 512], { seed: 5 }));
    const p = c.run();
    await expect(c.run()).rejects.toThrow(/not already running/);
    expect(() => c.runSync()).toThrow(/not already running/);
    await p;
  });
});

describe('chain: abort', () => {
  it('an already aborted signal rejects with its reason as cause, nothing written', async () => {
    const state = randn([2, 2, 16, 16], { seed: 1 });
    const before = snapshot(state);
    const c = chain().op('gatedDeltaRuleStep', { ...stepArgs(2, 1, 2, 16, 16, 1), state });
    const ac = new AbortController();
    const reason = new Error('client disconnected');
    ac.abort(reason);
    const e = (await c.run({ signal: ac.signal }).catch((err: unknown) => err)) as Error;
    expect(e.name).toBe('AbortError');
    expect(e.cause).toBe(reason);
    expect(sameBytes(state, before)).toBe(true);
  });

  it('an abort during a long first op stops the chain before the next op', async () => {
    const x = randn([1, 4096, 4, 64], { seed: 2 });
    const state = randn([1, 2, 16, 16], { seed: 3 });
    const before = snapshot(state);
    const c = chain().op('attention', x, x, x, { causal: true }).op('gatedDeltaRuleStep', { ...stepArgs(1, 1, 2, 16, 16, 5), state });
    const ac = new AbortController();
    const p = c.run({ signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    const e = (await p.catch((err: unknown) => err)) as Error;
    expect(e.name).toBe('AbortError');
    expect(sameBytes(state, before)).toBe(true); // the step after the aborted op never ran
  });
});

describe('async calls hold no libuv thread while they wait (issue 15.1)', () => {
  it('fs.readFile answers while 6 async prefills are queued, well within one prefill', async () => {
    const x = deltaPrefill(4096, 4, 64, 1);
    gatedDeltaRule(x);
    let t0 = performance.now();
    gatedDeltaRule(x);
    const prefillMs = performance.now() - t0;
    const file = fileURLToPath(import.meta.url);
    await readFile(file);
    let settled = 0;
    const queued = Array.from({ length: 6 }, () => gatedDeltaRuleAsync(x).then(() => settled++));
    // Three reads one after the other, the fastest kept (a loaded machine may delay one of them).
    let readMs = Infinity;
    let settledAtRead = Infinity;  // prefills settled when the first read came back
    for (let i = 0; i < 3; i++) {
      t0 = performance.now();
      await readFile(file);
      readMs = Math.min(readMs, performance.now() - t0);
      settledAtRead = Math.min(settledAtRead, settled);
    }
    await Promise.all(queued);
    expect(settledAtRead, 'the read came back before the queue drained').toBeLessThan(6);
    // libuv's pool has 4 threads: with 6 calls holding them the read waited for >= 2 prefills.
    expect(readMs, `readFile ${readMs.toFixed(2)} ms, one prefill ${prefillMs.toFixed(2)} ms`).toBeLessThan(0.5 * prefillMs);
  });

  it('the loop stays alive while only seqkern calls are in flight, and the process exits once they settle', () => {
    const r = child(`
      const q = sk.randn([1, 512, 2, 32], { seed: 1 });
      sk.attentionAsync(q, q, q, { causal: true }).then((r) => console.log(JSON.stringify({ done: r.o.shape })));`);
    expect(r.status, said('alive', r)).toBe(0);
    expect(JSON.parse(r.out).done).toEqual([1, 512, 2, 32]);
  });

  it('process.exit() with a long call in flight does not wait for the kernel', () => {
    const t0 = Date.now();
    const r = child(`
      const q = sk.randn([1, 32768, 4, 128], { seed: 1 });
      sk.attentionAsync(q, q, q, { causal: true }).catch(() => {});
      setTimeout(() => { console.log(JSON.stringify({ exiting: true })); process.exit(0); }, 200);`, 9000);
    expect(r.status, said('exit', r)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(9000);
  });

  it('terminating a worker with a chain in flight leaves the process alive (8 runs)', () => {
    const start = `
      const N = 16, H = 4, K = 128, x = (s, shape) => sk.randn(shape, { seed: s, std: 0.3 });
      const c = sk.chain();
      for (let l = 0; l < 8; l++) c.op('gatedDeltaRuleStep', { q: x(1, [N, H, K]), k: x(2, [N, H, K]), v: x(3, [N, H, K]), beta: sk.rand([N, H], { seed: 4 }), state: sk.zeros([N, H, K, K]), qkL2Norm: true });
      const q = sk.randn([1, 2048, 4, 64], { seed: 1 }); c.op('attention', q, q, q, { causal: true });
      c.run(); c.run().catch(() => {});`;
    const r = child(`
      const { Worker } = await import('node:worker_threads');
      for (let run = 0; run < 8; run++) {
        const w = new Worker(${JSON.stringify(`import * as sk from ${JSON.stringify(dist)}; import { parentPort } from 'node:worker_threads';`)} + ${JSON.stringify(start)} + ' parentPort.postMessage("started");', { eval: true, type: 'module' });
        await new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
        await new Promise((res) => setTimeout(res, run * 5));
        await w.terminate();
      }
      console.log(JSON.stringify({ sum: sk.softmax(sk.randn([2, 8], { seed: 1 })).data.reduce((a, b) => a + b, 0) }));`);
    expect(r.status, said('terminate chain', r)).toBe(0);
    expect(JSON.parse(r.out).sum).toBeCloseTo(2, 5);
  });
});

describe('one queue for every thread', () => {
  it('the main thread and two workers issuing async calls at once each get their own answers', () => {
    const body = `
      const x = sk.randn([33, 257], { seed: SEED });
      const want = sk.softmax(x);
      const got = await Promise.all(Array.from({ length: 60 }, (_, i) => i % 3 === 2 ? sk.chain().op('softmax', x).run().then((r) => r[0]) : sk.softmaxAsync(x)));
      const ok = got.every((y) => y.data.every((e, j) => Object.is(e, want.data[j])));`;
    const r = child(`
      const { Worker } = await import('node:worker_threads');
      const src = (seed) => ${JSON.stringify(`import * as sk from ${JSON.stringify(dist)}; import { parentPort } from 'node:worker_threads';`)} + ${JSON.stringify(body)}.replace('SEED', String(seed)) + ' parentPort.postMessage(ok);';
      const ws = [1, 2].map((s) => new Worker(src(s), { eval: true, type: 'module' }));
      const fromWorkers = Promise.all(ws.map((w) => new Promise((res, rej) => { w.once('message', res); w.once('error', rej); })));
      ${body.replace('SEED', '3')}
      const all = [ok, ...(await fromWorkers)];
      await Promise.all(ws.map((w) => w.terminate()));
      console.log(JSON.stringify({ all }));`);
    expect(r.status, said('threads', r)).toBe(0);
    expect(JSON.parse(r.out).all).toEqual([true, true, true]);
  });

  it('terminating workers at random moments of mixed async calls and chains leaves the process alive (20 runs)', () => {
    const start = `
      const q = sk.randn([1, 1024, 4, 64], { seed: 1 });
      const N = 16, H = 4, K = 128, x = (s, shape) => sk.randn(shape, { seed: s, std: 0.3 });
      const step = () => ({ q: x(1, [N, H, K]), k: x(2, [N, H, K]), v: x(3, [N, H, K]), beta: sk.rand([N, H], { seed: 4 }), state: sk.zeros([N, H, K, K]), qkL2Norm: true });
      sk.attentionAsync(q, q, q, { causal: true }).catch(() => {});
      sk.softmaxAsync(sk.randn([256, 4096], { seed: 1 })).catch(() => {});
      for (let i = 0; i < 4; i++) sk.gatedDeltaRuleStepAsync(step()).catch(() => {});
      sk.chain().op('gatedDeltaRuleStep', step()).op('attention', q, q, q).run().catch(() => {});
      sk.gatedDeltaRuleAsync({ q, k: q, v: q, beta: sk.rand([1, 1024, 4], { seed: 5 }), algorithm: 'auto' }).catch(() => {});`;
    const r = child(`
      const { Worker } = await import('node:worker_threads');
      for (let run = 0; run < 20; run++) {
        const w = new Worker(${JSON.stringify(`import * as sk from ${JSON.stringify(dist)}; import { parentPort } from 'node:worker_threads';`)} + ${JSON.stringify(start)} + ' parentPort.postMessage("started");', { eval: true, type: 'module' });
        await new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
        await new Promise((res) => setTimeout(res, (run * 7) % 40));
        await w.terminate();
      }
      const y = await sk.softmaxAsync(sk.randn([2, 8], { seed: 1 }));
      console.log(JSON.stringify({ sum: y.data.reduce((a, b) => a + b, 0) }));`, 120_000);
    expect(r.status, said('terminate mixed', r)).toBe(0);
    expect(JSON.parse(r.out).sum).toBeCloseTo(2, 5);
  }, 130_000);
});

describe('warmup and the auto calibration (issue 15.3)', () => {
  it('warmup() measures the asked head dims once; warmupAsync() finds them cached', async () => {
    const w = warmup({ delta: [{ K: 20, V: 12 }] });
    expect(w.delta.length).toBe(1);
    const c = w.delta[0];
    expect([c.K, c.V]).toEqual([20, 12]);
    expect(['chunk', 'recurrent']).toContain(c.algorithm);
    expect(c.chunkNs).toBeGreaterThan(0);
    expect(c.recurrentNs).toBeGreaterThan(0);
    expect(c.algorithm).toBe(c.chunkNs <= c.recurrentNs ? 'chunk' : 'recurrent');
    const again = await warmupAsync({ delta: [{ K: 20, V: 12 }] });
    expect(again.delta[0]).toBe(c);
    expect(calibrationsMade()).toContain(c);
  });

  it('bad warmup options are SeqkernErrors', async () => {
    expect(() => warmup({ dleta: [] } as never)).toThrow(/unknown option 'dleta' \(did you mean 'delta'\?\)/);
    expect(() => warmup({ delta: [{ K: 0, V: 8 }] })).toThrow(/delta\[0\]\.K/);
    await expect(warmupAsync({ delta: [{ K: 8, V: 2000 }] })).rejects.toThrow(/delta\[0\]\.V/);
  });

  it('the first auto Async prefill runs its calibration on the worker: the call returns before it, the loop ticks during it', async () => {
    const T = 128, H = 1, K = 56, V = 40; // head dims no other test calibrates
    const x = {
      q: randn([1, T, H, K], { seed: 1, std: 0.5 }), k: randn([1, T, H, K], { seed: 2, std: 0.5 }), v: randn([1, T, H, V], { seed: 3 }),
      beta: rand([1, T, H], { seed: 4, low: 0.1, high: 0.9 }), qkL2Norm: true, algorithm: 'auto' as const,
    };
    const has = () => calibrationsMade().some((c) => c.K === K && c.V === V);
    expect(has()).toBe(false);
    const p = gatedDeltaRuleAsync(x);
    // A calibration on the main thread would have finished inside the call.
    expect(has(), 'calibrated synchronously inside the Async call').toBe(false);
    // The loop turns while the calibration runs: a setImmediate queued now runs before the Promise settles (a
    // calibration takes milliseconds; a 1 ms setInterval could miss one on a fast machine).
    let turned = false;
    setImmediate(() => { turned = true; });
    const got = await p;
    expect(has()).toBe(true);
    expect(turned, 'the event loop turned while the calibration ran').toBe(true);
    expectSameBits(got.o, gatedDeltaRule(x).o, 'auto async = auto sync');
  });
});

describe('chain of decode steps on zeros-free inputs keeps the state (sanity)', () => {
  it('the state moves (the test would fail if the steps did nothing)', async () => {
    const state = zeros([2, 2, 8, 8]);
    const c = chain().op('gatedDeltaRuleStep', { ...stepArgs(2, 1, 2, 8, 8, 3), state });
    await c.run();
    expect(state.data.some((e) => e !== 0)).toBe(true);
  });
});
