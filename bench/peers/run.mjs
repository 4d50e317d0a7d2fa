#!/usr/bin/env node
// Peers side by side (DESIGN.md 8, issue 8 part 7): onnxruntime-node's Softmax and Attention on the same
// inputs as `seqkern bench`, timed the same way in the same process, with seqkern's figures beside them.
//
//   cd bench/peers && ONNXRUNTIME_NODE_INSTALL=skip npm install && node run.mjs [--json FILE]
//
// onnxruntime-node is this folder's own dependency, not seqkern's (ONNXRUNTIME_NODE_INSTALL=skip: its CPU
// library ships inside the npm package; the install script would otherwise only look for CUDA binaries).
// seqkern is imported from the repository's build (../../dist/src/index.js: `npx tsc -p tsconfig.json` in
// the root, with the addon built by `npm install`).
//
// What runs:
// - softmax: the shapes of seqkern's softmax suite (bench/suites.ts SUITE_SOFTMAX: rows of 1K, 32K, 1M floats
//   hot, and the 1 GiB batch of 32K rows), x from bench/inputs.ts softmaxInput with the same seed, so the
//   bytes are those `seqkern bench` times. seqkern: softmaxInto(x, y) (its default algorithm, 'auto'; the table says what
//   it ran) into a buffer
//   allocated once; ORT: an ONNX Softmax (opset 13, axis -1) with the output preallocated likewise.
// - attention: seqkern's ungated attention cases (causal prefill B=1, H=8, T=4096, D=128; the decode step
//   T=1, S=32768, Hq=32, Hk=8), q/k/v from bench/inputs.ts attentionInputs. ORT: an ONNX Attention (opset 23)
//   in its 3-D layout [B, T, H·D], which is the memory layout of seqkern's [B, T, H, D] tensors, so the same
//   buffers feed both; if the runtime lacks it, com.microsoft MultiHeadAttention (Hq = Hk only). The table
//   says which ran. ONNX's is_causal aligns the mask top-left, seqkern's bottom-right (FlashAttention's); they
//   agree when T = S, and for the decode step (T = 1, every key visible) ORT runs with is_causal = 0.
// - Both runtimes use the same number of threads (default: one per core; ORT intraOpNumThreads, seqkern's
//   pool). Each call is timed with process.hrtime after a warm-up call (calls under a millisecond are
//   batched), for --seconds per runtime and case and at least --runs samples; the table shows medians.
//   ORT's session.run is async (its Node binding defers to setImmediate) and is awaited; seqkern's call is
//   synchronous and awaited too, so both pay the same loop overhead.
// - Agreement: ORT's output against seqkern's, max relative error (softmax: elementwise |a - b| / |b|, every
//   output being positive; attention: max |a - b| / max |b|, outputs crossing zero).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { attentionModel, mhaModel, softmaxModel } from './onnx.mjs';
import { gemmModel } from './onnx.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');

const USAGE = `usage: node run.mjs [flags]     (in bench/peers)

  --suite softmax|attention|linear|all   which cases (default all)
  --no-big                        leave out the 1 GiB softmax batch (it needs about 4 GiB of memory)
  --threads N                     threads for both runtimes (default: one per core, ${os.availableParallelism()} here)
  --seconds S                     time per runtime and case (default 1)
  --runs N                        at least this many timed samples (default 5)
  --seed N                        input seed, as seqkern bench --seed (default 1)
  --json FILE                     write every number, with seqkern's info() and ORT's version
`;

const INSTALL = `onnxruntime-node is not installed in bench/peers. It is an optional peer, not a dependency of seqkern:

  cd bench/peers && ONNXRUNTIME_NODE_INSTALL=skip npm install && node run.mjs

(ONNXRUNTIME_NODE_INSTALL=skip: the CPU library ships inside the npm package; nothing else is downloaded.)
`;

function fail(message, code = 2) {
  process.stderr.write(`peers: ${message}\n`);
  process.exit(code);
}

