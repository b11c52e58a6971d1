/**
 * Parley as deployed: `createApp` on PostgreSQL + Redis, in its own process, from its build.
 * `BENCH_SERVE=off` runs only the persistence worker; `BENCH_WORKER=off` serves without it (to
 * build a backlog).
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

import type * as Schema from '../../drizzle/schema.js';
import type * as AppModule from '../../server/src/app.js';
import type * as Passwords from '../../server/src/credentials/passwords.js';
import type * as Ids from '../../server/src/ids.js';
import type * as ConfigModule from '../../server/src/config/index.js';
import { announceReady, gcHandler, serveCalls } from '../lib/children.js';

/**
 * A module of the server as `npm start` runs it: the JavaScript the build writes to server/dist
 * (`npm run bench` builds it first when a source is newer), typed by its source. Through tsx the
 * sources would run with what its transform adds (a call naming every function created).
 */
const built = async <T>(file: string): Promise<T> =>
  (await import(new URL(`../../server/dist/${file}`, import.meta.url).href)) as T;
const { users } = await built<typeof Schema>('drizzle/schema.js');
const { createApp } = await built<typeof AppModule>('server/src/app.js');
const { hashPassword } = await built<typeof Passwords>('server/src/credentials/passwords.js');
const { uuidv7 } = await built<typeof Ids>('server/src/ids.js');
const { loadConfig } = await built<typeof ConfigModule>('server/src/config/index.js');

const env = process.env;
const config = loadConfig(
  {
    NODE_ENV: 'production',
    JWT_SECRET: env.BENCH_JWT_SECRET,
    // Tokens must outlive the whole run: connections authenticate once, at the start.
    JWT_ACCESS_TTL: '2h',
    LOG_LEVEL: 'warn',
    PARLEY_WORKER: env.BENCH_WORKER === 'off' ? 'off' : 'on',
    // Worker tuning, when the environment sets it (defaults otherwise).
    PARLEY_WORKER_BATCH_SIZE: env.PARLEY_WORKER_BATCH_SIZE,
    PARLEY_WORKER_CONCURRENCY: env.PARLEY_WORKER_CONCURRENCY,
    PARLEY_WORKER_LINGER: env.PARLEY_WORKER_LINGER,
    // Groups go up to --group-size, and the group-size and big-room phases past that: the runner
    // sets it for the largest group of the run.
    PARLEY_MAX_GROUP_MEMBERS: env.PARLEY_MAX_GROUP_MEMBERS ?? '1000',
    // Partitions of sends and events, when the environment sets it (one otherwise).
    REDIS_PARTITIONS: env.REDIS_PARTITIONS,
    REDIS_CLUSTER: env.REDIS_CLUSTER,
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
    // Every client connects from this machine's address.
    limits: { sendsPerUser: 1_000_000, maxSocketsPerAddress: 1_000_000 },
  },
);

const app = await createApp(config, { serve: env.BENCH_SERVE !== 'off' });

process.once('SIGTERM', () => {
  // Exiting through `process.exit` lets `--cpu-prof` write its profile.
  void app.close().finally(() => process.exit(0));
});

/** Runs `task` for 0..count-1 with at most `lanes` in flight. */
async function inLanes<R>(count: number, lanes: number, task: (index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < count) {
        const index = next++;
        out[index] = await task(index);
      }
    }),
  );
  return out;
}

/**
 * `count` user rows sharing one password hash (hashing 10,000 times would only measure
 * scrypt), and sessions for the first `sessions` of them as `auth.register` issues them.
 */
async function createUsers(count: number, tag: string, sessions: number) {
  const { db, sessions: sessionService } = app.services;
  const passwordHash = await hashPassword('bench password', config.passwordHashCost);
  const rows = Array.from({ length: count }, (_, i) => ({
    id: randomUUID(),
    email: `bench_${tag}_${i}@bench.test`,
    username: `b${tag}_${i}`,
    displayName: `b${tag}_${i}`,
    passwordHash,
  }));
  for (let i = 0; i < rows.length; i += 1000) await db.insert(users).values(rows.slice(i, i + 1000));
  return inLanes(count, 32, async (i) => {
    const row = rows[i];
    if (!row) throw new Error('missing row');
    const user = { id: row.id, username: row.username };
    return { user, tokens: i < sessions ? await sessionService.start(user) : null };
  });
}

