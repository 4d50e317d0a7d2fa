#!/usr/bin/env node
// Load test of the example server (npm run example:load): starts the server in a child process on a free
// loopback port, runs 1, 8 and 32 concurrent streams (each client sends `rounds` requests back to back),
// prints tokens/s, time to first token and inter-token latency (p50/p99) and the server's event-loop delay
// p99, and beside it the offline batched forward of the same model (no HTTP) at 8 sequences. Stops by itself.
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openModel, DEFAULT_CONFIG, encode } from './model.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const weights = path.join(here, 'weights.safetensors');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const MAX_TOKENS = arg('tokens', 32);
const ROUNDS = arg('rounds', 2);
const LEVELS = [1, 8, 32];

const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

function stream(url, prompt) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const times = [];
    const req = http.request(`${url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return resolve({ status: res.statusCode, times });
      }
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (c) => {
        buf += c;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (ev.startsWith('data: ')) times.push(performance.now() - t0);
        }
      });
      res.on('end', () => resolve({ status: 200, times }));
    });
    req.on('error', reject);
    req.end(JSON.stringify({ prompt, maxTokens: MAX_TOKENS }));
  });
}

const getJson = (url) => new Promise((resolve, reject) => {
  http.get(url, (res) => {
    let b = '';
    res.on('data', (c) => (b += c));
    res.on('end', () => resolve(JSON.parse(b)));
  }).on('error', reject);
});

async function level(url, c) {
  await getJson(`${url}/stats?reset=1`);
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: c }, async (_, i) => {
    const out = [];
    for (let r = 0; r < ROUNDS; r++) out.push(await stream(url, `request ${i}.${r}: the quick brown fox`));
    return out;
  }));
  const wall = (performance.now() - t0) / 1000;
  const all = results.flat();
  const stats = await getJson(`${url}/stats`);
  const ttft = all.filter((r) => r.times.length).map((r) => r.times[0]);
  const itl = all.flatMap((r) => r.times.slice(1).map((t, j) => t - r.times[j]));
  const tokens = all.reduce((a, r) => a + r.times.length, 0);
  return { streams: c, requests: all.length, rejected: all.filter((r) => r.status !== 200).length, tokens, tokPerS: tokens / wall, ttftP50: pct(ttft, 50), ttftP99: pct(ttft, 99), itlP50: pct(itl, 50), itlP99: pct(itl, 99), loopP99: stats.eventLoopDelayP99Ms };
}

// The same model's batched decode with no server around it: B sequences prefilled together, then
// MAX_TOKENS - 1 decode steps timed; the best of 3 runs after a warm-up run (as the server is warm).
function offline(B) {
  const model = openModel(weights, DEFAULT_CONFIG, { maxSeqs: B });
  let best = 0;
  for (let run = 0; run < 4; run++) {
    const seqs = Array.from({ length: B }, () => model.newSequence());
    let last = model.forward(seqs, seqs.map((_, i) => encode(`request ${i}.0: the quick brown fox`)));
    const t0 = performance.now();
    for (let s = 1; s < MAX_TOKENS; s++) last = model.forward(seqs, last.map((t) => [t]));
    if (run > 0) best = Math.max(best, (B * (MAX_TOKENS - 1)) / ((performance.now() - t0) / 1000));
    for (const s of seqs) model.release(s);
  }
  return best;
}

const child = spawn(process.execPath, [path.join(here, 'server.mjs'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((resolve, reject) => {
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => { const m = /listening (\S+)/.exec(d); if (m) resolve(m[1]); });
  child.on('exit', (code) => reject(new Error(`server exited (${code})`)));
});
try {
  await level(url, 1); // warm-up
  const rows = [];
  for (const c of LEVELS) rows.push(await level(url, c));
  const off = offline(8);
  const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  console.log(`\nexample server, ${MAX_TOKENS} tokens per request, ${ROUNDS} requests per client, model ${DEFAULT_CONFIG.hidden} hidden x ${DEFAULT_CONFIG.pattern.length * DEFAULT_CONFIG.repeats} layers`);
  console.log('streams  requests  503s  tokens  tok/s   TTFT p50/p99 ms   ITL p50/p99 ms   loop delay p99 ms');
  for (const r of rows) {
    console.log(`${String(r.streams).padStart(7)}  ${String(r.requests).padStart(8)}  ${String(r.rejected).padStart(4)}  ${String(r.tokens).padStart(6)}  ${f(r.tokPerS).padStart(6)}   ${f(r.ttftP50).padStart(6)} / ${f(r.ttftP99).padEnd(7)}  ${f(r.itlP50).padStart(6)} / ${f(r.itlP99).padEnd(7)}  ${f(r.loopP99, 2)}`);
  }
  const at8 = rows.find((r) => r.streams === 8);
  console.log(`offline batched forward, 8 sequences: ${f(off)} tok/s; the server at 8 streams: ${f(at8.tokPerS)} tok/s (${f((100 * at8.tokPerS) / off, 0)}%)`);
} finally {
  child.kill();
}
