import { Redis } from 'ioredis';
import { rosterKey } from '../keyspace.js';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import { RedisBus } from './bus.js';
import { RedisConnection } from './connection.js';
import { RedisEvents } from './events.js';
import { RedisRosters } from './rosters.js';
import {
  type Allowance,
  type AppendOptions,
  type AppendResult,
  type Broker,
  BrokerUnavailableError,
  compareStreamIds,
  type GroupInfo,
  type PendingEntry,
  type Publication,
  type Spent,
  type StreamEntry,
  type StreamInfo,
} from '../types.js';

// Capped streams are trimmed by XADD itself (`MAXLEN`), with no further command. Redis records
// `max-deleted-entry-id` only for XDEL; `streamInfo` derives the bound a resuming reader needs
// from the first entry left.

// Check the required value and the refusals, count against the limit, claim the idempotency key, take the next number
// of the counter, append, record the pending copy and, optionally, fan an event out (one entry
// under one new id in each target stream, then a publish) in one step, so a crash can never
// leave a claimed key without its message, a message without its pending copy or its event, or
// a number handed out twice.
// KEYS: unique key or '', stream, counter or '', limit key or '', roster set or '', refusal
// keys, pending hashes, then with a fan-out its id stream and its target streams.
// ARGV: maxLen, unique value, unique ttl, pending count, counter slot, fan-out target count,
// refusal count, limit max, limit ttl, required member, refusal thresholds ('' for any value),
// pending field/value pairs, with a fan-out [maxLen, channel, message, field count, field/value
// pairs], entry field/value pairs.
const APPEND = `
if KEYS[5] ~= '' then
  if redis.call('EXISTS', KEYS[5]) == 0 then return {6, ''} end
  if redis.call('SISMEMBER', KEYS[5], ARGV[10]) == 0 then return {5, ''} end
end
local refusals = tonumber(ARGV[7])
for i = 1, refusals do
  local v = redis.call('GET', KEYS[5 + i])
  if v then
    local least = ARGV[10 + i]
    if least == '' or tonumber(v) >= tonumber(least) then return {3, tostring(i - 1)} end
  end
end
if KEYS[4] ~= '' then
  local count = redis.call('INCR', KEYS[4])
  if count == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[9]) end
  if count > tonumber(ARGV[8]) then return {4, ''} end
end
if KEYS[1] ~= '' then
  local held = redis.call('GET', KEYS[1])
  if held then return {0, held} end
end
local n = ''
if KEYS[3] ~= '' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {2, ''} end
  n = string.format('%d', redis.call('INCR', KEYS[3]))
end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
local pending = tonumber(ARGV[4])
local slot = ARGV[5]
local targets = tonumber(ARGV[6])
local function fill(v)
  if n == '' then return v end
  local at = string.find(v, slot, 1, true)
  if not at then return v end
  return string.sub(v, 1, at - 1) .. n .. string.sub(v, at + #slot)
end
local function pairsFrom(first, last)
  local out = {}
  for i = first, last, 2 do
    out[#out + 1] = ARGV[i]
    out[#out + 1] = fill(ARGV[i + 1])
  end
  return out
end
local at = 11 + refusals + pending * 2
local fan
if targets > 0 then
  local count = tonumber(ARGV[at + 3])
  fan = {maxLen = ARGV[at], channel = ARGV[at + 1], message = ARGV[at + 2],
         fields = pairsFrom(at + 4, at + 3 + count * 2)}
  at = at + 4 + count * 2
end
local fields = pairsFrom(at, #ARGV)
local id
if ARGV[1] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], '*', unpack(fields))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(fields))
end
local hashes = 5 + refusals
local pairsAt = 9 + refusals
for i = 1, pending do
  redis.call('HSET', KEYS[hashes + i], ARGV[pairsAt + i * 2], id .. '|' .. fill(ARGV[pairsAt + 1 + i * 2]))
end
if fan then
  local ids = hashes + pending + 1
  local eventId = redis.call('XADD', KEYS[ids], 'MAXLEN', '1', '*', 'x', '1')
  for i = 1, targets do
    redis.call('XADD', KEYS[ids + i], 'MAXLEN', fan.maxLen, eventId, unpack(fan.fields))
  end
  if fan.channel ~= '' then
    local text = eventId .. '\\n' .. fill(fan.message)
    for channel in string.gmatch(fan.channel, '[^\\n]+') do redis.call('PUBLISH', channel, text) end
  end
end
return {1, id, n}`;

