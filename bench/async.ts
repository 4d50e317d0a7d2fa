// `seqkern bench --async`: what an Async call costs over its sync form (issue 15.1), and a chained decode
// step against the sum of its ops (15.2). Cases: a delta decode step (N·HV = 64, K = V = 128) and an
// attention decode (T = 1, S = 1024), each timed sync and async back to back, and spaced by ~1 ms of JS
// work (a server's event loop between steps: the pool's threads and the dispatcher have gone to sleep);
// then 8 layers of a hybrid decode step (6 delta steps + 2 attention decodes) as a chain.run(), as
// chain.runSync(), and as the 8 sync calls. Medians of per-call wall times; the forms compared are timed
// interleaved, call by call.
import { writeFileSync } from 'node:fs';
import {
  attention, attentionAsync, chain, gatedDeltaRuleStep, gatedDeltaRuleStepAsync, info, rand, randn, setNumThreads, zeros,
} from '../src/index.js';

export interface AsyncBenchRow {
  case: string;
  mode: string;
  medianUs: number;
  samples: number;
}

export interface AsyncBenchArgs {
  seconds: number;
  threads?: number | undefined;
  json?: string | undefined;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[s.length >> 1] : NaN;
};

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* JS work between calls */ }
}

/**
 * Per-call times (us) of each of fs over ~seconds, after a warm-up, interleaved call by call (a machine that
 * drifts mid-run shifts them all alike); `gapMs` of JS work before each timed call.
 */
async function time(fs: (() => unknown)[], seconds: number, gapMs: number): Promise<{ medianUs: number; samples: number }[]> {
  for (let i = 0; i < 20; i++) for (const f of fs) await f();
  const xs: number[][] = fs.map(() => []);
  const end = performance.now() + seconds * 1000 * fs.length;
  while (performance.now() < end || xs[0].length < 20) {
    for (let j = 0; j < fs.length; j++) {
      if (gapMs > 0) busy(gapMs);
      const t0 = performance.now();
      await fs[j]();
      xs[j].push((performance.now() - t0) * 1000);
    }
  }
  return xs.map((x) => ({ medianUs: median(x), samples: x.length }));
}

function deltaStep(N: number, H: number, K: number, seed: number) {
  return {
    q: randn([N, H, K], { seed, std: 0.5 }), k: randn([N, H, K], { seed: seed + 1, std: 0.5 }), v: randn([N, H, K], { seed: seed + 2 }),
    beta: rand([N, H], { seed: seed + 3, low: 0.1, high: 0.9 }), g: rand([N, H], { seed: seed + 4, low: -0.2, high: -0.01 }),
    state: zeros([N, H, K, K]), qkL2Norm: true,
  };
}

