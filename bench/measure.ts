// Times one benchmark case with Benchmark.js (DESIGN.md 8: "statistics from the benchmark package") and
// summarises its samples as a median and a spread.
//
// Benchmark.js is run in its deferred mode, which is unusual for synchronous code, for a measured reason:
// in the default (sync) mode every sample first "pretests" the compiled loop by running the function once
// more (Benchmark#clock, the `bench.count = 1` pretest), so an op of 0.5 s costs 1 s per sample and the
// default suite doubles in length. The deferred path has no pretest: each call we make is a call timed.
// To keep the deferred recursion shallow (each resolve() calls the next run on the same stack), a fast op
// is batched: one timed call runs it `inner` times, sized from the warm-up to take about a millisecond.
import Benchmark from 'benchmark';

export interface Timing {
  /** Seconds per op call, one per Benchmark.js sample (a sample averages its cycle's calls). */
  samples: number[];
  median: number;
  min: number;
  max: number;
  /** Lower and upper quartiles (linear interpolation between order statistics). */
  q1: number;
  q3: number;
  /** Benchmark.js's mean and relative margin of error (%, 95% confidence). */
  mean: number;
  rme: number;
  /** Op calls made while timing (warm-up excluded). */
  calls: number;
}

export interface MeasureOptions {
  /** Benchmark.js maxTime: keep sampling until this many seconds have been spent (and minSamples taken). */
  seconds: number;
  /** Benchmark.js minSamples. */
  minSamples?: number;
  /** Untimed calls before timing (first-touch of outputs, caches, branch predictors, clock ramp-up). */
  warmup?: number;
}

/** The q-quantile (0..1) of ascending `sorted`, interpolating linearly. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Median, min, max and quartiles of a list of timings. */
export function summarise(samples: readonly number[]): Pick<Timing, 'median' | 'min' | 'max' | 'q1' | 'q3'> {
  const s = [...samples].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), min: s[0], max: s[s.length - 1], q1: quantile(s, 0.25), q3: quantile(s, 0.75) };
}

/** Warms `fn` up, then times it with Benchmark.js. Rejects with fn's own error if it throws. */
export async function measure(fn: () => void, opts: MeasureOptions): Promise<Timing> {
  const warmup = opts.warmup ?? 1;
  for (let i = 0; i < warmup; i++) fn();
  // The fastest of three calls: one slow call (a page fault, a pool wake-up) would give too small an inner.
  let once = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    once = Math.min(once, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const inner = Math.max(1, Math.min(10_000, Math.ceil(1e-3 / Math.max(once, 1e-9))));

  let failure: unknown;
  let calls = 0;
  let resolves = 0;
  const bench = new Benchmark({
    defer: true,
    // Deferred resolve() chains the next call on the same stack; inner keeps that chain short. When calls
    // get much faster than the calibration said (the JIT, warm caches), Benchmark.js raises its count and
    // the chain could overflow the stack (seen on a tiny attention case), so every 256th resolve goes
    // through the event loop, which costs one hop in 256 calls.
    fn(deferred: Benchmark.Deferred) {
      try {
        if (failure === undefined) for (let i = 0; i < inner; i++) fn();
        calls += inner;
      } catch (e) {
        failure = e;
        bench.abort();
      }
      if (++resolves % 256 === 0) setImmediate(() => deferred.resolve());
      else deferred.resolve();
    },
    maxTime: opts.seconds,
    minSamples: opts.minSamples ?? 5,
    initCount: 1,
    delay: 0,
  });
  await new Promise<void>((resolve) => {
    bench.on('complete', () => resolve());
    bench.on('abort', () => resolve());
    bench.on('error', () => resolve());
    bench.run({ async: true });
  });
  if (failure !== undefined) throw failure;
  if (bench.error) throw bench.error;
  const samples = bench.stats.sample.map((s) => s / inner);
  return {
    samples,
    ...summarise(samples),
    mean: bench.stats.mean / inner,
    rme: bench.stats.rme,
    calls,
  };
}

/**
 * One Timing from the timings of several rounds of the same case (--rounds): samples pooled, statistics
 * recomputed over them (rme as Benchmark.js defines it, 95% confidence of the mean, normal approximation).
 */
export function pool(parts: readonly Timing[]): Timing {
  if (parts.length === 1) return parts[0];
  const samples = parts.flatMap((p) => p.samples);
  const n = samples.length;
  const mean = samples.reduce((s, x) => s + x, 0) / n;
  const sd = n > 1 ? Math.sqrt(samples.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return {
    samples,
    ...summarise(samples),
    mean,
    rme: mean > 0 ? (100 * 1.96 * sd) / Math.sqrt(n) / mean : 0,
    calls: parts.reduce((s, p) => s + p.calls, 0),
  };
}
