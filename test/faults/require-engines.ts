import { engines } from '../support/env.js';

/** Fault injection needs the real engines; without them the run fails instead of passing empty. */
export default function requireEngines(): void {
  if (!engines.databaseUrl || !engines.redisUrl) {
    throw new Error(
      'npm run test:faults needs PostgreSQL and Redis: set TEST_DATABASE_URL and TEST_REDIS_URL, e.g. ' +
        'TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres TEST_REDIS_URL=redis://127.0.0.1:6379',
    );
  }
}
