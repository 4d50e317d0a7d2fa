// Softmax bad input (DESIGN.md 4, 7): every argument of softmax / softmaxInto and their async forms gives a
// SeqkernError with the right code and a message naming the argument, and leaves x and out byte-identical
// (out is NaN-poisoned first, so any write shows). Then the raw addon's own checks, and a fast-check fuzz of
// the public API: a SeqkernError or a correct answer, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { native } from '../src/backend.js';
import {
  numel, randn, SeqkernError, softmax, softmaxAsync, softmaxInto, softmaxIntoAsync, softmaxReference, Tensor, tensor,
  type DType, type TensorData,
} from '../src/index.js';
import { checkSeqkernError, expectSeqkernRejection, sameBytes, snapshot } from './helpers.js';

type Opts = Record<string, unknown>;
interface Call { x: unknown; out?: unknown; opts?: unknown }

const storageOf = (dtype: DType, n: number): TensorData =>
  dtype === 'float32' ? new Float32Array(n) : dtype === 'float64' ? new Float64Array(n) : new Uint16Array(n);

/** A NaN-filled tensor of x's shape and dtype. */
function poisoned(shape: readonly number[], dtype: DType = 'float32'): Tensor {
  const d = storageOf(dtype, numel(shape));
  d.fill(dtype === 'float32' || dtype === 'float64' ? NaN : 0x7fc0);
  return new Tensor(d, shape, dtype);
}

const base = (): Call => ({ x: randn([3, 5], { seed: 1 }), opts: { backend: 'cpu' } });
const detached = (t: Tensor): Tensor => {
  structuredClone(t.data.buffer, { transfer: [t.data.buffer as ArrayBuffer] });
  return t;
};

// [name, mutation of the base call, code, the argument the message names]
const CASES: [string, (c: Call) => Call, string, string][] = [
  ['x null', (c) => ({ ...c, x: null }), 'BAD_ARGUMENT', 'x'],
  ['x a number', (c) => ({ ...c, x: 5 }), 'BAD_ARGUMENT', 'x'],
  ['x a Float32Array', (c) => ({ ...c, x: new Float32Array(15) }), 'BAD_ARGUMENT', 'x'],
  ['x a tensor-like without dtype', (c) => ({ ...c, x: { shape: [3, 5], data: new Float32Array(15) } }), 'BAD_ARGUMENT', 'x'],
  ['x a tensor-like of a short array', (c) => ({ ...c, x: { shape: [3, 5], data: new Float32Array(14), dtype: 'float32' } }), 'SHAPE_MISMATCH', 'x'],
  ["x of dtype 'int8'", (c) => ({ ...c, x: new Tensor(new Float32Array(15), [3, 5], 'int8' as DType) }), 'BAD_DTYPE', 'x'],
  ['x float32 stored in a Float64Array', (c) => ({ ...c, x: new Tensor(new Float64Array(15), [3, 5], 'float32') }), 'BAD_DTYPE', 'x'],
  ['x float16 stored in a Float32Array', (c) => ({ ...c, x: new Tensor(new Float32Array(15), [3, 5], 'float16') }), 'BAD_DTYPE', 'x'],
  ['x data shorter than its shape', (c) => ({ ...c, x: new Tensor(new Float32Array(14), [3, 5], 'float32') }), 'SHAPE_MISMATCH', 'x'],
  ['x data longer than its shape', (c) => ({ ...c, x: new Tensor(new Float32Array(16), [3, 5], 'float32') }), 'SHAPE_MISMATCH', 'x'],
  ['x huge shape over short data', (c) => ({ ...c, x: new Tensor(new Float32Array(15), [1 << 20, 1 << 20], 'float32') }), 'SHAPE_MISMATCH', 'x'],
  ['x a negative dimension', (c) => ({ ...c, x: new Tensor(new Float32Array(15), [-3, -5], 'float32') }), 'SHAPE_MISMATCH', 'x'],
  ['x detached', (c) => ({ ...c, x: detached(randn([3, 5])) }), 'BAD_ARGUMENT', 'x'],
  ['x of rank 0 (a scalar)', (c) => ({ ...c, x: tensor(Float32Array.of(1), []) }), 'SHAPE_MISMATCH', 'x'],
  ['x with a last axis of length 0', (c) => ({ ...c, x: tensor(new Float32Array(0), [3, 0]) }), 'SHAPE_MISMATCH', 'x'],
  ['options a number', (c) => ({ ...c, opts: 5 }), 'BAD_ARGUMENT', 'options'],
  ['options null', (c) => ({ ...c, opts: null }), 'BAD_ARGUMENT', 'options'],
  ["algorithm 'fast'", (c) => ({ ...c, opts: { algorithm: 'fast' } }), 'BAD_ARGUMENT', 'algorithm'],
  ['algorithm 2', (c) => ({ ...c, opts: { algorithm: 2 } }), 'BAD_ARGUMENT', 'algorithm'],
  ["strict 'yes'", (c) => ({ ...c, opts: { strict: 'yes' } }), 'BAD_ARGUMENT', 'strict'],
  ["backend 'gpu'", (c) => ({ ...c, opts: { backend: 'gpu' } }), 'BAD_ARGUMENT', 'backend'],
  ["backend 'cuda' (CPU-only build)", (c) => ({ ...c, opts: { backend: 'cuda' } }), 'NO_CUDA', 'cuda'],
  ["float64 x with backend 'cpu'", (c) => ({ ...c, x: randn([3, 5], { dtype: 'float64' }) }), 'BAD_DTYPE', 'float64'],
];