function parse() {
  let v;
  try {
    ({ values: v } = parseArgs({
      options: {
        suite: { type: 'string' },
        'no-big': { type: 'boolean' },
        threads: { type: 'string' },
        seconds: { type: 'string' },
        runs: { type: 'string' },
        seed: { type: 'string' },
        json: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    fail(`${e.message}\n\n${USAGE}`);
  }
  if (v.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name, x, d) => {
    if (x === undefined) return d;
    if (!/^\d+$/.test(x) || Number(x) < 1) fail(`--${name}: expected a positive integer, got '${x}'`);
    return Number(x);
  };
  const suite = v.suite ?? 'all';
  if (!['softmax', 'attention', 'linear', 'all'].includes(suite)) fail(`--suite: expected softmax, attention, linear or all, got '${suite}'`);
  const seconds = v.seconds === undefined ? 1 : Number(v.seconds);
  if (!(seconds > 0 && seconds <= 600)) fail(`--seconds: expected a number in (0, 600], got '${v.seconds}'`);
  if (v.json === '') fail('--json: expected a file name');
  return {
    suite,
    big: v['no-big'] !== true,
    threads: int('threads', v.threads, os.availableParallelism()),
    seconds,
    runs: int('runs', v.runs, 5),
    seed: int('seed', v.seed, 1),
    json: v.json,
  };
}

/** onnxruntime-node from this folder, or null (with the reason) when it is not installed. */
function loadOrt() {
  const require = createRequire(path.join(HERE, 'package.json'));
  try {
    return { ort: require('onnxruntime-node') };
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && /onnxruntime-node/.test(e.message)) return { ort: null };
    return { ort: null, error: e };
  }
}

/** seqkern's public API and the bench pieces the peers share, from the repository's build. */
async function loadSeqkern() {
  const url = (p) => pathToFileURL(path.join(ROOT, 'dist', p)).href;
  try {
    const [api, inputs, suites, formulas] = await Promise.all([
      import(url('src/index.js')),
      import(url('bench/inputs.js')),
      import(url('bench/suites.js')),
      import(url('bench/formulas.js')),
    ]);
    return { api, inputs, suites, formulas };
  } catch (e) {
    if (e && e.code === 'ERR_MODULE_NOT_FOUND') {
      fail(`seqkern is not built (${e.message}).\n  fix: in ${ROOT}: npm install && npx tsc -p tsconfig.json`, 1);
    }
    throw e;
  }
}

// ---- timing ----

function quantile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

const now = () => process.hrtime.bigint();
const since = (t) => Number(now() - t) / 1e9;

/**
 * Median seconds per call of `fn` (sync or async, awaited either way): a warm-up call, then samples for
 * `seconds` and at least `runs` of them; calls under a millisecond are batched so a sample is about 1 ms.
 */
async function timeIt(fn, { seconds, runs }) {
  await fn();
  let t = now();
  await fn();
  const once = since(t);
  const inner = Math.max(1, Math.min(10_000, Math.ceil(1e-3 / Math.max(once, 1e-9))));
  const samples = [];
  const start = now();
  while (samples.length < runs || (since(start) < seconds && samples.length < 10_000)) {
    t = now();
    for (let i = 0; i < inner; i++) await fn();
    samples.push(since(t) / inner);
  }
  const s = [...samples].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), min: s[0], max: s[s.length - 1], q1: quantile(s, 0.25), q3: quantile(s, 0.75), samples: s.length, inner };
}

/** Runs `fn`; a SeqkernError "not implemented yet" (an op still being written) becomes { skipped }. */
async function seqkernSide(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Error && /not implemented/i.test(e.message)) return { skipped: e.message };
    return { failed: e instanceof Error ? e.message : String(e) };
  }
}

// ---- agreement ----