const profiler = new Session();
profiler.connect();
const post = (method: string, params?: object) =>
  new Promise<unknown>((resolve, reject) =>
    profiler.post(method, params, (error, result) => (error ? reject(error) : resolve(result))),
  );

serveCalls({
  ...gcHandler,
  /** CPU profile of a chosen window (the measured run only, not setup). */
  async startProfile() {
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 500 });
    await post('Profiler.start');
  },
  /** Sampled allocations still live at the stop (what idle subscribers retain). */
  async startHeapSampling() {
    await post('HeapProfiler.enable');
    await post('HeapProfiler.startSampling', { samplingInterval: 4096 });
  },
  async stopHeapSampling({ file }: { file: string }) {
    const { profile } = (await post('HeapProfiler.stopSampling')) as { profile: unknown };
    writeFileSync(file, JSON.stringify(profile));
    return file;
  },
  async stopProfile({ file }: { file: string }) {
    const { profile } = (await post('Profiler.stop')) as { profile: unknown };
    writeFileSync(file, JSON.stringify(profile));
    return file;
  },
  /**
   * Accounts as `auth.register` leaves them, minus HTTP (whose registration budget is five per
   * address in ten minutes): user rows as `UserService.create` writes them, then a session and
   * tokens for the first `sessions` of them (all by default), so that 10,000 take seconds.
   */
  createUsers: ({ count, tag, sessions }: { count: number; tag: string; sessions?: number }) =>
    createUsers(count, tag, sessions ?? count),
  /**
   * Accounts and group conversations for the clients, made through the same services as
   * `auth.register` and `conversation.createGroup`, minus HTTP. With `roomsLater`, the
   * conversations get their ids now and are written by `writeRooms` (see there).
   */
  async createAccounts({ count, groupSize, tag }: { count: number; groupSize: number; tag: string }) {
    const { conversations } = app.services;
    const accounts = await createUsers(count, tag, count);
    const conversationIds = await inLanes(Math.ceil(count / groupSize), 16, async (g) => {
      const [owner, ...others] = accounts.slice(g * groupSize, (g + 1) * groupSize);
      if (!owner) throw new Error('empty group');
      const conversation = await conversations.createGroup(owner.user, {
        name: `bench ${g}`,
        memberIds: others.map((member) => member.user.id),
      });
      return conversation.id;
    });
    return accounts.map((account, index) => ({
      index,
      token: account.tokens?.accessToken ?? '',
      refreshToken: account.tokens?.refreshToken,
      expiresIn: account.tokens?.expiresIn,
      conversationId: conversationIds[Math.floor(index / groupSize)] ?? '',
    }));
  },
  /** Rows this process's persistence worker has written so far, without asking PostgreSQL. */
  persisted: () => app.workers.reduce((sum, worker) => sum + worker.stats.persisted, 0),
  /** How far the persistence group is behind the message stream. */
  async groupLag() {
    const { group } = await app.services.broker.queues[0].info();
    return group ? { lag: group.lag, pending: group.pending } : null;
  },
  /**
   * Appends `count` messages to the message stream, round-robin over `senders`' conversations.
   */
  async fillBacklog({
    count,
    senders,
  }: {
    count: number;
    senders: { token: string; conversationId: string }[];
  }) {
    const users = await Promise.all(
      senders.map(async (sender) => {
        const user = await app.services.auth.authenticate(sender.token);
        if (!user) throw new Error('a backlog sender could not authenticate');
        return { user, conversationId: sender.conversationId };
      }),
    );
    const content = 'backlog '.repeat(12).trim();
    // Straight into the stream through the message store, in the very format `message.send`
    // writes (seq allocation included); events are not published, nobody is listening.
    let next = 0;
    await Promise.all(
      Array.from({ length: 128 }, async () => {
        while (next < count) {
          const n = next++;
          const sender = users[n % users.length];
          if (!sender) return;
          const { conversationId } = sender;
          await app.services.store.appendNew(
            {
              id: uuidv7(),
              conversationId,
              senderId: sender.user.id,
              senderUsername: sender.user.username,
              content,
              type: 'text',
              clientMessageId: null,
              sentAt: new Date(),
              editedAt: null,
              deletedAt: null,
            },
            null,
          );
        }
      }),
    );
    return { sent: count };
  },
});
announceReady({ port: app.port });
