#!/usr/bin/env node
// `npm test`: runs the whole vitest suite once per SIMD level this machine supports (avx512, avx2,
// portable), forcing each with SEQKERN_SIMD, so every kernel variant is checked against the reference.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const order = ['avx512', 'avx2', 'portable'];
let best = 'portable';
try {
  const addon = createRequire(import.meta.url)(path.join(root, 'build', 'Release', 'seqkern.node'));
  best = addon.info().simdBest;
} catch (e) {
  console.error(`seqkern test: native addon not loadable (${e.message}); run npm install first.`);
  process.exit(1);
}
const levels = order.slice(order.indexOf(best));
const extra = process.argv.slice(2);
const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
let failed = [];
for (const level of levels) {
  console.log(`\n=== vitest with SEQKERN_SIMD=${level} (levels on this machine: ${levels.join(', ')}) ===`);
  const r = spawnSync(process.execPath, [vitest, 'run', ...extra], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, SEQKERN_SIMD: level },
  });
  if (r.status !== 0) failed.push(level);
}
if (failed.length) {
  console.error(`\nseqkern test: failures under SEQKERN_SIMD=${failed.join(', ')}`);
  process.exit(1);
}
console.log(`\nseqkern test: all passed under ${levels.join(', ')}`);
