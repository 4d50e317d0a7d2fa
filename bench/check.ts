// `seqkern check`: every op on every available backend (cpu when the addon loaded, cuda when a GPU or the
// simulator is there) against the float64 reference on fresh seeded inputs, at small awkward shapes.
// Prints one line per case and exits non-zero on any failure. Needs nothing but node and the built addon
// (no vitest, no npm), so it is what a GPU machine without a toolchain runs (../shared/GPU.md).
import {
  attention, attentionReference, gatedDeltaRule, gatedDeltaRuleReference, gatedDeltaRuleStep, gatedDeltaRuleStepReference,
  hyperAttention, hyperAttentionReference, kaczmarzDeltaRule, rand, randn, softmax, softmaxReference, Tensor,
  type DType,
} from '../src/index.js';
import { native } from '../src/backend.js';
import { cudaAddon, cudaInfo } from '../src/device.js';

export interface CheckLine {
  op: string;
  backend: string;
  case: string;
  error: number;
  tol: number;
  ok: boolean;
  note?: string;
}

function relErr(a: Tensor, b: Tensor): number {
  const x = a.toFloat64(), y = b.toFloat64();
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  if (Number.isNaN(num)) return NaN;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

const f64 = (t: Tensor) => new Tensor(t.toFloat64(), t.shape, 'float64');
const low = (d: DType) => d === 'float16' || d === 'bfloat16';

interface Case {
  op: string;
  name: string;
  backends: string[];
  tol: number;
  run(backend: string): Tensor;
  ref(): Tensor;
}

function cases(): Case[] {
  const all: Case[] = [];
  const both = ['cpu', 'cuda'];
  for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
    for (const [rows, cols] of [[7, 65], [3, 1025], [1, 70000]]) {
      const x = randn([rows, cols], { seed: rows + cols, std: 4, dtype });
      all.push({
        op: 'softmax', name: `${dtype} [${rows},${cols}]`, backends: both, tol: low(dtype) ? 1e-2 : 1e-6,
        run: (backend) => softmax(x, { backend: backend as 'cpu' }), ref: () => softmaxReference(f64(x)),
      });
    }
    for (const [T, S, D, causal] of [[65, 65, 64, true], [1, 1100, 128, true], [33, 47, 128, false]] as [number, number, number, boolean][]) {
      const q = randn([1, T, 4, D], { seed: T, dtype }), k = randn([1, S, 2, D], { seed: T + 1, dtype }), v = randn([1, S, 2, D], { seed: T + 2, dtype });
      const gate = randn([1, T, 4], { seed: T + 3 });
      all.push({
        op: 'attention', name: `${dtype} T=${T} S=${S} D=${D} causal=${causal} GQA gate`, backends: both, tol: low(dtype) ? 2e-2 : 1e-5,
        run: (backend) => attention(q, k, v, { causal, gate, backend: backend as 'cpu' }).o,
        ref: () => attentionReference(q, k, v, { causal, gate }).o,
      });
    }
    const [T, H, HV, K, V] = [65, 1, 2, 64, 48];
    const q = randn([1, T, H, K], { seed: 90, dtype }), kk = randn([1, T, H, K], { seed: 91, dtype }), v = randn([1, T, HV, V], { seed: 92, dtype });
    const beta = rand([1, T, HV], { seed: 93, low: 0, high: 2 }), g = rand([1, T, HV], { seed: 94, low: -1, high: 0 });
    const h0 = randn([2, HV, K, V], { seed: 95, std: 0.5 });
    const cuSeqlens = Int32Array.from([0, 30, 65]);
    all.push({
      op: 'gatedDeltaRule', name: `${dtype} varlen, beta in [0,2], qkL2Norm`, backends: both, tol: low(dtype) ? 2e-2 : 1e-4,
      run: (backend) => gatedDeltaRule({ q, k: kk, v, beta, g, initialState: h0, cuSeqlens, qkL2Norm: true, algorithm: 'recurrent', backend: backend as 'cpu' }).o,
      ref: () => gatedDeltaRuleReference({ q, k: kk, v, beta, g, initialState: h0, cuSeqlens, qkL2Norm: true }).o,
    });
    all.push({
      op: 'kaczmarzDeltaRule', name: `${dtype} T=${T}`, backends: both, tol: low(dtype) ? 2e-2 : 1e-4,
      run: (backend) => kaczmarzDeltaRule({ q, k: kk, v, eta: beta, g, qkL2Norm: true, algorithm: 'recurrent', backend: backend as 'cpu' }).o,
      ref: () => gatedDeltaRuleReference({ q, k: kk, v, eta: beta, g, qkL2Norm: true }).o,
    });
    const qs = randn([3, H, K], { seed: 96, dtype }), ks = randn([3, H, K], { seed: 97, dtype }), vs = randn([3, HV, V], { seed: 98, dtype });
    const bs = rand([3, HV], { seed: 99 }), gs = rand([3, HV], { seed: 100, low: -1, high: 0 });
    const s0 = randn([3, HV, K, V], { seed: 101, std: 0.5 });
    all.push({
      op: 'gatedDeltaRuleStep', name: `${dtype} N=3 (state)`, backends: both, tol: low(dtype) ? 2e-2 : 1e-4,
      run: (backend) => {
        const state = new Tensor(s0.data.slice(), s0.shape, 'float32');
        gatedDeltaRuleStep({ q: qs, k: ks, v: vs, beta: bs, g: gs, state, qkL2Norm: true, backend: backend as 'cpu' });
        return state;
      },
      ref: () => gatedDeltaRuleStepReference({ q: qs, k: ks, v: vs, beta: bs, g: gs, state: s0, qkL2Norm: true }).state,
    });
  }
  const hq = randn([1, 300, 2, 32], { seed: 110 }), hk = randn([1, 300, 1, 32], { seed: 111 }), hv = randn([1, 300, 1, 32], { seed: 112 });
  all.push({
    op: 'hyperAttention', name: 'float32 T=300 (exact below minSeqLen: sampled path forced)', backends: ['cpu'], tol: 1e-5,
    run: (backend) => hyperAttention(hq, hk, hv, { minSeqLen: 64, blockSize: 64, sampleSize: 64, backend: backend as 'cpu' }).o,
    ref: () => hyperAttentionReference(hq, hk, hv, { minSeqLen: 64, blockSize: 64, sampleSize: 64 }).o,
  });
  return all;
}