// One id from a one-entry stream, reused in every target stream: a single global order. The
// channels come as one argument, separated by newlines (no channel name holds one).
const APPEND_MANY = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '1', '*', 'x', '1')
for i = 2, #KEYS do
  redis.call('XADD', KEYS[i], 'MAXLEN', ARGV[1], id, unpack(ARGV, 4))
end
if ARGV[2] ~= '' then
  local text = id .. '\\n' .. ARGV[3]
  for channel in string.gmatch(ARGV[2], '[^\\n]+') do redis.call('PUBLISH', channel, text) end
end
return id`;

const TRIM_BELOW = `
if ARGV[1] == '0-0' then return 0 end
local below = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if removed > 0 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      redis.call('XSETID', KEYS[1], info[i + 1], 'MAXDELETEDID', below[1][1])
    end
  end
end
return removed`;

const HDEL_IF_PREFIX = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0`;

const HDEL_IF_PREFIX_MANY = `
local deleted = 0
for i = 1, #KEYS do
  local field = ARGV[i * 2 - 1]
  local prefix = ARGV[i * 2] .. '|'
  local v = redis.call('HGET', KEYS[i], field)
  if v and string.sub(v, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[i], field)
    deleted = deleted + 1
  end
end
return deleted`;

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

type RawEntry = [string, string[] | null];

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
  private blocking: Redis | null = null;
  private blockingConnecting: Promise<void> | null = null;
  private readonly commandTimeoutMs: number;
  private readonly connection: RedisConnection;
  readonly rosters: RedisRosters;
  readonly events: RedisEvents;
  readonly bus: RedisBus;

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
      parleyAppend: APPEND,
      parleyAppendMany: APPEND_MANY,
      parleySpend: SPEND,
      parleyRefund: REFUND,
      parleyHdelIfPrefix: HDEL_IF_PREFIX,
      parleyHdelIfPrefixMany: HDEL_IF_PREFIX_MANY,
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
    this.rosters = new RedisRosters(this.connection);
    this.events = new RedisEvents(this.connection, options.eventLogLength ?? EVENT_LOG_LENGTH);
    this.bus = new RedisBus(this.connection, this.subscriber);
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

  /** Channels as the scripts take them: one argument, prefixed names separated by newlines. */
  private channelList(channels: string[]): string {
    return channels.map((channel) => this.k(channel)).join('\n');
  }

  private run<T>(operation: () => Promise<T>): Promise<T> {
    return this.connection.run(operation);
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.run(() => this.client.publish(this.k(channel), message));
  }

  async append(
    stream: string,
    fields: Record<string, string>,
    options: AppendOptions = {},
  ): Promise<AppendResult> {
    const pending = options.pending ?? [];
    const fan = options.fanOut && options.fanOut.streams.length > 0 ? options.fanOut : null;
    // Checked here: inside the script the message would already be appended when the fan-out's
    // XADD failed.
    if (fan && Object.keys(fan.fields).length === 0) {
      throw new Error('ERR wrong number of arguments for XADD: a fan-out entry needs at least one field');
    }
    const refusals = options.refuseIf ?? [];
    const { limit } = options;
    const args: (string | number)[] = [
      5 + refusals.length + pending.length + (fan ? 1 + fan.streams.length : 0),
      options.unique ? this.k(options.unique.key) : '',
      this.k(stream),
      options.counter ? this.k(options.counter.key) : '',
      limit ? this.k(limit.key) : '',
      options.roster ? this.k(rosterKey(options.roster.conversationId)) : '',
    ];
    for (const refusal of refusals) args.push(this.k(refusal.key));
    for (const write of pending) args.push(this.k(write.key));
    if (fan) {
      args.push(this.k(fan.idStream));
      for (const target of fan.streams) args.push(this.k(target));
    }
    args.push(
      options.maxLen === undefined ? '' : String(options.maxLen),
      options.unique?.value ?? '',
      String(options.unique?.ttlMs ?? 0),
      String(pending.length),
      options.counter?.slot ?? '',
      String(fan?.streams.length ?? 0),
      String(refusals.length),
      String(limit?.max ?? 0),
      String(limit?.ttlMs ?? 0),
      options.roster?.userId ?? '',
    );
    for (const refusal of refusals) args.push(refusal.atLeast === undefined ? '' : String(refusal.atLeast));
    for (const write of pending) args.push(write.field, write.value);
    if (fan) {
      const names = Object.keys(fan.fields);
      args.push(
        String(fan.maxLen),
        fan.publish ? this.channelList(fan.publish.channels) : '',
        fan.publish?.message ?? '',
        String(names.length),
      );
      for (const name of names) args.push(name, fan.fields[name] as string);
    }
    for (const name in fields) args.push(name, fields[name] as string);
    const result = (await this.run(() => this.script('parleyAppend', APPEND)(...args))) as [
      number,
      string,
      string?,
    ];
    if (result[0] === 1) {
      return options.counter
        ? { appended: true, id: result[1], counter: Number(result[2]) }
        : { appended: true, id: result[1] };
    }
    switch (result[0]) {
      case 2:
        return { appended: false, missingCounter: true };
      case 3:
        return { appended: false, refused: Number(result[1]) };
      case 4:
        return { appended: false, limited: true };
      case 5:
        return { appended: false, notMember: true };
      case 6:
        return { appended: false, noSet: true };
      default:
        return { appended: false, existing: result[1] };
    }
  }

  async appendToMany(
    idStream: string,
    streams: string[],
    fields: Record<string, string>,
    options: { maxLen: number; publish?: Publication },
  ): Promise<string> {
    return (await this.run(() =>
      this.script('parleyAppendMany', APPEND_MANY)(
        1 + streams.length,
        this.k(idStream),
        ...streams.map((s) => this.k(s)),
        String(options.maxLen),
        options.publish ? this.channelList(options.publish.channels) : '',
        options.publish?.message ?? '',
        ...Object.entries(fields).flat(),
      ),
    )) as string;
  }

  async rangeAfter(stream: string, afterId: string, count: number): Promise<StreamEntry[]> {
    const raw = (await this.run(() =>
      this.client.call('XRANGE', this.k(stream), `(${afterId}`, '+', 'COUNT', count),
    )) as RawEntry[];
    return toEntries(raw);
  }

  async lastId(stream: string): Promise<string> {
    const raw = (await this.run(() =>
      this.client.call('XREVRANGE', this.k(stream), '+', '-', 'COUNT', 1),
    )) as RawEntry[];
    return raw[0]?.[0] ?? (await this.streamInfo(stream)).lastId;
  }

  async streamInfo(stream: string): Promise<StreamInfo> {
    try {
      const raw = (await this.run(() => this.client.call('XINFO', 'STREAM', this.k(stream)))) as unknown[];
      const info = pairs(raw);
      const first = info['first-entry'] as RawEntry | null;
      const length = Number(info.length);
      let maxDeletedId = (info['max-deleted-entry-id'] as string | undefined) ?? '0-0';
      // Trimming (MAXLEN, MINID) does not move max-deleted-entry-id; when entries were trimmed,
      // everything removed lies below the first entry that is left.
      if (first && Number(info['entries-added'] ?? length) > length) {
        const below = predecessor(first[0]);
        if (compareStreamIds(below, maxDeletedId) > 0) maxDeletedId = below;
      }
      return {
        length,
        firstId: first ? first[0] : null,
        lastId: (info['last-generated-id'] as string | undefined) ?? '0-0',
        maxDeletedId,
      };
    } catch (error) {
      if (error instanceof Error && /no such key/i.test(error.message)) {
        return { length: 0, firstId: null, lastId: '0-0', maxDeletedId: '0-0' };
      }
      throw error;
    }
  }

  async trimBelow(stream: string, minId: string): Promise<number> {
    return (await this.run(() => this.client.eval(TRIM_BELOW, 1, this.k(stream), minId))) as number;
  }

  async ensureGroup(stream: string, group: string): Promise<void> {
    try {
      await this.run(() => this.client.call('XGROUP', 'CREATE', this.k(stream), group, '0', 'MKSTREAM'));
    } catch (error) {
      if (!(error instanceof Error && error.message.includes('BUSYGROUP'))) throw error;
    }
  }

  async readGroup(
    stream: string,
    group: string,
    consumer: string,
    options: { count: number; blockMs?: number; mode: 'new' | 'own'; afterId?: string },
  ): Promise<StreamEntry[]> {
    const args: (string | number)[] = ['GROUP', group, consumer, 'COUNT', options.count];
    let connection = this.client;
    if (options.mode === 'new' && options.blockMs) {
      args.push('BLOCK', options.blockMs);
      connection = await this.blockingConnection(options.blockMs);
    }
    args.push('STREAMS', this.k(stream), options.mode === 'new' ? '>' : (options.afterId ?? '0'));
    const raw = (await this.run(() => connection.call('XREADGROUP', ...args))) as
      [string, RawEntry[]][] | null;
    return toEntries(raw?.[0]?.[1] ?? []);
  }

  async ack(stream: string, group: string, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.run(() => this.client.call('XACK', this.k(stream), group, ...ids))) as number;
  }

  async pending(stream: string, group: string, count: number): Promise<PendingEntry[]> {
    const raw = (await this.run(() =>
      this.client.call('XPENDING', this.k(stream), group, '-', '+', count),
    )) as [string, string, number, number][];
    return raw.map(([id, consumer, idleMs, deliveries]) => ({
      id,
      consumer,
      idleMs: Number(idleMs),
      deliveries: Number(deliveries),
    }));
  }

  async claimIdle(
    stream: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    count: number,
  ): Promise<StreamEntry[]> {
    const raw = (await this.run(() =>
      this.client.call('XAUTOCLAIM', this.k(stream), group, consumer, minIdleMs, '0-0', 'COUNT', count),
    )) as [string, RawEntry[], string[]?];
    return toEntries(raw[1]);
  }

  async groupInfo(stream: string, group: string): Promise<GroupInfo | null> {
    let raw: unknown[][];
    try {
      raw = (await this.run(() => this.client.call('XINFO', 'GROUPS', this.k(stream)))) as unknown[][];
    } catch (error) {
      if (error instanceof Error && /no such key/i.test(error.message)) return null;
      throw error;
    }
    const info = raw.map(pairs).find((g) => g.name === group);
    if (!info) return null;
    const lastDeliveredId = String(info['last-delivered-id']);
    const { firstId, length } = await this.streamInfo(stream);
    let lag: number;
    if (firstId === null) lag = 0;
    // Everything left is newer than what the group read; Redis would still count the
    // undelivered entries that trimming removed.
    else if (compareStreamIds(lastDeliveredId, firstId) < 0) lag = length;
    else if (info.lag !== null && info.lag !== undefined) lag = Number(info.lag);
    // Redis cannot always compute lag (after deletions); count what is left to deliver.
    else lag = (await this.rangeAfter(stream, lastDeliveredId, 100_000)).length;
    return { pending: Number(info.pending), lag, lastDeliveredId };
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

  hget(key: string, field: string): Promise<string | null> {
    return this.run(() => this.client.hget(this.k(key), field));
  }

  hgetall(key: string): Promise<Record<string, string>> {
    return this.run(() => this.client.hgetall(this.k(key)));
  }

  async hset(key: string, field: string, value: string): Promise<void> {
    await this.run(() => this.client.hset(this.k(key), field, value));
  }

  async hdelIfPrefix(key: string, field: string, prefix: string): Promise<boolean> {
    return (
      (await this.run(() =>
        this.script('parleyHdelIfPrefix', HDEL_IF_PREFIX)(1, this.k(key), field, prefix),
      )) === 1
    );
  }

  async hdelIfPrefixMany(items: { key: string; field: string; prefix: string }[]): Promise<number> {
    if (items.length === 0) return 0;
    return (await this.run(() =>
      this.script('parleyHdelIfPrefixMany', HDEL_IF_PREFIX_MANY)(
        items.length,
        ...items.map((item) => this.k(item.key)),
        ...items.flatMap((item) => [item.field, item.prefix]),
      ),
    )) as number;
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
    const connections = [this.client, this.subscriber, this.blocking].filter((c): c is Redis => c !== null);
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

  private async blockingConnection(blockMs: number): Promise<Redis> {
    if (!this.blocking) {
      // A blocking read holds its connection, so it gets one of its own. Whoever asks while it
      // connects waits for the same connection instead of finding it not ready yet.
      const connection = this.client.duplicate({ commandTimeout: blockMs + this.commandTimeoutMs });
      connection.on('error', () => undefined);
      this.blocking = connection;
      this.blockingConnecting = connection.connect().finally(() => {
        this.blockingConnecting = null;
      });
    }
    try {
      await this.blockingConnecting;
    } catch (error) {
      throw new BrokerUnavailableError('Redis is not reachable', { cause: error, outcomeUnknown: false });
    }
    if (this.blocking.status !== 'ready') {
      throw new BrokerUnavailableError(`Redis is not reachable (${this.blocking.status})`);
    }
    return this.blocking;
  }
}

/** The client name of the Pub/Sub connection (`CLIENT LIST` shows it). */
export function subscriberName(prefix: string): string {
  return `${prefix.replace(/[^\w:.-]/g, '_')}subscriber`;
}

/** The largest stream id below `id`. */
function predecessor(id: string): string {
  const [ms = 0n, n = 0n] = id.split('-').map((part) => BigInt(part));
  if (n > 0n) return `${ms}-${n - 1n}`;
  return ms > 0n ? `${ms - 1n}-18446744073709551615` : '0-0';
}

function toEntries(raw: RawEntry[]): StreamEntry[] {
  const out: StreamEntry[] = [];
  for (const [id, flat] of raw) {
    if (!flat) continue; // deleted while pending
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
    out.push({ id, fields });
  }
  return out;
}

function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

/** Failures that keep a command from leaving this process at all. */
