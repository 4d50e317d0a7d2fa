// The delta-rule ops' `out` option: o written into a caller's tensor. The answer equals the allocating call
// bit for bit (prefill with the chunk and recurrent algorithms, HV = 2H, packed sequences, float16/bfloat16
// inputs, outputFinalState, KLA; both decode steps) and result.o is out itself; a reused out holds the
// latest call's answer; the reference backend copies into it; the async forms with out honour an abort only
// before the first write (rejected: out untouched; resolved: out complete); a bad out is a SeqkernError
// naming `out` that leaves out, the inputs and the state alone; the raw addon re-checks overlaps and
// callerOut. out is always filled with garbage first (NaN and random values, never zeros), so an element the
// kernel does not write shows whether or not SEQKERN_POISON is set.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, gatedDeltaRuleStepAsync, kaczmarzDeltaRule,
  kaczmarzDeltaRuleAsync, kaczmarzDeltaRuleStep, kaczmarzDeltaRuleStepAsync, randn, SeqkernError, Tensor,
  type DeltaRuleOptions, type DeltaRuleResult, type DeltaStepOptions, type DeltaStepResult, type DType,
} from '../src/index.js';
import { loadedAddonPath } from '../src/backend.js';
import {
  abortOnceWritten, catchError, catchRejection, checkSeqkernError, deltaInputs, expectIsOut, expectOutRefused, expectSameBits,
  garbage, offsets, sameBytes, shapeId,
  snapshot, stepInputs, untouchedOrPoisoned, type DeltaCase,
} from './helpers.js';

type Inputs = ReturnType<typeof deltaInputs>;
type Extra = Partial<DeltaRuleOptions>;

const copy = (t: Tensor) => new Tensor(t.data.slice(), [...t.shape], t.dtype);

// ---- prefill ----

const prefill = (x: Inputs, opts: Extra): DeltaRuleResult =>
  (x.eta ? kaczmarzDeltaRule : gatedDeltaRule)({ ...x, backend: 'cpu', ...opts } as DeltaRuleOptions);
const prefillAsync = (x: Inputs, opts: Extra, signal?: AbortSignal): Promise<DeltaRuleResult> =>
  (x.eta ? kaczmarzDeltaRuleAsync : gatedDeltaRuleAsync)({ ...x, backend: 'cpu', ...opts } as DeltaRuleOptions, { signal });
const oShape = (c: DeltaCase) => [c.B, c.T, c.HV, c.V];

interface PrefillCase { name: string; c: DeltaCase; extra: Extra }
const PREFILL: PrefillCase[] = [
  { name: 'float32, HV = 2H, chunk, initialState, outputFinalState', c: { B: 2, T: 130, H: 2, HV: 4, K: 48, V: 32, initial: true, seed: 10 }, extra: { algorithm: 'chunk', outputFinalState: true } },
  { name: 'float32, HV = 2H, recurrent, initialState, outputFinalState', c: { B: 2, T: 130, H: 2, HV: 4, K: 48, V: 32, initial: true, seed: 20 }, extra: { algorithm: 'recurrent', outputFinalState: true } },
  { name: 'float32, chunk C=16, no finalState', c: { B: 1, T: 77, H: 1, HV: 2, K: 32, V: 40, seed: 30 }, extra: { algorithm: 'chunk', chunkSize: 16 } },
  { name: 'packed sequences with a zero-length one, chunk', c: { B: 1, T: 128, H: 2, HV: 4, K: 32, V: 24, initial: true, lens: [50, 0, 77, 1], seed: 40 }, extra: { algorithm: 'chunk', outputFinalState: true } },
  { name: 'packed sequences, recurrent', c: { B: 1, T: 128, H: 2, HV: 4, K: 32, V: 24, lens: [50, 0, 77, 1], seed: 45 }, extra: { algorithm: 'recurrent', outputFinalState: true } },
  { name: 'float16 inputs, HV = 2H, chunk', c: { B: 2, T: 70, H: 2, HV: 4, K: 64, V: 64, dtype: 'float16', initial: true, seed: 50 }, extra: { algorithm: 'chunk', outputFinalState: true } },
  { name: 'bfloat16 inputs, signed decay, recurrent', c: { B: 2, T: 70, H: 1, HV: 2, K: 64, V: 48, dtype: 'bfloat16', variant: 'decay', seed: 60 }, extra: { algorithm: 'recurrent' } },
  { name: 'bfloat16 inputs, chunk, outputFinalState', c: { B: 1, T: 100, H: 2, HV: 4, K: 32, V: 32, dtype: 'bfloat16', initial: true, seed: 65 }, extra: { algorithm: 'chunk', outputFinalState: true } },
  { name: 'KLA (kaczmarzDeltaRule), qkL2Norm, chunk', c: { B: 2, T: 90, H: 2, HV: 4, K: 32, V: 16, variant: 'kla', initial: true, seed: 70 }, extra: { algorithm: 'chunk', outputFinalState: true } },
  { name: 'T = 1, recurrent', c: { B: 3, T: 1, H: 1, HV: 2, K: 16, V: 8, initial: true, seed: 80 }, extra: { algorithm: 'recurrent', outputFinalState: true } },
];
const withLens = (c: DeltaCase, extra: Extra): Extra => (c.lens ? { ...extra, cuSeqlens: offsets(c.lens) } : extra);