// Only for softmaxInto: the out argument.
const OUT_CASES: [string, (c: Call) => Call, string, string][] = [
  ['out null', (c) => ({ ...c, out: null }), 'BAD_ARGUMENT', 'out'],
  ['out undefined', (c) => ({ ...c, out: undefined }), 'BAD_ARGUMENT', 'out'],
  ['out a Float32Array', (c) => ({ ...c, out: new Float32Array(15) }), 'BAD_ARGUMENT', 'out'],
  ['out of dtype float16 for float32 x', (c) => ({ ...c, out: poisoned([3, 5], 'float16') }), 'BAD_DTYPE', 'out'],
  ['out of shape [5, 3]', (c) => ({ ...c, out: poisoned([5, 3]) }), 'SHAPE_MISMATCH', 'out'],
  ['out of rank 1', (c) => ({ ...c, out: poisoned([15]) }), 'SHAPE_MISMATCH', 'out'],
  ['out data short', (c) => ({ ...c, out: new Tensor(new Float32Array(14).fill(NaN), [3, 5], 'float32') }), 'SHAPE_MISMATCH', 'out'],
  ['out detached', (c) => ({ ...c, out: detached(poisoned([3, 5])) }), 'BAD_ARGUMENT', 'out'],
  ['out a view partly overlapping x', (c) => {
    const buf = new Float32Array(20);
    buf.set((c.x as Tensor).data as Float32Array);
    return { ...c, x: new Tensor(buf.subarray(0, 15), [3, 5], 'float32'), out: new Tensor(buf.subarray(5, 20), [3, 5], 'float32') };
  }, 'BAD_ARGUMENT', 'out'],
];

// strict: rows that have no softmax.
function withRow(fill: (row: Float32Array) => void): Tensor {
  const x = randn([4, 6], { seed: 2 });
  fill((x.data as Float32Array).subarray(12, 18)); // row 2
  return x;
}
const STRICT_CASES: [string, Tensor, string][] = [
  ['a row of all -Inf', withRow((r) => r.fill(-Infinity)), 'OUT_OF_RANGE'],
  ['a NaN', withRow((r) => (r[3] = NaN)), 'NON_FINITE'],
  ['a +Inf', withRow((r) => (r[0] = Infinity)), 'NON_FINITE'],
];

type Form = { name: string; run: (c: Call) => unknown; async: boolean; into: boolean };
const FORMS: Form[] = [
  { name: 'softmax', run: (c) => softmax(c.x as Tensor, c.opts as Opts), async: false, into: false },
  { name: 'softmaxAsync', run: (c) => softmaxAsync(c.x as Tensor, c.opts as Opts), async: true, into: false },
  { name: 'softmaxInto', run: (c) => softmaxInto(c.x as Tensor, c.out as Tensor, c.opts as Opts), async: false, into: true },
  { name: 'softmaxIntoAsync', run: (c) => softmaxIntoAsync(c.x as Tensor, c.out as Tensor, c.opts as Opts), async: true, into: true },
];

