/**
 * Parley as deployed: `createApp` on PostgreSQL + Redis, in its own process. `BENCH_SERVE=off`
 * runs only the persistence worker; `BENCH_WORKER=off` serves without it (to build a backlog).
 */
import { createApp } from '../../server/src/app.js';
import { loadConfig } from '../../server/src/config/index.js';
import { announceReady, gcHandler, serveCalls } from '../lib/children.js';

const env = process.env;
const config = loadConfig(
  {
    NODE_ENV: 'production',
    JWT_SECRET: env.BENCH_JWT_SECRET,
    // Tokens must outlive the whole run: connections authenticate once, at the start.
    JWT_ACCESS_TTL: '2h',
    LOG_LEVEL: 'warn',
    PARLEY_WORKER: env.BENCH_WORKER === 'off' ? 'off' : 'on',
  },
  {
    port: 0,
    host: '127.0.0.1',
    databaseUrl: env.BENCH_DATABASE_URL,
    redisUrl: env.BENCH_REDIS_URL,
    redisPrefix: env.BENCH_PREFIX ?? 'bench:',
    // Accounts are created by the thousand before the run; signing in is not what is measured.
    passwordHashCost: 10,
    // The per-user send limit guards against abuse; the saturation search goes past it on purpose.
    limits: { sendsPerUser: 1_000_000 },
  },
);

const app = await createApp(config, { serve: env.BENCH_SERVE !== 'off' });

process.once('SIGTERM', () => {
  // Exiting through `process.exit` lets `--cpu-prof` write its profile.
  void app.close().finally(() => process.exit(0));
});

serveCalls({
  ...gcHandler,
});
announceReady({ port: app.port });