describe('delta prefill with out equals the allocating call bit for bit', () => {
  for (const { name, c, extra } of PREFILL) {
    it(`${shapeId(c)} ${name}`, () => {
      const x = deltaInputs(c);
      const opts = withLens(c, extra);
      const want = prefill(x, opts);
      const out = garbage(oShape(c), c.dtype ?? 'float32', c.seed + 9);
      const got = prefill(x, { ...opts, out });
      expectIsOut(got.o, out);
      expectSameBits(out, want.o, `${name}: o`);
      if (opts.outputFinalState) expectSameBits(got.finalState!, want.finalState!, `${name}: finalState`);
      else expect(Object.keys(got)).toEqual(['o']);
    });
  }

  it('an out that is a view inside a larger buffer: written exactly, the bytes around it untouched', () => {
    const { c, extra } = PREFILL[7]; // bfloat16
    const x = deltaInputs(c);
    const n = c.B * c.T * c.HV * c.V;
    // One element of guard before (an odd offset for a 2-byte view) and 37 after.
    const big = garbage([n + 38], 'bfloat16', 5);
    const out = new Tensor(big.data.subarray(1, 1 + n), oShape(c), 'bfloat16');
    const guards = [snapshot({ data: big.data.subarray(0, 1) }), snapshot({ data: big.data.subarray(1 + n) })];
    expectIsOut(prefill(x, { ...extra, out }).o, out);
    expectSameBits(out, prefill(x, extra).o, 'o');
    expect(sameBytes({ data: big.data.subarray(0, 1) }, guards[0]), 'guard before out').toBe(true);
    expect(sameBytes({ data: big.data.subarray(1 + n) }, guards[1]), 'guard after out').toBe(true);
  });

  it('an empty call (T = 0) with out and outputFinalState', () => {
    const c: DeltaCase = { B: 2, T: 0, H: 1, HV: 2, K: 8, V: 4, initial: true, seed: 90 };
    const x = deltaInputs(c);
    const out = garbage(oShape(c), 'float32', 91);
    const r = prefill(x, { out, outputFinalState: true });
    expectIsOut(r.o, out);
    expectSameBits(r.finalState!, x.initialState!, 'finalState = initialState');
  });
});

describe('a reused out (prefill)', () => {
  it('two calls with different inputs into one out: it holds the second call\'s answer (each time out itself)', () => {
    for (const { name, c, extra } of [PREFILL[0], PREFILL[1], PREFILL[6]]) {
      const a = deltaInputs(c);
      const b = deltaInputs({ ...c, seed: c.seed + 100 });
      const wantA = prefill(a, extra);
      const wantB = prefill(b, extra);
      const out = garbage(oShape(c), c.dtype ?? 'float32', c.seed + 7);
      expectIsOut(prefill(a, { ...extra, out }).o, out);
      expectSameBits(out, wantA.o, `${name}: first call`);
      const r = prefill(b, { ...extra, out });
      expectIsOut(r.o, out);
      expectSameBits(out, wantB.o, `${name}: second call`);
      if (extra.outputFinalState) expectSameBits(r.finalState!, wantB.finalState!, `${name}: second call finalState`);
    }
  });
});

// ---- decode step ----

interface StepCase { name: string; c: DeltaCase }
const STEP: StepCase[] = [
  { name: 'gatedDeltaRuleStep, float32, HV = 2H', c: { B: 3, T: 1, H: 2, HV: 4, K: 64, V: 48, seed: 200 } },
  { name: 'gatedDeltaRuleStep, bfloat16, signed decay', c: { B: 2, T: 1, H: 1, HV: 2, K: 32, V: 32, dtype: 'bfloat16', variant: 'decay', seed: 210 } },
  { name: 'gatedDeltaRuleStep, float16', c: { B: 2, T: 1, H: 2, HV: 4, K: 32, V: 16, dtype: 'float16', seed: 215 } },
  { name: 'kaczmarzDeltaRuleStep, float32, HV = 2H', c: { B: 3, T: 1, H: 2, HV: 4, K: 64, V: 48, variant: 'kla', seed: 220 } },
];

