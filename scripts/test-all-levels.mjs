#!/usr/bin/env node
// `npm test`: runs the whole vitest suite once per SIMD level this machine supports (avx512, avx2,
// portable), forcing each with SEQKERN_SIMD, so every kernel variant is checked against the reference.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
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

// The type test first: dist/ rebuilt from src/, then test/types compiled against its declarations under a
// consumer's strictest settings (strict, exactOptionalPropertyTypes, nodenext).
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
for (const [what, project] of [['build dist/', 'tsconfig.json'], ['type test', path.join('test', 'types')]]) {
  console.log(`=== tsc -p ${project} (${what}) ===`);
  const t = spawnSync(process.execPath, [tsc, '-p', project], { cwd: root, stdio: 'inherit' });
  if (t.status !== 0) {
    console.error(`seqkern test: ${what} failed`);
    process.exit(1);
  }
}
const extra = process.argv.slice(2);
const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'seqkern-test-'));
const failed = [];
const totals = { passed: 0, failed: 0, skipped: 0 };
for (const level of levels) {
  console.log(`\n=== vitest with SEQKERN_SIMD=${level} (levels on this machine: ${levels.join(', ')}) ===`);
  const report = path.join(tmp, `${level}.json`);
  const r = spawnSync(process.execPath, [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile=${report}`, ...extra], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, SEQKERN_SIMD: level },
  });
  if (r.status !== 0) failed.push(level);
  try {
    const j = JSON.parse(readFileSync(report, 'utf8'));
    totals.passed += j.numPassedTests;
    totals.failed += j.numFailedTests;
    totals.skipped += j.numPendingTests + (j.numTodoTests ?? 0);
  } catch {
    if (r.status === 0) failed.push(`${level} (no report)`);
  }
}
rmSync(tmp, { recursive: true, force: true });
console.log(`\nseqkern test: levels ${levels.join(', ')}`);
console.log(`tests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
if (failed.length || totals.passed === 0) {
  console.error(`seqkern test: failures under SEQKERN_SIMD=${failed.join(', ') || '(no tests ran)'}`);
  process.exit(1);
}