/** max |a - b| / |b| over all elements (b > 0: softmax outputs). */
function maxRelError(a, b) {
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.abs(b[i]);
    if (d > m || Number.isNaN(d)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** max |a - b| / max |b|. */
function maxNormError(a, b) {
  let d = 0;
  let s = 0;
  for (let i = 0; i < b.length; i++) {
    const x = Math.abs(a[i] - b[i]);
    if (x > d || Number.isNaN(x)) d = Number.isNaN(x) ? Infinity : x;
    s = Math.max(s, Math.abs(b[i]));
  }
  return s > 0 ? d / s : d;
}

// ---- formatting ----

function sig(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  if (x === 0) return '0';
  const d = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return x.toFixed(Math.min(d, 4));
}

function bytesText(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[u]}`;
}

function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((x, i) => (i < 1 ? x.padEnd(w[i]) : x.padStart(w[i]))).join('  ').trimEnd();
  return [line(header), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

const progress = (s) => process.stderr.write(`${s}\n`);

// ---- the cases ----

async function ortSession(ort, bytes, threads, extra = {}) {
  return ort.InferenceSession.create(bytes, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    ...extra,
  });
}

/**
 * Times ORT two ways on `model`: end to end (session.run awaited, as a Node caller sees it: the binding's
 * setImmediate hop, input checks and the copy of the output into a fresh ArrayBuffer included), and the
 * kernel alone, from ORT's own profiler (a second session with enableProfiling: the node's kernel_time
 * events, warm-up run dropped). Returns { e2e, kernel } or throws if the model does not load or run.
 */
async function timeOrt(ort, model, feeds, fetches, o) {
  const session = await ortSession(ort, model.bytes, o.threads);
  let last;
  let e2e;
  try {
    e2e = await timeIt(async () => {
      last = await session.run(feeds, fetches);
    }, o);
  } finally {
    await session.release();
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'seqkern-peers-'));
  let kernel;
  try {
    const profiled = await ortSession(ort, model.bytes, o.threads, { enableProfiling: true, profileFilePrefix: path.join(dir, 'ort') });
    const runs = Math.max(o.runs, Math.min(200, Math.round(o.seconds / e2e.median)));
    for (let i = 0; i <= runs; i++) await profiled.run(feeds, fetches);
    profiled.endProfiling();
    await profiled.release();
    const events = [];
    for (const f of readdirSync(dir)) {
      for (const e of JSON.parse(readFileSync(path.join(dir, f), 'utf8'))) {
        if (e.cat === 'Node' && typeof e.name === 'string' && e.name.endsWith('_kernel_time')) events.push(e);
      }
    }
    events.sort((a, b) => a.ts - b.ts);
    const t = events.slice(1).map((e) => e.dur / 1e6).sort((a, b) => a - b);
    if (t.length) kernel = { median: quantile(t, 0.5), min: t[0], max: t[t.length - 1], samples: t.length, source: 'ORT profiler, node kernel_time' };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { e2e, kernel: kernel ?? null, last };
}

async function softmaxCases(ctx) {
  const { ort, sk, o } = ctx;
  const { softmaxInto, zeros } = sk.api;
  const out = [];
  for (const shape of sk.suites.SUITE_SOFTMAX) {
    if (!shape.hot && !o.big) continue;
    const c = { rows: shape.rows, cols: shape.cols, dtype: 'float32' };
    const w = sk.formulas.softmaxWork(c);
    const name = `softmax R${c.rows} C${c.cols}${shape.hot ? ' (hot)' : ''}`;
    progress(`${name}: inputs (${bytesText(w.dataBytes)}) ...`);
    const x = sk.inputs.softmaxInput(c, o.seed);
    const y = zeros([c.rows, c.cols], 'float32');

    progress(`${name}: seqkern ...`);
    const seq = await seqkernSide(() => timeIt(() => softmaxInto(x, y), o));
    // What 'auto' ran for this batch: two-pass when input + output stream from memory, else the in-cache choice.
    const choice = sk.api.softmaxAutoChoice();
    const algorithm = 2 * w.dataBytes > choice.streamAboveBytes ? choice.streaming : choice.inCache ?? 'two-pass';

    const model = softmaxModel({ cols: c.cols });
    progress(`${name}: onnxruntime ${model.op} ...`);
    const xt = new ort.Tensor('float32', x.data, [c.rows, c.cols]);
    const yt = new ort.Tensor('float32', new Float32Array(c.rows * c.cols), [c.rows, c.cols]);
    const { e2e, kernel, last } = await timeOrt(ort, model, { x: xt }, { y: yt }, o);

    let err = null;
    if (seq.median !== undefined) {
      progress(`${name}: comparing ...`);
      err = maxRelError(last.y.data, y.data);
    }
    out.push({
      op: 'softmax',
      name,
      shape: c,
      hot: shape.hot,
      bytes: w.bytes,
      dataBytes: w.dataBytes,
      seqkern: { algorithm, ...seq, gbs: seq.median ? w.bytes / seq.median / 1e9 : null },
      ort: {
        op: model.op,
        ...e2e,
        gbs: w.bytes / e2e.median / 1e9,
        kernel: kernel && { ...kernel, gbs: w.bytes / kernel.median / 1e9 },
      },
      speedup: seq.median ? e2e.median / seq.median : null,
      speedupKernel: seq.median && kernel ? kernel.median / seq.median : null,
      error: { kind: 'max |ort - seqkern| / |seqkern|', value: err },
    });
  }
  return out;
}

async function attentionCases(ctx) {
  const { ort, sk, o } = ctx;
  const { attention } = sk.api;
  const out = [];
  for (const a of sk.suites.SUITE_ATTENTION) {
    if (a.gate !== 'none') continue; // ONNX Attention has no output gate
    const c = { ...a, dtype: 'float32' };
    const w = sk.formulas.attentionWork(c);
    const name = `attention B${c.B} T${c.T} S${c.S} H${c.Hq}/${c.Hk} D${c.D}${c.causal ? ' causal' : ''}`;
    progress(`${name}: inputs ...`);
    const { q, k, v } = sk.inputs.attentionInputs(c, o.seed);

    progress(`${name}: seqkern ...`);
    let o1;
    const seq = await seqkernSide(() =>
      timeIt(() => {
        o1 = attention(q, k, v, { causal: c.causal }).o;
      }, o),
    );

    // ONNX aligns is_causal top-left: the same mask as seqkern's bottom-right when T = S; a decode step
    // (T = 1) sees every key, which is is_causal = 0.
    const spec = { B: c.B, T: c.T, S: c.S, Hq: c.Hq, Hk: c.Hk, D: c.D, Dv: c.Dv, causal: c.causal && c.T !== 1 };
    let session;
    let model;
    const tried = [];
    const builders = c.causal && c.T !== c.S && c.T !== 1 ? [] : [attentionModel, mhaModel];
    if (!builders.length) tried.push('ONNX has no bottom-right causal mask for T != S');
    for (const build of builders) {
      try {
        model = build(spec);
        session = await ortSession(ort, model.bytes, o.threads);
        break;
      } catch (e) {
        tried.push(`${model ? model.op : build.name}: ${e.message.split('\n')[0]}`);
        session = undefined;
        model = undefined;
      }
    }
    let ortTime = null;
    let err = null;
    if (model) {
      await session.release();
      progress(`${name}: onnxruntime ${model.op} ...`);
      const feeds = {
        q: new ort.Tensor('float32', q.data, [c.B, c.T, c.Hq * c.D]),
        k: new ort.Tensor('float32', k.data, [c.B, c.S, c.Hk * c.D]),
        v: new ort.Tensor('float32', v.data, [c.B, c.S, c.Hk * c.Dv]),
      };
      const yt = new ort.Tensor('float32', new Float32Array(c.B * c.T * c.Hq * c.Dv), [c.B, c.T, c.Hq * c.Dv]);
      try {
        ortTime = await timeOrt(ort, model, feeds, { y: yt }, o);
        if (o1) err = maxNormError(ortTime.last.y.data, o1.data);
      } catch (e) {
        tried.push(`${model.op} run: ${e.message.split('\n')[0]}`);
      }
    }
    const { e2e, kernel } = ortTime ?? {};
    out.push({
      op: 'attention',
      name,
      shape: c,
      flops: w.flops,
      bytes: w.bytes,
      seqkern: { ...seq, gflops: seq.median ? w.flops / seq.median / 1e9 : null, gbs: seq.median ? w.bytes / seq.median / 1e9 : null },
      ort: e2e
        ? {
            op: model.op,
            ...e2e,
            gflops: w.flops / e2e.median / 1e9,
            gbs: w.bytes / e2e.median / 1e9,
            kernel: kernel && { ...kernel, gflops: w.flops / kernel.median / 1e9, gbs: w.bytes / kernel.median / 1e9 },
            tried,
          }
        : { op: null, failed: tried.join('; ') },
      speedup: seq.median && e2e ? e2e.median / seq.median : null,
      speedupKernel: seq.median && kernel ? kernel.median / seq.median : null,
      error: { kind: 'max |ort - seqkern| / max |seqkern|', value: err },
    });
  }
  return out;
}

// linear: the float32-weight cases of seqkern's linear suite (bench/suites.ts SUITE_LINEAR: GEMV 1 and 8 rows,
// GEMM 512 rows, 4096 -> 4096); seqkern: linear(x, weight, { out }) into a buffer allocated once; ORT: Gemm
// with transB = 1 on the same x and weight buffers (ORT's CPU Gemm has no bfloat16).
async function linearCases(ctx) {
  const { ort, sk, o } = ctx;
  const { linear, randn, zeros } = sk.api;
  const out = [];
  for (const s of sk.suites.SUITE_LINEAR) {
    const c = { ...s, dtype: 'float32' };
    const w = sk.formulas.linearWork(c);
    const name = `linear M${c.M} K${c.K} N${c.N}`;
    progress(`${name}: inputs ...`);
    const x = randn([c.M, c.K], { seed: o.seed });
    const weight = randn([c.N, c.K], { seed: o.seed + 1, std: 1 / Math.sqrt(c.K) });
    const y = zeros([c.M, c.N]);
    progress(`${name}: seqkern ...`);
    const seq = await seqkernSide(() => timeIt(() => linear(x, weight, { out: y }), o));
    const tried = [];
    let ortTime = null;
    let err = null;
    const model = gemmModel(c);
    try {
      const session = await ortSession(ort, model.bytes, o.threads);
      await session.release();
      progress(`${name}: onnxruntime ${model.op} ...`);
      const feeds = { a: new ort.Tensor('float32', x.data, [c.M, c.K]), b: new ort.Tensor('float32', weight.data, [c.N, c.K]) };
      const yt = new ort.Tensor('float32', new Float32Array(c.M * c.N), [c.M, c.N]);
      ortTime = await timeOrt(ort, model, feeds, { y: yt }, o);
      err = maxNormError(ortTime.last.y.data, y.data);
    } catch (e) {
      tried.push(`${model.op}: ${e.message.split('\n')[0]}`);
    }
    const { e2e, kernel } = ortTime ?? {};
    out.push({
      op: 'linear',
      name,
      shape: c,
      flops: w.flops,
      bytes: w.weightBytes,
      seqkern: { ...seq, gflops: seq.median ? w.flops / seq.median / 1e9 : null, gbs: seq.median ? w.weightBytes / seq.median / 1e9 : null },
      ort: e2e
        ? {
            op: model.op,
            ...e2e,
            gflops: w.flops / e2e.median / 1e9,
            gbs: w.weightBytes / e2e.median / 1e9,
            kernel: kernel && { ...kernel, gflops: w.flops / kernel.median / 1e9, gbs: w.weightBytes / kernel.median / 1e9 },
            tried,
          }
        : { op: null, failed: tried.join('; ') },
      speedup: seq.median && e2e ? e2e.median / seq.median : null,
      speedupKernel: seq.median && kernel ? kernel.median / seq.median : null,
      error: { kind: 'max |ort - seqkern| / max |seqkern|', value: err },
    });
  }
  return out;
}

function seqkernCell(r) {
  if (r.seqkern.skipped) return 'skipped';
  if (r.seqkern.failed) return 'FAILED';
  return sig(r.seqkern.median * 1e3);
}

const times = (x) => (x ? `${x.toFixed(2)}x` : '-');
const ortCell = (t) => (t && t.median ? sig(t.median * 1e3) : '-');

function report(rows, o, ortVersion) {
  const lines = [];
  const sm = rows.filter((r) => r.op === 'softmax');
  const at = rows.filter((r) => r.op === 'attention');
  if (sm.length) {
    lines.push(
      table(
        ['softmax, float32', 'data', 'seqkern (auto ran)', 'seqkern ms', 'GB/s', 'ORT run ms', 'ORT kernel ms', 'GB/s', 'vs run', 'vs kernel', 'max rel err'],
        sm.map((r) => [
          r.name.replace(/^softmax /, ''),
          bytesText(r.dataBytes),
          r.seqkern.algorithm,
          seqkernCell(r),
          sig(r.seqkern.gbs),
          ortCell(r.ort),
          ortCell(r.ort.kernel),
          sig(r.ort.kernel?.gbs),
          times(r.speedup),
          times(r.speedupKernel),
          r.error.value === null ? '-' : r.error.value.toExponential(1),
        ]),
      ),
    );
    lines.push(
      `seqkern: softmaxInto with its default algorithm ('auto': what it ran is shown), into an output allocated once. ORT: ${sm[0].ort.op}, output preallocated too.`,
      'GB/s: 2 reads + 1 write of the data (bench/formulas.ts softmaxWork) at the seqkern / ORT-kernel median.',
    );
  }
  if (at.length) {
    if (lines.length) lines.push('');
    lines.push(
      table(
        ['attention, float32', 'seqkern ms', 'GF/s', 'GB/s', 'ORT run ms', 'ORT kernel ms', 'GF/s', 'GB/s', 'vs run', 'vs kernel', 'max err'],
        at.map((r) => [
          r.name.replace(/^attention /, ''),
          seqkernCell(r),
          sig(r.seqkern.gflops),
          sig(r.seqkern.gbs),
          r.ort.failed ? 'FAILED' : ortCell(r.ort),
          ortCell(r.ort.kernel),
          sig(r.ort.kernel?.gflops),
          sig(r.ort.kernel?.gbs),
          times(r.speedup),
          times(r.speedupKernel),
          r.error.value === null ? '-' : r.error.value.toExponential(1),
        ]),
      ),
    );
    for (const r of at) if (r.ort.op) lines.push(`  ${r.name.replace(/^attention /, '')}: ORT ran ${r.ort.op}`);
    lines.push(
      'GF/s: unmasked (query, key) pairs x (2D + 2Dv), GB/s: q, k, v read + o written once (bench/formulas.ts',
      'attentionWork), the same counts for both. max err: max |ORT - seqkern| / max |seqkern|.',
    );
    for (const r of at) if (r.ort.failed) lines.push(`ORT failed on ${r.name}: ${r.ort.failed}`);
  }
  const li = rows.filter((r) => r.op === 'linear');
  if (li.length) {
    if (lines.length) lines.push('');
    lines.push(
      table(
        ['linear, float32', 'seqkern ms', 'GF/s', 'weight GB/s', 'ORT run ms', 'ORT kernel ms', 'GF/s', 'weight GB/s', 'vs run', 'vs kernel', 'max err'],
        li.map((r) => [
          r.name.replace(/^linear /, ''),
          seqkernCell(r),
          sig(r.seqkern.gflops),
          sig(r.seqkern.gbs),
          r.ort.failed ? 'FAILED' : ortCell(r.ort),
          ortCell(r.ort.kernel),
          sig(r.ort.kernel?.gflops),
          sig(r.ort.kernel?.gbs),
          times(r.speedup),
          times(r.speedupKernel),
          r.error.value === null ? '-' : r.error.value.toExponential(1),
        ]),
      ),
    );
    lines.push('seqkern: linear(x, weight, {out}); ORT: Gemm (transB = 1) on the same buffers. GF/s: 2MKN; weight GB/s: the weights once.');
    for (const r of li) if (r.ort.failed) lines.push(`ORT failed on ${r.name}: ${r.ort.failed}`);
  }
  lines.push(
    '',
    'ORT run: session.run awaited, as a Node caller sees it (setImmediate hop, input checks, and the output copied',
    'into a fresh ArrayBuffer, which the binding does even with a preallocated output). ORT kernel: the node\'s',
    'kernel_time from ORT\'s profiler (a second, profiled session). vs run / vs kernel: ORT time / seqkern time',
    '(seqkern\'s time is always its whole call from JavaScript).',
  );
  const notes = rows.filter((r) => r.seqkern.skipped || r.seqkern.failed);
  if (notes.length) {
    lines.push('');
    for (const r of notes) lines.push(`seqkern ${r.seqkern.skipped ? 'skipped' : 'FAILED'} on ${r.name}: ${r.seqkern.skipped ?? r.seqkern.failed}`);
  }
  lines.push('', `onnxruntime-node ${ortVersion}, ${o.threads} thread${o.threads > 1 ? 's' : ''} each; medians after a warm-up call.`);
  return lines.join('\n');
}

async function main() {
  const o = parse();
  const { ort, error } = loadOrt();
  if (!ort) {
    if (error) {
      process.stderr.write(`peers: onnxruntime-node is installed but did not load: ${error.message}\n\n${INSTALL}`);
      process.exitCode = 1;
    } else {
      process.stdout.write(INSTALL);
    }
    return;
  }
  const sk = await loadSeqkern();
  sk.api.setNumThreads(o.threads);
  const ortVersion = ort.env.versions?.node ?? ort.env.versions?.common ?? 'unknown';
  const ctx = { ort, sk, o };
  const rows = [];
  if (o.suite === 'all' || o.suite === 'softmax') rows.push(...(await softmaxCases(ctx)));
  if (o.suite === 'all' || o.suite === 'attention') rows.push(...(await attentionCases(ctx)));
  if (o.suite === 'all' || o.suite === 'linear') rows.push(...(await linearCases(ctx)));
  process.stdout.write(`${report(rows, o, ortVersion)}\n`);
  if (o.json) {
    const doc = {
      date: new Date().toISOString(),
      node: process.version,
      settings: o,
      seqkern: sk.api.info(),
      onnxruntime: { version: ortVersion, intraOpNumThreads: o.threads, interOpNumThreads: 1 },
      rows,
    };
    writeFileSync(o.json, `${JSON.stringify(doc, null, 2)}\n`);
    process.stderr.write(`peers: wrote ${o.json}\n`);
  }
}

await main();
