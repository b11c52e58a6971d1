import { Redis } from 'ioredis';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import { RedisBus } from './bus.js';
import { RedisConnection } from './connection.js';
import { RedisEvents } from './events.js';
import { RedisMessageLog } from './message-log.js';
import { RedisQueue } from './queue.js';
import { RedisRosters } from './rosters.js';
import type { Allowance, Broker, Spent } from '../types.js';

// Takes one attempt from every allowance or, when one of them has none left, none at all and
// answers how long to wait (ms); 0 when taken. An allowance is a hash: `n` attempts taken,
// `at` the time (ms, Redis's clock, shared by every instance) before which a backoff refuses.
// KEYS: one per allowance. ARGV: four values per allowance, from `allowanceArgs`.
const SPEND = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local taken = {}
for i = 1, #KEYS do
  local max, first = tonumber(ARGV[i * 4 - 3]), tonumber(ARGV[i * 4 - 1])
  local state = redis.call('HMGET', KEYS[i], 'n', 'at')
  local n = tonumber(state[1]) or 0
  taken[i] = n
  if n >= max then
    local w
    if first > 0 then w = (tonumber(state[2]) or 0) - now else w = redis.call('PTTL', KEYS[i]) end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 1, #KEYS do
  local max, window, first, cap = tonumber(ARGV[i * 4 - 3]), ARGV[i * 4 - 2], tonumber(ARGV[i * 4 - 1]), tonumber(ARGV[i * 4])
  local n = taken[i] + 1
  redis.call('HSET', KEYS[i], 'n', n)
  if first > 0 then
    if n >= max then
      redis.call('HSET', KEYS[i], 'at', string.format('%d', now + math.min(cap, first * 2 ^ (n - max))))
    end
    redis.call('PEXPIRE', KEYS[i], window)
  elseif n == 1 or redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
  end
end
return 0`;

const REFUND = `
for i = 1, #KEYS do
  local n = tonumber(redis.call('HGET', KEYS[i], 'n'))
  if n and n > 0 then redis.call('HINCRBY', KEYS[i], 'n', -1) end
end
return 0`;

/** SPEND's four arguments for one allowance, in the order the script reads them. */
function allowanceArgs(
  allowance: Allowance,
): [max: string, windowMs: string, firstMs: string, maxMs: string] {
  const { max, windowMs, backoff } = allowance;
  return [String(max), String(windowMs), String(backoff?.firstMs ?? 0), String(backoff?.maxMs ?? 0)];
}

// Expire, count, and add only below the cap, in one step (see `Broker.zaddCapped`).
// KEYS: the set. ARGV: expireUpTo, max, score, member.
const ZADD_CAPPED = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local present = redis.call('ZSCORE', KEYS[1], ARGV[4])
local others = redis.call('ZCARD', KEYS[1])
if present then others = others - 1 end
if not present and others >= tonumber(ARGV[2]) then return {0, others} end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
return {1, others}`;

export interface RedisBrokerOptions {
  url: string;
  prefix?: string;
  /** How long a command may wait for Redis before failing; sends must fail fast. */
  commandTimeoutMs?: number;
  /** How many events each event log keeps (at least) for resume. */
  eventLogLength?: number;
}

export class RedisBroker implements Broker {
  readonly engine = 'redis' as const;
  private readonly prefix: string;
  private readonly client: Redis;
  private readonly subscriber: Redis;
  private readonly commandTimeoutMs: number;
  private readonly connection: RedisConnection;
  readonly rosters: RedisRosters;
  readonly events: RedisEvents;
  readonly bus: RedisBus;
  readonly messages: RedisMessageLog;
  readonly queue: RedisQueue;

  private constructor(options: RedisBrokerOptions) {
    this.prefix = options.prefix ?? '';
    this.commandTimeoutMs = options.commandTimeoutMs ?? 2000;
    const common = {
      lazyConnect: true,
      // ioredis 6 speaks RESP3 by default, which reshapes stream and XINFO replies; the
      // parsing here follows the RESP2 shapes that Redis documents for these commands.
      protocol: 2 as const,
      // Without Redis a send must fail now, not wait in an unbounded queue.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 2000),
    };
    this.client = new Redis(options.url, {
      ...common,
      commandTimeout: this.commandTimeoutMs,
      // Commands issued in the same tick share one round trip. Safe only because every script is
      // defined before the first command (just below): a pipeline that lacks one
      // misanswers every call in it (redis/ioredis#1931; the contract suite's burst test).
      enableAutoPipelining: true,
    });
    // Every script is defined before the first command: an auto-pipeline already queued when a
    // script is defined lacks it, and the call fails with "pipeline[name] is not a function".
    for (const [name, lua] of Object.entries({
      parleySpend: SPEND,
      parleyRefund: REFUND,
      parleyZaddCapped: ZADD_CAPPED,
    })) {
      this.client.defineCommand(name, { lua });
    }
    // The subscriber keeps its subscriptions across reconnects (ioredis re-subscribes).
    // Named, so that `CLIENT LIST` tells an instance's subscriber connection from the others.
    this.subscriber = new Redis(options.url, {
      ...common,
      enableOfflineQueue: true,
      connectionName: subscriberName(this.prefix),
    });
    this.connection = new RedisConnection(this.client, this.prefix);
    const eventLogLength = options.eventLogLength ?? EVENT_LOG_LENGTH;
    this.rosters = new RedisRosters(this.connection);
    this.events = new RedisEvents(this.connection, eventLogLength);
    this.bus = new RedisBus(this.connection, this.subscriber);
    this.messages = new RedisMessageLog(this.connection, eventLogLength);
    this.queue = new RedisQueue(this.connection, this.commandTimeoutMs);
    this.client.on('error', () => undefined);
    this.subscriber.on('error', () => undefined);
  }

