#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): puts the addon built from this tree's sources into
// prebuilds/<platform>-<arch>/seqkern.abi<N>.node, where an install of the tarball finds it and needs no
// compiler (scripts/build-addon.mjs, src/backend.ts). One binary holds every SIMD level (chosen at run
// time). Rebuilds first when any native source is newer than the built addon; strips debug symbols.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'build', 'Release', 'seqkern.node');

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

const sourcesTime = Math.max(newest(path.join(root, 'native')), ...['sources.json', 'binding.gyp'].map((f) => statSync(path.join(root, f)).mtimeMs));
if (!existsSync(built) || statSync(built).mtimeMs < sourcesTime) {
  console.log('seqkern prebuild: building the addon from source first');
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-addon.mjs')], {
    cwd: root, stdio: 'inherit', env: { ...process.env, SEQKERN_BUILD_FROM_SOURCE: '1', SEQKERN_CUDA: '0' },
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const dest = path.join(dir, `seqkern.abi${process.versions.modules}.node`);
copyFileSync(built, dest);
spawnSync('strip', ['--strip-unneeded', dest], { stdio: 'inherit' }); // smaller tarball; a failure leaves it as is
console.log(`seqkern prebuild: ${path.relative(root, dest)} (${(statSync(dest).size / 1024).toFixed(0)} KiB, Node ABI ${process.versions.modules})`);
