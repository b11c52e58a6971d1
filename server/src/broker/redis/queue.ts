import type { Cluster, Redis } from 'ioredis';
import {
  deadLetterStream,
  messagesStream,
  type Partition,
  PERSIST_GROUP,
  pendingIndex,
  pendingKey,
} from '../keyspace.js';
import type {
  PendingEntry,
  QueueEntry,
  QueueInfo,
  DeadLetterSelection,
  RequeuedEntry,
  WorkQueue,
  WrittenChange,
} from '../ports/queue.js';
import { BrokerUnavailableError, compareStreamIds } from '../types.js';
import type { RedisConnection } from './connection.js';
import { pairs } from './events.js';
import { defineScript } from './script.js';

/** Trims below `minId`, recording the highest id removed (XTRIM alone does not). */
const TRIM_BELOW = defineScript({
  name: 'queueTrimBelow',
  keys: ['queue'],
  args: ['minId'],
  body: `
if minId == '0-0' then return 0 end
local below = redis.call('XREVRANGE', queue, '(' .. minId, '-', 'COUNT', 1)
local removed = redis.call('XTRIM', queue, 'MINID', minId)
if removed > 0 then
  local info = redis.call('XINFO', 'STREAM', queue)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      redis.call('XSETID', queue, info[i + 1], 'MAXDELETEDID', below[1][1])
    end
  end
end
return removed`,
});

/** The entry's fields with `entry` and `reason` into the dead-letter stream, then its ack. */
const DEAD_LETTER = defineScript({
  name: 'queueDeadLetter',
  keys: ['queue', 'dead'],
  args: ['group', 'entryId'],
  argLists: ['fields'],
  body: `
redis.call('XADD', dead, '*', unpack(fields))
redis.call('XACK', queue, group, entryId)
return 1`,
});

/**
 * The oldest `count` dead letters back into the queue, each as a new entry with its own fields
 * (without `entry` and `reason`) and `v`, the entry it was first queued as (kept when it has
 * one already): returns, for each, its dead-letter id, the entry it was set aside from, and
 * its new entry id.
 */
const REQUEUE = defineScript({
  name: 'queueRequeue',
  keys: ['queue', 'dead'],
  args: ['count', 'id'],
  body: `
local moved = {}
local letters
if id == '' then
  letters = redis.call('XRANGE', dead, '-', '+', 'COUNT', count)
else
  letters = redis.call('XRANGE', dead, id, id)
end
for _, letter in ipairs(letters) do
  local raw, fields, original, versioned = letter[2], {}, '', false
  for i = 1, #raw, 2 do
    if raw[i] == 'entry' then
      original = raw[i + 1]
    elseif raw[i] ~= 'reason' then
      fields[#fields + 1] = raw[i]
      fields[#fields + 1] = raw[i + 1]
      if raw[i] == 'v' then versioned = true end
    end
  end
  if not versioned then
    fields[#fields + 1] = 'v'
    fields[#fields + 1] = original
  end
  local id = redis.call('XADD', queue, '*', unpack(fields))
  redis.call('XDEL', dead, letter[1])
  moved[#moved + 1] = letter[1]
  moved[#moved + 1] = original
  moved[#moved + 1] = id
end
return moved`,
});

/** Each copy goes only while it still starts with `<entry id>|`: a newer change keeps its own. */
const RELEASE = defineScript({
  name: 'queueRelease',
  keys: ['pendingIndex'],
  args: [],
  keyLists: ['copies'],
  argLists: ['messageIds', 'entryIds'],
  body: `
local released = 0
local function drop(hash, field, prefix)
  local value = redis.call('HGET', hash, field)
  if value and string.sub(value, 1, #prefix) == prefix then
    redis.call('HDEL', hash, field)
    return 1
  end
  return 0
end
for i = 1, #copies do
  local prefix = entryIds[i] .. '|'
  released = released + drop(copies[i], messageIds[i], prefix)
  drop(pendingIndex, messageIds[i], prefix)
end
return released`,
});

