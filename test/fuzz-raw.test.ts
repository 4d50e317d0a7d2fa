// A fast-check fuzz of the raw addon (issue 13.7): every entry point (sync and async) called with its
// arguments broken one to three ways at once — fields missing or of the wrong type, huge, negative,
// fractional or NaN dims and numbers, short, long and detached buffers, outputs overlapping inputs, bad
// offsets, getters that throw or detach a buffer mid-parse, SharedArrayBuffer storage, fields on the
// prototype. Each call must return or throw (reject) an Error with a code, and where the break certainly
// makes the call invalid it must throw; never a crash. The fuzz runs in a child process (a crash is a failed
// assertion here, naming the last call, not a dead runner), which at the end repeats every op's unbroken
// call and compares its outputs byte for byte with the same call made before the fuzz.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadedAddonPath } from '../src/backend.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FC_SEED = 1313;
const RUNS = Number(process.env.SEQKERN_FUZZ_RUNS ?? (process.env.SEQKERN_SANITIZE === '1' ? 1000 : 2500));

// The child: CommonJS, the addon and fast-check by absolute path.
const CHILD = String.raw`
const fs = require('node:fs');
const a = require(process.env.FUZZ_ADDON);
const fc = require(process.env.FUZZ_FC);
const lastPath = process.env.FUZZ_LAST;
const RUNS = Number(process.env.FUZZ_RUNS), SEED = Number(process.env.FUZZ_SEED);

const F = (n, seed, lo = -0.8, hi = 0.8) => Float32Array.from({ length: n }, (_, i) => lo + (hi - lo) * (0.5 + 0.5 * Math.sin(i * 1.7 + seed)));
const H16 = (n, seed) => Uint16Array.from({ length: n }, (_, i) => 0x3000 + ((i * 37 + seed * 11) % 900)); // float16 in [0.125, 0.35]

// Every op: a valid call (fresh arrays each time), its required fields, tensor fields, outputs and inputs.
const OPS = {
  attention: {
    fn: 'attention',
    make: (packed) => packed
      ? { B: 1, T: 6, S: 6, Hq: 2, Hk: 1, D: 3, Dv: 2, q: F(36, 1), k: F(18, 2), v: F(12, 3), dtype: 'float32', o: F(24, 9), lse: F(12, 9),
          gate: F(24, 4), gateDtype: 'float32', gateKind: 'elementwise', causal: true, scale: 0.5,
          cuSeqlens: new Int32Array([0, 2, 6]), cuSeqlensK: new Int32Array([0, 2, 6]) }
      : { B: 1, T: 4, S: 6, Hq: 2, Hk: 1, D: 3, Dv: 2, q: F(24, 1), k: F(18, 2), v: F(12, 3), dtype: 'float32', o: F(16, 9), lse: F(8, 9),
          gate: F(16, 4), gateDtype: 'float32', gateKind: 'elementwise', causal: true, scale: 0.5 },
    required: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv', 'q', 'k', 'v', 'o'],
    dims: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv'], shape: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv'],
    inputs: ['q', 'k', 'v', 'gate'], outputs: ['o', 'lse'], offsets: ['cuSeqlens', 'cuSeqlensK'], ends: { cuSeqlens: 'T', cuSeqlensK: 'S' },
    numbers: ['scale'], strings: ['dtype', 'gateDtype', 'gateKind'],
  },
  delta: {
    fn: 'deltaRule',
    make: (packed) => ({ B: 1, T: 5, H: 1, HV: 2, K: 4, V: 3, q: F(20, 1), k: F(20, 2), v: F(30, 3), beta: F(10, 4, 0.1, 0.9), betaDtype: 'float32',
      g: F(10, 5, -0.5, -0.01), gDtype: 'float32', decayKind: 'log', dtype: 'float32', o: F(30, 9),
      initialState: F(packed ? 48 : 24, 6), finalState: F(packed ? 48 : 24, 9), qkL2Norm: true, scale: 0.5, chunkSize: 64, eps: 1e-6,
      kaczmarz: false, algorithm: packed ? 'chunk' : 'recurrent', ...(packed ? { cuSeqlens: new Int32Array([0, 2, 5]) } : {}) }),
    required: ['B', 'T', 'H', 'HV', 'K', 'V', 'q', 'k', 'v', 'beta', 'o'],
    dims: ['B', 'T', 'H', 'HV', 'K', 'V'], shape: ['B', 'T', 'H', 'HV', 'K', 'V'],
    inputs: ['q', 'k', 'v', 'beta', 'g', 'initialState'], outputs: ['o', 'finalState'], offsets: ['cuSeqlens'], ends: { cuSeqlens: 'T' },
    numbers: ['scale', 'chunkSize', 'eps'], strings: ['dtype', 'betaDtype', 'gDtype', 'decayKind', 'algorithm'],
  },
  softmax: {
    fn: 'softmax',
    make: (packed) => ({ x: F(12, 1, -3, 3), out: F(12, 9), dtype: 'float32', rows: 3, cols: 4, algorithm: packed ? 'three-pass' : 'two-pass', strict: false }),
    required: ['x', 'out', 'rows', 'cols'],
    dims: ['rows', 'cols'], shape: ['rows', 'cols'],
    inputs: ['x'], outputs: ['out'], offsets: [], numbers: [], strings: ['dtype', 'algorithm'],
  },
  hyper: {
    fn: 'hyperAttention',
    make: (packed) => ({ B: 1, T: 8, S: 8, Hq: 2, Hk: 1, D: 4, Dv: 4, q: F(64, 1), k: F(32, 2), v: F(32, 3), dtype: 'float32', o: F(64, 9), lse: F(16, 9),
      causal: packed, scale: 0.5, lshBits: 2, blockSize: 4, sampleSize: 2, minSeqLen: 4, seed: 7 }),
    required: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv', 'q', 'k', 'v', 'o', 'lshBits', 'blockSize', 'sampleSize', 'minSeqLen'],
    dims: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv', 'lshBits', 'blockSize', 'sampleSize', 'minSeqLen'], shape: ['B', 'T', 'S', 'Hq', 'Hk', 'D', 'Dv'],
    inputs: ['q', 'k', 'v'], outputs: ['o', 'lse'], offsets: [], numbers: ['scale', 'seed'], strings: ['dtype'],
  },
  cast: {
    fn: 'castArray', noAsync: true, sameLength: true,
    make: (packed) => packed ? { src: H16(10, 1), srcDtype: 'float16', dst: new Uint16Array(10), dstDtype: 'bfloat16' }
                             : { src: F(10, 1), srcDtype: 'float32', dst: new Uint16Array(10), dstDtype: 'float16' },
    required: ['src', 'dst', 'srcDtype', 'dstDtype'],
    dims: [], shape: [], inputs: ['src'], outputs: ['dst'], offsets: [], numbers: [], strings: ['srcDtype', 'dstDtype'],
  },
};
const OP_NAMES = Object.keys(OPS);
const JUNK = [null, undefined, 'x', 3.5, -1, NaN, Infinity, -Infinity, 2 ** 40, -0, true, {}, [1, 2, 3], () => 1,
  new Int32Array(4), new Float64Array(64), new Uint8Array(256), new DataView(new ArrayBuffer(64)), new ArrayBuffer(64), 10n, Symbol('s')];
const DIMS = [0, -1, 1, 2, 3, 7, 65536, 1e9, 2 ** 31 - 1, 2 ** 31, 2 ** 53, 0.5, NaN, -0];
const NUMBERS = [NaN, Infinity, -Infinity, 0, -1, 1e30, -1e30, 1e-45, 2 ** 31, 1e12, -5, 0.5];
const STRINGS = ['', 'float64', 'int8', 'bfloat16', 'float16', 'float32', 'none', 'log', 'sign', 'chunk', 'recurrent', 'three-pass', 'x'.repeat(10000)];

const detach = (t) => { if (ArrayBuffer.isView(t) && !(t.buffer instanceof SharedArrayBuffer) && t.buffer.byteLength > 0) structuredClone(t.buffer, { transfer: [t.buffer] }); };
const isTensor = (t) => ArrayBuffer.isView(t) && !(t instanceof DataView);
const viewOf = (t, buf, off, len) => new t.constructor(buf, off * t.BYTES_PER_ELEMENT, len);

const mutationArb = fc.oneof(
  fc.record({ t: fc.constant('drop'), pick: fc.nat() }),
  fc.record({ t: fc.constant('junk'), pick: fc.nat(), junk: fc.nat(JUNK.length - 1) }),
  fc.record({ t: fc.constant('dim'), pick: fc.nat(), value: fc.nat(DIMS.length - 1) }),
  fc.record({ t: fc.constant('number'), pick: fc.nat(), value: fc.nat(NUMBERS.length - 1) }),
  fc.record({ t: fc.constant('string'), pick: fc.nat(), value: fc.nat(STRINGS.length - 1) }),
  fc.record({ t: fc.constant('short'), pick: fc.nat(), by: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ t: fc.constant('long'), pick: fc.nat() }),
  fc.record({ t: fc.constant('detach'), pick: fc.nat() }),
  fc.record({ t: fc.constant('overlap'), out: fc.nat(), inp: fc.nat(), shift: fc.integer({ min: -40, max: 40 }) }),
  fc.record({ t: fc.constant('offsets'), pick: fc.nat(), values: fc.array(fc.integer({ min: -3, max: 9 }), { minLength: 0, maxLength: 5 }), f32: fc.boolean() }),
  fc.record({ t: fc.constant('getterDetach'), pick: fc.nat(), victim: fc.nat() }),
  fc.record({ t: fc.constant('getterThrow'), pick: fc.nat() }),
  fc.record({ t: fc.constant('shared') }),
  fc.record({ t: fc.constant('proto') }),
);
const specArb = fc.record({
  op: fc.constantFrom(...OP_NAMES), packed: fc.boolean(), async: fc.boolean(),
  mutations: fc.array(mutationArb, { minLength: 0, maxLength: 3 }),
});

// A data property's value, looked up the prototype chain without running a getter (undefined for a getter).
function peek(obj, k) {
  for (let o = obj; o; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, k);
    if (d) return 'value' in d ? d.value : undefined;
  }
  return undefined;
}
const isAccessor = (obj, k) => {
  for (let o = obj; o; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, k);
    if (d) return !('value' in d);
  }
  return false;
};

// Applies the mutations; returns the argument object and why it is certainly invalid ([] when it may be
// valid). The reasons are worked out from the final object, so later mutations that undo earlier ones
// (a copy that ends an overlap, a long buffer after a short one) count.
function build(spec) {
  const op = OPS[spec.op];
  const base = op.make(spec.packed);
  let args = op.make(spec.packed);
  const keys = Object.keys(args);
  const tensorKeys = keys.filter((k) => isTensor(args[k]));
  const pickOf = (list, n) => list[n % list.length];
  const touched = new Set();
  const must = [];
  const set = (k, v) => { if (!isAccessor(args, k)) args[k] = v; touched.add(k); };
  for (const m of spec.mutations) {
    switch (m.t) {
      case 'drop': { const k = pickOf(keys, m.pick); if (Object.hasOwn(args, k)) delete args[k]; if (peek(args, k) !== undefined) set(k, undefined); touched.add(k); break; }
      case 'junk': { set(pickOf(keys, m.pick), JUNK[m.junk]); break; }
      case 'dim': { if (op.dims.length) set(pickOf(op.dims, m.pick), DIMS[m.value]); break; }
      case 'number': { if (op.numbers.length) set(pickOf(op.numbers, m.pick), NUMBERS[m.value]); break; }
      case 'string': { set(pickOf(op.strings, m.pick), STRINGS[m.value]); break; }
      case 'short': {
        const k = pickOf(tensorKeys, m.pick), t = peek(args, k);
        if (isTensor(t) && !op.offsets.includes(k) && t.buffer.byteLength > 0) set(k, t.subarray(0, Math.max(0, t.length - m.by)));
        break;
      }
      case 'long': {
        const k = pickOf(tensorKeys, m.pick), t = peek(args, k);
        if (!isTensor(t) || op.offsets.includes(k) || t.buffer.byteLength === 0) break;
        const u = new t.constructor(t.length + 1); u.set(t); set(k, u);
        break;
      }
      case 'detach': { const t = peek(args, pickOf(tensorKeys, m.pick)); if (isTensor(t)) detach(t); break; }
      case 'overlap': {
        // An output placed over an input in one buffer, shift elements apart (0: the same memory).
        const ok = op.outputs.filter((k) => isTensor(peek(args, k)) && !isAccessor(args, k));
        const ik = op.inputs.filter((k) => isTensor(peek(args, k)) && !isAccessor(args, k));
        if (!ok.length || !ik.length) break;
        const ko = pickOf(ok, m.out), ki = pickOf(ik, m.inp), to = peek(args, ko), ti = peek(args, ki);
        if (to.constructor !== ti.constructor || to.buffer === ti.buffer || to.buffer.byteLength === 0 || ti.buffer.byteLength === 0) break;
        const lo = Math.min(0, m.shift), io = -lo, oo = m.shift - lo;
        const buf = new ArrayBuffer(Math.max(io + ti.length, oo + to.length) * ti.BYTES_PER_ELEMENT);
        const ni = viewOf(ti, buf, io, ti.length); ni.set(ti);
        const no = viewOf(to, buf, oo, to.length); if (m.shift !== 0) no.set(to);
        set(ki, ni); set(ko, no);
        break;
      }
      case 'offsets': {
        if (!op.offsets.length) break;
        const k = pickOf(op.offsets, m.pick);
        set(k, m.f32 ? new Float32Array(m.values) : new Int32Array(m.values));
        break;
      }
      case 'getterDetach': {
        const k = pickOf(keys, m.pick), victim = pickOf(tensorKeys, m.victim);
        if (isAccessor(args, k)) break;
        const value = peek(args, k), vt = peek(args, victim);
        Object.defineProperty(args, k, { configurable: true, enumerable: true, get() { detach(vt); return value; } });
        touched.add(k);
        break;
      }
      case 'getterThrow': {
        const k = pickOf(keys, m.pick);
        Object.defineProperty(args, k, { configurable: true, enumerable: true, get() { throw new Error('boom from ' + k); } });
        touched.add(k);
        if (op.required.includes(k)) must.push(k + ' getter throws');
        break;
      }
      case 'shared': {
        // Every buffer copied into a SharedArrayBuffer, views kept where they were (overlaps stay).
        const map = new Map();
        for (const k of Object.keys(args)) {
          if (isAccessor(args, k)) continue;
          const t = args[k];
          if (!isTensor(t) || t.buffer instanceof SharedArrayBuffer || t.buffer.byteLength === 0) continue;
          if (!map.has(t.buffer)) { const s = new SharedArrayBuffer(t.buffer.byteLength); new Uint8Array(s).set(new Uint8Array(t.buffer)); map.set(t.buffer, s); }
          args[k] = new t.constructor(map.get(t.buffer), t.byteOffset, t.length);
        }
        break;
      }
      case 'proto': args = Object.create(args); break;
    }
  }
  // Certain reasons, from the final object. A changed dim changes every expected length, so the length
  // reasons hold only when no dim was touched.
  const dimsTouched = op.dims.some((k) => touched.has(k));
  for (const k of op.dims) {
    if (isAccessor(args, k)) continue;
    const v = peek(args, k);
    if (typeof v !== 'number') must.push(k + ' not a number');
    else if (!(Number.isInteger(v) && v >= 0 && v < 2 ** 31)) must.push(k + ' = ' + v);
    else if (v >= 65536 && op.shape.includes(k)) must.push(k + ' = ' + v + ' (the buffers are far too short)');
  }
  const live = (k) => !isAccessor(args, k) && isTensor(peek(args, k));
  for (const k of op.required) {
    if (isAccessor(args, k) || !isTensor(base[k])) continue;
    const v = peek(args, k);
    if (!isTensor(v)) must.push(k + ' missing or not a typed array');
    else if (v.constructor !== base[k].constructor) must.push(k + ' is a ' + v.constructor.name);
    else if (!dimsTouched && !op.sameLength && v.length !== base[k].length) must.push(k + ' has ' + v.length + ' elements, want ' + base[k].length);
  }
  if (op.sameLength && live('src') && live('dst') && peek(args, 'src').length !== peek(args, 'dst').length) must.push('src and dst lengths differ');
  for (const k of op.offsets) {
    if (!live(k) || !touched.has(k)) continue;
    const v = peek(args, k);
    if (!(v instanceof Int32Array)) { must.push(k + ' is a ' + v.constructor.name); continue; }
    const x = v.length === 0 ? [] : Array.from(v);
    if (x.length < 2 || x[0] !== 0 || x.some((y, i) => y < 0 || (i > 0 && y < x[i - 1]))) must.push(k + ' = [' + x + ']');
    else if (!dimsTouched && x[x.length - 1] !== base[op.ends[k]]) must.push(k + ' = [' + x + '] does not end at ' + op.ends[k]);
  }
  // An output sharing memory with another argument, other than the allowed in-place pairs.
  const bytes = (t) => [t.byteOffset, t.byteOffset + t.byteLength];
  for (const ko of op.outputs) {
    if (!live(ko)) continue;
    const to = peek(args, ko);
    for (const ki of [...op.inputs, ...op.outputs]) {
      if (ki === ko || !live(ki)) continue;
      const ti = peek(args, ki);
      if (ti.buffer !== to.buffer || to.byteLength === 0 || ti.byteLength === 0) continue;
      const [a0, a1] = bytes(to), [b0, b1] = bytes(ti);
      if (!(a0 < b1 && b0 < a1)) continue;
      const same = a0 === b0 && a1 === b1;
      const inPlaceOk = same && (spec.op === 'softmax' || spec.op === 'cast' || (ko === 'finalState' && ki === 'initialState'));
      if (!inPlaceOk && spec.op !== 'cast' && !(op.outputs.includes(ki) && op.outputs.indexOf(ki) < op.outputs.indexOf(ko)))
        must.push(ko + ' overlaps ' + ki);
    }
  }
  return { args, must };
}

const violations = [];
const counts = { calls: 0, ok: 0, threw: 0, mustThrow: 0, asyncCalls: 0 };
const describeSpec = (spec, must) => JSON.stringify(spec) + ' must=[' + must.join('; ') + ']';

async function call(spec, args) {
  const op = OPS[spec.op];
  const useAsync = spec.async && !op.noAsync;
  if (useAsync) counts.asyncCalls++;
  try {
    const r = useAsync ? a[op.fn + 'Async'](args) : a[op.fn](args);
    if (useAsync) {
      if (!(r instanceof Promise)) return { ok: false, err: new Error('async form did not return a Promise') , notPromise: true };
      await r;
    }
    return { ok: true };
  } catch (e) {
    return { ok: false, err: e };
  }
}

// Outputs of the unbroken calls, before the fuzz and after it: byte-equal.
async function canonical() {
  const res = {};
  for (const name of OP_NAMES) for (const packed of [false, true]) {
    const op = OPS[name];
    const args = op.make(packed);
    a[op.fn](args);
    res[name + (packed ? '/packed' : '')] = op.outputs.filter((k) => isTensor(args[k])).map((k) => Buffer.from(args[k].buffer, args[k].byteOffset, args[k].byteLength).toString('hex')).join('|');
  }
  return res;
}

(async () => {
  const before = await canonical();
  await fc.assert(fc.asyncProperty(specArb, async (spec) => {
    let built;
    try {
      built = build(spec);
    } catch (e) {
      violations.push('the fuzz itself failed to build the call (' + (e && e.stack) + '): ' + JSON.stringify(spec));
      return;
    }
    const { args, must } = built;
    fs.writeFileSync(lastPath, describeSpec(spec, must));
    counts.calls++;
    if (must.length) counts.mustThrow++;
    const r = await call(spec, args);
    if (r.ok) {
      counts.ok++;
      if (must.length) violations.push('returned, want an error: ' + describeSpec(spec, must));
      return;
    }
    counts.threw++;
    const e = r.err;
    const boom = e instanceof Error && /^boom from /.test(e.message);
    if (r.notPromise) violations.push(e.message + ': ' + describeSpec(spec, must));
    else if (!(e instanceof Error)) violations.push('threw a non-Error ' + String(e) + ': ' + describeSpec(spec, must));
    else if (!boom && typeof e.code !== 'string') violations.push('Error without a code (' + e.message + '): ' + describeSpec(spec, must));
  }), { numRuns: RUNS, seed: SEED });
  const after = await canonical();
  for (const k of Object.keys(before)) if (before[k] !== after[k]) violations.push('the unbroken ' + k + ' call changed its output after the fuzz');
  console.log(JSON.stringify({ counts, violations: violations.slice(0, 20), nViolations: violations.length }));
})().catch((e) => { console.log(JSON.stringify({ fatal: String(e && e.stack || e) })); });
`;

