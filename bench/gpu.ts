// `seqkern bench --backend cuda`: the CUDA kernels on the GPU with the GPU's limits measured in the same run
// (cuda/limits.cu: a copy kernel for the HBM bandwidth, an mma loop for the bf16 tensor-core peak), each
// case's time (median of repeated synchronised calls after warm-up), its bytes/s and FLOP/s, and the ratio
// to those limits. The targets: prefill >= 0.8x PyTorch SDPA (bench/peers/gpu.py prints SDPA on the
// same shapes), decode and the delta step >= 70% of the copy bandwidth, softmax of 1 GiB >= 80% of it.
// The CPU execution of the kernels (SEQKERN_CUDA_SIM=1) is never timed.
import { writeFileSync } from 'node:fs';
import { attention, gatedDeltaRuleStep, randn, softmax, Tensor, zeros } from '../src/index.js';
import { cudaAddon, cudaInfo } from '../src/device.js';

interface GpuRow {
  name: string;
  ms: number;
  bytes: number;
  flops: number;
  gbs: number;
  tflops: number;
  ofCopy: number;
  ofMma: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function time(f: () => void, reps: number): number {
  for (let i = 0; i < 3; i++) f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

export function runGpuBench(json: string | undefined, out: (s: string) => void): number {
  const i = cudaInfo();
  if (!i.available) {
    out(`seqkern bench --backend cuda: CUDA is unavailable (${i.reason})\n`);
    return 1;
  }
  if (i.simulated) {
    out('seqkern bench --backend cuda: this is the CPU execution of the CUDA kernels (SEQKERN_CUDA_SIM=1), which is never timed; run on a GPU (../shared/GPU.md). `seqkern check --backend cuda` checks the kernels here.\n');
    return 1;
  }
  const a = cudaAddon()!;
  const copyBytes = 1 << 30;
  const lim = a.cudaLimits({ copyBytes, reps: 10, mmaBlocks: i.multiprocessors! * 16, mmaIters: 4096 });
  const copyGBs = (2 * copyBytes * 10) / (lim.copyMs * 1e-3) / 1e9;
  const mmaTflops = (i.multiprocessors! * 16 * 4 * 4 * 2 * 16 ** 3 * 4096) / (lim.mmaMs * 1e-3) / 1e12;
  out(`device ${i.device} (cc ${i.computeCapability}, ${i.multiprocessors} SMs, ${((i.memoryBytes ?? 0) / 2 ** 30).toFixed(0)} GiB)\n`);
  out(`limits: copy ${copyGBs.toFixed(0)} GB/s (1 GiB, read + write), bf16 mma ${mmaTflops.toFixed(0)} TFLOP/s\n`);
  const rows: GpuRow[] = [];
  const add = (name: string, ms: number, bytes: number, flops: number) => {
    const r: GpuRow = {
      name, ms, bytes, flops, gbs: bytes / (ms * 1e-3) / 1e9, tflops: flops / (ms * 1e-3) / 1e12,
      ofCopy: bytes / (ms * 1e-3) / 1e9 / copyGBs, ofMma: flops / (ms * 1e-3) / 1e12 / mmaTflops,
    };
    rows.push(r);
    out(`${name.padEnd(56)} ${ms.toFixed(3).padStart(9)} ms  ${r.gbs.toFixed(0).padStart(5)} GB/s (${(100 * r.ofCopy).toFixed(0)}% of copy)  ${r.tflops.toFixed(1).padStart(6)} TFLOP/s (${(100 * r.ofMma).toFixed(0)}% of mma)\n`);
  };
  const dispose = (...ts: (Tensor | undefined)[]) => ts.forEach((t) => t?.dispose());

  // Attention prefill, bf16, causal, hd 128, T = 8192, 16 heads (4 T^2 D H / 2 FLOPs causal).
  {
    const [B, T, H, D] = [1, 8192, 16, 128];
    const q = randn([B, T, H, D], { seed: 1, dtype: 'bfloat16' }).to('cuda');
    const k = randn([B, T, H, D], { seed: 2, dtype: 'bfloat16' }).to('cuda');
    const v = randn([B, T, H, D], { seed: 3, dtype: 'bfloat16' }).to('cuda');
    const ms = time(() => attention(q, k, v, { causal: true }).o.dispose(), 10);
    add(`attention prefill bf16 causal B=${B} T=${T} H=${H} D=${D}`, ms, 4 * B * T * H * D * 2, 2 * B * T * T * H * D);
    dispose(q, k, v);
  }
  // Attention decode, bf16, T = 1 against S = 8192 (GQA 32/8): bytes of the cache read once.
  {
    const [B, S, Hq, Hk, D] = [16, 8192, 32, 8, 128];
    const q = randn([B, 1, Hq, D], { seed: 4, dtype: 'bfloat16' }).to('cuda');
    const k = randn([B, S, Hk, D], { seed: 5, dtype: 'bfloat16' }).to('cuda');
    const v = randn([B, S, Hk, D], { seed: 6, dtype: 'bfloat16' }).to('cuda');
    const ms = time(() => attention(q, k, v, { causal: true }).o.dispose(), 20);
    add(`attention decode bf16 B=${B} S=${S} Hq=${Hq} Hk=${Hk} D=${D}`, ms, 2 * B * S * Hk * D * 2, 4 * B * S * Hq * D);
    dispose(q, k, v);
  }
  // Delta decode step, bf16 inputs, float32 state [N, HV, K, V] read and written once.
  {
    const [N, H, HV, K, V] = [64, 16, 32, 128, 128];
    const q = randn([N, H, K], { seed: 7, dtype: 'bfloat16' }).to('cuda');
    const k = randn([N, H, K], { seed: 8, dtype: 'bfloat16' }).to('cuda');
    const v = randn([N, HV, V], { seed: 9, dtype: 'bfloat16' }).to('cuda');
    const beta = randn([N, HV], { seed: 10, std: 0.1, mean: 0.5 }).to('cuda');
    const g = randn([N, HV], { seed: 11, std: 0.1, mean: -0.5 }).to('cuda');
    const state = zeros([N, HV, K, V]).to('cuda');
    const ms = time(() => gatedDeltaRuleStep({ q, k, v, beta, g, state, qkL2Norm: true }).o.dispose(), 20);
    add(`delta step bf16 N=${N} H=${H} HV=${HV} K=${K} V=${V}`, ms, 2 * N * HV * K * V * 4, 6 * N * HV * K * V);
    dispose(q, k, v, beta, g, state);
  }
  // Softmax of 1 GiB of float32 rows of 32768: two reads and one write.
  {
    const [rows, cols] = [8192, 32768];
    const x = zeros([rows, cols]).to('cuda');
    const ms = time(() => softmax(x).dispose(), 10);
    add(`softmax float32 [${rows},${cols}] (1 GiB) two-pass`, ms, 3 * rows * cols * 4, 4 * rows * cols);
    const ms3 = time(() => softmax(x, { algorithm: 'three-pass' }).dispose(), 10);
    add(`softmax float32 [${rows},${cols}] (1 GiB) three-pass`, ms3, 4 * rows * cols * 4, 4 * rows * cols);
    dispose(x);
  }
  if (json) writeFileSync(json, `${JSON.stringify({ device: i, limits: { copyGBs, mmaTflops, copyBytes }, rows, date: new Date().toISOString() }, null, 2)}\n`);
  return 0;
}
