// Reliability (issue 13): what must never take the process down. Each reproducer runs in a child process
// (a crash there is a failed assertion here, not a dead test runner), on the built package in dist/.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  setNumThreads, info, MAX_THREADS, randn, rand, rng, softmax, softmaxAsync, attention, attentionAsync, gatedDeltaRule, gatedDeltaRuleAsync,
  gatedDeltaRuleStep, gatedDeltaRuleStepAsync, hyperAttention, hyperAttentionAsync, type Tensor,
} from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import { expectSeqkernError } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'src', 'index.js');

/** Runs an ES module body in a fresh node; `sk` is the package. Returns status, signal and the last line. */
// Under the sanitizer run (npm run test:sanitize) node starts and the kernels run several times slower.
const SLOW = process.env.SEQKERN_SANITIZE === '1' ? 5 : 1;

function child(body: string, timeoutMs = 60_000) {
  const src = `import * as sk from ${JSON.stringify(dist)};\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', timeout: timeoutMs * SLOW });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  return { status: r.status, signal: r.signal, out: last, stderr: r.stderr ?? '' };
}

const describeChild = (what: string, r: ReturnType<typeof child>) =>
  `${what}: status ${r.status}, signal ${r.signal}, stdout ${r.out}, stderr ${r.stderr.slice(-600)}`;

// Inputs of the issue's reproducers, made in the child: T = 4096, H = 2, K = V = 64.
const DELTA_INPUTS = `
  const T = 4096, H = 2, K = 64;
  const q = sk.randn([1, T, H, K], { seed: 1 }), k = sk.randn([1, T, H, K], { seed: 2 }).to('float32');
  const v = sk.randn([1, T, H, K], { seed: 3 }), beta = sk.rand([1, T, H], { seed: 4, low: 0.1, high: 0.9 });
  const g = sk.rand([1, T, H], { seed: 5, low: -0.2, high: -0.01 });
  const same = (a, b) => a.data.length === b.data.length && a.data.every((x, i) => Object.is(x, b.data[i]));`;

describe('metadata arrays are copied at the call', () => {
  it('mutating cuSeqlens while an async delta prefill runs changes nothing (issue 13.1)', () => {
    const r = child(`${DELTA_INPUTS}
      const base = { q, k, v, beta, g, qkL2Norm: true, algorithm: 'recurrent' };
      const want = sk.gatedDeltaRule({ ...base, cuSeqlens: new Int32Array([0, 16, 4096]) });
      const cu = new Int32Array([0, 16, 4096]);
      const p = sk.gatedDeltaRuleAsync({ ...base, cuSeqlens: cu });
      cu[1] = 2e9;
      const got = await p;
      console.log(JSON.stringify({ same: same(got.o, want.o) }));`);
    expect(r.status, describeChild('delta', r)).toBe(0);
    expect(JSON.parse(r.out).same).toBe(true);
  });

  it('mutating cuSeqlens while an async attention runs changes nothing (issue 13.1)', () => {
    const r = child(`
      const q = sk.randn([1, 4096, 2, 64], { seed: 1 }), k = sk.randn([1, 4096, 2, 64], { seed: 2 }), v = sk.randn([1, 4096, 2, 64], { seed: 3 });
      const want = sk.attention(q, k, v, { cuSeqlens: new Int32Array([0, 16, 4096]), causal: true });
      const cu = new Int32Array([0, 16, 4096]);
      const p = sk.attentionAsync(q, k, v, { cuSeqlens: cu, causal: true });
      cu[1] = 4352;
      const got = await p;
      console.log(JSON.stringify({ same: got.o.data.every((x, i) => Object.is(x, want.o.data[i])) }));`);
    expect(r.status, describeChild('attention', r)).toBe(0);
    expect(JSON.parse(r.out).same).toBe(true);
  });

  it('a SharedArrayBuffer cuSeqlens flipped by another thread during sync calls gives the right answer or a SeqkernError', () => {
    const r = child(`${DELTA_INPUTS}
      const { Worker } = await import('node:worker_threads');
      const sab = new SharedArrayBuffer(12);
      const cu = new Int32Array(sab); cu.set([0, 16, 4096]);
      const base = { q, k, v, beta, g, qkL2Norm: true, algorithm: 'recurrent' };
      const want = sk.gatedDeltaRule({ ...base, cuSeqlens: new Int32Array([0, 16, 4096]) });
      const w = new Worker('import { workerData } from "node:worker_threads"; const a = new Int32Array(workerData); for (;;) { a[1] = 2e9; a[1] = 16; }', { eval: true, type: 'module', workerData: sab });
      let ok = 0, refused = 0, wrong = 0;
      for (let i = 0; i < 40; i++) {
        try { const got = sk.gatedDeltaRule({ ...base, cuSeqlens: cu }); same(got.o, want.o) ? ok++ : wrong++; }
        catch (e) { if (e instanceof sk.SeqkernError) refused++; else throw e; }
      }
      await w.terminate();
      console.log(JSON.stringify({ ok, refused, wrong }));`);
    expect(r.status, describeChild('shared cuSeqlens', r)).toBe(0);
    const res = JSON.parse(r.out);
    expect(res.wrong).toBe(0);
    expect(res.ok + res.refused).toBe(40);
  });
});

describe('worker.terminate() and exit with calls in flight (issue 13.2, 13.6)', () => {
  // Each op is started in a worker, which says so; the main thread then terminates it. Before the fix, 17 of
  // 17 runs aborted the process (a Promise settled in an environment being torn down).
  const OPS: Record<string, string> = {
    attention: `const q = sk.randn([1, 2048, 4, 64], { seed: 1 }); sk.attentionAsync(q, q, q, { causal: true });`,
    softmax: `sk.softmaxAsync(sk.randn([512, 8192], { seed: 1 }));`,
    'delta prefill': `${DELTA_INPUTS} sk.gatedDeltaRuleAsync({ q, k, v, beta, g, qkL2Norm: true, algorithm: 'chunk' });`,
    'queued decode steps': `
      const N = 16, H = 4, K = 128;
      const x = (s, shape) => sk.randn(shape, { seed: s, std: 0.3 });
      const state = sk.zeros([N, H, K, K]);
      for (let i = 0; i < 8; i++) sk.gatedDeltaRuleStepAsync({ q: x(1, [N, H, K]), k: x(2, [N, H, K]), v: x(3, [N, H, K]), beta: sk.rand([N, H], { seed: 4 }), state, qkL2Norm: true });`,
  };
  for (const [name, start] of Object.entries(OPS)) {
    it(`terminating a worker with ${name} in flight leaves the process alive (5 runs)`, () => {
      const r = child(`
        const { Worker } = await import('node:worker_threads');
        for (let run = 0; run < 5; run++) {
          const w = new Worker(${JSON.stringify(`import * as sk from ${JSON.stringify(dist)}; import { parentPort } from 'node:worker_threads';`)} + ${JSON.stringify(start)} + ' parentPort.postMessage("started");', { eval: true, type: 'module' });
          await new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
          await w.terminate();
        }
        console.log(JSON.stringify({ alive: true, sum: sk.softmax(sk.randn([2, 8], { seed: 1 })).data.reduce((a, b) => a + b, 0) }));`);
      expect(r.status, describeChild(name, r)).toBe(0);
      expect(r.signal).toBeNull();
      const res = JSON.parse(r.out);
      expect(res.alive).toBe(true);
      expect(res.sum).toBeCloseTo(2, 5);
    });
  }

  it('a worker that exits with a long async call in flight does not wait for it (the kernel is cancelled)', () => {
    // Node finishes a worker's in-flight native work before the worker's environment goes away; the kernel
    // here is a causal attention of ~10^12 FLOP (many seconds on a CPU), so without the cancellation the
    // child would run past its time limit. (A main-thread process.exit() does not wait at all.)
    const body = `import * as sk from ${JSON.stringify(dist)};
      const q = sk.randn([1, 32768, 4, 128], { seed: 1 });
      sk.attentionAsync(q, q, q, { causal: true }).catch(() => {});
      setTimeout(() => process.exit(0), 200);`;
    const r = child(`
      const { Worker } = await import('node:worker_threads');
      const w = new Worker(${JSON.stringify(body)}, { eval: true, type: 'module' });
      const code = await new Promise((res) => w.once('exit', res));
      console.log(JSON.stringify({ code }));`, 9000);
    expect(r.signal, describeChild('exit', r)).toBeNull();
    expect(r.status).toBe(0);
    expect(JSON.parse(r.out).code).toBe(0);
  });
});

describe('setNumThreads bounds (issue 13.3)', () => {
  it('past MAX_THREADS is OUT_OF_RANGE and the pool keeps working', () => {
    const before = info().threads;
    expectSeqkernError(() => setNumThreads(100000), 'OUT_OF_RANGE', 'n', 'huge pool');
    expectSeqkernError(() => setNumThreads(MAX_THREADS + 1), 'OUT_OF_RANGE', 'n', 'one past the cap');
    expect(info().threads).toBe(before);
    const x = randn([3, 9], { seed: 2 });
    expect(softmax(x).data.reduce((a, b) => a + b, 0)).toBeCloseTo(3, 5);
  });

  it('the raw addon refuses the same without aborting the process', () => {
    const r = spawnSync(process.execPath, ['-e', `
      const a = require(${JSON.stringify(loadedAddonPath())});
      let code; try { a.setNumThreads(100000); } catch (e) { code = e.code; }
      console.log(JSON.stringify({ code, threads: a.info().threads }));`], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).code).toBe('OUT_OF_RANGE');
  });

  // Not under the sanitizer run: ASan maps terabytes of shadow memory, which no address-space limit allows.
  it.skipIf(process.env.SEQKERN_SANITIZE === '1')('threads that cannot be created give a SeqkernError and leave the old pool working', () => {
    // Under a 3 GB address-space limit 1000 thread stacks cannot be mapped.
    const src = `import * as sk from ${JSON.stringify(dist)};
      const before = sk.info().threads; let code;
      try { sk.setNumThreads(1000); } catch (e) { code = e instanceof sk.SeqkernError ? e.code : String(e); }
      const s = sk.softmax(sk.randn([4, 5], { seed: 1 })).data.reduce((a, b) => a + b, 0);
      console.log(JSON.stringify({ code, same: sk.info().threads === before, s }));`;
    const r = spawnSync('sh', ['-c', `ulimit -v 3000000 && exec "${process.execPath}" --input-type=module -e "$0"`, src], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res.code).toBe('NATIVE_ERROR');
    expect(res.same).toBe(true);
    expect(res.s).toBeCloseTo(4, 5);
  });
});

describe('the raw delta addon refuses overlapping states (issue 13.4)', () => {
  const call = (mutate: string) => {
    const r = spawnSync(process.execPath, ['-e', `
      const a = require(${JSON.stringify(loadedAddonPath())});
      const F = (n, x) => Float32Array.from({ length: n }, (_, i) => x * Math.sin(i + 1));
      const B = 1, T = 5, H = 1, HV = 1, K = 4, V = 4;
      const big = new Float32Array(64);
      const args = { B, T, H, HV, K, V, q: F(20, 0.5), k: F(20, 0.3), v: F(20, 0.2), beta: new Float32Array(5).fill(0.5),
        o: new Float32Array(20), dtype: 'float32', betaDtype: 'float32', gDtype: 'float32', algorithm: 'recurrent',
        initialState: big.subarray(0, 16), finalState: big.subarray(32, 48) };
      (${mutate})(args, big);
      let res; try { a.deltaRule(args); res = { ok: true }; } catch (e) { res = { ok: false, code: e.code, message: e.message }; }
      console.log(JSON.stringify(res));`], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { ok: boolean; code?: string; message?: string };
  };

  it('apart is fine; the same memory (in place) is fine', () => {
    expect(call('() => {}').ok).toBe(true);
    expect(call('(a, big) => { a.finalState = a.initialState; }').ok).toBe(true);
  });
  it('a partial overlap of initialState and finalState is BAD_ARGUMENT naming finalState', () => {
    const r = call('(a, big) => { a.finalState = big.subarray(8, 24); }');
    expect(r.code).toBe('BAD_ARGUMENT');
    expect(r.message).toMatch(/finalState/);
  });
  it('finalState overlapping an input is BAD_ARGUMENT naming it', () => {
    const r = call('(a, big) => { a.q = big.subarray(32, 52); }');
    expect(r.code).toBe('BAD_ARGUMENT');
    expect(r.message).toMatch(/finalState|q/);
  });
});

// ---- probes (issue 13.7): many async calls at once, and aborts at random moments

/** Byte view of a tensor's data. */
const bytesOf = (t: { data: ArrayBufferView }) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const sameData = (a: { data: ArrayBufferView }, b: { data: ArrayBufferView }) => Buffer.compare(Buffer.from(bytesOf(a)), Buffer.from(bytesOf(b))) === 0;

/** The probe's jobs: each makes fresh inputs, runs the op sync or async (with a signal), and names its outputs. */
interface Job {
  name: string;
  sync(): Tensor[];
  async(signal?: AbortSignal): Promise<Tensor[]>;
}

function jobs(seed: number): Job[] {
  const r = (shape: number[], s: number, std = 1) => randn(shape, { seed: seed * 16 + s, std });
  const aq = r([1, 96, 4, 32], 1), ak = r([1, 80, 2, 32], 2), av = r([1, 80, 2, 24], 3);
  const x = r([37, 300], 4, 3);
  const T = 70, H = 2, K = 32;
  const dq = r([1, T, H, K], 5, 0.3), dk = r([1, T, H, K], 6, 0.3), dv = r([1, T, H, K], 7);
  const beta = rand([1, T, H], { seed: seed * 16 + 8, low: 0.1, high: 0.9 }), g = rand([1, T, H], { seed: seed * 16 + 9, low: -0.3, high: -0.01 });
  const delta = { q: dq, k: dk, v: dv, beta, g, qkL2Norm: true, outputFinalState: true as const, cuSeqlens: new Int32Array([0, 5, 5, T]) };
  const hq = r([1, 128, 2, 16], 10), hk = r([1, 128, 2, 16], 11), hv = r([1, 128, 2, 16], 12);
  const hyper = { lshBits: 3, blockSize: 16, sampleSize: 16, minSeqLen: 32, seed: 5 };
  const s0 = r([3, 2, 16, 16], 13, 0.1);
  const step = (state: Tensor) => ({ q: r([3, 2, 16], 14), k: r([3, 2, 16], 15), v: r([3, 2, 16], 16), beta: rand([3, 2], { seed: seed * 16 + 17 }), state, qkL2Norm: true });
  return [
    { name: 'attention', sync: () => { const o = attention(aq, ak, av, { causal: true, returnLse: true }); return [o.o, o.lse]; },
      async: async (signal) => { const o = await attentionAsync(aq, ak, av, { causal: true, returnLse: true }, { signal }); return [o.o, o.lse]; } },
    { name: 'softmax', sync: () => [softmax(x)], async: async (signal) => [await softmaxAsync(x, {}, { signal })] },
    { name: 'delta prefill', sync: () => { const o = gatedDeltaRule({ ...delta, algorithm: 'chunk' }); return [o.o, o.finalState]; },
      async: async (signal) => { const o = await gatedDeltaRuleAsync({ ...delta, algorithm: 'chunk' }, { signal }); return [o.o, o.finalState]; } },
    { name: 'hyper', sync: () => [hyperAttention(hq, hk, hv, hyper).o], async: async (signal) => [(await hyperAttentionAsync(hq, hk, hv, hyper, { signal })).o] },
    { name: 'decode step (in place)', sync: () => { const st = s0.astype(s0.dtype); return [gatedDeltaRuleStep(step(st)).o, st]; },
      async: async (signal) => { const st = s0.astype(s0.dtype); try { return [(await gatedDeltaRuleStepAsync(step(st), { signal })).o, st]; } catch (e) {
        // Aborted: the state is untouched (the step is all or nothing).
        if (!sameData(st, s0)) throw new Error('an aborted decode step changed its state');
        throw e;
      } } },
  ];
}

describe('probes: concurrent async calls and random aborts (issue 13.7)', () => {
  it('300 async calls of five ops in flight at once give the sync bytes', async () => {
    const all = Array.from({ length: 6 }, (_, s) => jobs(s + 1)).flat();
    const want = all.map((j) => j.sync());
    const got = await Promise.all(Array.from({ length: 300 }, (_, i) => all[i % all.length].async()));
    got.forEach((outs, i) => {
      const w = want[i % all.length];
      outs.forEach((t, n) => expect(sameData(t, w[n]), `call ${i} (${all[i % all.length].name}) output ${n}`).toBe(true));
    });
  }, 120_000);

  it('400 calls aborted at random moments: each rejects with an AbortError or resolves with the sync bytes', async () => {
    const all = Array.from({ length: 4 }, (_, s) => jobs(s + 20)).flat();
    const want = all.map((j) => j.sync());
    const next = rng(4242);
    let aborted = 0;
    let resolved = 0;
    const calls = Array.from({ length: 400 }, async (_, i) => {
      const c = new AbortController();
      const when = next();
      if (when < 0.1) c.abort();
      const p = all[i % all.length].async(c.signal);
      if (when >= 0.1 && when < 0.3) queueMicrotask(() => c.abort());
      else if (when >= 0.3 && when < 0.8) setTimeout(() => c.abort(), Math.floor(next() * 4));
      try {
        const outs = await p;
        outs.forEach((t, n) => expect(sameData(t, want[i % all.length][n]), `call ${i} (${all[i % all.length].name}) output ${n}`).toBe(true));
        resolved++;
      } catch (e) {
        expect((e as Error).name, `call ${i} (${all[i % all.length].name}): ${String(e)}`).toBe('AbortError');
        aborted++;
      }
    });
    await Promise.all(calls);
    expect(aborted, 'aborted calls').toBeGreaterThan(40); // at least those aborted before the start
    expect(resolved, 'resolved calls').toBeGreaterThan(40); // at least those never aborted
    // The addon still gives the right answers.
    all.forEach((j, n) => j.sync().forEach((t, m) => expect(sameData(t, want[n][m]), `${j.name} after the aborts`).toBe(true)));
  }, 120_000);

  it('two worker threads and the main thread running async calls together each get the sync bytes', () => {
    const r = child(`
      const { Worker } = await import('node:worker_threads');
      const work = ${JSON.stringify(`import * as sk from ${JSON.stringify(dist)}; import { parentPort, workerData } from 'node:worker_threads';`)} + \`
        const q = sk.randn([1, 64, 2, 32], { seed: workerData }), x = sk.randn([20, 500], { seed: workerData + 1 });
        const want = [sk.attention(q, q, q, { causal: true }).o, sk.softmax(x)];
        const got = await Promise.all(Array.from({ length: 60 }, (_, i) => i % 2 ? sk.softmaxAsync(x) : sk.attentionAsync(q, q, q, { causal: true }).then((r) => r.o)));
        const same = got.every((t, i) => Buffer.compare(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), Buffer.from(want[i % 2].data.buffer, want[i % 2].data.byteOffset, want[i % 2].data.byteLength)) === 0);
        parentPort.postMessage(same);\`;
      const ws = [1, 2].map((s) => new Worker(work, { eval: true, type: 'module', workerData: s * 10 }));
      const mine = sk.randn([30, 257], { seed: 99 });
      const want = sk.softmax(mine);
      const main = await Promise.all(Array.from({ length: 40 }, () => sk.softmaxAsync(mine)));
      const mainSame = main.every((t) => t.data.every((x, i) => Object.is(x, want.data[i])));
      const res = await Promise.all(ws.map((w) => new Promise((ok, bad) => { w.once('message', ok); w.once('error', bad); })));
      await Promise.all(ws.map((w) => w.terminate()));
      console.log(JSON.stringify({ workers: res, mainSame }));`);
    expect(r.status, describeChild('workers', r)).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ workers: [true, true], mainSame: true });
  });
});
