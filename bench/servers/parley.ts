/**
 * Parley as deployed: `createApp` on PostgreSQL + Redis, in its own process. `BENCH_SERVE=off`
 * runs only the persistence worker; `BENCH_WORKER=off` serves without it (to build a backlog).
 */
import { createApp } from '../../server/src/app.js';
import { loadConfig } from '../../server/src/config/index.js';
import { MESSAGES_STREAM, PERSIST_GROUP } from '../../server/src/messages/store.js';
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
  /** How far the persistence group is behind the message stream. */
  async groupLag() {
    const info = await app.services.broker.groupInfo(MESSAGES_STREAM, PERSIST_GROUP);
    return info ? { lag: info.lag, pending: info.pending } : null;
  },
  /**
   * Sends `count` messages through the message service (the code behind `message.send`, minus
   * the transport), round-robin over `senders`, 64 at a time.
   */
  async fillBacklog({ count, senders }: { count: number; senders: { token: string; conversationId: string }[] }) {
    const users = await Promise.all(
      senders.map(async (sender) => {
        const user = await app.services.auth.authenticate(sender.token);
        if (!user) throw new Error('a backlog sender could not authenticate');
        return { user, conversationId: sender.conversationId };
      }),
    );
    const content = 'backlog '.repeat(12).trim();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < count) {
          const n = next++;
          const sender = users[n % users.length];
          if (!sender) return;
          await app.services.messages.send(sender.user, { conversationId: sender.conversationId, content });
        }
      }),
    );
    return { sent: count };
  },
});
announceReady({ port: app.port });
