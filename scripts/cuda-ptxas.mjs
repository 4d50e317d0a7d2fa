#!/usr/bin/env node
// CI check of the CUDA kernels without a GPU: compiles every cuda/*.cu for sm_80 and sm_90 with
// `nvcc -Xptxas -v`, prints registers, shared memory and spills per kernel, and exits 1 on a compile error or
// on any register spill (every kernel in cuda/ is a main kernel: a spill there is a bug to fix, not a note).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const files = readdirSync(path.join(root, 'cuda')).filter((f) => f.endsWith('.cu')).sort();
let bad = 0;
for (const arch of ['80', '90']) {
  for (const f of files) {
    const r = spawnSync('nvcc', ['-std=c++17', '-O3', `-arch=sm_${arch}`, '-Xptxas', '-v', '-c', path.join('cuda', f), '-o', '/dev/null'], { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) {
      console.log(`FAIL ${f} sm_${arch}: nvcc exited ${r.status}\n${r.stderr}`);
      bad++;
      continue;
    }
    let kernel = '?';
    for (const line of r.stderr.split('\n')) {
      const k = line.match(/Compiling entry function '([^']+)'/);
      if (k) kernel = spawnSync('c++filt', [k[1]], { encoding: 'utf8' }).stdout.trim().replace(/^sk_cuda::\(anonymous namespace\)::/, '');
      const s = line.match(/(\d+) bytes spill stores, (\d+) bytes spill loads/);
      if (s && (s[1] !== '0' || s[2] !== '0')) {
        console.log(`SPILL sm_${arch} ${f} ${kernel}: ${line.trim()}`);
        bad++;
      }
      const u = line.match(/Used (\d+) registers.*/);
      if (u) console.log(`sm_${arch} ${f.padEnd(14)} ${kernel.slice(0, 90).padEnd(90)} ${u[0]}`);
    }
  }
}
console.log(bad ? `${bad} problem(s)` : 'every kernel compiles for sm_80 and sm_90 without spills');
process.exit(bad ? 1 : 0);
