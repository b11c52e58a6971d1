import { defineConfig } from 'vitest/config';

/**
 * `npm run test:cluster`: the messaging, realtime and group suites, the event stream's model
 * test and the multi-process scale-out, on a Redis Cluster of three masters that the run starts
 * (test/support/cluster-setup.ts). With `TEST_DATABASE_URL`, on PostgreSQL too (the scale-out
 * needs it); otherwise on PGlite.
 */
export default defineConfig({
  test: {
    include: [
      'test/messaging.test.ts',
      'test/realtime.test.ts',
      'test/events.model.test.ts',
      'test/groups.test.ts',
      'test/large-groups.test.ts',
      'test/ops-scaleout.test.ts',
      'test/ops-deploy.test.ts',
    ],
    globalSetup: ['test/support/cluster-setup.ts'],
    pool: 'forks',
    fileParallelism: true,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