/** Runs the checks on `backends` (default: every available one); returns the lines. */
export function runChecks(backends?: string[], onLine?: (l: CheckLine) => void): CheckLine[] {
  const avail = [native() ? 'cpu' : undefined, cudaAddon() ? 'cuda' : undefined].filter((b): b is string => !!b);
  const use = backends ?? avail;
  const lines: CheckLine[] = [];
  for (const c of cases()) {
    const ref = c.ref();
    for (const backend of use) {
      if (!c.backends.includes(backend)) continue;
      let line: CheckLine;
      if (!avail.includes(backend)) {
        line = { op: c.op, backend, case: c.name, error: NaN, tol: c.tol, ok: false, note: backend === 'cuda' ? `CUDA unavailable: ${cudaInfo().reason}` : 'addon not loaded' };
      } else {
        try {
          const e = relErr(c.run(backend), ref);
          line = { op: c.op, backend, case: c.name, error: e, tol: c.tol, ok: e <= c.tol };
        } catch (err) {
          line = { op: c.op, backend, case: c.name, error: NaN, tol: c.tol, ok: false, note: (err as Error).message };
        }
      }
      lines.push(line);
      onLine?.(line);
    }
  }
  return lines;
}

export function formatLine(l: CheckLine): string {
  const err = Number.isNaN(l.error) ? 'NaN' : l.error.toExponential(2);
  return `${l.ok ? 'ok  ' : 'FAIL'}  ${l.backend.padEnd(5)} ${l.op.padEnd(19)} ${l.case.padEnd(48)} err ${err} (tol ${l.tol})${l.note ? `  ${l.note}` : ''}`;
}
