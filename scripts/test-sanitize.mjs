#!/usr/bin/env node
// `npm run test:sanitize`: the addon built with -fsanitize=address,undefined into build-asan/ (its own folder;
// build/ is untouched), then the native test files run against it (SEQKERN_ADDON) with the ASan runtime
// preloaded into node. Any sanitizer report fails the run: every process (vitest's workers and the child
// processes the tests spawn) writes its reports under build-asan/reports/, which must stay empty.
//   node scripts/test-sanitize.mjs              build (only stale objects) and run the default subset
//   node scripts/test-sanitize.mjs --build-only
//   node scripts/test-sanitize.mjs test/x.test.ts ...   other test files
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'build-asan');
const objDir = path.join(out, 'obj');
const reports = path.join(out, 'reports');
const addon = path.join(out, 'seqkern.node');
const CXX = process.env.CXX || 'g++';
// vptr off: shared_ptr<v8::BackingStore> control blocks come from node's binary, built without the RTTI
// the check compares against (a false "invalid vptr" at every pinned buffer).
const SAN = ['-fsanitize=address,undefined', '-fno-sanitize=vptr', '-fno-omit-frame-pointer', '-fno-sanitize-recover=undefined'];

// The native test files that reach the most native code per second under the sanitizer: the reliability
// probes and reproducers, the raw-addon fuzz, the bad-input and fuzz files of every family (kernels at small
// awkward shapes against the reference), out/in-place and the non-finite inputs. The big reference
// comparisons (attention.test.ts, delta.test.ts, ...) run at -O1 with ASan several times slower; pass them
// as arguments to include them.
const DEFAULT_TESTS = [
  'test/reliability.test.ts',
  'test/fuzz-raw.test.ts',
  'test/attention-nan.test.ts',
  'test/attention-errors.test.ts',
  'test/errors.test.ts',
  'test/softmax-errors.test.ts',
  'test/hyper-errors.test.ts',
  'test/attention-out.test.ts',
  'test/delta-out.test.ts',
  'test/tensor-helpers.test.ts',
];

const die = (msg) => {
  console.error(`test:sanitize: ${msg}`);
  process.exit(1);
};

// ---- build
const sources = JSON.parse(readFileSync(path.join(root, 'sources.json'), 'utf8'));
const req = createRequire(path.join(root, 'package.json'));
const napiInclude = req('node-addon-api').include_dir.replace(/^"|"$/g, '');
const nodeInclude = path.resolve(path.dirname(process.execPath), '..', 'include', 'node');
if (!existsSync(path.join(nodeInclude, 'node_api.h'))) die(`no Node headers at ${nodeInclude}`);
const common = [
  '-std=c++17', '-O1', '-g1', '-fPIC', '-fno-math-errno', ...SAN, '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS',
  '-DSEQKERN_BUILD_SYSTEM="asan"', `-I${napiInclude}`, `-I${nodeInclude}`, `-I${path.join(root, 'native')}`,
];
const units = [];
for (const [list, level] of [['common', null], ['avx512', 'avx512'], ['avx2', 'avx2'], ['portable', 'portable']])
  for (const src of sources[list]) units.push({ src, flags: level ? sources.flags[level] : [] });

// An object is stale when older than its source, any header under native/ or sources.json.
const headersNewest = (() => {
  let t = statSync(path.join(root, 'sources.json')).mtimeMs;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(h|hpp)$/.test(e.name)) t = Math.max(t, statSync(p).mtimeMs);
    }
  };
  walk(path.join(root, 'native'));
  return t;
})();
mkdirSync(objDir, { recursive: true });
const objOf = (src) => path.join(objDir, src.replace(/[/\\]/g, '_').replace(/\.cc$/, '.o'));
// Every object is stale when the compiler or its flags changed (build-asan/flags.txt).
const stampPath = path.join(out, 'flags.txt');
const stamp = JSON.stringify({ CXX, common, flags: sources.flags });
const sameFlags = existsSync(stampPath) && readFileSync(stampPath, 'utf8') === stamp;
const stale = units.filter(({ src }) => {
  const o = objOf(src);
  return !sameFlags || !existsSync(o) || statSync(o).mtimeMs < Math.max(headersNewest, statSync(path.join(root, src)).mtimeMs);
});

