import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import postgres from 'postgres';
import { Cluster, Redis } from 'ioredis';
import { createApp, type App } from '../../server/src/app.js';
import { eventPartition, type Partition, partitionsOf } from '../../server/src/broker/keyspace.js';
import { type Config, loadConfig } from '../../server/src/config/index.js';
import { type Budgets, defaultBudgets } from '../../server/src/limits/budgets.js';
import { createLogger } from '../../server/src/logger.js';

/** The only place tests read the environment: which engines the suite runs against. */
export const engines = {
  databaseUrl: process.env.TEST_DATABASE_URL || undefined,
  redisUrl: process.env.TEST_REDIS_URL || undefined,
  /** `TEST_REDIS_URL` is a node of a Redis Cluster (`TEST_REDIS_CLUSTER=on`). */
  redisCluster: process.env.TEST_REDIS_CLUSTER === 'on',
  /** How many partitions the deployments on Redis split sends into (`TEST_REDIS_PARTITIONS`, default 1). */
  redisPartitions: Number(process.env.TEST_REDIS_PARTITIONS || 1),
};
const testPartitions = partitionsOf(engines.redisCluster, engines.redisUrl ? engines.redisPartitions : 1);
/** Where a conversation's events, messages, roster and queue keep their keys in the test broker. */
export function testPartitionFor(conversationId: string): Partition {
  return testPartitions[eventPartition(conversationId, testPartitions.length)] as Partition;
}

/** A client of the test Redis: a cluster client on a cluster. */
export function openRedis(url: string, options: { lazyConnect?: boolean } = {}): Redis | Cluster {
  return engines.redisCluster ? new Cluster([url], options) : new Redis(url, options);
}

/** The servers behind a client: each master of a cluster, or the one server. */
export function serversOf(client: Redis | Cluster): Redis[] {
  return client instanceof Cluster ? client.nodes('master') : [client];
}

export const onRealEngines = Boolean(engines.databaseUrl && engines.redisUrl);
export const engineLabel = `${engines.databaseUrl ? 'postgres' : 'pglite'}+${engines.redisUrl ? (engines.redisCluster ? 'redis-cluster' : 'redis') : 'memory'}`;

type ConfigOverrides = Parameters<typeof loadConfig>[1];

const generousBudgets = Object.fromEntries(
  Object.entries(defaultBudgets).map(([name, budget]) => [name, { ...budget, max: 1_000_000 }]),
) as Budgets;

/**
 * One isolated deployment for a test file: its own PostgreSQL database (or in-memory PGlite)
 * and its own Redis key prefix. Several app instances can be started on it; `cleanup` drops
 * the database and deletes the keys.
 */
export class TestDeployment {
  readonly apps: App[] = [];
  /** Every log line written by this deployment's apps, for checks on what is logged. */
  readonly logLines: string[] = [];
  private constructor(
    readonly databaseUrl: string | undefined,
    readonly redisUrl: string | undefined,
    readonly redisPrefix: string,
    readonly databaseName: string | null,
    readonly jwtSecret: string,
  ) {}

