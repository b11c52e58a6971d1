import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { z } from 'zod';
import { type Budgets, defaultBudgets } from '../limits/budgets.js';

/** A duration such as `15m`, `7d`, `30s`, `500ms` or a plain number of seconds. */
const Duration = z
  .string()
  .trim()
  .regex(/^\d+(ms|s|m|h|d)?$/, 'must be a duration such as 30s, 15m, 12h or 7d')
  .transform((value) => {
    const match = /^(\d+)(ms|s|m|h|d)?$/.exec(value);
    const amount = Number(match?.[1]);
    const unit = match?.[2] ?? 's';
    const factor = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[unit] ?? 1;
    return amount * factor;
  })
  .refine((seconds) => seconds >= 1, 'must be at least one second');

/**
 * A duration that may be zero, in milliseconds: `0`, `500ms`, `10s`, `1m` (a plain number is
 * seconds, as for `Duration`).
 */
const ShortDuration = (maxMs: number, maxText: string) =>
  z
    .string()
    .trim()
    .regex(/^\d+(ms|s|m)?$/, 'must be a duration such as 0, 500ms, 10s or 1m')
    .transform((value) => {
      const match = /^(\d+)(ms|s|m)?$/.exec(value);
      const amount = Number(match?.[1]);
      const factor = { ms: 1, s: 1000, m: 60_000 }[match?.[2] ?? 's'] ?? 1000;
      return amount * factor;
    })
    .refine((ms) => ms <= maxMs, `must be at most ${maxText}`);

