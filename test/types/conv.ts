// The conv ops' types under strict + exactOptionalPropertyTypes (tsc -p test/types, part of npm test).
import { causalConv1d, causalConv1dUpdate, causalConv1dUpdateAsync, randn, type CausalConv1dOptions, type Tensor } from '../../dist/src/index.js';

const x = randn([1, 8, 4], { seed: 1 });
const w = randn([4, 4], { seed: 2 });
const pool = randn([2, 4, 3], { seed: 3 });
const opts: CausalConv1dOptions = { convState: pool, stateIndices: [1], hasInitialState: [true], activation: 'silu', bias: undefined };
const y: Tensor = causalConv1d(x, w, opts);
const y1: Promise<Tensor> = causalConv1dUpdateAsync(randn([1, 4]), pool, w, { stateIndices: Int32Array.from([0]) });
// @ts-expect-error: the update takes no hasInitialState
causalConv1dUpdate(randn([1, 4]), pool, w, { hasInitialState: [true] });
// @ts-expect-error: activation is 'silu' or 'none'
causalConv1d(x, w, { activation: 'gelu' });
export { y, y1 };