async function expectError(form: Form, c: Call, code: string, arg: string, what: string): Promise<void> {
  const tensors = [c.x, c.out].filter((t): t is Tensor => t instanceof Tensor && t.data.buffer.byteLength > 0);
  const snaps = tensors.map((t) => snapshot(t));
  if (form.async) await expectSeqkernRejection(() => form.run(c) as Promise<unknown>, code, arg, what);
  else {
    let err: unknown;
    try {
      form.run(c);
    } catch (e) {
      err = e;
    }
    checkSeqkernError(err, code, arg, what);
  }
  tensors.forEach((t, i) => expect(sameBytes(t, snaps[i]), `${what}: an argument was modified`).toBe(true));
}

describe('softmax bad input: a SeqkernError naming the argument, nothing written', () => {
  for (const form of FORMS) {
    describe(form.name, () => {
      const start = (): Call => ({ ...base(), out: form.into ? poisoned([3, 5]) : undefined });
      it('the valid base call succeeds (so each case fails for its own reason)', async () => {
        const y = (await form.run(start())) as Tensor;
        expect(y.toFloat64().every(Number.isFinite)).toBe(true);
      });
      for (const [name, mutate, code, arg] of [...CASES, ...(form.into ? OUT_CASES : [])]) {
        it(`${name} -> ${code}`, () => expectError(form, mutate(start()), code, arg, `${form.name}: ${name}`));
      }
      for (const [name, x, code] of STRICT_CASES) {
        for (const backend of ['cpu', 'reference']) {
          it(`strict, ${name} in row 2 -> ${code} naming x and row 2 (${backend})`, async () => {
            const c: Call = { x, out: form.into ? poisoned([4, 6]) : undefined, opts: { strict: true, backend } };
            await expectError(form, c, code, 'row 2', `${form.name} strict ${name}`);
            const err = await (async () => { try { await form.run(c); } catch (e) { return e as SeqkernError; } })();
            expect(err?.message).toMatch(/\bx\b/);
            // Without strict the same row is a row of NaN, the others are unaffected.
            const y = (await form.run({ ...c, out: form.into ? poisoned([4, 6]) : undefined, opts: { backend } })) as Tensor;
            const v = y.toFloat64();
            expect(v.slice(12, 18).every(Number.isNaN), 'row 2 NaN').toBe(true);
            expect([...v.slice(0, 12), ...v.slice(18)].every(Number.isFinite), 'other rows finite').toBe(true);
          });
        }
      }
    });
  }

  it('strict errors on a long row split across threads name the row too, before anything is written', () => {
    const x = randn([2, 200_000], { seed: 3 });
    (x.data as Float32Array).fill(-Infinity, 200_000);
    for (const algorithm of ['two-pass', 'three-pass'] as const) {
      const out = poisoned([2, 200_000]);
      const snap = snapshot(out);
      let err: unknown;
      try {
        softmaxInto(x, out, { strict: true, algorithm });
      } catch (e) {
        err = e;
      }
      checkSeqkernError(err, 'OUT_OF_RANGE', 'row 1', `long rows strict ${algorithm}`);
      expect(sameBytes(out, snap), 'out untouched').toBe(true);
    }
  });
});