async function compileAll() {
  const jobs = Math.max(1, Math.min(stale.length, os.availableParallelism()));
  let next = 0;
  let failed = null;
  const worker = async () => {
    while (next < stale.length && !failed) {
      const { src, flags } = stale[next++];
      console.log(`  CXX ${src}`);
      const code = await new Promise((res) => {
        const p = spawn(CXX, [...common, ...flags, '-c', path.join(root, src), '-o', objOf(src)], { stdio: 'inherit' });
        p.on('exit', (c) => res(c));
      });
      if (code !== 0) failed = src;
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  if (failed) die(`compiling ${failed} failed`);
}

console.log(`== sanitizer build into ${path.relative(root, out)}/ (${stale.length} of ${units.length} objects to compile)`);
if (!sameFlags) rmSync(stampPath, { force: true });
await compileAll();
writeFileSync(stampPath, stamp);
if (stale.length > 0 || !existsSync(addon)) {
  const link = spawnSync(CXX, ['-shared', ...SAN, '-o', addon, ...units.map(({ src }) => objOf(src)), '-pthread'], { stdio: 'inherit' });
  if (link.status !== 0) die('linking failed');
}
if (process.argv.includes('--build-only')) process.exit(0);

// ---- run
const asanLib = spawnSync(CXX, ['-print-file-name=libasan.so'], { encoding: 'utf8' }).stdout.trim();
if (!asanLib || !existsSync(asanLib)) die(`libasan.so not found (${CXX} -print-file-name=libasan.so gave "${asanLib}")`);
rmSync(reports, { recursive: true, force: true });
mkdirSync(reports, { recursive: true });
const env = {
  ...process.env,
  SEQKERN_ADDON: addon,
  SEQKERN_SANITIZE: '1',
  LD_PRELOAD: [asanLib, process.env.LD_PRELOAD].filter(Boolean).join(':'),
  // Leaks: node and V8 keep allocations to exit by design. Reports go to files (every process, the tests'
  // child processes too); halt_on_error so a report also fails the test that caused it.
  ASAN_OPTIONS: `detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=${path.join(reports, 'asan')}:${process.env.ASAN_OPTIONS ?? ''}`,
  UBSAN_OPTIONS: `halt_on_error=1:print_stacktrace=1:log_path=${path.join(reports, 'ubsan')}:${process.env.UBSAN_OPTIONS ?? ''}`,
};
const files = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const tests = (files.length ? files : DEFAULT_TESTS).filter((f) => existsSync(path.join(root, f)));
// Sanity first: the sanitized addon loads under the preloaded runtime and runs one op.
const probe = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(addon)}); console.log(a.info().simdBest)`], { env, encoding: 'utf8' });
if (probe.status !== 0) die(`the sanitized addon does not load: ${probe.stderr}`);
console.log(`== vitest (${tests.length} files) with ${path.basename(asanLib)} preloaded, SEQKERN_ADDON=${path.relative(root, addon)}, SIMD ${probe.stdout.trim()}`);
const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
// The output is passed through and scanned too: a report that went to stderr rather than to a file counts.
const REPORT = /runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer/;
let printed = 0;
const run = await new Promise((res) => {
  const p = spawn(process.execPath, [vitest, 'run', '--testTimeout=600000', ...tests], { cwd: root, env, stdio: ['inherit', 'pipe', 'pipe'] });
  const scan = (to) => (chunk) => {
    to.write(chunk);
    if (REPORT.test(chunk.toString())) printed++;
  };
  p.stdout.on('data', scan(process.stdout));
  p.stderr.on('data', scan(process.stderr));
  p.on('exit', (status, signal) => res({ status, signal }));
});
if (printed > 0) die(`sanitizer report(s) in the test output (see above)`);
const found = readdirSync(reports);
for (const f of found) {
  console.error(`\n---- sanitizer report ${f}`);
  console.error(readFileSync(path.join(reports, f), 'utf8').slice(0, 8000));
}
if (found.length > 0) die(`${found.length} sanitizer report(s) in ${path.relative(root, reports)}/`);
if (run.status !== 0) die(`vitest failed (status ${run.status}, signal ${run.signal})`);
console.log('test:sanitize: clean (no sanitizer reports, all tests passed)');