/** Step inputs of a case (token 0 as [N, ...]) and a starting state. */
function stepCase(c: DeltaCase) {
  const x = deltaInputs(c);
  const st = stepInputs({ ...x, initialState: undefined }, 0);
  const s0 = randn([c.B, c.HV, c.K, c.V], { seed: c.seed + 50, std: 0.5 });
  return { st, s0, kla: !!x.eta };
}
type StepInputs = ReturnType<typeof stepCase>['st'];
const stepOp = (kla: boolean) => (kla ? kaczmarzDeltaRuleStep : gatedDeltaRuleStep);
const stepOpAsync = (kla: boolean) => (kla ? kaczmarzDeltaRuleStepAsync : gatedDeltaRuleStepAsync);
const step = (kla: boolean, st: StepInputs, state: Tensor, extra: Partial<DeltaStepOptions> = {}): DeltaStepResult =>
  stepOp(kla)({ ...st, state, backend: 'cpu', ...extra } as DeltaStepOptions);
const stepOShape = (c: DeltaCase) => [c.B, c.HV, c.V];

describe('decode steps with out equal the allocating call bit for bit', () => {
  for (const { name, c } of STEP) {
    it(`${shapeId(c)} ${name}`, () => {
      const { st, s0, kla } = stepCase(c);
      const sWant = copy(s0);
      const want = step(kla, st, sWant);
      const state = copy(s0);
      const out = garbage(stepOShape(c), c.dtype ?? 'float32', c.seed + 9);
      const r = step(kla, st, state, { out });
      expectIsOut(r.o, out);
      expect(Object.keys(r)).toEqual(['o']);
      expectSameBits(out, want.o, `${name}: o`);
      expectSameBits(state, sWant, `${name}: state`);
    });
  }

  it('a decode loop of three steps reusing one out: each step\'s o and the state as without out', () => {
    for (const { name, c } of [STEP[0], STEP[3]]) {
      const x = deltaInputs({ ...c, T: 3 });
      const kla = !!x.eta;
      const s0 = randn([c.B, c.HV, c.K, c.V], { seed: c.seed + 50, std: 0.5 });
      const sWant = copy(s0);
      const state = copy(s0);
      const out = garbage(stepOShape(c), 'float32', c.seed + 8);
      for (let t = 0; t < 3; t++) {
        const st = stepInputs({ ...x, initialState: undefined }, t);
        const want = step(kla, st, sWant);
        expectIsOut(step(kla, st, state, { out }).o, out);
        expectSameBits(out, want.o, `${name}: o at step ${t}`);
        expectSameBits(state, sWant, `${name}: state after step ${t}`);
      }
    }
  });
});

// ---- reference backend ----

describe('out on the reference backend', () => {
  it("backend 'reference': the reference's answer in v's dtype, copied into out (prefill and step)", () => {
    for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
      const c: DeltaCase = { B: 1, T: 9, H: 1, HV: 2, K: 8, V: 6, dtype, initial: true, seed: 300 };
      const x = deltaInputs(c);
      const ref = { ...x, backend: 'reference', outputFinalState: true } as DeltaRuleOptions;
      const out = garbage(oShape(c), dtype, 301);
      const r = gatedDeltaRule({ ...ref, out });
      expectIsOut(r.o, out);
      const want = gatedDeltaRule(ref);
      expectSameBits(out, want.o, `${dtype}: o`);
      expectSameBits(r.finalState!, want.finalState!, `${dtype}: finalState`);

      const { st, s0, kla } = stepCase({ ...c, T: 1 });
      const sWant = copy(s0);
      const state = copy(s0);
      const wantStep = stepOp(kla)({ ...st, state: sWant, backend: 'reference' } as DeltaStepOptions);
      const outStep = garbage(stepOShape(c), dtype, 302);
      expectIsOut(stepOp(kla)({ ...st, state, backend: 'reference', out: outStep } as DeltaStepOptions).o, outStep);
      expectSameBits(outStep, wantStep.o, `${dtype}: step o`);
      expectSameBits(state, sWant, `${dtype}: step state`);
    }
  });

  it('float64 inputs: out must be float64, and gets the reference answer (sync and async)', async () => {
    const c: DeltaCase = { B: 2, T: 5, H: 1, HV: 2, K: 4, V: 3, dtype: 'float64', seed: 310 };
    const x = deltaInputs(c);
    const out = garbage(oShape(c), 'float64', 311);
    expectIsOut(gatedDeltaRule({ ...x, out } as DeltaRuleOptions).o, out);
    expectSameBits(out, gatedDeltaRule(x as DeltaRuleOptions).o, 'o');
    const out2 = garbage(oShape(c), 'float64', 312);
    expectIsOut((await gatedDeltaRuleAsync({ ...x, out: out2 } as DeltaRuleOptions)).o, out2);
    expectSameBits(out2, out, 'async o');
    const f32 = garbage(oShape(c), 'float32', 313);
    const before = snapshot(f32);
    checkSeqkernError(catchError(() => gatedDeltaRule({ ...x, out: f32 } as DeltaRuleOptions)), 'BAD_DTYPE', 'out', 'float32 out for float64 inputs');
    expect(sameBytes(f32, before)).toBe(true);
  });
});