describe('raw addon: the C++ re-check', () => {
  type Raw = { softmax(a: unknown): void; softmaxAsync(a: unknown): Promise<void> };
  const raw = native() as unknown as Raw;
  const F = (n: number, v = 0.5) => new Float32Array(n).fill(v);
  const good = () => ({ x: F(12), out: F(12, NaN), dtype: 'float32', rows: 3, cols: 4, algorithm: 'two-pass', strict: false });
  const shared = new Float32Array(16);
  const CASES_RAW: [string, () => unknown, string][] = [
    ['no argument object', () => undefined, 'BAD_ARGUMENT'],
    ['a number for the argument object', () => 5, 'BAD_ARGUMENT'],
    ['x missing', () => ({ ...good(), x: undefined }), 'BAD_ARGUMENT'],
    ['x a plain array', () => ({ ...good(), x: [1, 2, 3] }), 'BAD_DTYPE'],
    ['x a Float64Array', () => ({ ...good(), x: new Float64Array(12) }), 'BAD_DTYPE'],
    ['out a Uint16Array for float32', () => ({ ...good(), out: new Uint16Array(12) }), 'BAD_DTYPE'],
    ["dtype 'int8'", () => ({ ...good(), dtype: 'int8' }), 'BAD_DTYPE'],
    ['float16 with Float32Array data', () => ({ ...good(), dtype: 'float16' }), 'BAD_DTYPE'],
    ['rows -1', () => ({ ...good(), rows: -1 }), 'OUT_OF_RANGE'],
    ['cols 2.5', () => ({ ...good(), cols: 2.5 }), 'OUT_OF_RANGE'],
    ['cols a string', () => ({ ...good(), cols: '4' }), 'BAD_ARGUMENT'],
    ['cols 0', () => ({ ...good(), rows: 3, cols: 0, x: F(0), out: F(0) }), 'SHAPE_MISMATCH'],
    ['rows x cols over 2^31 - 1 (empty arrays)', () => ({ ...good(), rows: 2 ** 31 - 1, cols: 2 ** 31 - 1, x: F(0), out: F(0) }), 'TOO_LARGE'],
    ['x short', () => ({ ...good(), x: F(11) }), 'SHAPE_MISMATCH'],
    ['out long', () => ({ ...good(), out: F(13) }), 'SHAPE_MISMATCH'],
    ['out partly overlapping x', () => ({ ...good(), x: shared.subarray(0, 12), out: shared.subarray(4, 16) }), 'BAD_ARGUMENT'],
    ["algorithm 'fast'", () => ({ ...good(), algorithm: 'fast' }), 'BAD_ARGUMENT'],
    ['algorithm a number', () => ({ ...good(), algorithm: 3 }), 'BAD_ARGUMENT'],
    ["strict 'yes'", () => ({ ...good(), strict: 'yes' }), 'BAD_ARGUMENT'],
    ['cancel a Float32Array', () => ({ ...good(), cancel: new Float32Array(1) }), 'BAD_DTYPE'],
    ['cancel empty', () => ({ ...good(), cancel: new Int32Array(0) }), 'BAD_DTYPE'],
    ['strict and a row of all -Inf', () => ({ ...good(), x: new Float32Array(12).fill(-Infinity), strict: true }), 'OUT_OF_RANGE'],
  ];
  for (const [name, args, code] of CASES_RAW) {
    for (const fn of ['softmax', 'softmaxAsync'] as const) {
      it(`${fn}: ${name} -> Error with .code ${code}`, async () => {
        let err: unknown;
        try {
          const r = raw[fn](args() as never);
          if (r instanceof Promise) await r;
        } catch (e) {
          err = e;
        }
        expect(err, name).toBeInstanceOf(Error);
        expect((err as { code?: string }).code, (err as Error).message).toBe(code);
      });
    }
  }
  it('the valid call writes every output; two views of one SharedArrayBuffer count as in place', async () => {
    const a = good();
    raw.softmax(a);
    for (const v of a.out) expect(v).toBeCloseTo(0.25, 6);
    const sab = new SharedArrayBuffer(48);
    const v1 = new Float32Array(sab).fill(1);
    const v2 = new Float32Array(sab);
    await raw.softmaxAsync({ ...good(), x: v1, out: v2 });
    for (const v of v1) expect(v).toBeCloseTo(0.25, 6);
  });
});

// ---- fuzzing the public API ----

const FC_SEED = Number(process.env.SEQKERN_FC_SEED ?? 20251125);
const SPECIAL = [NaN, Infinity, -Infinity, 1e30, -1e30, 88.7, -88.7, 104, -104, 3.4e38, -3.4e38, 0];
const JUNK: unknown[] = [null, 0, 'x', [1, 2], { shape: [1, 2], data: new Float32Array(1), dtype: 'float32' }, new Float32Array(4)];

