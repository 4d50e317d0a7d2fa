// `seqkern bench --async`: what an Async call costs over its sync form (issue 15.1), and a chained decode
// step against the sum of its ops (15.2). Cases: a delta decode step (N·HV = 64, K = V = 128) and an
// attention decode (T = 1, S = 1024), each timed sync and async back to back, and spaced by ~1 ms of JS
// work (a server's event loop between steps: the pool's threads and the dispatcher have gone to sleep);
// then 8 layers of a hybrid decode step (6 delta steps + 2 attention decodes) as a chain.run(), as
// chain.runSync(), and as the 8 sync calls; and 8 serving ops of a Gated DeltaNet layer's decode step (rmsNorm,
// the q/k/v projections, the conv update of v on a conv-state pool, the delta step on a state pool, the gated
// norm, the out projection; each op's output the next one's input) the same three ways. Medians of per-call
// wall times; the forms compared are timed interleaved, call by call. Last, fs.readFile of a small file
// idle and while 6 async prefills are queued (seqkern's queue holds no libuv thread: 15.1).
import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import {
  attention, attentionAsync, causalConv1dUpdate, chain, gatedDeltaRule, gatedDeltaRuleAsync, gatedDeltaRuleStep, gatedDeltaRuleStepAsync, info, linear, rand, randn,
  rmsNorm, rmsNormGated, setNumThreads, Tensor, zeros,
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

/** A recurrent prefill of T tokens, H = HV heads, K = V: the queued work of the readFile probe (and its test). */
export function deltaPrefill(T: number, H: number, K: number, seed: number) {
  return {
    q: randn([1, T, H, K], { seed, std: 0.5 }), k: randn([1, T, H, K], { seed: seed + 1, std: 0.5 }), v: randn([1, T, H, K], { seed: seed + 2 }),
    beta: rand([1, T, H], { seed: seed + 3, low: 0.1, high: 0.9 }), g: rand([1, T, H], { seed: seed + 4, low: -0.2, high: -0.01 }),
    qkL2Norm: true, algorithm: 'recurrent' as const,
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
  // A chain against its ops' sync calls: back to back (also runSync()), then 1 ms of JS apart.
  const timeChain = async (name: string, syncs: () => unknown, c: ReturnType<typeof chain>) => {
    const [cs, crs, cr] = await time([syncs, () => c.runSync(), () => c.run()], s, 0);
    add(name, 'sum of 8 syncs', cs);
    add(name, 'chain.runSync()', crs);
    add(name, 'chain.run()', cr);
    const [css, csr] = await time([syncs, () => c.run()], s, 1);
    add(name, 'sum of 8 syncs, 1 ms apart', css);
    add(name, 'chain.run(), 1 ms apart', csr);
  };

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
  await timeChain(cc, syncs, c);

  // 8 serving ops of one GDN layer's decode step, N = 8 streams in a pool of 16 slots, hidden 1024,
  // H = HV = 8, K = V = 128, bfloat16 weights; the chain's ops read the outputs of the ops before them.
  const N = 8, dm = 1024, H = 8, Kd = 128, W = 4;
  const slots = Int32Array.from({ length: N }, (_, n) => 2 * n + 1);
  const x = randn([N, dm], { seed: 20 });
  const wt = (rows: number, seed: number) => randn([rows, dm], { seed, std: 1 / Math.sqrt(dm), dtype: 'bfloat16' });
  const L = {
    norm: rand([dm], { seed: 21, low: 0.5, high: 1.5 }), wq: wt(H * Kd, 22), wk: wt(H * Kd, 23), wv: wt(H * Kd, 24),
    conv: randn([H * Kd, W], { seed: 25, std: 0.5 }), convPool: zeros([16, H * Kd, W - 1]), deltaPool: zeros([16, H, Kd, Kd]),
    beta: rand([N, H], { seed: 26, low: 0.1, high: 0.9 }), g: rand([N, H], { seed: 27, low: -0.2, high: -0.01 }),
    z: randn([N * H, Kd], { seed: 28 }), oNorm: rand([Kd], { seed: 29, low: 0.5, high: 1.5 }),
    wo: randn([dm, H * Kd], { seed: 30, std: 1 / Math.sqrt(H * Kd), dtype: 'bfloat16' }),
  };
  const view = (t: Tensor, shape: number[]) => new Tensor(t.data, shape, t.dtype);
  // The same 8 ops, given `call` (the sync op itself, or a chain's add).
  const layer = (call: (name: string, ...args: unknown[]) => unknown) => {
    const h = call('rmsNorm', x, L.norm) as Tensor;
    const q = call('linear', h, L.wq) as Tensor, k = call('linear', h, L.wk) as Tensor, v = call('linear', h, L.wv) as Tensor;
    const vc = call('causalConv1dUpdate', v, L.convPool, L.conv, { activation: 'silu', stateIndices: slots }) as Tensor;
    const o = (call('gatedDeltaRuleStep', {
      q: view(q, [N, H, Kd]), k: view(k, [N, H, Kd]), v: view(vc, [N, H, Kd]), beta: L.beta, g: L.g,
      state: L.deltaPool, stateIndices: slots, qkL2Norm: true,
    }) as { o: Tensor }).o;
    const n = call('rmsNormGated', view(o, [N * H, Kd]), L.z, L.oNorm) as Tensor;
    return call('linear', view(n, [N, H * Kd]), L.wo);
  };
  const SYNC: Record<string, (...args: never[]) => unknown> = { rmsNorm, linear, causalConv1dUpdate, gatedDeltaRuleStep, rmsNormGated };
  const serving = chain();
  layer((name, ...args) => (serving.add as (n: string, ...a: unknown[]) => unknown)(name, ...args));
  const sc = 'chain of 8 serving ops (one GDN layer, N=8)';
  const servingSyncs = () => layer((name, ...args) => (SYNC[name] as (...a: unknown[]) => unknown)(...args));
  await timeChain(sc, servingSyncs, serving);

  // fs.readFile of this module's file, idle and while 6 async prefills (T = 4096, H = 4, K = V = 64,
  // recurrent) wait on seqkern's queue: the reads made while some prefill is still pending.
  const file = fileURLToPath(import.meta.url);
  const px = deltaPrefill(4096, 4, 64, 7);
  gatedDeltaRule(px);
  const idle: number[] = [];
  const busyReads: number[] = [];
  const readEnd = performance.now() + Math.max(1, s) * 2000;
  while (performance.now() < readEnd || busyReads.length < 20) {
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      await readFile(file);
      idle.push((performance.now() - t0) * 1000);
    }
    let pending = 6;
    const queued = Array.from({ length: 6 }, () => gatedDeltaRuleAsync(px).then(() => { pending--; }));
    while (pending > 0) {
      const t0 = performance.now();
      await readFile(file);
      if (pending > 0) busyReads.push((performance.now() - t0) * 1000);
    }
    await Promise.all(queued);
  }
  const rc = 'fs.readFile (small file)';
  add(rc, 'idle', { medianUs: median(idle), samples: idle.length });
  add(rc, 'with 6 async prefills queued', { medianUs: median(busyReads), samples: busyReads.length });

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
    `chain of 8 serving ops / sum of its syncs (target <= 1.2): ${(get(sc, 'chain.run()') / get(sc, 'sum of 8 syncs')).toFixed(2)} back to back, ` +
      `${(get(sc, 'chain.run(), 1 ms apart') / get(sc, 'sum of 8 syncs, 1 ms apart')).toFixed(2)} spaced`,
    `fs.readFile with 6 async prefills queued / idle (target <= 2): ${(get(rc, 'with 6 async prefills queued') / get(rc, 'idle')).toFixed(2)}`,
    '',
  ];
  out(lines.join('\n'));
  if (a.json) {
    writeFileSync(a.json, `${JSON.stringify({ machine: i, rows }, null, 2)}\n`);
    err(`seqkern: wrote ${a.json}\n`);
  }
  return 0;
}