// ---- async ----

describe('async forms with out', () => {
  for (const { name, c, extra } of [PREFILL[0], PREFILL[3], PREFILL[5], PREFILL[8]]) {
    it(`prefill ${name}: equals the sync call bit for bit, result.o is out`, async () => {
      const x = deltaInputs(c);
      const opts = withLens(c, extra);
      const want = prefill(x, opts);
      const out = garbage(oShape(c), c.dtype ?? 'float32', 3);
      const r = await prefillAsync(x, { ...opts, out });
      expectIsOut(r.o, out);
      expectSameBits(out, want.o, 'o');
      if (opts.outputFinalState) expectSameBits(r.finalState!, want.finalState!, 'finalState');
    });
  }

  for (const { name, c } of [STEP[0], STEP[1], STEP[3]]) {
    it(`step ${name}: equals the sync call bit for bit, result.o is out`, async () => {
      const { st, s0, kla } = stepCase(c);
      const sWant = copy(s0);
      const want = step(kla, st, sWant);
      const state = copy(s0);
      const out = garbage(stepOShape(c), c.dtype ?? 'float32', 4);
      const r = await stepOpAsync(kla)({ ...st, state, backend: 'cpu', out } as DeltaStepOptions);
      expectIsOut(r.o, out);
      expectSameBits(out, want.o, 'o');
      expectSameBits(state, sWant, 'state');
    });
  }

  it('an already-aborted signal rejects with an AbortError and leaves out (and the step\'s state) untouched (cpu and reference)', async () => {
    const { c, extra } = PREFILL[0];
    const x = deltaInputs(c);
    const sc = stepCase(STEP[3].c);
    for (const backend of ['cpu', 'reference'] as const) {
      const ac = new AbortController();
      ac.abort();
      const out = garbage(oShape(c), 'float32', 5);
      const before = snapshot(out);
      await expect(prefillAsync(x, { ...extra, backend, out }, ac.signal)).rejects.toMatchObject({ name: 'AbortError' });
      expect(sameBytes(out, before), `${backend}: out after an aborted prefill`).toBe(true);

      const state = copy(sc.s0);
      const outStep = garbage(stepOShape(STEP[3].c), 'float32', 6);
      const beforeStep = [snapshot(outStep), snapshot(state)];
      const p = stepOpAsync(sc.kla)({ ...sc.st, state, backend, out: outStep } as DeltaStepOptions, { signal: ac.signal });
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
      expect(sameBytes(outStep, beforeStep[0]), `${backend}: out after an aborted step`).toBe(true);
      expect(sameBytes(state, beforeStep[1]), `${backend}: state after an aborted step`).toBe(true);
    }
  });

  it('a signal aborted while the options are read (a getter) still rejects before out or the state is touched', async () => {
    const { c, extra } = PREFILL[0];
    const x = deltaInputs(c);
    const out = garbage(oShape(c), 'float32', 7);
    const before = snapshot(out);
    const ac = new AbortController();
    const opts = {
      ...x, ...extra, backend: 'cpu', out,
      get scale() {
        ac.abort();
        return 0.2;
      },
    } as DeltaRuleOptions;
    await expect(gatedDeltaRuleAsync(opts, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(out, before), 'out after the aborted prefill').toBe(true);

    const sc = stepCase(STEP[0].c);
    const state = copy(sc.s0);
    const outStep = garbage(stepOShape(STEP[0].c), 'float32', 8);
    const beforeStep = [snapshot(outStep), snapshot(state)];
    const ac2 = new AbortController();
    const stepOpts = {
      ...sc.st, state, backend: 'cpu', out: outStep,
      get scale() {
        ac2.abort();
        return 0.2;
      },
    } as DeltaStepOptions;
    await expect(gatedDeltaRuleStepAsync(stepOpts, { signal: ac2.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(sameBytes(outStep, beforeStep[0]), 'out after the aborted step').toBe(true);
    expect(sameBytes(state, beforeStep[1]), 'state after the aborted step').toBe(true);
  });

  it('a prefill aborted after the kernel started writing is ignored: it resolves with out (and finalState) complete', async () => {
    // Long enough (T = 4096, 8 value heads, K = V = 128, recurrent) that the abort lands while the kernel
    // runs; it is sent only once some element of out's first tokens holds a finite value, so the kernel has
    // surely started. Without out the same abort rejects (async.test.ts); with out it must not stop halfway.
    // A machine fast enough to finish before the abort is sent gets a longer call (T doubled), up to three times.
    let abortedMidway = false;
    for (let T = 4096; T <= 16384 && !abortedMidway; T *= 2) {
      const c: DeltaCase = { B: 1, T, H: 4, HV: 8, K: 128, V: 128, initial: true, seed: 400 };
      const x = deltaInputs(c);
      const extra: Extra = { algorithm: 'recurrent', outputFinalState: true };
      const want = prefill(x, extra);
      const out = new Tensor(new Float32Array(c.T * c.HV * c.V).fill(NaN), oShape(c), 'float32');
      const ac = new AbortController();
      const p = prefillAsync(x, { ...extra, out }, ac.signal);
      // The recurrence runs each (sequence, head) from token 0 on: the first tokens are written first.
      const head = (out.data as Float32Array).subarray(0, 16 * c.HV * c.V);
      abortedMidway = await abortOnceWritten(p, () => head.some((v) => !Number.isNaN(v)), ac);
      const r = await p;
      expectIsOut(r.o, out);
      expectSameBits(out, want.o, `o after an abort mid-call (T = ${T})`);
      expectSameBits(r.finalState!, want.finalState!, `finalState after an abort mid-call (T = ${T})`);
    }
    expect(abortedMidway, 'the abort was sent while the call was still running').toBe(true);
  });

  it('an abort racing the start is all-or-nothing: rejected with out (and state) untouched, or resolved with both complete', async () => {
    const { c, extra } = PREFILL[1];
    const x = deltaInputs({ ...c, T: 1024 });
    const want = prefill(x, extra);
    const sc = stepCase({ B: 16, T: 1, H: 8, HV: 16, K: 128, V: 128, seed: 410 });
    const sWant = copy(sc.s0);
    const wantStep = step(false, sc.st, sWant);
    for (let i = 0; i < 6; i++) {
      const ac = new AbortController();
      const out = garbage([c.B, 1024, c.HV, c.V], 'float32', 411 + i);
      const before = snapshot(out);
      const state = copy(sc.s0);
      const outStep = garbage([16, 16, 128], 'float32', 421 + i);
      const beforeStep = snapshot(outStep);
      const ps = [
        prefillAsync(x, { ...extra, out }, ac.signal),
        gatedDeltaRuleStepAsync({ ...sc.st, state, backend: 'cpu', out: outStep } as DeltaStepOptions, { signal: ac.signal }),
      ];
      if (i % 2) queueMicrotask(() => ac.abort());
      else setImmediate(() => ac.abort());
      const [r, rs] = await Promise.all(ps.map((q) => (q as Promise<{ o: Tensor }>).catch((e: unknown) => e as Error)));
      if (r instanceof Error) {
        expect(r.name, `race ${i}: prefill rejection (${r.message})`).toBe('AbortError');
        expect(untouchedOrPoisoned(out, before), `race ${i}: out after a rejected prefill holds nothing of an answer`).toBe(true);
      } else {
        expectIsOut(r.o, out);
        expectSameBits(out, want.o, `race ${i}: a resolved prefill`);
      }
      if (rs instanceof Error) {
        expect(rs.name, `race ${i}: step rejection (${rs.message})`).toBe('AbortError');
        expect(untouchedOrPoisoned(outStep, beforeStep), `race ${i}: out after a rejected step`).toBe(true);
        expect(sameBytes(state, snapshot(sc.s0)), `race ${i}: state after a rejected step`).toBe(true);
      } else {
        expectIsOut(rs.o, outStep);
        expectSameBits(outStep, wantStep.o, `race ${i}: a resolved step's o`);
        expectSameBits(state, sWant, `race ${i}: a resolved step's state`);
      }
    }
  });
});

// ---- bad out ----

/** t's data at the start of a buffer with `room` more elements after it (NaN), so an out can be built over its end. */
function roomy(t: Tensor, room: number): Tensor {
  const buf = new Float32Array(t.size + room).fill(NaN);
  buf.set(t.data as Float32Array);
  return new Tensor(buf.subarray(0, t.size), t.shape, 'float32');
}
/** A float32 view of `n` elements starting `at` elements into t's buffer. */
const viewOn = (t: Tensor, at: number, n: number, shape: number[]) => new Tensor(new Float32Array(t.data.buffer, 4 * at, n), shape, 'float32');

interface BadCase<B> { name: string; out: (b: B) => unknown; code: string; got: string }

describe('bad out: a SeqkernError naming out, raised before anything is written', () => {
  // Prefill B=2, T=5, H=2, HV=4, K=8, V=6: o is [2,5,4,6] float32 (240 elements). Each input sits at the
  // start of a buffer with room for 240 more floats.
  const O = [2, 5, 4, 6];
  const prefillBase = () => {
    const x = deltaInputs({ B: 2, T: 5, H: 2, HV: 4, K: 8, V: 6, initial: true, seed: 500 });
    return {
      q: roomy(x.q, 240), k: roomy(x.k, 240), v: roomy(x.v, 240), beta: roomy(x.beta!, 240), g: roomy(x.g!, 240),
      initialState: roomy(x.initialState!, 240),
    };
  };
  type PB = ReturnType<typeof prefillBase>;
  const prefillCases: BadCase<PB>[] = [
    { name: 'wrong shape ([B,T,H,V] for HV = 2H)', out: () => garbage([2, 5, 2, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,5,2,6]' },
    { name: 'wrong shape (T and HV swapped)', out: () => garbage([2, 4, 5, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,4,5,6]' },
    { name: 'wrong rank (the step\'s [N,HV,V])', out: () => garbage([2, 4, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,4,6]' },
    { name: 'wrong dtype (float16 for float32 v)', out: () => garbage(O, 'float16', 9), code: 'BAD_DTYPE', got: 'float16' },
    { name: 'wrong dtype (float64 for float32 v)', out: () => garbage(O, 'float64', 9), code: 'BAD_DTYPE', got: 'float64' },
    { name: 'not a Tensor (a Float32Array)', out: () => new Float32Array(240).fill(NaN), code: 'BAD_ARGUMENT', got: 'Float32Array' },
    { name: 'not a Tensor (an object without a dtype)', out: () => ({ shape: O, data: new Float32Array(240) }), code: 'BAD_ARGUMENT', got: 'Object' },
    { name: 'null', out: () => null, code: 'BAD_ARGUMENT', got: 'null' },
    // q [2,5,2,8] holds 160 floats: an out of o's shape from q's first float.
    { name: 'aliasing q (built on q\'s buffer)', out: (b) => viewOn(b.q, 0, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping q' },
    { name: 'overlapping the end of k', out: (b) => viewOn(b.k, 150, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping k' },
    // v [2,5,4,6] holds 240 floats: an out from float 239 shares one element with v.
    { name: 'sharing one element with v', out: (b) => viewOn(b.v, 239, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping v' },
    { name: 'overlapping beta', out: (b) => viewOn(b.beta, 10, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping beta' },
    { name: 'sharing one element with g', out: (b) => viewOn(b.g, 39, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping g' },
    { name: 'inside initialState', out: (b) => viewOn(b.initialState, 100, 240, O), code: 'BAD_ARGUMENT', got: 'overlapping initialState' },
  ];
  for (const bc of prefillCases) {
    it(`prefill: ${bc.name} -> ${bc.code}, sync and async`, async () => {
      for (const asyncForm of [false, true]) {
        const b = prefillBase();
        const out = bc.out(b);
        const view = out as { data?: ArrayBufferView } | null;
        const outBefore = view?.data ? snapshot({ data: view.data as Float32Array }) : undefined;
        const ins = Object.values(b);
        const insBefore = ins.map(snapshot);
        const call = { ...b, backend: 'cpu', outputFinalState: true, out: out as Tensor } as DeltaRuleOptions;
        const e = asyncForm ? await catchRejection(() => gatedDeltaRuleAsync(call)) : catchError(() => gatedDeltaRule(call));
        const what = `${bc.name} (${asyncForm ? 'async' : 'sync'})`;
        expectOutRefused(e, bc.code, bc.got, what, view, outBefore, ins, insBefore, Object.keys(b));
      }
    });
  }

  it('prefill: out overlapping eta (KLA) or decay -> BAD_ARGUMENT naming them', () => {
    const x = deltaInputs({ B: 2, T: 5, H: 2, HV: 4, K: 8, V: 6, variant: 'kla', seed: 510 });
    const eta = roomy(x.eta!, 240);
    const e = catchError(() => kaczmarzDeltaRule({ ...x, eta, out: viewOn(eta, 0, 240, O) } as DeltaRuleOptions));
    checkSeqkernError(e, 'BAD_ARGUMENT', 'out', 'out over eta');
    expect((e as SeqkernError).got).toContain('overlapping eta');
    const y = deltaInputs({ B: 2, T: 5, H: 2, HV: 4, K: 8, V: 6, variant: 'decay', seed: 511 });
    const decay = roomy(y.decay!, 240);
    const before = snapshot(decay);
    const e2 = catchError(() => gatedDeltaRule({ ...y, decay, out: viewOn(decay, 5, 240, O) } as DeltaRuleOptions));
    checkSeqkernError(e2, 'BAD_ARGUMENT', 'out', 'out over decay');
    expect((e2 as SeqkernError).got).toContain('overlapping decay');
    expect(sameBytes(decay, before)).toBe(true);
  });

  it('prefill: out overlapping an Int32Array cuSeqlens -> BAD_ARGUMENT', () => {
    const x = deltaInputs({ B: 1, T: 6, H: 1, HV: 2, K: 4, V: 4, seed: 520 });
    const buf = new ArrayBuffer(4 * 48);
    const cu = new Int32Array(buf, 0, 3);
    cu.set([0, 2, 6]);
    const out = new Tensor(new Float32Array(buf), [1, 6, 2, 4], 'float32');
    const e = catchError(() => gatedDeltaRule({ ...x, cuSeqlens: cu, out } as DeltaRuleOptions));
    checkSeqkernError(e, 'BAD_ARGUMENT', 'out', 'out over cuSeqlens');
    expect((e as SeqkernError).got).toContain('overlapping cuSeqlens');
    expect(Array.from(cu)).toEqual([0, 2, 6]);
  });

  it('prefill: bfloat16 inputs take a bfloat16 out only', () => {
    const c: DeltaCase = { B: 1, T: 4, H: 1, HV: 2, K: 8, V: 4, dtype: 'bfloat16', seed: 530 };
    const x = deltaInputs(c);
    for (const dtype of ['float32', 'float16'] as DType[]) {
      const out = garbage(oShape(c), dtype, 531);
      const before = snapshot(out);
      const e = catchError(() => gatedDeltaRule({ ...x, out } as DeltaRuleOptions));
      checkSeqkernError(e, 'BAD_DTYPE', 'out', `${dtype} out for bfloat16 v`);
      expect((e as SeqkernError).got).toContain(dtype);
      expect(sameBytes(out, before)).toBe(true);
    }
  });

  it('an out next to q in q\'s buffer without overlap is fine', () => {
    const x = deltaInputs({ B: 2, T: 5, H: 2, HV: 4, K: 8, V: 6, seed: 540 });
    const buf = new Float32Array(160 + 240);
    buf.set(x.q.data as Float32Array);
    const q = new Tensor(buf.subarray(0, 160), x.q.shape, 'float32');
    const out = new Tensor(buf.subarray(160), O, 'float32');
    out.data.fill(NaN);
    expectIsOut(gatedDeltaRule({ ...x, q, out } as DeltaRuleOptions).o, out);
    expectSameBits(out, gatedDeltaRule(x as DeltaRuleOptions).o, 'o next to q');
  });

  // Step N=2, H=2, HV=4, K=8, V=6: o is [2,4,6] float32 (48 elements); state [2,4,8,6] holds 384.
  const SO = [2, 4, 6];
  const stepBase = () => {
    const x = deltaInputs({ B: 2, T: 1, H: 2, HV: 4, K: 8, V: 6, seed: 550 });
    const st = stepInputs({ ...x, initialState: undefined }, 0);
    return {
      q: roomy(st.q, 48), k: roomy(st.k, 48), v: roomy(st.v, 48), beta: roomy(st.beta!, 48), g: roomy(st.g!, 48),
      state: roomy(randn([2, 4, 8, 6], { seed: 551, std: 0.5 }), 48),
    };
  };
  type SB = ReturnType<typeof stepBase>;
  const stepCases: BadCase<SB>[] = [
    { name: 'wrong shape ([N,H,V])', out: () => garbage([2, 2, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,2,6]' },
    { name: 'wrong rank (the prefill\'s [B,1,HV,V])', out: () => garbage([2, 1, 4, 6], 'float32', 9), code: 'SHAPE_MISMATCH', got: '[2,1,4,6]' },
    { name: 'wrong dtype (bfloat16 for float32 v)', out: () => garbage(SO, 'bfloat16', 9), code: 'BAD_DTYPE', got: 'bfloat16' },
    { name: 'not a Tensor (a Float32Array)', out: () => new Float32Array(48), code: 'BAD_ARGUMENT', got: 'Float32Array' },
    { name: 'the state itself', out: (b) => b.state, code: 'SHAPE_MISMATCH', got: '[2,4,8,6]' },
    { name: 'a view inside the state', out: (b) => viewOn(b.state, 100, 48, SO), code: 'BAD_ARGUMENT', got: 'overlapping state' },
    { name: 'sharing the state\'s last element', out: (b) => viewOn(b.state, 383, 48, SO), code: 'BAD_ARGUMENT', got: 'overlapping state' },
    { name: 'aliasing q', out: (b) => viewOn(b.q, 0, 48, SO), code: 'BAD_ARGUMENT', got: 'overlapping q' },
    { name: 'sharing one element with v', out: (b) => viewOn(b.v, 47, 48, SO), code: 'BAD_ARGUMENT', got: 'overlapping v' },
    { name: 'overlapping beta', out: (b) => viewOn(b.beta, 0, 48, SO), code: 'BAD_ARGUMENT', got: 'overlapping beta' },
  ];
  for (const bc of stepCases) {
    it(`step: ${bc.name} -> ${bc.code}, sync and async, both step ops`, async () => {
      for (const kla of [false, true]) {
        for (const asyncForm of [false, true]) {
          const b = stepBase();
          const out = bc.out(b);
          const view = out as { data?: ArrayBufferView } | null;
          const outBefore = view?.data ? snapshot({ data: view.data as Float32Array }) : undefined;
          const ins = Object.values(b);
          const insBefore = ins.map(snapshot);
          const { beta, ...rest } = b;
          const call = { ...rest, ...(kla ? { eta: beta } : { beta }), backend: 'cpu', out: out as Tensor } as DeltaStepOptions;
          const e = asyncForm ? await catchRejection(() => stepOpAsync(kla)(call)) : catchError(() => stepOp(kla)(call));
          const what = `${kla ? 'kaczmarz' : 'gated'} ${bc.name} (${asyncForm ? 'async' : 'sync'})`;
          expectOutRefused(e, bc.code, bc.got.replace('beta', kla ? 'eta' : 'beta'), what, view, outBefore, ins, insBefore, Object.keys(b));
        }
      }
    });
  }
});

// ---- raw addon ----

describe('raw addon: the binding re-checks overlaps and honours callerOut', () => {
  const raw = () =>
    createRequire(import.meta.url)(loadedAddonPath()!) as { deltaRule(a: object): void; deltaRuleAsync(a: object): Promise<void> };
  // B=1, T=64, H=1, HV=2, K=V=16: o holds 2048 floats, the states 512 each.
  const args = () => {
    const F = (n: number, x: number) => new Float32Array(n).fill(x);
    return {
      B: 1, T: 64, H: 1, HV: 2, K: 16, V: 16, dtype: 'float32', q: F(64 * 16, 0.25), k: F(64 * 16, 0.25), v: F(64 * 2 * 16, 0.5),
      beta: F(128, 0.5), betaDtype: 'float32', kaczmarz: false, eps: 1e-6, g: F(128, -0.1), gDtype: 'float32', decayKind: 'log',
      initialState: F(512, 0.1), finalState: F(512, NaN), o: F(64 * 2 * 16, NaN), qkL2Norm: false, scale: 0.25, chunkSize: 64,
      algorithm: 'chunk',
    } as Record<string, unknown>;
  };

  it('o overlapping q, k, v, beta, g, initialState or finalState: Error with code BAD_ARGUMENT, nothing written', () => {
    for (const name of ['q', 'k', 'v', 'beta', 'g', 'initialState', 'finalState'] as const) {
      const a = args();
      const src = a[name] as Float32Array;
      // The array at the start of a buffer with room after it; o starts one element before its end.
      const buf = new Float32Array(src.length + 2048).fill(NaN);
      buf.set(src);
      a[name] = buf.subarray(0, src.length);
      a.o = buf.subarray(src.length - 1, src.length - 1 + 2048);
      const before = snapshot({ data: buf });
      const fsBefore = snapshot({ data: a.finalState as Float32Array });
      let err: unknown;
      try {
        raw().deltaRule(a);
      } catch (e) {
        err = e;
      }
      expect(err, `${name}: an Error`).toBeInstanceOf(Error);
      expect((err as { code?: string }).code, `${name}: code (${String(err)})`).toBe('BAD_ARGUMENT');
      expect(String(err), name).toContain(`overlapping ${name}`);
      expect(sameBytes({ data: buf }, before), `${name}: nothing written`).toBe(true);
      expect(sameBytes({ data: a.finalState as Float32Array }, fsBefore), `${name}: finalState not written`).toBe(true);
    }
  });

  it('the in-place step (finalState = initialState) with o apart is fine; o over that state is refused', () => {
    // B=4 sequences, T=1: o holds 4 * 2 * 16 floats, the state 4 * 2 * 16 * 16.
    const s = new Float32Array(2048).fill(0.1);
    const o = new Float32Array(128).fill(NaN);
    const a = {
      ...args(), T: 1, B: 4, q: new Float32Array(64).fill(0.25), k: new Float32Array(64).fill(0.25), v: new Float32Array(128).fill(0.5),
      beta: new Float32Array(8).fill(0.5), g: new Float32Array(8).fill(-0.1), initialState: s, finalState: s, o,
    };
    raw().deltaRule(a);
    expect(Array.from(o).every(Number.isFinite)).toBe(true);
    const before = snapshot({ data: s });
    expect(() => raw().deltaRule({ ...a, o: s.subarray(1000, 1128) })).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    expect(sameBytes({ data: s }, before), 'state untouched').toBe(true);
  });

  it('callerOut with a set cancel flag: rejects ABORTED before writing (o and finalState untouched)', async () => {
    const a: Record<string, unknown> = { ...args(), callerOut: true, cancel: Int32Array.of(1) };
    const before = [snapshot({ data: a.o as Float32Array }), snapshot({ data: a.finalState as Float32Array })];
    await expect(raw().deltaRuleAsync(a)).rejects.toMatchObject({ code: 'ABORTED' });
    expect(sameBytes({ data: a.o as Float32Array }, before[0]), 'o').toBe(true);
    expect(sameBytes({ data: a.finalState as Float32Array }, before[1]), 'finalState').toBe(true);
  });
});
