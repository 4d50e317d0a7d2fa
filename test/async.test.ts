// Promise forms of the delta ops (DESIGN.md 3): same answers as the sync forms, off the event loop,
// abortable between chunks with an AbortError that leaves state inputs untouched, and inputs never modified.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, gatedDeltaRuleStepAsync, kaczmarzDeltaRule,
  kaczmarzDeltaRuleAsync, kaczmarzDeltaRuleStep, kaczmarzDeltaRuleStepAsync, randn, Tensor, tensor,
  type DeltaRuleOptions, type DeltaRuleResult, type DeltaStepOptions,
} from '../src/index.js';
import { deltaInputs, offsets, sameBytes, shapeId, snapshot, stepInputs, type DeltaCase, type Variant } from './helpers.js';

type Inputs = ReturnType<typeof deltaInputs>;

const prefillSync = (x: Inputs, extra: Partial<DeltaRuleOptions> = {}) =>
  (x.eta ? kaczmarzDeltaRule : gatedDeltaRule)({ ...x, backend: 'cpu', outputFinalState: true, ...extra } as DeltaRuleOptions);
const prefillAsync = (x: Inputs, extra: Partial<DeltaRuleOptions> = {}, signal?: AbortSignal) =>
  (x.eta ? kaczmarzDeltaRuleAsync : gatedDeltaRuleAsync)({ ...x, backend: 'cpu', outputFinalState: true, ...extra } as DeltaRuleOptions, { signal });

/** Bit-identical data (same kernel, same inputs: the async form may not differ at all). */
function expectSameData(a: Tensor, b: Tensor, what: string): void {
  expect(a.shape, what).toEqual(b.shape);
  expect(a.dtype, what).toBe(b.dtype);
  expect(sameBytes(a, snapshot(b)), `${what}: data differs`).toBe(true);
}

function expectSameResult(a: DeltaRuleResult, b: DeltaRuleResult, what: string): void {
  expectSameData(a.o, b.o, `${what}: o`);
  expectSameData(a.finalState!, b.finalState!, `${what}: finalState`);
}

const copyState = (s: Tensor) => tensor(Float32Array.from(s.data as Float32Array), s.shape, 'float32');

/** Every tensor of the options, snapshotted. */
function snapInputs(x: Record<string, unknown>): [string, Tensor, Uint8Array][] {
  return Object.entries(x).filter(([, t]) => t instanceof Tensor).map(([k, t]) => [k, t as Tensor, snapshot(t as Tensor)]);
}
function expectInputsUntouched(snaps: [string, Tensor, Uint8Array][], what: string): void {
  for (const [k, t, s] of snaps) expect(sameBytes(t, s), `${what}: ${k} was modified`).toBe(true);
}

const CASES: { c: DeltaCase; extra?: Partial<DeltaRuleOptions>; name: string }[] = [
  { c: { B: 2, T: 130, H: 3, HV: 6, K: 48, V: 24, initial: true, seed: 1 }, extra: { algorithm: 'chunk' }, name: 'gated chunk' },
  { c: { B: 2, T: 130, H: 3, HV: 6, K: 48, V: 24, initial: true, seed: 2 }, extra: { algorithm: 'recurrent' }, name: 'gated recurrent' },
  { c: { B: 1, T: 97, H: 1, HV: 2, K: 60, V: 100, variant: 'decay', seed: 3 }, extra: { algorithm: 'chunk', chunkSize: 32 }, name: 'signed decay chunk 32' },
  { c: { B: 1, T: 97, H: 2, HV: 4, K: 32, V: 16, variant: 'kla', initial: true, seed: 4 }, extra: { algorithm: 'auto' }, name: 'KLA auto' },
  { c: { B: 2, T: 70, H: 1, HV: 2, K: 32, V: 48, dtype: 'bfloat16', variant: 'negeig', seed: 5 }, extra: {}, name: 'bfloat16 negative eigenvalues' },
  { c: { B: 1, T: 101, H: 2, HV: 2, K: 16, V: 32, lens: [40, 0, 61], initial: true, seed: 6 }, extra: { cuSeqlens: offsets([40, 0, 61]) }, name: 'packed [40,0,61]' },
];

describe('async prefill equals sync', () => {
  for (const { c, extra, name } of CASES) {
    it(`${shapeId(c)} ${name}`, async () => {
      const x = deltaInputs(c);
      const s = prefillSync(x, extra);
      const a = await prefillAsync(x, extra);
      expectSameResult(a, s, `${name} seed=${c.seed}`);
    });
  }
});