  static async create(): Promise<TestDeployment> {
    const id = `${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
    let databaseUrl: string | undefined;
    let databaseName: string | null = null;
    if (engines.databaseUrl) {
      databaseName = `parley_test_${id}`;
      const admin = postgres(engines.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`create database "${databaseName}"`);
      } finally {
        await admin.end();
      }
      const url = new URL(engines.databaseUrl);
      url.pathname = `/${databaseName}`;
      databaseUrl = url.toString();
    }
    return new TestDeployment(
      databaseUrl,
      engines.redisUrl,
      `test:${id}:`,
      databaseName,
      randomBytes(32).toString('hex'),
    );
  }

  config(overrides: ConfigOverrides = {}): Config {
    return loadConfig(
      { NODE_ENV: 'test', JWT_SECRET: this.jwtSecret, LOG_LEVEL: 'info' },
      {
        port: 0,
        host: '127.0.0.1',
        dataDir: 'memory://',
        databaseUrl: this.databaseUrl,
        redisUrl: this.redisUrl,
        redisCluster: engines.redisCluster,
        redisPrefix: this.redisPrefix,
        eventPartitions: this.redisUrl ? engines.redisPartitions : 1,
        // Far below OWASP's cost, only so the suite stays fast; production uses 17.
        passwordHashCost: 10,
        ...overrides,
        // Tests register many users from one address and call procedures far more often than a
        // person would; a test of a limit sets the one it checks.
        limits: {
          passwordHashQueue: 10_000,
          ...overrides.limits,
          budgets: { ...generousBudgets, ...overrides.limits?.budgets },
        },
      },
    );
  }

  /** The Redis variables of a process started on this deployment (none on the in-process broker). */
  redisEnv(): Record<string, string> {
    if (!this.redisUrl) return {};
    return {
      REDIS_URL: this.redisUrl,
      REDIS_PREFIX: this.redisPrefix,
      REDIS_CLUSTER: engines.redisCluster ? 'on' : 'off',
      REDIS_PARTITIONS: String(engines.redisPartitions),
    };
  }

  /** Starts one more instance of the app on this deployment's database and broker. */
  async start(overrides: ConfigOverrides = {}): Promise<App> {
    const lines = this.logLines;
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        callback();
      },
    });
    const config = this.config(overrides);
    const app = await createApp(config, { log: createLogger({ level: config.logLevel, destination }) });
    this.apps.push(app);
    return app;
  }

  /**
   * Log lines holding something secret: a JWT, this deployment's signing secret or the
   * password `signUp` uses. Checked for every test file by `cleanup`.
   */
  leakedSecrets(): string[] {
    const jwt = /eyJ[\w-]{2,}\.eyJ[\w-]{2,}\.[\w-]{2,}/;
    return this.logLines.filter(
      (line) => jwt.test(line) || line.includes(this.jwtSecret) || line.includes('correct horse battery'),
    );
  }

  /** Runs SQL on the server's maintenance connection (outside this deployment's database). */
  async admin(statement: string): Promise<void> {
    if (!engines.databaseUrl) throw new Error('admin SQL needs TEST_DATABASE_URL');
    const admin = postgres(engines.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(statement);
    } finally {
      await admin.end();
    }
  }

  /** Makes this deployment's PostgreSQL database refuse and drop every connection. */
  async databaseDown(): Promise<void> {
    await this.admin(`alter database "${this.databaseName}" with allow_connections false`);
    await this.admin(
      `select pg_terminate_backend(pid) from pg_stat_activity where datname = '${this.databaseName}' and pid <> pg_backend_pid()`,
    );
  }

  async databaseUp(): Promise<void> {
    await this.admin(`alter database "${this.databaseName}" with allow_connections true`);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.apps.map((app) => app.close()));
    const leaked = this.leakedSecrets();
    if (this.redisUrl) await deleteKeys(this.redisUrl, engines.redisCluster, this.redisPrefix);
    if (this.databaseName && engines.databaseUrl) {
      const admin = postgres(engines.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        await admin
          .unsafe(`alter database "${this.databaseName}" with allow_connections true`)
          .catch(() => undefined);
        await admin.unsafe(`drop database if exists "${this.databaseName}" with (force)`);
      } finally {
        await admin.end();
      }
    }
    if (leaked.length > 0) throw new Error(`secrets in ${leaked.length} log line(s):\n${leaked.join('\n')}`);
  }
}

/** Deletes every key under `prefix`: on a cluster, from each master. */
async function deleteKeys(url: string, cluster: boolean, prefix: string): Promise<void> {
  const client = cluster ? new Cluster([url], { lazyConnect: true }) : new Redis(url, { lazyConnect: true });
  await client.connect();
  try {
    for (const server of serversOf(client)) {
      let cursor = '0';
      do {
        const [next, keys] = await server.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        // One key at a time: on a cluster, keys of different slots cannot go in one DEL.
        await Promise.all(keys.map((key) => server.del(key)));
      } while (cursor !== '0');
    }
  } finally {
    await client.quit();
  }
}