export async function runAsyncBench(a: AsyncBenchArgs, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  if (a.threads !== undefined) setNumThreads(a.threads);
  const i = info();
  if (i.backend !== 'cpu') {
    err('seqkern: bench --async needs the native addon\n');
    return 1;
  }
  const rows: AsyncBenchRow[] = [];
  const add = (c: string, mode: string, r: { medianUs: number; samples: number }) => {
    rows.push({ case: c, mode, ...r });
    err(`  ${c} ${mode}: ${r.medianUs.toFixed(1)} us\n`);
  };
  const s = a.seconds;

  // Delta decode step, N·HV = 64 (N = 8 streams, HV = H = 8), K = V = 128; the state in place.
  const d = deltaStep(8, 8, 128, 1);
  const dc = 'delta step N=8 HV=8 K=V=128';
  const [ds, da] = await time([() => gatedDeltaRuleStep(d), () => gatedDeltaRuleStepAsync(d)], s, 0);
  add(dc, 'sync', ds);
  add(dc, 'async', da);
  const [dss, dsa] = await time([() => gatedDeltaRuleStep(d), () => gatedDeltaRuleStepAsync(d)], s, 1);
  add(dc, 'sync, 1 ms apart', dss);
  add(dc, 'async, 1 ms apart', dsa);

  // Attention decode: one query against S = 1024 keys, Hq = Hk = 8, D = 128.
  const q = randn([1, 1, 8, 128], { seed: 2 }), k = randn([1, 1024, 8, 128], { seed: 3 }), v = randn([1, 1024, 8, 128], { seed: 4 });
  const ac = 'attention decode S=1024 H=8 D=128';
  const [as, aa] = await time([() => attention(q, k, v), () => attentionAsync(q, k, v)], s, 0);
  add(ac, 'sync', as);
  add(ac, 'async', aa);
  const [ass, asa] = await time([() => attention(q, k, v), () => attentionAsync(q, k, v)], s, 1);
  add(ac, 'sync, 1 ms apart', ass);
  add(ac, 'async, 1 ms apart', asa);

  // 8 layers of a hybrid decode step: delta, delta, delta, attention, twice; each op's own buffers.
  const layers = Array.from({ length: 6 }, (_, l) => deltaStep(8, 8, 128, 10 * l + 5));
  const c = chain();
  const sync: (() => unknown)[] = [];
  for (let l = 0, di = 0; l < 8; l++) {
    if (l % 4 === 3) {
      c.op('attention', q, k, v);
      sync.push(() => attention(q, k, v));
    } else {
      const x = layers[di++];
      c.op('gatedDeltaRuleStep', x);
      sync.push(() => gatedDeltaRuleStep(x));
    }
  }
  const cc = 'chain of 8 (6 delta steps + 2 attention decodes)';
  const syncs = () => { for (const f of sync) f(); };
  const [cs, crs, cr] = await time([syncs, () => c.runSync(), () => c.run()], s, 0);
  add(cc, 'sum of 8 syncs', cs);
  add(cc, 'chain.runSync()', crs);
  add(cc, 'chain.run()', cr);
  const [css, csr] = await time([syncs, () => c.run()], s, 1);
  add(cc, 'sum of 8 syncs, 1 ms apart', css);
  add(cc, 'chain.run(), 1 ms apart', csr);

  const get = (cs: string, m: string) => rows.find((r) => r.case === cs && r.mode === m)!.medianUs;
  const lines = [
    `seqkern bench --async (${i.simd}, ${i.threads} threads; medians of per-call wall time, us)`,
    '',
    `${'case'.padEnd(52)} ${'mode'.padEnd(28)} ${'median us'.padStart(10)} ${'samples'.padStart(8)}`,
    ...rows.map((r) => `${r.case.padEnd(52)} ${r.mode.padEnd(28)} ${r.medianUs.toFixed(1).padStart(10)} ${String(r.samples).padStart(8)}`),
    '',
    `async overhead (target <= 50 us): delta step ${(get(dc, 'async') - get(dc, 'sync')).toFixed(1)} us back to back, ` +
      `${(get(dc, 'async, 1 ms apart') - get(dc, 'sync, 1 ms apart')).toFixed(1)} us spaced; attention decode ` +
      `${(get(ac, 'async') - get(ac, 'sync')).toFixed(1)} us back to back, ${(get(ac, 'async, 1 ms apart') - get(ac, 'sync, 1 ms apart')).toFixed(1)} us spaced`,
    `chain of 8 / sum of its syncs (target <= 1.2): ${(get(cc, 'chain.run()') / get(cc, 'sum of 8 syncs')).toFixed(2)} back to back, ` +
      `${(get(cc, 'chain.run(), 1 ms apart') / get(cc, 'sum of 8 syncs, 1 ms apart')).toFixed(2)} spaced`,
    '',
  ];
  out(lines.join('\n'));
  if (a.json) {
    writeFileSync(a.json, `${JSON.stringify({ machine: i, rows }, null, 2)}\n`);
    err(`seqkern: wrote ${a.json}\n`);
  }
  return 0;
}
