import { defineConfig } from 'vitest/config';

// The web app's end-to-end tests in headless Chromium (`npm run test:web`): apart from `npm test`,
// which must not need a browser.
export default defineConfig({
  test: {
    include: ['test/web/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One browser at a time: each file runs several.
    fileParallelism: false,
    reporters: ['default'],
  },
});
