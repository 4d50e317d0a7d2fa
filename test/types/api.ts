// Compiles under strict + exactOptionalPropertyTypes + nodenext (tsc -p test/types, part of npm test). Each
// `@ts-expect-error` line must be an error, so a type that stops refusing what it should fails the test too.
import {
  attention, attentionAsync, cat, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, hyperAttention, kaczmarzDeltaRule,
  randn, softmax, softmaxAsync, tensor, type AsyncOptions, type Tensor, type TensorLike,
} from '../../dist/src/index.js';

const q = randn([1, 8, 2, 16], { seed: 1 });
const k = randn([1, 8, 2, 16], { seed: 2 });
const v = randn([1, 8, 2, 16], { seed: 3 });
const beta = randn([1, 8, 2], { seed: 4 });

// Forwarding an optional signal (AbortSignal | undefined) compiles under exactOptionalPropertyTypes.
function forward(signal?: AbortSignal): Promise<Tensor> {
  const a: AsyncOptions = { signal };
  return softmaxAsync(q, {}, a);
}
void forward;

// outputFinalState: true gives a finalState that is not optional.
const withState = gatedDeltaRule({ q, k, v, beta, outputFinalState: true });
const fs: Tensor = withState.finalState;
void fs;
async function asyncState(): Promise<number> {
  const r = await gatedDeltaRuleAsync({ q, k, v, beta, outputFinalState: true, scale: undefined });
  return r.finalState.size;
}
void asyncState;
const noState = gatedDeltaRule({ q, k, v, beta });
// @ts-expect-error finalState may be undefined without outputFinalState: true
const fs2: Tensor = noState.finalState;
void fs2;

// beta xor eta
// @ts-expect-error gatedDeltaRule needs beta
gatedDeltaRule({ q, k, v });
// @ts-expect-error gatedDeltaRule takes beta, not eta
gatedDeltaRule({ q, k, v, beta, eta: beta });
kaczmarzDeltaRule({ q, k, v, eta: beta });
// @ts-expect-error kaczmarzDeltaRule needs eta
kaczmarzDeltaRule({ q, k, v, beta });
const state = randn([1, 2, 16, 16], { seed: 5 });
gatedDeltaRuleStep({ q: randn([1, 2, 16], { seed: 6 }), k: randn([1, 2, 16], { seed: 7 }), v: randn([1, 2, 16], { seed: 8 }), beta: randn([1, 2], { seed: 9 }), state });

// An option an op does not know is a type error too (and a SeqkernError at run time).
// @ts-expect-error cacheSeqlens is not an attention option
attention(q, k, v, { causal: true, cacheSeqlens: [3, 7, 10] });

// returnLse: true gives lse.
const withLse = attention(q, k, v, { returnLse: true });
const lse: Tensor = withLse.lse;
void lse;
async function asyncLse(): Promise<number> {
  return (await attentionAsync(q, k, v, { returnLse: true }, {})).lse.size;
}
void asyncLse;
// @ts-expect-error lse may be undefined without returnLse: true
const lse2: Tensor = attention(q, k, v).lse;
void lse2;
const h: Tensor = hyperAttention(q, k, v, { returnLse: true }).lse;
void h;

// A tensor-like object is accepted wherever a Tensor is.
const like: TensorLike = { dtype: 'float32', shape: [2, 3], data: new Float32Array(6) };
softmax(like);
attention(like, like, like);
gatedDeltaRule({ q: like, k: like, v: like, beta: like });
cat([like, q.view([-1, 16])]);
// @ts-expect-error a plain array is not a tensor
softmax([1, 2, 3]);

// Tensor helpers keep their types.
const b16: Tensor = tensor([1, 2, 3], [3]).to('bfloat16').slice(1).reshape([-1]);
void b16;

// Chained ops and warmup (src/runtime.ts): op() takes the op's own arguments, add() returns its result type.
import { chain as chainOf, warmupAsync as warm } from '../../dist/src/index.js';
const ch = chainOf().op('softmax', q).op('gatedDeltaRule', { q, k, v, beta });
const chO: Tensor = ch.add('attention', q, k, v, { causal: true }).o;
void chO;
// @ts-expect-error gatedDeltaRule needs beta
ch.op('gatedDeltaRule', { q, k, v });
const chSignal: AbortSignal | undefined = undefined;
void ch.run({ signal: chSignal });
void warm({ delta: [{ K: 64, V: 64 }] }).then((w) => w.delta[0]?.algorithm);

// The delta-state pool, checkpoints, verify and gating type-check (options may be undefined).
const pool = randn([4, 2, 16, 16], { seed: 10 }).to('bfloat16');
const slots: number[] | undefined = [3];
gatedDeltaRule({ q, k, v, beta, state: pool, stateIndices: slots, hasInitialState: [true], stateDtype: 'bfloat16', checkpointEvery: undefined });
const verify = gatedDeltaRuleStep({
  q: randn([1, 3, 2, 16], { seed: 11 }), k: randn([1, 3, 2, 16], { seed: 12 }), v: randn([1, 3, 2, 16], { seed: 13 }),
  beta: randn([1, 3, 2], { seed: 14 }), state: pool, stateIndices: Int32Array.of(0), updateState: false,
  aLog: randn([2], { seed: 15 }), dtBias: undefined, betaSigmoid: true, betaScale: 2,
});
const ckSeq: Int32Array | undefined = gatedDeltaRule({ q, k, v, beta }).checkpointSequence;
void verify;
void ckSeq;
// @ts-expect-error stateDtype is float32 or bfloat16
gatedDeltaRule({ q, k, v, beta, state: pool, stateDtype: 'float16' });
// linear: options typed; exactOptionalPropertyTypes takes an explicit undefined bias.
import { linear, linearAsync, type LinearOptions } from '../../dist/src/index.js';
const lo: LinearOptions = { bias: undefined, outDtype: 'float32' };
const ly: Tensor = linear(like, like, lo);
const lp: Promise<Tensor> = linearAsync(like, like, {}, { signal: new AbortController().signal });
void ly;
void lp;
// @ts-expect-error an unknown option
linear(like, like, { biass: like });