describe('async decode step equals sync', () => {
  for (const variant of ['gated', 'decay', 'plain', 'kla', 'l2norm'] as Variant[]) {
    it(`N=3,H=2,HV=4,K=32,V=48 ${variant}: o and the in-place state`, async () => {
      const x = deltaInputs({ B: 3, T: 1, H: 2, HV: 4, K: 32, V: 48, variant, seed: 20 });
      const st = stepInputs({ ...x, initialState: undefined }, 0);
      const s0 = randn([3, 4, 32, 48], { seed: 21 });
      const sSync = copyState(s0);
      const sAsync = copyState(s0);
      const syncOp = x.eta ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep;
      const asyncOp = x.eta ? kaczmarzDeltaRuleStepAsync : gatedDeltaRuleStepAsync;
      const r1 = syncOp({ ...st, state: sSync, backend: 'cpu' } as DeltaStepOptions);
      const r2 = await asyncOp({ ...st, state: sAsync, backend: 'cpu' } as DeltaStepOptions);
      expectSameData(r2.o, r1.o, `${variant} step o`);
      expectSameData(sAsync, sSync, `${variant} step state`);
      expect(sameBytes(sAsync, snapshot(s0)), 'the state was updated').toBe(false);
    });
  }
});

// A long call: B=1, T=8192, H=4, HV=8, K=V=128, recurrent (~6 GFLOP; a few hundred ms on two cores).
const BIG: DeltaCase = { B: 1, T: 8192, H: 4, HV: 8, K: 128, V: 128, initial: true, seed: 30 };
let bigInputs: Inputs | undefined;
const big = () => (bigInputs ??= deltaInputs(BIG));

