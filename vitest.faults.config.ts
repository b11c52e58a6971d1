import { defineConfig } from 'vitest/config';

/**
 * `npm run test:faults`: fault injection against PostgreSQL and Redis through test/faults/proxy.ts.
 * Scenarios break shared connections on purpose and take seconds each, so files run one at a time.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    globalSetup: ['test/faults/require-engines.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
