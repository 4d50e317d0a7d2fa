#!/usr/bin/env node
// prepare (npm install in this folder, npm pack): compiles the TypeScript into dist/. Where the compiler is
// not installed yet (a folder installed with `npm install <folder>`, whose dependencies npm does not
// install), it says so and leaves it to the install script, which installs them and comes back here.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let tsc;
try {
  tsc = createRequire(path.join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.log('seqkern: the TypeScript compiler is not installed here yet; dist/ is built by the install step.');
  process.exit(0);
}
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