  static async connect(options: RedisBrokerOptions): Promise<RedisBroker> {
    const broker = new RedisBroker(options);
    await broker.client.connect();
    await broker.subscriber.connect();
    broker.bus.watchConnection();
    return broker;
  }

  /**
   * A Lua script as a command: ioredis sends it by SHA (EVALSHA) and loads it only when Redis
   * does not know it yet. The first argument is the number of keys.
   */
  private script(name: string, lua: string): (...args: (string | number)[]) => Promise<unknown> {
    const commands = this.client as unknown as Record<
      string,
      (...args: (string | number)[]) => Promise<unknown>
    >;
    if (!commands[name]) this.client.defineCommand(name, { lua });
    const command = commands[name];
    if (!command) throw new Error(`script ${name} could not be defined`);
    return command.bind(this.client);
  }

  private k(name: string): string {
    return this.prefix + name;
  }

  private run<T>(operation: () => Promise<T>): Promise<T> {
    return this.connection.run(operation);
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.run(() => this.client.publish(this.k(channel), message));
  }

  get(key: string): Promise<string | null> {
    return this.run(() => this.client.get(this.k(key)));
  }

  mget(keys: string[]): Promise<(string | null)[]> {
    if (keys.length === 0) return Promise.resolve([]);
    return this.run(() => this.client.mget(keys.map((key) => this.k(key))));
  }

  async set(key: string, value: string, options: { ttlMs?: number; nx?: boolean } = {}): Promise<boolean> {
    const args: (string | number)[] = [this.k(key), value];
    if (options.ttlMs !== undefined) args.push('PX', options.ttlMs);
    if (options.nx) args.push('NX');
    const result = await this.run(() => this.client.call('SET', ...args));
    return result === 'OK';
  }

  del(...keys: string[]): Promise<number> {
    if (keys.length === 0) return Promise.resolve(0);
    return this.run(() => this.client.del(...keys.map((key) => this.k(key))));
  }

  ttlMs(key: string): Promise<number> {
    return this.run(() => this.client.pttl(this.k(key)));
  }

  async spend(allowances: Allowance[]): Promise<Spent> {
    if (allowances.length === 0) return { spent: true };
    const args = allowances.flatMap(allowanceArgs);
    const waitMs = Number(
      await this.run(() =>
        this.script('parleySpend', SPEND)(
          allowances.length,
          ...allowances.map((allowance) => this.k(allowance.key)),
          ...args,
        ),
      ),
    );
    return waitMs > 0 ? { spent: false, retryAfterMs: waitMs } : { spent: true };
  }

  async refund(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.run(() => this.script('parleyRefund', REFUND)(keys.length, ...keys.map((key) => this.k(key))));
  }

  async zadd(key: string, score: number, ...members: string[]): Promise<void> {
    if (members.length === 0) return;
    const pairs = members.flatMap((member) => [score, member]);
    await this.run(() => this.client.zadd(this.k(key), ...pairs));
  }

  async zaddCapped(
    key: string,
    member: string,
    score: number,
    cap: { max: number; expireUpTo: number },
  ): Promise<{ added: boolean; others: number }> {
    const [added, others] = (await this.run(() =>
      this.script('parleyZaddCapped', ZADD_CAPPED)(
        1,
        this.k(key),
        String(cap.expireUpTo),
        String(cap.max),
        String(score),
        member,
      ),
    )) as [number, number];
    return { added: added === 1, others: Number(others) };
  }

  zrem(key: string, member: string): Promise<number> {
    return this.run(() => this.client.zrem(this.k(key), member));
  }

  zremRangeByScore(key: string, max: number): Promise<number> {
    return this.run(() => this.client.zremrangebyscore(this.k(key), '-inf', max));
  }

  zcard(key: string): Promise<number> {
    return this.run(() => this.client.zcard(this.k(key)));
  }

  zrangeByScore(key: string, max: number, count: number): Promise<string[]> {
    return this.run(() => this.client.zrangebyscore(this.k(key), '-inf', max, 'LIMIT', 0, count));
  }

  async zscores(key: string, members: string[]): Promise<(number | null)[]> {
    if (members.length === 0) return [];
    const scores = (await this.run(() => this.client.call('ZMSCORE', this.k(key), ...members))) as (
      string | null
    )[];
    return scores.map((score) => (score === null ? null : Number(score)));
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.run(() => this.client.ping())) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.bus.close();
    const connections = [this.client, this.subscriber, this.queue.blockingConnection()].filter(
      (c): c is Redis => c !== null,
    );
    await Promise.all(
      connections.map(async (c) => {
        try {
          if (c.status === 'ready') await c.quit();
          else c.disconnect();
        } catch {
          c.disconnect();
        }
      }),
    );
  }
}

/** The client name of the Pub/Sub connection (`CLIENT LIST` shows it). */
export function subscriberName(prefix: string): string {
  return `${prefix.replace(/[^\w:.-]/g, '_')}subscriber`;
}
