import { TRPCClientError } from '@trpc/client';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { expect } from 'vitest';
import type { App } from '../../server/src/app.js';
import { RedisBroker } from '../../server/src/broker/redis/engine.js';
import type { loadConfig } from '../../server/src/config/index.js';
import type { Message } from '../../server/src/contracts/schemas.js';
import type { EventTap } from '../support/events.js';
import { TestDeployment } from '../support/env.js';
import { TcpProxy } from '../support/proxy.js';
import { faultEngines, waitUntil } from './support.js';

type Overrides = Parameters<typeof loadConfig>[1];

/**
 * One fault scenario: its own database and Redis prefix, a proxy in front of each, and direct
 * (unproxied) connections for the oracle, which must see the truth whatever the proxies do.
 */
export class Scenario {
  private constructor(
    readonly deployment: TestDeployment,
    readonly pg: TcpProxy,
    readonly redis: TcpProxy,
    readonly sql: postgres.Sql,
    readonly broker: RedisBroker,
    /** The Redis URL of this scenario's data (a database of its own, or the shared one). */
    readonly redisUrl: string,
    /** The key prefix apps of this scenario use. */
    readonly redisPrefix: string,
    private readonly ownRedisDb: boolean,
  ) {}

  /**
   * `ownRedisDb`: use an empty Redis database of its own with no key prefix, for scenarios that
   * run `parley` processes, which (like any deployment) use unprefixed keys.
   */
  static async create(options: { ownRedisDb?: boolean } = {}): Promise<Scenario> {
    const base = faultEngines().redisUrl;
    const deployment = await TestDeployment.create();
    const databaseUrl = deployment.databaseUrl;
    if (!databaseUrl) throw new Error('fault scenarios need PostgreSQL');
    const redisUrl = options.ownRedisDb ? await emptyRedisDatabase(base) : base;
    const redisPrefix = options.ownRedisDb ? '' : deployment.redisPrefix;
    const [pg, redis] = await Promise.all([TcpProxy.start(databaseUrl), TcpProxy.start(redisUrl)]);
    const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
    const broker = await RedisBroker.connect({ url: redisUrl, prefix: redisPrefix });
    return new Scenario(
      deployment,
      pg,
      redis,
      sql,
      broker,
      redisUrl,
      redisPrefix,
      Boolean(options.ownRedisDb),
    );
  }

  /** An app instance whose PostgreSQL and Redis connections go through the proxies. */
  start(overrides: Overrides = {}): Promise<App> {
    return this.deployment.start({
      databaseUrl: this.pg.rewrite(this.deployment.databaseUrl ?? ''),
      redisUrl: this.redis.rewrite(this.redisUrl),
      redisPrefix: this.redisPrefix,
      ...overrides,
    });
  }

  async close(): Promise<void> {
    this.pg.restore();
    this.redis.restore();
    await this.deployment.cleanup();
    if (this.ownRedisDb) {
      const redis = new Redis(this.redisUrl);
      await redis.flushdb();
      redis.disconnect();
    }
    await this.broker.close();
    await this.sql.end({ timeout: 2 });
    await Promise.all([this.pg.close(), this.redis.close()]);
  }

  /** Rows PostgreSQL holds for the conversation, as the oracle counts them. */
  async rows(conversationId: string): Promise<{ id: string; seq: number }[]> {
    return this.sql<{ id: string; seq: number }[]>`
      select id::text as id, seq::int as seq from messages where conversation_id = ${conversationId}`;
  }

  /** Waits until the persistence worker has written and acknowledged everything. */
  async drained(timeoutMs = 60_000): Promise<void> {
    await waitUntil(
      async () => {
        const { group } = await this.broker.queues[0].info();
        return group !== null && group.lag === 0 && group.pending === 0;
      },
      'the worker drained the stream',
      timeoutMs,
    );
  }
}

/** A Redis database nobody uses (no keys), from the highest index down. */
async function emptyRedisDatabase(base: string): Promise<string> {
  for (let db = 15; db >= 8; db--) {
    const url = new URL(base);
    url.pathname = `/${db}`;
    const redis = new Redis(url.toString());
    const size = await redis.dbsize();
    redis.disconnect();
    if (size === 0) return url.toString();
  }
  throw new Error('no empty Redis database among 8-15 for a scenario of its own');
}

