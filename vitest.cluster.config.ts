import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * `npm run test:cluster`: the whole suite on a Redis Cluster of three masters that the run starts
 * (test/support/cluster-setup.ts), with `TEST_DATABASE_URL` on PostgreSQL too (the tests that
 * need both engines skip otherwise). Not the broker's contract suites: each of them starts a
 * cluster of its own already, beside a single server.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [
      'test/ports/**',
      'test/broker.contract.test.ts',
      'test/faults/**',
      'test/web/**',
      '**/node_modules/**',
    ],
    globalSetup: ['test/support/cluster-setup.ts'],
    pool: 'forks',
    fileParallelism: true,
    // Files wait on timers, sockets and other processes more than they compute, so two run side by
    // side even on two cores (where vitest would run one at a time).
    maxWorkers: Math.max(2, availableParallelism() - 1),
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