type RawEntry = [string, string[] | null];

export class RedisQueue implements WorkQueue {
  private blocking: Redis | Cluster | null = null;
  private blockingConnecting: Promise<void> | null = null;

  constructor(
    private readonly redis: RedisConnection,
    private readonly commandTimeoutMs: number,
    /** The partition whose message stream this is. */
    private readonly p: Partition,
  ) {}

  private get queue(): string {
    return this.redis.key(messagesStream(this.p));
  }

  async prepare(): Promise<void> {
    try {
      await this.redis.run(() =>
        this.redis.client.call('XGROUP', 'CREATE', this.queue, PERSIST_GROUP, '0', 'MKSTREAM'),
      );
    } catch (error) {
      if (!(error instanceof Error && error.message.includes('BUSYGROUP'))) throw error;
    }
  }

  async readNew(consumer: string, count: number, blockMs?: number): Promise<QueueEntry[]> {
    const args: (string | number)[] = ['GROUP', PERSIST_GROUP, consumer, 'COUNT', count];
    let connection: Redis | Cluster = this.redis.client;
    if (blockMs) {
      args.push('BLOCK', blockMs);
      connection = await this.blockingReads(blockMs);
    }
    args.push('STREAMS', this.queue, '>');
    const raw = (await this.redis.run(() => connection.call('XREADGROUP', ...args))) as
      [string, RawEntry[]][] | null;
    return toEntries(raw?.[0]?.[1] ?? []);
  }

  async readOwn(consumer: string, after: string, count: number): Promise<QueueEntry[]> {
    const raw = (await this.redis.run(() =>
      this.redis.client.call(
        'XREADGROUP',
        'GROUP',
        PERSIST_GROUP,
        consumer,
        'COUNT',
        count,
        'STREAMS',
        this.queue,
        after,
      ),
    )) as [string, RawEntry[]][] | null;
    return toEntries(raw?.[0]?.[1] ?? []);
  }