/** The tRPC error code of a failed call, or the error's message for anything else. */
export function failureCode(error: unknown): string {
  if (error instanceof TRPCClientError) {
    const data = (error as TRPCClientError<never>).data as { code?: string } | undefined;
    return data?.code ?? error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

export interface OracleInput {
  label: string;
  scenario: Scenario;
  conversationId: string;
  /** How many sends were attempted. */
  attempted: number;
  /** The messages whose `send` resolved. */
  resolved: Message[];
  /** Every online recipient device's event stream (after any resume). */
  recipients: { name: string; events: EventTap }[];
  /** What the recipients were online for, when not every resolved send (default: all). */
  delivered?: Message[];
  /** Extra facts the scenario checked, printed with the rest. */
  notes?: Record<string, string | number | boolean>;
}

/**
 * The same check ends every scenario: every send that resolved is in PostgreSQL exactly once,
 * every online recipient got it exactly once, and nothing is left pending.
 */
export async function oracle(input: OracleInput): Promise<void> {
  const { scenario, conversationId, resolved, recipients, label } = input;
  await scenario.drained();
  const resolvedIds = new Set(resolved.map((m) => m.id));
  expect(resolvedIds.size, `${label}: a resolved send returned another's id`).toBe(resolved.length);

  const rows = await scenario.rows(conversationId);
  const rowCount = new Map<string, number>();
  for (const row of rows) rowCount.set(row.id, (rowCount.get(row.id) ?? 0) + 1);
  const missingRows = [...resolvedIds].filter((id) => !rowCount.has(id));
  const duplicateRows = [...rowCount.values()].filter((n) => n > 1).length;
  const seqs = rows.map((row) => row.seq);
  expect(missingRows, `${label}: resolved sends missing from PostgreSQL`).toEqual([]);
  expect(duplicateRows, `${label}: rows stored twice`).toBe(0);
  expect(new Set(seqs).size, `${label}: a seq used twice`).toBe(seqs.length);
  for (const message of resolved) {
    const row = rows.find((r) => r.id === message.id);
    expect(row?.seq, `${label}: stored seq differs from the one the send returned`).toBe(message.seq);
  }

  let deliveries = 0;
  let duplicateDeliveries = 0;
  const expectedIds = new Set((input.delivered ?? resolved).map((m) => m.id));
  for (const { name, events } of recipients) {
    await events
      .until((received) => {
        const got = new Set(
          received
            .filter((r) => r.event.type === 'message.created')
            .map((r) => (r.event.type === 'message.created' ? r.event.message.id : '')),
        );
        return [...expectedIds].every((id) => got.has(id));
      }, 30_000)
      .catch((error: unknown) => {
        throw new Error(`${label}: ${name} did not receive every resolved message: ${String(error)}`);
      });
    const counts = new Map<string, number>();
    for (const event of events.of('message.created')) {
      if (event.message.conversationId !== conversationId) continue;
      counts.set(event.message.id, (counts.get(event.message.id) ?? 0) + 1);
    }
    for (const id of expectedIds) deliveries += counts.get(id) ?? 0;
    const twice = [...counts.entries()].filter(([, n]) => n > 1);
    duplicateDeliveries += twice.length;
    expect(twice, `${label}: ${name} received a message twice`).toEqual([]);
  }

  const { messages } = scenario.broker;
  const queue = scenario.broker.queues[0];
  const pendingHere = await messages.pendingOf(conversationId);
  const indexed = await Promise.all([...resolvedIds].map((id) => messages.pendingEntry(id)));
  const { group } = await queue.info();
  const pending =
    indexed.filter((entry) => entry !== null).length + pendingHere.length + (group?.pending ?? 0);
  expect(pending, `${label}: entries left pending`).toBe(0);

  const extraRows = rows.filter((row) => !resolvedIds.has(row.id)).length;
  const facts = {
    sends: input.attempted,
    resolved: resolved.length,
    rows: rows.length,
    // Sends that failed at the client but whose message was stored anyway (ambiguous outcome).
    storedDespiteFailure: extraRows,
    deliveries,
    recipients: recipients.length,
    duplicates: duplicateRows + duplicateDeliveries,
    pending,
    ...input.notes,
  };
  console.log(
    `[faults] ${label}: ${Object.entries(facts)
      .map(([key, value]) => `${key}=${String(value)}`)
      .join(' ')}`,
  );
}