describe('off the event loop, abortable', () => {
  it(`a setInterval timer keeps firing while a long call runs (${shapeId(BIG)}, recurrent)`, async () => {
    const x = big();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let r: DeltaRuleResult;
    try {
      r = await prefillAsync(x, { algorithm: 'recurrent' });
    } finally {
      clearInterval(timer);
    }
    expect(ticks, 'timer ticks while awaiting').toBeGreaterThan(0);
    expect(r.o.shape).toEqual([1, 8192, 8, 128]);
    // Spot-check the long result against the sync form (also proves it ran to the end: o is NaN-poisoned).
    expectSameResult(r, prefillSync(x, { algorithm: 'recurrent' }), 'long call');
  });

  for (const algorithm of ['recurrent', 'chunk'] as const) {
    it(`an AbortSignal aborted mid-call rejects with AbortError, initialState byte-identical (${shapeId(BIG)}, ${algorithm})`, async () => {
      const x = big();
      const init = snapshot(x.initialState!);
      const snaps = snapInputs(x);
      const ac = new AbortController();
      let started = false;
      const p = prefillAsync(x, { algorithm }, ac.signal);
      p.catch(() => undefined);
      setTimeout(() => {
        started = true;
        ac.abort();
      }, 5);
      let err: unknown;
      try {
        await p;
      } catch (e) {
        err = e;
      }
      expect(started).toBe(true);
      expect(err, `rejection of an aborted call: ${String(err)}`).toBeInstanceOf(Error);
      expect((err as Error).name).toBe('AbortError');
      expect(sameBytes(x.initialState!, init), 'initialState after an abort').toBe(true);
      expectInputsUntouched(snaps, 'aborted prefill');
      // The pool is usable afterwards and gives the same answer as before.
      const small = deltaInputs({ B: 1, T: 70, H: 1, HV: 2, K: 32, V: 32, initial: true, seed: 31 });
      expectSameResult(await prefillAsync(small, { algorithm }), prefillSync(small, { algorithm }), 'call after an abort');
    });
  }

  it('an already-aborted signal rejects with an AbortError whose cause is the reason, initialState untouched (prefill, KLA)', async () => {
    const ac = new AbortController();
    ac.abort();
    for (const variant of ['gated', 'kla'] as Variant[]) {
      const x = deltaInputs({ B: 2, T: 65, H: 1, HV: 2, K: 16, V: 16, initial: true, variant, seed: 32 });
      const snaps = snapInputs(x);
      const err = await prefillAsync(x, {}, ac.signal).then(() => null, (e: unknown) => e as Error);
      expect(err?.name).toBe('AbortError');
      expect(err?.cause).toBe(ac.signal.reason);
      expectInputsUntouched(snaps, `${variant}: already aborted`);
    }
  });

  it('an abort reason that is not an AbortError rejects with an AbortError carrying it as cause (before and during the call)', async () => {
    const reason = new Error('user went away');
    const ac = new AbortController();
    ac.abort(reason);
    const x = deltaInputs({ B: 1, T: 10, H: 1, HV: 1, K: 8, V: 8, seed: 33 });
    await expect(prefillAsync(x, {}, ac.signal)).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    const big = deltaInputs({ B: 1, T: 4096, H: 2, HV: 2, K: 64, V: 64, seed: 35 });
    const late = new AbortController();
    const p = prefillAsync(big, { algorithm: 'recurrent' }, late.signal);
    late.abort(reason);
    const err = await p.then(() => null, (e: unknown) => e as Error);
    expect(err?.name).toBe('AbortError');
    expect(err?.cause).toBe(reason);
  });

  it('AbortSignal.timeout() rejects with an AbortError whose cause is its TimeoutError', async () => {
    const big = deltaInputs({ B: 1, T: 8192, H: 2, HV: 4, K: 64, V: 64, seed: 36 });
    const signal = AbortSignal.timeout(1);
    // The timer fires on the event loop while the kernel runs (tens of ms); a fresh-output prefill whose
    // signal aborted before it resolved rejects even when its last chunk raced the abort.
    const err = await prefillAsync(big, { algorithm: 'recurrent' }, signal).then(() => null, (e: unknown) => e as Error);
    expect(err?.name).toBe('AbortError');
    expect((err?.cause as Error).name).toBe('TimeoutError');
  });

  it('after an aborted gatedDeltaRuleStepAsync (signal already aborted) the state is byte-identical', async () => {
    for (const variant of ['gated', 'kla'] as Variant[]) {
      const x = deltaInputs({ B: 4, T: 1, H: 2, HV: 4, K: 64, V: 64, variant, seed: 34 });
      const st = stepInputs({ ...x, initialState: undefined }, 0);
      const state = randn([4, 4, 64, 64], { seed: 35 });
      const before = snapshot(state);
      const ac = new AbortController();
      ac.abort();
      const op = x.eta ? kaczmarzDeltaRuleStepAsync : gatedDeltaRuleStepAsync;
      await expect(op({ ...st, state, backend: 'cpu' } as DeltaStepOptions, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
      expect(sameBytes(state, before), `${variant}: state after an aborted step`).toBe(true);
    }
  });

  it('a step aborted while in flight is all-or-nothing: rejected with the state untouched, or resolved with the full update', async () => {
    // N=16, HV=16, K=V=128: a 16 MiB state. The abort races the worker; either outcome is allowed, a mix is not.
    const x = deltaInputs({ B: 16, T: 1, H: 8, HV: 16, K: 128, V: 128, seed: 36 });
    const st = stepInputs({ ...x, initialState: undefined }, 0);
    const s0 = randn([16, 16, 128, 128], { seed: 37 });
    const want = copyState(s0);
    const wantO = gatedDeltaRuleStep({ ...st, state: want, backend: 'cpu' } as DeltaStepOptions).o;
    const outcomes = { rejected: 0, resolved: 0 };
    for (let i = 0; i < 6; i++) {
      const state = copyState(s0);
      const ac = new AbortController();
      const p = gatedDeltaRuleStepAsync({ ...st, state, backend: 'cpu' } as DeltaStepOptions, { signal: ac.signal });
      if (i % 2) queueMicrotask(() => ac.abort());
      else setImmediate(() => ac.abort());
      try {
        const r = await p;
        outcomes.resolved++;
        expectSameData(r.o, wantO, `race ${i}: o`);
        expectSameData(state, want, `race ${i}: state after a completed step`);
      } catch (e) {
        outcomes.rejected++;
        expect((e as Error).name).toBe('AbortError');
        expect(sameBytes(state, snapshot(s0)), `race ${i}: state after a rejected step`).toBe(true);
      }
    }
    expect(outcomes.rejected + outcomes.resolved).toBe(6);
  });
});

describe('inputs are never modified by the prefill ops', () => {
  for (const { c, extra, name } of CASES) {
    it(`${shapeId(c)} ${name}: sync and async`, async () => {
      const x = deltaInputs(c);
      const snaps = snapInputs(x);
      prefillSync(x, extra);
      expectInputsUntouched(snaps, `${name} sync`);
      await prefillAsync(x, extra);
      expectInputsUntouched(snaps, `${name} async`);
      // also without outputFinalState (the kernels then work on private buffers)
      (x.eta ? kaczmarzDeltaRule : gatedDeltaRule)({ ...x, ...extra, backend: 'cpu' } as DeltaRuleOptions);
      expectInputsUntouched(snaps, `${name} sync, no finalState`);
    });
  }
});

describe('several async calls in flight at once', () => {
  it('all resolve, each with its own sync answer', async () => {
    const jobs = [...CASES, ...CASES].map(({ c, extra }, i) => ({ x: deltaInputs({ ...c, seed: c.seed + 100 * i }), extra: extra ?? {} }));
    const steps = [0, 1, 2].map((i) => {
      const x = deltaInputs({ B: 2, T: 1, H: 1, HV: 2, K: 32, V: 32, seed: 200 + i });
      return { st: stepInputs({ ...x, initialState: undefined }, 0), s0: randn([2, 2, 32, 32], { seed: 300 + i }) };
    });
    const stepStates = steps.map((s) => copyState(s.s0));
    const results = await Promise.all([
      ...jobs.map((j) => prefillAsync(j.x, j.extra)),
      ...steps.map((s, i) => gatedDeltaRuleStepAsync({ ...s.st, state: stepStates[i], backend: 'cpu' } as DeltaStepOptions)),
    ]);
    jobs.forEach((j, i) => expectSameResult(results[i] as DeltaRuleResult, prefillSync(j.x, j.extra), `job ${i}`));
    steps.forEach((s, i) => {
      const want = copyState(s.s0);
      const o = gatedDeltaRuleStep({ ...s.st, state: want, backend: 'cpu' } as DeltaStepOptions).o;
      expectSameData((results[jobs.length + i] as { o: Tensor }).o, o, `step ${i}: o`);
      expectSameData(stepStates[i], want, `step ${i}: state`);
    });
  });

  it('sync calls made while async calls run still give the right answers', async () => {
    const x = deltaInputs({ B: 1, T: 2048, H: 2, HV: 4, K: 64, V: 64, initial: true, seed: 400 });
    const y = deltaInputs({ B: 2, T: 65, H: 1, HV: 2, K: 32, V: 16, initial: true, seed: 401 });
    const wantY = prefillSync(y);
    const p = prefillAsync(x, { algorithm: 'recurrent' });
    for (let i = 0; i < 3; i++) expectSameResult(prefillSync(y), wantY, `sync call ${i} during an async call`);
    expectSameResult(await p, prefillSync(x, { algorithm: 'recurrent' }), 'the async call');
  });
});

describe('buffers detached while an async call runs', () => {
  // DESIGN.md 3: the addon reads the caller's arrays in place and holds a reference while async work runs.
  // A caller can still transfer an input's ArrayBuffer away mid-call (structuredClone / postMessage); once
  // the new owner is collected the memory is freed under the worker. Run in a child process with
  // --expose-gc (a crash there is reported, not fatal to vitest), through the raw addon the ops call.
  const addon = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'), 'build', 'Release', 'seqkern.node');
  const script = (target: string) => `
    const a = require(${JSON.stringify(addon)});
    const T = 8192, H = 4, HV = 8, K = 128, V = 128;
    const fill = (n, f) => { const x = new Float32Array(n); for (let i = 0; i < n; i++) x[i] = f(i); return x; };
    const args = { B: 1, T, H, HV, K, V, dtype: 'float32', q: fill(T * H * K, (i) => Math.sin(i)), k: fill(T * H * K, (i) => 0.08 * Math.cos(i)),
      v: fill(T * HV * V, (i) => Math.sin(0.3 * i)), beta: fill(T * HV, () => 0.5), betaDtype: 'float32', kaczmarz: false, eps: 1e-6,
      g: fill(T * HV, () => -0.1), gDtype: 'float32', decayKind: 'log', o: new Float32Array(T * HV * V), initialState: fill(HV * K * V, () => 0.1),
      finalState: new Float32Array(HV * K * V), qkL2Norm: false, scale: 0.1, chunkSize: 64, algorithm: 'recurrent', cancel: new Int32Array(1) };
    const p = a.deltaRuleAsync(args);
    let moved = [${target}].map((n) => structuredClone(args[n].buffer, { transfer: [args[n].buffer] }));
    moved = null;
    (async () => {
      for (let i = 0; i < 20; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
      try { await p; console.log('resolved'); } catch (e) { console.log('rejected ' + e.code); }
    })();
  `;
  for (const target of ["'q', 'k', 'v'", "'initialState'"]) {
    it(`transferring ${target} away mid-call and collecting it does not crash the process (B=1,T=8192,H=4,HV=8,K=128,V=128)`, () => {
      const r = spawnSync(process.execPath, ['--expose-gc', '-e', script(target)], { encoding: 'utf8', timeout: 60_000 });
      expect(r.signal, `child killed by ${r.signal}: a use-after-free of the transferred buffer (${r.stderr.slice(0, 300)})`).toBeNull();
      expect(r.status, r.stderr.slice(0, 300)).toBe(0);
      expect(r.stdout).toMatch(/^(resolved|rejected [A-Z_]+)/);
    });
  }
});