const specArb = fc.record({
  dims: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 0, maxLength: 2 }),
  last: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 40 }), weight: 12 }, { arbitrary: fc.constantFrom(0, 100, 257), weight: 1 }),
  rank0: fc.oneof({ arbitrary: fc.constant(false), weight: 20 }, { arbitrary: fc.constant(true), weight: 1 }),
  dtype: fc.constantFrom<DType>('float32', 'float32', 'float32', 'float16', 'bfloat16', 'float64'),
  scale: fc.constantFrom(1, 10, 100, 1e4),
  specials: fc.array(fc.record({ at: fc.nat(), v: fc.constantFrom(...SPECIAL) }), { maxLength: 4 }),
  allNegInfRow: fc.option(fc.nat(), { freq: 6 }),
  algorithm: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, 'two-pass', 'three-pass'), weight: 12 }, { arbitrary: fc.constant<unknown>('bogus'), weight: 1 }),
  strict: fc.oneof({ arbitrary: fc.constantFrom<unknown>(undefined, false, true), weight: 12 }, { arbitrary: fc.constant<unknown>('yes'), weight: 1 }),
  backend: fc.oneof(
    { arbitrary: fc.constantFrom<unknown>(undefined, 'cpu', 'cpu', 'reference'), weight: 12 },
    { arbitrary: fc.constantFrom<unknown>('cuda', 'gpu'), weight: 1 },
  ),
  out: fc.oneof({ arbitrary: fc.constantFrom('none', 'fresh', 'inplace'), weight: 10 }, { arbitrary: fc.constantFrom('badshape', 'baddtype', 'overlap'), weight: 2 }),
  mutation: fc.oneof({ arbitrary: fc.constant('none'), weight: 10 }, { arbitrary: fc.constantFrom('short', 'storage', 'junk', 'detach'), weight: 2 }),
  junk: fc.nat({ max: JUNK.length - 1 }),
  seed: fc.nat(),
});
type Spec = typeof specArb extends fc.Arbitrary<infer S> ? S : never;

/** The call of a spec and what the op must do with it: throw (which codes), or answer as the reference does. */
function build(spec: Spec) {
  const invalid: string[] = [];
  const shape = spec.rank0 ? [] : [...spec.dims, spec.last];
  const n = numel(shape);
  const z = randn([n], { seed: spec.seed, std: spec.scale, dtype: 'float64' }).toFloat64();
  for (const s of spec.specials) if (n > 0) z[s.at % n] = s.v;
  if (spec.allNegInfRow !== null && n > 0 && spec.last > 0) {
    const rows = n / spec.last;
    const r = spec.allNegInfRow % rows;
    z.fill(-Infinity, r * spec.last, (r + 1) * spec.last);
  }
  let x: unknown = tensor(z, shape, spec.dtype);
  const clean = x as Tensor;
  if (spec.rank0) invalid.push('rank 0');
  if (!spec.rank0 && spec.last === 0) invalid.push('empty last axis');
  switch (spec.mutation) {
    case 'short': x = new Tensor(storageOf(spec.dtype, n + 1), shape, spec.dtype); invalid.push('x short'); break;
    case 'storage': x = new Tensor(spec.dtype === 'float32' ? new Float64Array(n) : new Float32Array(n), shape, spec.dtype); invalid.push('x storage'); break;
    case 'junk': x = JUNK[spec.junk]; invalid.push('x junk'); break;
    case 'detach': if (n > 0) { detached(clean); invalid.push('x detached'); } break;
  }
  let out: Tensor | undefined;
  if (spec.out === 'fresh') out = poisoned(shape, spec.dtype);
  else if (spec.out === 'inplace' && x instanceof Tensor) out = x;
  else if (spec.out === 'badshape') { out = poisoned([...shape, 1], spec.dtype); invalid.push('out shape'); }
  else if (spec.out === 'baddtype') { out = poisoned(shape, spec.dtype === 'float32' ? 'float16' : 'float32'); invalid.push('out dtype'); }
  else if (spec.out === 'overlap' && n > 1 && x instanceof Tensor && x.data.buffer.byteLength > 0) {
    const buf = storageOf(spec.dtype, n + 1);
    buf.set(x.data as never);
    x = new Tensor(buf.subarray(0, n) as TensorData, shape, spec.dtype);
    out = new Tensor(buf.subarray(1, n + 1) as TensorData, shape, spec.dtype);
    invalid.push('out overlaps x');
  }
  if (spec.algorithm === 'bogus') invalid.push('algorithm');
  if (spec.strict === 'yes') invalid.push('strict');
  if (spec.backend === 'cuda' || spec.backend === 'gpu') invalid.push('backend');
  if (spec.dtype === 'float64' && spec.backend === 'cpu' && x instanceof Tensor) invalid.push('float64 on cpu');
  const opts = { algorithm: spec.algorithm, strict: spec.strict, backend: spec.backend } as Opts;
  // softmaxInto when there is an out to give it (an in-place or overlapping one needs a tensor x).
  return { x, out, into: out !== undefined, opts, invalid, clean };
}

