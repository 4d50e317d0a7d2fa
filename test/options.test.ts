// Strict options (issue 15 part 4): an option an op does not know is a SeqkernError BAD_ARGUMENT naming it
// and the closest known name, raised before any work, on every public op (sync and async, cpu and
// reference); an option set to undefined counts as absent; metadata arrays are copied at the call.
import { describe, expect, it } from 'vitest';
import {
  attention, attentionAsync, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, kaczmarzDeltaRule,
  kaczmarzDeltaRuleStep, rand, randn, SeqkernError, softmax, softmaxAsync, softmaxInto, zeros,
} from '../src/index.js';
import { closestName } from '../src/validate.js';

function delta(step: boolean) {
  const lead = step ? [2] : [2, 5];
  return {
    q: randn([...lead, 1, 4], { seed: 1 }), k: randn([...lead, 1, 4], { seed: 2 }), v: randn([...lead, 2, 3], { seed: 3 }),
    beta: rand([...lead, 2], { seed: 4 }), g: rand([...lead, 2], { seed: 5, low: -0.5, high: 0 }),
    ...(step ? { state: randn([2, 2, 4, 3], { seed: 6 }) } : {}),
  };
}

function expectUnknown(f: () => unknown, key: string, near?: string) {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SeqkernError);
  const e = err as SeqkernError;
  expect(e.code).toBe('BAD_ARGUMENT');
  expect(e.argument).toBe(key);
  expect(e.message).toContain(`unknown option '${key}'`);
  if (near) expect(e.message).toContain(`did you mean '${near}'`);
  else expect(e.message).not.toContain('did you mean');
}

describe('strict options', () => {
  const q = randn([1, 6, 2, 8], { seed: 7 }), k = randn([1, 6, 2, 8], { seed: 8 }), v = randn([1, 6, 2, 8], { seed: 9 });

  it("attention refuses the issue's example (cacheSeqlens is not an attention option) and typos", () => {
    for (const backend of ['cpu', 'reference'] as const) {
      expectUnknown(() => attention(q, k, v, { causal: true, cacheSeqlens: [3, 7, 10], backend } as never), 'cacheSeqlens', 'cuSeqlens');
      expectUnknown(() => attention(q, k, v, { casual: true, backend } as never), 'casual', 'causal');
      expectUnknown(() => attention(q, k, v, { returnLSE: true, backend } as never), 'returnLSE', 'returnLse');
      expectUnknown(() => attention(q, k, v, { frobnicate: 1, backend } as never), 'frobnicate');
    }
  });

  it('an options object forwarded with { signal } into the op options is refused, pointing at the async argument', () => {
    const ac = new AbortController();
    expectUnknown(() => attention(q, k, v, { signal: ac.signal } as never), 'signal');
  });

  it('async forms reject with the same error', async () => {
    await expect(attentionAsync(q, k, v, { causl: true } as never)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', argument: 'causl' });
    await expect(gatedDeltaRuleAsync({ ...delta(false), qkL2norm: true } as never)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', argument: 'qkL2norm' });
    await expect(softmaxAsync(randn([2, 3], { seed: 1 }), { algoritm: 'two-pass' } as never)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', argument: 'algoritm' });
  });

  it('the delta ops know their own options and not each other\'s', () => {
    expectUnknown(() => gatedDeltaRule({ ...delta(false), qkl2norm: true } as never), 'qkl2norm', 'qkL2Norm');
    expectUnknown(() => gatedDeltaRule({ ...delta(false), outputFinalStates: true } as never), 'outputFinalStates', 'outputFinalState');
    expectUnknown(() => gatedDeltaRule({ ...delta(false), initialStates: zeros([2, 2, 4, 3]) } as never), 'initialStates', 'initialState');
    expectUnknown(() => gatedDeltaRuleStep({ ...delta(true), hasInitialState: [1, 1] } as never), 'hasInitialState', 'state');
    expectUnknown(() => gatedDeltaRuleStep({ ...delta(true), initialState: zeros([2, 2, 4, 3]) } as never), 'initialState', 'state');
    expectUnknown(() => gatedDeltaRuleStep({ ...delta(true), cuSeqlens: [0, 1, 2] } as never), 'cuSeqlens');
    expectUnknown(() => gatedDeltaRuleStep({ ...delta(true), chunkSize: 64 } as never), 'chunkSize');
    const { beta, ...rest } = delta(false);
    expectUnknown(() => kaczmarzDeltaRule({ ...rest, eta: beta, epsilon: 1e-6 } as never), 'epsilon', 'eps');
    const { beta: b2, ...rest2 } = delta(true);
    expectUnknown(() => kaczmarzDeltaRuleStep({ ...rest2, eta: b2, sclae: 1 } as never), 'sclae', 'scale');
  });

  it('softmax and softmaxInto', () => {
    const x = randn([3, 5], { seed: 2 });
    expectUnknown(() => softmax(x, { stric: true } as never), 'stric', 'strict');
    expectUnknown(() => softmaxInto(x, zeros([3, 5]), { inplace: true } as never), 'inplace');
    expectUnknown(() => softmax(x, { zzzzzz: 1 } as never), 'zzzzzz');
  });

  it('an option whose value is undefined counts as absent; known options still run', () => {
    const r = attention(q, k, v, { causal: true, scale: undefined, unknownButUndefined: undefined } as never);
    const ref = attention(q, k, v, { causal: true });
    expect(Array.from(r.o.data)).toEqual(Array.from(ref.o.data));
  });

  it('closestName proposes only near names', () => {
    expect(closestName('casual', ['causal', 'scale'])).toBe('causal');
    expect(closestName('zzzzzzzz', ['causal', 'scale'])).toBeUndefined();
  });
});

describe('metadata arrays are copied at the call', () => {
  it('changing cuSeqlens right after an async attention call starts changes nothing', async () => {
    const T = 40;
    const q = randn([1, T, 2, 8], { seed: 11 }), k = randn([1, T, 2, 8], { seed: 12 }), v = randn([1, T, 2, 8], { seed: 13 });
    const cu = new Int32Array([0, 16, T]);
    const want = attention(q, k, v, { causal: true, cuSeqlens: cu });
    const p = attentionAsync(q, k, v, { causal: true, cuSeqlens: cu });
    cu[1] = 2e9;
    const got = await p;
    expect(Array.from(got.o.data)).toEqual(Array.from(want.o.data));
  });

  it('changing cuSeqlens right after an async delta prefill starts changes nothing', async () => {
    const T = 40;
    const x = {
      q: randn([1, T, 1, 8], { seed: 1 }), k: randn([1, T, 1, 8], { seed: 2 }), v: randn([1, T, 1, 8], { seed: 3 }),
      beta: rand([1, T, 1], { seed: 4 }), g: rand([1, T, 1], { seed: 5, low: -0.5, high: 0 }), qkL2Norm: true,
    };
    const cu = new Int32Array([0, 16, T]);
    const want = gatedDeltaRule({ ...x, cuSeqlens: cu, algorithm: 'recurrent' });
    const p = gatedDeltaRuleAsync({ ...x, cuSeqlens: cu, algorithm: 'recurrent' });
    cu[1] = 2e9;
    const got = await p;
    expect(Array.from(got.o.data)).toEqual(Array.from(want.o.data));
  });
});