  async ack(ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.redis.run(() =>
      this.redis.client.call('XACK', this.queue, PERSIST_GROUP, ...ids),
    )) as number;
  }

  async pending(count: number): Promise<PendingEntry[]> {
    const raw = (await this.redis.run(() =>
      this.redis.client.call('XPENDING', this.queue, PERSIST_GROUP, '-', '+', count),
    )) as [string, string, number, number][];
    return raw.map(([id, consumer, idleMs, deliveries]) => ({
      id,
      consumer,
      idleMs: Number(idleMs),
      deliveries: Number(deliveries),
    }));
  }

  async claimIdle(consumer: string, minIdleMs: number, count: number): Promise<QueueEntry[]> {
    const raw = (await this.redis.run(() =>
      this.redis.client.call(
        'XAUTOCLAIM',
        this.queue,
        PERSIST_GROUP,
        consumer,
        minIdleMs,
        '0-0',
        'COUNT',
        count,
      ),
    )) as [string, RawEntry[], string[]?];
    return toEntries(raw[1]);
  }

  async info(): Promise<QueueInfo> {
    let stream: Record<string, unknown>;
    try {
      stream = pairs(
        (await this.redis.run(() => this.redis.client.call('XINFO', 'STREAM', this.queue))) as unknown[],
      );
    } catch (error) {
      if (error instanceof Error && /no such key/i.test(error.message)) return { length: 0, group: null };
      throw error;
    }
    const length = Number(stream.length);
    const firstId = (stream['first-entry'] as RawEntry | null)?.[0] ?? null;
    const groups = (await this.redis.run(() =>
      this.redis.client.call('XINFO', 'GROUPS', this.queue),
    )) as unknown[][];
    const group = groups.map(pairs).find((g) => g.name === PERSIST_GROUP);
    if (!group) return { length, group: null };
    const lastDeliveredId = String(group['last-delivered-id']);
    let lag: number;
    if (firstId === null) lag = 0;
    // Everything left is newer than what the group read; Redis would still count the
    // undelivered entries that trimming removed.
    else if (compareStreamIds(lastDeliveredId, firstId) < 0) lag = length;
    else if (group.lag !== null && group.lag !== undefined) lag = Number(group.lag);
    // Redis cannot always compute lag (after deletions); count what is left to deliver.
    else lag = (await this.entries(lastDeliveredId, 100_000)).length;
    return { length, group: { pending: Number(group.pending), lag, lastDeliveredId } };
  }

  async trimBelow(id: string): Promise<number> {
    return (await this.redis.eval(TRIM_BELOW, {
      keys: { queue: messagesStream(this.p) },
      args: { minId: id },
    })) as number;
  }

  async deadLetter(entry: QueueEntry, reason: string): Promise<void> {
    await this.redis.eval(DEAD_LETTER, {
      keys: { queue: messagesStream(this.p), dead: deadLetterStream(this.p) },
      args: { group: PERSIST_GROUP, entryId: entry.id },
      argLists: { fields: [...Object.entries(entry.fields).flat(), 'entry', entry.id, 'reason', reason] },
    });
  }

  async release(written: readonly WrittenChange[]): Promise<number> {
    if (written.length === 0) return 0;
    return (await this.redis.eval(RELEASE, {
      keys: { pendingIndex: pendingIndex(this.p) },
      args: {},
      keyLists: { copies: written.map((change) => pendingKey(this.p, change.conversationId)) },
      argLists: {
        messageIds: written.map((change) => change.messageId),
        entryIds: written.map((change) => change.entryId),
      },
    })) as number;
  }

  async entries(after: string, count: number): Promise<QueueEntry[]> {
    return this.range(this.queue, after, count);
  }

  async deadLetters(count: number): Promise<QueueEntry[]> {
    return this.range(this.redis.key(deadLetterStream(this.p)), '0-0', count);
  }

  async requeueDeadLetters(which: DeadLetterSelection): Promise<RequeuedEntry[]> {
    const flat = (await this.redis.eval(REQUEUE, {
      keys: { queue: messagesStream(this.p), dead: deadLetterStream(this.p) },
      args: 'id' in which ? { count: 1, id: which.id } : { count: which.count, id: '' },
    })) as string[];
    const moved: RequeuedEntry[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      moved.push({ id: flat[i] ?? '', entry: flat[i + 1] ?? '', requeued: flat[i + 2] ?? '' });
    }
    return moved;
  }

  async add(fields: Record<string, string>): Promise<string> {
    return (await this.redis.run(() =>
      this.redis.client.call('XADD', this.queue, '*', ...Object.entries(fields).flat()),
    )) as string;
  }

  /** The connection of blocking reads, once there is one (for the engine to close). */
  blockingConnection(): Redis | Cluster | null {
    return this.blocking;
  }

  private async range(stream: string, after: string, count: number): Promise<QueueEntry[]> {
    const raw = (await this.redis.run(() =>
      this.redis.client.call('XRANGE', stream, `(${after}`, '+', 'COUNT', count),
    )) as RawEntry[];
    return toEntries(raw);
  }

  private async blockingReads(blockMs: number): Promise<Redis | Cluster> {
    if (!this.blocking) {
      // A blocking read holds its connection, so it gets one of its own. Whoever asks while it
      // connects waits for the same connection instead of finding it not ready yet.
      const connection = this.redis.duplicate({ commandTimeout: blockMs + this.commandTimeoutMs });
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

function toEntries(raw: RawEntry[]): QueueEntry[] {
  const out: QueueEntry[] = [];
  for (const [id, flat] of raw) {
    if (!flat) continue; // deleted while pending
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
    out.push({ id, fields });
  }
  return out;
}