describe('fuzz: random bad (and good) calls give a SeqkernError or the right answer', () => {
  it(`1200 random calls at softmax / softmaxInto (fast-check seed ${FC_SEED})`, () => {
    let valid = 0;
    let thrown = 0;
    fc.assert(
      fc.property(specArb, (spec) => {
        const { x, out, into, opts, invalid, clean } = build(spec);
        const what = `spec ${JSON.stringify(spec)} invalid=[${invalid.join('; ')}]`;
        // The expected answer, from the inputs before the call (in place overwrites them).
        let ref: Tensor | undefined;
        let refErr: SeqkernError | undefined;
        if (invalid.length === 0) {
          try {
            ref = softmaxReference(clean, { strict: opts.strict === true });
          } catch (e) {
            refErr = e as SeqkernError;
          }
        }
        const snaps = [x, out].filter((t): t is Tensor => t instanceof Tensor && t.data.buffer.byteLength > 0).map((t) => [t, snapshot(t)] as const);
        let result: unknown;
        let err: unknown;
        try {
          result = into ? softmaxInto(x as Tensor, out as Tensor, opts) : softmax(x as Tensor, opts);
        } catch (e) {
          err = e;
        }
        if (err !== undefined) {
          thrown++;
          if (!(err instanceof SeqkernError)) throw new Error(`${what}: threw a non-SeqkernError: ${String(err)}`);
          if (invalid.length === 0 && !refErr) throw new Error(`${what}: a valid call threw ${err.code}: ${err.message}`);
          if (refErr && invalid.length === 0 && (err.code !== refErr.code || !err.message.includes(refErr.message.split('got ')[1]))) {
            throw new Error(`${what}: strict error ${err.code} "${err.message}", the reference says ${refErr.code} "${refErr.message}"`);
          }
          for (const [t, s] of snaps) if (!sameBytes(t, s)) throw new Error(`${what}: a failed call modified an argument`);
          return;
        }
        if (invalid.length > 0 || refErr) throw new Error(`${what}: returned instead of throwing (${refErr?.message ?? invalid.join(', ')})`);
        valid++;
        const y = result as Tensor;
        if (out && y !== out) throw new Error(`${what}: softmaxInto did not return out`);
        const g = y.toFloat64();
        const r = ref!.toFloat64();
        const low = spec.dtype === 'float16' || spec.dtype === 'bfloat16';
        for (let i = 0; i < r.length; i++) {
          if (Number.isNaN(r[i])) {
            if (!Number.isNaN(g[i])) throw new Error(`${what}: element ${i} is ${g[i]}, the reference NaN`);
            continue;
          }
          const tol = low ? 4e-3 * r[i] + 1e-7 : 1e-6 * r[i] + 1e-30;
          if (!(Math.abs(g[i] - r[i]) <= tol)) throw new Error(`${what}: element ${i} is ${g[i]}, the reference ${r[i]}`);
        }
      }),
      { numRuns: 1200, seed: FC_SEED },
    );
    expect(valid, 'some calls were valid').toBeGreaterThan(200);
    expect(thrown, 'some calls threw').toBeGreaterThan(200);
  });
});
