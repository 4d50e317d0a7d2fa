// `seqkern info --calibrate` and `seqkern bench --async` (issue 15.1-15.3): they run and report every case.
// No timing is asserted (the lead measures on a quiet machine).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main, type IO } from '../bench/cli.js';

function captureIO(): IO & { stdout: string; stderr: string } {
  const io = { stdout: '', stderr: '', tty: false, out(s: string) { io.stdout += s; }, err(s: string) { io.stderr += s; } };
  return io;
}

describe('seqkern info --calibrate', () => {
  it('prints the calibrations it ran (text and --json)', async () => {
    const io = captureIO();
    expect(await main(['info', '--calibrate'], io)).toBe(0);
    expect(io.stdout).toMatch(/K=64 V=64: (chunk|recurrent) \(chunk [\d.]+ ms, recurrent [\d.]+ ms/);
    expect(io.stdout).toMatch(/K=128 V=128: (chunk|recurrent)/);
    const j = captureIO();
    expect(await main(['info', '--calibrate', '--json'], j)).toBe(0);
    const parsed = JSON.parse(j.stdout);
    expect(parsed.calibrations.map((c: { K: number }) => c.K)).toEqual([64, 128]);
    expect(await main(['info', '--calibrate', '--nope'], captureIO())).toBe(2);
  });
});

describe('seqkern bench --async', () => {
  it('times every case and writes them to --json', async () => {
    const io = captureIO();
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'seqkern-async-')), 'async.json');
    expect(await main(['bench', '--async', '--seconds', '0.01', '--json', file], io)).toBe(0);
    const rows = JSON.parse(readFileSync(file, 'utf8')).rows as { case: string; mode: string; medianUs: number; samples: number }[];
    expect(rows.length).toBe(20); // 4 modes x 2 ops, 5 of the delta/attention chain, 5 of the serving-op chain, 2 readFile
    for (const r of rows) {
      expect(r.medianUs, `${r.case} ${r.mode}`).toBeGreaterThan(0);
      expect(r.samples).toBeGreaterThanOrEqual(20);
    }
    expect(io.stdout).toMatch(/async overhead \(target <= 50 us\): delta step -?[\d.]+ us back to back/);
    expect(io.stdout).toMatch(/chain of 8 \/ sum of its syncs \(target <= 1\.2\): [\d.]+ back to back/);
    expect(io.stdout).toMatch(/chain of 8 serving ops \/ sum of its syncs \(target <= 1\.2\): [\d.]+ back to back/);
    expect(io.stdout).toMatch(/fs\.readFile with 6 async prefills queued \/ idle \(target <= 2\): [\d.]+/);
    expect(await main(['bench', '--async', '--seconds', 'x'], captureIO())).toBe(2);
  }, 120_000);
});
