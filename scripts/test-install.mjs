#!/usr/bin/env node
// Install checks (issue 15.8), run by .ci/run:
//  1. `npm pack` puts a prebuilt addon, the compiled JS and no bench results in the tarball;
//  2. installing that tarball where no compiler, make or python exists loads the prebuilt addon and runs an
//     op against the float64 reference;
//  3. `npm install <folder>` of a fresh clone (no node_modules, no dist) works and compiles from source.
// Each in a temporary folder; nothing of this tree is changed except prebuilds/ (rebuilt by npm pack).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'seqkern-install-'));
const skipFolder = process.argv.includes('--no-folder');

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.status !== 0) {
    console.error(`FAILED: ${cmd} ${args.join(' ')} (status ${r.status})\n${r.stdout}\n${r.stderr}`);
    process.exit(1);
  }
  return r;
}
const check = (ok, what) => {
  if (!ok) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
};

// The smoke test an installed package must pass: the addon (not the reference) computes a softmax that
// matches the float64 reference.
const SMOKE = `
  import('seqkern').then((sk) => {
    const i = sk.info();
    const x = sk.randn([7, 33], { seed: 3 });
    const a = sk.softmax(x), b = sk.softmaxReference(x);
    let err = 0;
    for (let j = 0; j < a.size; j++) err = Math.max(err, Math.abs(a.data[j] - b.data[j]));
    console.log(JSON.stringify({ backend: i.backend, addonPath: i.addonPath, err }));
  });`;

function smoke(app, env) {
  const r = run(process.execPath, ['--input-type=module', '-e', SMOKE], { cwd: app, env });
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function newApp(name) {
  const app = path.join(tmp, name);
  mkdirSync(app);
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
  return app;
}

// 1. pack
const npm = process.env.npm_execpath && existsSync(process.env.npm_execpath) ? [process.execPath, process.env.npm_execpath] : ['npm'];
const packed = run(npm[0], [...npm.slice(1), 'pack', '--json', '--pack-destination', tmp], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0];
const files = info.files.map((f) => f.path);
const abi = process.versions.modules;
check(files.includes(`prebuilds/${process.platform}-${process.arch}/seqkern.abi${abi}.node`), `the tarball holds prebuilds/${process.platform}-${process.arch}/seqkern.abi${abi}.node`);
check(files.includes('dist/src/index.js') && files.includes('dist/src/index.d.ts'), 'the tarball holds the compiled JS and its types');
check(!files.some((f) => f.startsWith('bench/results/') || f.startsWith('test/') || f.startsWith('build/')), 'no bench results, tests or build folder in the tarball');
console.log(`   ${info.filename}: ${(info.size / 1024).toFixed(0)} KiB packed, ${files.length} files`);

// 2. install the tarball with no compiler: a PATH of node, npm and sh only
const bin = path.join(tmp, 'bin');
mkdirSync(bin);
for (const tool of ['node', 'sh']) symlinkSync(spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim(), path.join(bin, tool));
const npmCli = npm.length > 1 ? npm[1] : spawnSync('sh', ['-c', 'readlink -f "$(command -v npm)"'], { encoding: 'utf8' }).stdout.trim();
writeFileSync(path.join(bin, 'npm'), `#!/bin/sh\nexec ${process.execPath} ${npmCli} "$@"\n`, { mode: 0o755 });
const bare = { ...process.env, PATH: bin };
delete bare.npm_execpath;
delete bare.npm_config_node_gyp;
check(spawnSync('sh', ['-c', 'command -v g++ || command -v make || command -v python3'], { env: bare }).status !== 0, 'the bare PATH has no g++, make or python3');
const app = newApp('tarball-app');
const inst = run(path.join(bin, 'npm'), ['install', '--no-audit', '--no-fund', '--foreground-scripts', path.join(tmp, info.filename)], { cwd: app, env: bare });
check(/using the prebuilt addon/.test(inst.stdout + inst.stderr), 'the install used the prebuilt addon (nothing compiled)');
check(!/warning:/.test(inst.stdout + inst.stderr), 'the install printed no compiler warnings');
const s = smoke(app, bare);
check(s.backend === 'cpu' && /prebuilds/.test(s.addonPath) && s.err < 1e-6, `the installed package runs on the prebuilt addon (${s.addonPath}, max error ${s.err.toExponential(1)})`);

// 3. npm install <folder> of a fresh clone
if (!skipFolder) {
  const clone = path.join(tmp, 'clone');
  run('git', ['clone', '-q', root, clone]);
  const app2 = newApp('folder-app');
  const r2 = run(npm[0], [...npm.slice(1), 'install', '--no-audit', '--no-fund', '--foreground-scripts', clone], { cwd: app2 });
  const warnings = (r2.stdout + r2.stderr).split('\n').filter((l) => /warning:/.test(l));
  check(warnings.length === 0, `the build from source printed no compiler warnings${warnings.length ? `: ${warnings.slice(0, 5).join('\n')}` : ''}`);
  const s2 = smoke(app2, process.env);
  check(s2.backend === 'cpu' && s2.addonPath.includes(path.join('clone', 'build')) && s2.err < 1e-6, `npm install <fresh folder> builds and runs (${s2.addonPath})`);
}
rmSync(tmp, { recursive: true, force: true });
console.log('install checks passed');
