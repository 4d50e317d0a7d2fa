#!/usr/bin/env node
// Builds the native addon at `npm install` from local sources and local Node headers; downloads nothing.
// CPU-only through node-gyp by default; through cmake-js (CMakeLists.txt) when SEQKERN_CUDA=1, or when nvcc
// is on PATH and cuda/ holds kernels. SEQKERN_CUDA=0 forces the CPU-only path; SEQKERN_SKIP_BUILD=1 skips the
// build (every op then runs on the float64 reference backend, with a warning).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;

if (env.SEQKERN_SKIP_BUILD === '1') {
  console.log('seqkern: SEQKERN_SKIP_BUILD=1, not building the addon; ops will use the float64 reference backend.');
  process.exit(0);
}

// `npm install <folder>` links the folder without installing its dependencies (node-addon-api, the
// TypeScript compiler): install them there first, which runs this script again in the folder itself.
const req = createRequire(path.join(root, 'package.json'));
const resolvable = (id) => {
  try {
    req.resolve(id);
    return true;
  } catch {
    return false;
  }
};
if (!resolvable('node-addon-api') && env.SEQKERN_NESTED_INSTALL !== '1') {
  console.log(`seqkern: ${root} has no node_modules (installed from a folder): running npm install there first.`);
  const npmCli = env.npm_execpath && existsSync(env.npm_execpath) ? [process.execPath, env.npm_execpath] : ['npm'];
  const r = spawnSync(npmCli[0], [...npmCli.slice(1), 'install', '--no-audit', '--no-fund', '--include=dev'], {
    cwd: root, stdio: 'inherit', env: { ...env, SEQKERN_NESTED_INSTALL: '1' },
  });
  process.exit(r.status ?? 1);
}

// A prebuilt addon shipped in the package (npm pack puts one in prebuilds/, see scripts/prebuild.mjs) is
// used when it loads here: same platform, architecture and Node ABI (the addon reads V8 buffers directly,
// so it is tied to the ABI). Otherwise, or with SEQKERN_BUILD_FROM_SOURCE=1, compile.
const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, `seqkern.abi${process.versions.modules}.node`);
if (existsSync(prebuilt) && env.SEQKERN_BUILD_FROM_SOURCE !== '1') {
  const probe = spawnSync(process.execPath, ['-e', `process.dlopen({ exports: {} }, ${JSON.stringify(prebuilt)})`], { encoding: 'utf8' });
  if (probe.status === 0) {
    console.log(`seqkern: using the prebuilt addon ${path.relative(root, prebuilt)} (SEQKERN_BUILD_FROM_SOURCE=1 compiles instead).`);
    process.exit(0);
  }
  console.log(`seqkern: the prebuilt addon does not load here (${(probe.stderr || '').trim().split('\n').pop()}); compiling from source.`);
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// Node's own headers, next to the node binary (<prefix>/include/node), so node-gyp downloads nothing.
function localNodeDir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

function nodeGypPath() {
  if (env.npm_config_node_gyp && existsSync(env.npm_config_node_gyp)) return env.npm_config_node_gyp;
  const npmDirs = [path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm')];
  if (env.npm_execpath) npmDirs.unshift(path.resolve(path.dirname(env.npm_execpath), '..'));
  for (const d of npmDirs) {
    const p = path.join(d, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(p)) return p;
  }
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return null;
  }
}

function failed(what, missing, fix) {
  console.error(
    `\nseqkern: building the native addon failed.\n  tried:   ${what}\n  missing: ${missing}\n  fix:     ${fix}\n` +
      `  or set SEQKERN_SKIP_BUILD=1 to install without the addon (ops then run on the slow float64 reference),\n` +
      `  SEQKERN_CUDA=0 to force the CPU-only node-gyp build.\n`,
  );
  process.exit(1);
}

const cudaDir = path.join(root, 'cuda');
const hasCudaSources = existsSync(cudaDir) && readdirSync(cudaDir).some((f) => f.endsWith('.cu'));
const wantCuda = env.SEQKERN_CUDA === '1' || (env.SEQKERN_CUDA !== '0' && hasCudaSources && which('nvcc') !== null);

// CPU + CUDA through cmake-js. A failed CUDA build falls back to the CPU-only node-gyp build below, with one
// message saying so (info().cuda then reports that this build has no CUDA).
if (wantCuda) {
  const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  let why = null;
  if (!existsSync(cmakeJs)) why = 'node_modules/cmake-js is missing (npm install --include=dev)';
  else if (!which('cmake')) why = 'cmake is not on PATH (apt-get install cmake)';
  else {
    const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build', '--CDSEQKERN_CUDA=ON'], { cwd: root, stdio: 'inherit' });
    if (r.status === 0) process.exit(0);
    why = 'cmake-js compile with CUDA failed (the log above names the file)';
  }
  console.error(
    `\nseqkern: the CUDA build did not succeed: ${why}.\n  building the CPU-only addon instead (CUDA ops will say NO_CUDA; SEQKERN_CUDA_SIM=1 runs the CUDA kernels on the CPU).\n` +
      `  fix the toolkit and run \`SEQKERN_CUDA=1 npm rebuild seqkern\`, or set SEQKERN_CUDA=0 to skip the attempt.\n`,
  );
}

const gyp = nodeGypPath();
if (!gyp) failed('node-gyp', "npm's bundled node-gyp", 'reinstall npm (node-gyp ships with it)');
for (const tool of ['python3', 'make', 'g++']) {
  if (!which(tool)) failed('node-gyp rebuild', tool, `apt-get install ${tool === 'g++' ? 'g++' : tool}`);
}
const args = [gyp, 'rebuild', '--release', `--jobs=${Math.max(1, (await import('node:os')).availableParallelism())}`];
const nodedir = localNodeDir();
if (nodedir) args.push(`--nodedir=${nodedir}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  failed(
    `node-gyp rebuild${nodedir ? ` --nodedir=${nodedir}` : ''}`,
    nodedir ? 'a C++17 compiler or a header (see the log above)' : `Node headers at ${path.resolve(path.dirname(process.execPath), '..', 'include', 'node')}`,
    nodedir ? 'install g++ >= 9 and python3, then npm rebuild seqkern' : 'install the Node headers package of your distribution (e.g. libnode-dev) or use the official Node tarball',
  );
}