describe('fuzz of the raw addon (issue 13.7)', () => {
  it(`${RUNS} broken calls at every raw entry point, sync and async: an Error with a code, never a crash (fast-check seed ${FC_SEED})`, () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'seqkern-fuzz-'));
    const last = path.join(tmp, 'last.json');
    try {
      const r = spawnSync(process.execPath, ['-e', CHILD], {
        encoding: 'utf8',
        timeout: 240_000,
        env: {
          ...process.env,
          FUZZ_ADDON: loadedAddonPath()!,
          FUZZ_FC: path.join(root, 'node_modules', 'fast-check', 'lib', 'cjs', 'fast-check.js'),
          FUZZ_LAST: last,
          FUZZ_RUNS: String(RUNS),
          FUZZ_SEED: String(FC_SEED),
        },
      });
      let lastCall = '';
      try {
        lastCall = readFileSync(last, 'utf8');
      } catch {
        /* none */
      }
      const why = `status ${r.status}, signal ${r.signal}; last call: ${lastCall}; stderr: ${(r.stderr ?? '').slice(-1500)}`;
      expect(r.signal, `the fuzz child crashed: ${why}`).toBeNull();
      expect(r.status, why).toBe(0);
      const res = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '{}');
      expect(res.fatal, why).toBeUndefined();
      expect(res.violations, `${res.nViolations} violations`).toEqual([]);
      // The generator reaches both kinds in fair numbers, async calls included.
      expect(res.counts.mustThrow, 'certainly invalid calls').toBeGreaterThan(RUNS * 0.3);
      expect(res.counts.ok, 'calls that returned').toBeGreaterThan(RUNS * 0.1);
      expect(res.counts.asyncCalls, 'async calls').toBeGreaterThan(RUNS * 0.25);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 300_000);
});
