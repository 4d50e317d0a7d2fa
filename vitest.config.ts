import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Outputs are filled with NaN before each native call, so an element a kernel forgets to write fails.
    env: { SEQKERN_POISON: '1' },
    testTimeout: 120_000,
    pool: 'forks',
  },
});
