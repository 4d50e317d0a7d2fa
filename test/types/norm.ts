// The norm ops' types under strict + exactOptionalPropertyTypes (tsc -p test/types, part of npm test).
import { randn, rmsNorm, rmsNormGated, rmsNormGatedAsync, type RmsNormOptions, type Tensor } from '../../dist/src/index.js';

const x = randn([2, 8], { seed: 1 });
const w = randn([8], { seed: 2 });
const o: RmsNormOptions = { eps: 1e-5, groupSize: 4, out: x };
const y: Tensor = rmsNorm(x, w, o);
const z: Promise<Tensor> = rmsNormGatedAsync(x, x, w, {}, { signal: AbortSignal.timeout(1000) });
// @ts-expect-error: the gated form needs the gate
rmsNormGated(x, w);
// @ts-expect-error: groupSize is a number
rmsNorm(x, w, { groupSize: '4' });
export { y, z };