const Url = (protocols: string[]) =>
  z
    .string()
    .trim()
    .refine(
      (value) => {
        try {
          return protocols.includes(new URL(value).protocol);
        } catch {
          return false;
        }
      },
      `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
    );

const emptyAsUndefined = (value: unknown) => (value === '' ? undefined : value);

export const defaultLimits: Limits = {
  maxBodyBytes: 1024 * 1024,
  maxBatchSize: 50,
  maxWsPayloadBytes: 64 * 1024,
  maxConnectionsPerUser: 20,
  maxSocketsPerUser: 20,
  // Per instance. Without TRUST_PROXY behind a proxy every socket has the proxy's address, so
  // this also caps the instance's sockets in all: turn TRUST_PROXY on there.
  maxSocketsPerAddress: 100,
  // `wsLink` sends its connectionParams as the first message, right after the socket opens.
  unauthenticatedSocketMs: 10_000,
  maxSubscriptionsPerConnection: 4,
  maxSocketBufferBytes: 4 * 1024 * 1024,
  maxQueuedEvents: 2_000,
  // Below the idle timeouts of common proxies (nginx: 60 s).
  ssePingMs: 15_000,
  sseMaxDurationMs: 10 * 60_000,
  maxGroupMembers: 10_000,
  largeGroup: 1_000,
  eventLogLength: 2_000,
  loginFailuresPerAccount: 10,
  loginFailuresPerAddress: 50,
  loginFailuresPerDevice: 10,
  loginWindowSeconds: 15 * 60,
  loginDelaySeconds: 1,
  loginMaxDelaySeconds: 60,
  // Three of libuv's four threads (see `hashConcurrency`), and twice that many waiting.
  passwordHashConcurrency: 3,
  passwordHashQueue: 6,
  budgets: defaultBudgets,
  sendsPerUser: 600,
  sendWindowSeconds: 60,
};

export const EnvSchema = z.object({
  NODE_ENV: z.preprocess(
    emptyAsUndefined,
    z.enum(['development', 'production', 'test']).default('development'),
  ),
  PORT: z.preprocess(emptyAsUndefined, z.coerce.number().int().min(0).max(65535).default(3000)),
  HOST: z.preprocess(emptyAsUndefined, z.string().default('0.0.0.0')),
  DATABASE_URL: z.preprocess(emptyAsUndefined, Url(['postgres:', 'postgresql:']).optional()),
  REDIS_URL: z.preprocess(emptyAsUndefined, Url(['redis:', 'rediss:']).optional()),
  REDIS_CLUSTER: z.preprocess(emptyAsUndefined, z.enum(['on', 'off']).default('off')),
  REDIS_PARTITIONS: z.preprocess(emptyAsUndefined, z.coerce.number().int().min(1).max(32).default(1)),
  REDIS_COMMAND_TIMEOUT: z.preprocess(
    emptyAsUndefined,
    ShortDuration(60_000, '1m')
      .refine((ms) => ms >= 100, 'must be at least 100ms')
      .default(2_000),
  ),
  REDIS_PREFIX: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'may contain only letters, digits and _ . : -')
      .default(''),
  ),
  JWT_SECRET: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .refine((s) => Buffer.byteLength(s) >= 32, 'must be at least 32 bytes long')
      .optional(),
  ),
  JWT_ACCESS_TTL: z.preprocess(emptyAsUndefined, Duration.default(15 * 60)),
  JWT_REFRESH_TTL: z.preprocess(emptyAsUndefined, Duration.default(7 * 86400)),
  /**
   * How long after a refresh token was rotated presenting it again still gets its successor
   * instead of revoking the session (two tabs sharing one storage refresh together); 0 disables.
   */
  JWT_REFRESH_REUSE_GRACE: z.preprocess(emptyAsUndefined, ShortDuration(60_000, '1m').default(10_000)),
  DATA_DIR: z.preprocess(emptyAsUndefined, z.string().default('./data')),
  LOG_LEVEL: z.preprocess(
    emptyAsUndefined,
    z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ),
  /** `pretty` needs the optional `pino-pretty` package; JSON is used without it. */
  LOG_FORMAT: z.preprocess(emptyAsUndefined, z.enum(['json', 'pretty']).optional()),
  CORS_ORIGINS: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .optional()
      .transform((value) =>
        (value ?? '')
          .split(',')
          .map((origin) => origin.trim())
          .filter(Boolean),
      ),
  ),
  PARLEY_WORKER: z.preprocess(emptyAsUndefined, z.enum(['on', 'off']).default('on')),
  /** Bearer token a `/metrics` scrape must present; unset: only scrapes from this machine. */
  METRICS_TOKEN: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .refine((s) => Buffer.byteLength(s) >= 16, 'must be at least 16 bytes long')
      .optional(),
  ),
  /** `on` behind a reverse proxy: throttling uses the address it appends to X-Forwarded-For. */
  TRUST_PROXY: z.preprocess(emptyAsUndefined, z.enum(['on', 'off']).default('off')),
  PARLEY_WORKER_ID: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'may contain only letters, digits and _ . : -')
      .optional(),
  ),
  /** Most stream entries the persistence worker reads and writes as one batch. */
  PARLEY_WORKER_BATCH_SIZE: z.preprocess(
    emptyAsUndefined,
    z.coerce.number().int().min(1).max(5000).default(2000),
  ),
  /** Batches the persistence worker writes to PostgreSQL at the same time. */
  PARLEY_WORKER_CONCURRENCY: z.preprocess(emptyAsUndefined, z.coerce.number().int().min(1).max(8).default(3)),
  /** How long the persistence worker waits after a small batch before it reads the next. */
  PARLEY_WORKER_LINGER: z.preprocess(emptyAsUndefined, ShortDuration(1_000, '1s').default(100)),
  /** Most members a group may have. */
  PARLEY_MAX_GROUP_MEMBERS: z.preprocess(
    emptyAsUndefined,
    z.coerce.number().int().min(2).max(100_000).default(defaultLimits.maxGroupMembers),
  ),
  /** Past this many members, a group has no typing, no shared read receipts and no presence. */
  PARLEY_LARGE_GROUP: z.preprocess(
    emptyAsUndefined,
    z.coerce.number().int().min(2).max(100_000).default(defaultLimits.largeGroup),
  ),
  /** WebSocket connections one user may hold open on one instance. */
  PARLEY_MAX_SOCKETS_PER_USER: z.preprocess(
    emptyAsUndefined,
    z.coerce.number().int().min(1).max(10_000).default(defaultLimits.maxSocketsPerUser),
  ),
  /** WebSocket connections one client address may hold open on one instance. */
  PARLEY_MAX_SOCKETS_PER_ADDRESS: z.preprocess(
    emptyAsUndefined,
    z.coerce.number().int().min(1).max(1_000_000).default(defaultLimits.maxSocketsPerAddress),
  ),
  /** How long a WebSocket may stay open without authenticating. */
  PARLEY_WS_AUTH_TIMEOUT: z.preprocess(
    emptyAsUndefined,
    Duration.default(defaultLimits.unauthenticatedSocketMs / 1000),
  ),
  /** The built web app to serve at `/`: a directory with index.html, or `off`. Default: web/dist. */
  PARLEY_WEB_DIR: z.preprocess(emptyAsUndefined, z.string().trim().min(1).optional()),
  /** How long one server-sent events response lasts before the client is made to reconnect. */
  PARLEY_SSE_MAX_DURATION: z.preprocess(
    emptyAsUndefined,
    Duration.default(defaultLimits.sseMaxDurationMs / 1000),
  ),
});

export type Env = z.infer<typeof EnvSchema>;

export interface Limits {
  /** Largest HTTP request body, in bytes. */
  maxBodyBytes: number;
  /** Most calls in one HTTP batch. */
  maxBatchSize: number;
  /** Largest WebSocket frame, in bytes. */
  maxWsPayloadBytes: number;
  /** `events` streams one user may hold open across all instances (WebSocket and SSE). */
  maxConnectionsPerUser: number;
  /**
   * WebSocket connections one user may hold open on one instance. Counted per instance: a
   * socket costs the instance that holds it, and the streams on them are capped across
   * instances by `maxConnectionsPerUser`.
   */
  maxSocketsPerUser: number;
  /**
   * WebSocket connections one client address (with `trustProxy`, the forwarded one) may hold
   * open on one instance; more are refused before the upgrade with 429.
   */
  maxSocketsPerAddress: number;
  /** A WebSocket that has not authenticated within this long is closed (1008). */
  unauthenticatedSocketMs: number;
  /** Subscriptions one WebSocket connection may hold. */
  maxSubscriptionsPerConnection: number;
  /** Buffered bytes after which a socket that does not read is closed. */
  maxSocketBufferBytes: number;
  /** Events waiting for one subscription before it is closed as too slow. */
  maxQueuedEvents: number;
  /** An `events` stream over server-sent events gets a `ping` after this long without an event. */
  ssePingMs: number;
  /** An `events` response over server-sent events ends after this long; the client reconnects and resumes. */
  sseMaxDurationMs: number;
  /** Most members of a group, its owner included. */
  maxGroupMembers: number;
  /**
   * Past this many members a group is large: nobody is told who types in it, a read receipt
   * goes only to the reader's own devices, and sharing it makes nobody a contact (presence).
   */
  largeGroup: number;
  /**
   * Events kept per conversation (and per user's inbox) for resume; a client away for longer
   * gets `resync`.
   */
  eventLogLength: number;
  /**
   * Password guesses allowed per account (sign-in, and the current password that changing the
   * password or deleting the account asks for) and per address, without delay, within
   * `loginWindowSeconds`; past that, sign-in slows down (`loginDelaySeconds`) rather than
   * refusing until the window ends. A sign-in that presents the device token of an earlier one
   * on that account is counted against that device alone (`loginFailuresPerDevice`), so what
   * others try never holds it up.
   */
  loginFailuresPerAccount: number;
  loginFailuresPerAddress: number;
  loginFailuresPerDevice: number;
  /** The window closes this long after the last attempt. */
  loginWindowSeconds: number;
  /** Past the allowance: the wait after the first further guess, doubling with each one after. */
  loginDelaySeconds: number;
  /** ...up to this. */
  loginMaxDelaySeconds: number;
  /**
   * Password hashes (scrypt: 128 MiB and about half a second each) computed at once by this
   * instance, and how many more may wait for one; beyond that a call gets TOO_MANY_REQUESTS.
   */
  passwordHashConcurrency: number;
  passwordHashQueue: number;
  /** Calls per user or per address of each procedure (`server/src/limits/budgets.ts`). */
  budgets: Budgets;
  /** Messages one user may send within `sendWindowSeconds`. */
  sendsPerUser: number;
  sendWindowSeconds: number;
}

export interface Config {
  env: Env['NODE_ENV'];
  port: number;
  host: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  /** `redisUrl` is one node of a Redis Cluster, from which the others are found. */
  redisCluster: boolean;
  /** Prefix for every Redis key and channel; lets several deployments or test runs share one Redis. */
  redisPrefix: string;
  /**
   * How long a Redis command may take before its caller is answered `SERVICE_UNAVAILABLE`
   * (`REDIS_COMMAND_TIMEOUT`); a worker's blocking read waits this much beyond its block.
   */
  redisCommandTimeoutMs: number;
  /**
   * How many partitions sends and events are split into (`REDIS_PARTITIONS`): each conversation
   * belongs to one, with its own event order, message stream and worker group, under its own
   * hash tag, so a Redis Cluster spreads them over its masters (`EventLog.partitions`). Without
   * Redis it is 1 (the in-process engine gains nothing from more, though it takes any number).
   */
  eventPartitions: number;
  jwt: {
    secret: Uint8Array;
    generated: boolean;
    accessTtlSeconds: number;
    refreshTtlSeconds: number;
    /**
     * Within this long after a refresh token was rotated, presenting it again answers with the
     * same successor refresh token (and a new access token of the session) instead of counting as
     * reuse; 0: any second presentation is reuse.
     */
    refreshReuseGraceMs: number;
    issuer: string;
    audience: string;
  };
  /** log2 of the scrypt cost N; 17 is OWASP's recommendation (128 MiB per hash). */
  passwordHashCost: number;
  dataDir: string;
  logLevel: Env['LOG_LEVEL'];
  /** JSON lines (default) or human-readable output (default in development). */
  logFormat: 'json' | 'pretty';
  corsOrigins: string[];
  /** Take the client address from the last X-Forwarded-For entry (set by a trusted proxy). */
  trustProxy: boolean;
  /** What a `/metrics` scrape must send as its bearer token; null: scrapes from loopback only. */
  metricsToken: string | null;
  /** The built web app served at `/` (its index.html for every other page path); null: none. */
  webDir: string | null;
  runWorker: boolean;
  worker: {
    /** Consumer name in the stream's group; a stable one lets a restarted worker resume its own entries at once. */
    consumerName: string;
    /** Most entries per batch (XREADGROUP COUNT: a batch never waits to fill up). */
    batchSize: number;
    /** Batches written at the same time, each in its own transaction. */
    concurrency: number;
    blockMs: number;
    /**
     * After a small batch, how long the next read waits so that a trickle of messages is
     * written in fewer statements; it adds to the persistence lag.
     */
    lingerMs: number;
    claimIdleMs: number;
    maxDeliveries: number;
  };
  limits: Limits;
  presence: {
    /** A connection not refreshed within this long counts as gone (its instance died). */
    ttlMs: number;
    heartbeatMs: number;
  };
  version: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Why every process without REDIS_URL runs its own worker: the in-process broker's stream is
 * seen by no other process, so nothing else could write its messages to the database.
 */
export const IN_PROCESS_WORKER_ONLY =
  'without REDIS_URL the broker is in-process, so the persistence worker must run in the same process (set REDIS_URL to run the API and the worker apart)';

/**
 * Reads the environment once. This is the only module that looks at `process.env`;
 * everything else receives a `Config`. `fileValues` (from `.env` and `parley --config`) use
 * the same variable names and count only where the environment leaves a variable unset or empty.
 */
export function loadConfig(
  source: Record<string, string | undefined> = process.env,
  overrides: Partial<Omit<Config, 'jwt' | 'limits' | 'worker' | 'presence'>> & {
    jwt?: Partial<Config['jwt']>;
    limits?: Partial<Omit<Limits, 'budgets'>> & { budgets?: Partial<Budgets> };
    worker?: Partial<Config['worker']>;
    presence?: Partial<Config['presence']>;
  } = {},
  fileValues: Record<string, string> = {},
): Config {
  const merged: Record<string, string | undefined> = { ...fileValues };
  for (const [key, value] of Object.entries(source)) {
    if (value !== undefined && value !== '') merged[key] = value;
  }
  const parsed = EnvSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const env = parsed.data;
  if (env.NODE_ENV === 'production' && !env.JWT_SECRET) {
    throw new ConfigError(
      'Invalid configuration:\n  JWT_SECRET: is required when NODE_ENV=production (at least 32 bytes)',
    );
  }
  if (env.PARLEY_WORKER === 'off' && !(overrides.redisUrl ?? env.REDIS_URL)) {
    throw new ConfigError(`Invalid configuration:\n  PARLEY_WORKER: ${IN_PROCESS_WORKER_ONLY}`);
  }
  const secret = env.JWT_SECRET ? new TextEncoder().encode(env.JWT_SECRET) : new Uint8Array(randomBytes(32));
  const base: Config = {
    env: env.NODE_ENV,
    port: env.PORT,
    host: env.HOST,
    databaseUrl: env.DATABASE_URL,
    redisUrl: env.REDIS_URL,
    redisCluster: env.REDIS_CLUSTER === 'on',
    redisPrefix: env.REDIS_PREFIX,
    redisCommandTimeoutMs: env.REDIS_COMMAND_TIMEOUT,
    eventPartitions: (overrides.redisUrl ?? env.REDIS_URL) ? env.REDIS_PARTITIONS : 1,
    jwt: {
      secret,
      generated: !env.JWT_SECRET,
      accessTtlSeconds: env.JWT_ACCESS_TTL,
      refreshTtlSeconds: env.JWT_REFRESH_TTL,
      refreshReuseGraceMs: env.JWT_REFRESH_REUSE_GRACE,
      issuer: 'parley',
      audience: 'parley',
    },
    passwordHashCost: 17,
    dataDir: env.DATA_DIR,
    logLevel: env.LOG_LEVEL,
    logFormat: env.LOG_FORMAT ?? (env.NODE_ENV === 'development' ? 'pretty' : 'json'),
    corsOrigins: env.CORS_ORIGINS,
    trustProxy: env.TRUST_PROXY === 'on',
    metricsToken: env.METRICS_TOKEN ?? null,
    webDir: env.PARLEY_WEB_DIR === 'off' ? null : path.resolve(env.PARLEY_WEB_DIR ?? defaultWebDir()),
    runWorker: env.PARLEY_WORKER === 'on',
    worker: {
      consumerName: env.PARLEY_WORKER_ID ?? `${hostname()}-${process.pid}`,
      batchSize: env.PARLEY_WORKER_BATCH_SIZE,
      concurrency: env.PARLEY_WORKER_CONCURRENCY,
      blockMs: 1000,
      lingerMs: env.PARLEY_WORKER_LINGER,
      claimIdleMs: 30_000,
      maxDeliveries: 5,
    },
    limits: {
      ...defaultLimits,
      ...hashConcurrency(source.UV_THREADPOOL_SIZE),
      maxGroupMembers: env.PARLEY_MAX_GROUP_MEMBERS,
      largeGroup: env.PARLEY_LARGE_GROUP,
      maxSocketsPerUser: env.PARLEY_MAX_SOCKETS_PER_USER,
      maxSocketsPerAddress: env.PARLEY_MAX_SOCKETS_PER_ADDRESS,
      unauthenticatedSocketMs: env.PARLEY_WS_AUTH_TIMEOUT * 1000,
      sseMaxDurationMs: env.PARLEY_SSE_MAX_DURATION * 1000,
    },
    presence: { ttlMs: 45_000, heartbeatMs: 15_000 },
    version: '0.1.0',
  };
  return {
    ...base,
    ...overrides,
    jwt: { ...base.jwt, ...overrides.jwt },
    limits: {
      ...base.limits,
      ...overrides.limits,
      budgets: { ...base.limits.budgets, ...overrides.limits?.budgets },
    },
    worker: { ...base.worker, ...overrides.worker },
    presence: { ...base.presence, ...overrides.presence },
  };
}

/**
 * Reads a dotenv file (`KEY=value` lines, as in `.env.example`) if it exists: the CLI passes
 * what it holds to `loadConfig` beneath the environment, so a variable that is set wins.
 * Keys Parley does not know are left out (a `.env` often serves other tools too), and so are
 * empty values, which the environment treats as unset as well.
 */
export function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ConfigError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  const known = new Set(Object.keys(EnvSchema.shape));
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(parseEnv(text))) {
    if (known.has(key) && value !== undefined && value !== '') values[key] = value;
  }
  return values;
}

/**
 * Where `npm run build` (or the image) puts the web app: web/dist at the repository root, which
 * is three folders above this module in the sources (server/src/config) and five in the compiled
 * server (server/dist/server/src/config). The nearest one that holds an index.html wins.
 */
function defaultWebDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [3, 5].map((up) => path.resolve(here, '../'.repeat(up), 'web', 'dist'));
  return candidates.find((dir) => existsSync(path.join(dir, 'index.html'))) ?? candidates[0] ?? 'web/dist';
}

/**
 * Password hashes run on libuv's thread pool (`UV_THREADPOOL_SIZE`, 4 by default), which also
 * serves WebCrypto (every token signed or verified), DNS lookups and file access: hashing on
 * all of its threads would hold those up behind half-second hashes. One thread is left free;
 * raise `UV_THREADPOOL_SIZE` for more hashes at once.
 */
function hashConcurrency(
  threadPoolSize: string | undefined,
): Pick<Limits, 'passwordHashConcurrency' | 'passwordHashQueue'> {
  const threads = Number.parseInt(threadPoolSize ?? '', 10);
  const concurrency = Math.max(1, (Number.isInteger(threads) && threads > 0 ? threads : 4) - 1);
  return { passwordHashConcurrency: concurrency, passwordHashQueue: concurrency * 2 };
}
