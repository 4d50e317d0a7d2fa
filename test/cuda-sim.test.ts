// The CPU execution of CUDA (cuda/sim, DESIGN.md 6.8) must catch what a GPU run would not show as a wrong
// number: each deliberate bug below fails its launch with a message naming it, and its correct twin passes.
import { describe, expect, it } from 'vitest';
import { cudaForTests, simulated } from './cuda-helpers.js';
import { cudaInfo } from '../src/device.js';

describe.runIf(simulated)('cuda simulator', () => {
  const a = cudaForTests();

  it('reports itself as simulated and available', () => {
    const i = cudaInfo();
    expect(i.available).toBe(true);
    expect(i.simulated).toBe(true);
    expect(i.device).toMatch(/simulator/);
  });

  it('runs every launch under several thread schedules', () => {
    expect(a.simSetSchedules!()).toBe('forward,reverse,shuffle');
  });

  it('a block that reverses through shared memory with its barrier passes', () => {
    expect(a.simSelfTest!('barrier')).toBe('');
  });

  it('the same block with the barrier dropped fails: the schedules disagree', () => {
    const r = a.simSelfTest!('barrier-dropped');
    expect(r).toMatch(/cudaErrorLaunchFailure/);
    expect(r).toMatch(/depends on the thread schedule/);
  });

  it('reading within a buffer passes; one element past its end fails with an illegal address', () => {
    expect(a.simSelfTest!('bounds')).toBe('');
    const r = a.simSelfTest!('bounds-past');
    expect(r).toMatch(/cudaErrorIllegalAddress/);
    expect(r).toMatch(/0 bytes past the end of device allocation/);
  });

  it('a full-mask warp reduction passes; a mask leaving out lanes that take part fails', () => {
    expect(a.simSelfTest!('mask')).toBe('');
    const r = a.simSelfTest!('mask-missing-lane');
    expect(r).toMatch(/cudaErrorLaunchFailure/);
    expect(r).toMatch(/mask/);
  });

  it('a single schedule alone does not see the dropped barrier as a race (why several are run)', () => {
    const before = a.simSetSchedules!();
    try {
      a.simSetSchedules!('forward');
      expect(a.simSelfTest!('barrier-dropped')).toBe('');
    } finally {
      a.simSetSchedules!(before);
    }
  });
});
