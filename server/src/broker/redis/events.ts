import { createHash } from 'node:crypto';
import type { Mark } from '../../contracts/events.js';
import {
  channelName,
  conversationLog,
  epochKey,
  eventIdsStream,
  inbox,
  type Partition,
} from '../keyspace.js';
import { type EventLog, type LogEntry, type LogName, markText, newEpoch } from '../ports/events.js';
import { compareStreamIds } from '../types.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

/**
 * One id from the partition's one-entry id stream, reused in every log: one order for the
 * partition's logs. Then the publish, so that a follower reading the log after it subscribed
 * finds every event either there or on the channel. Logs are capped by XADD itself (`MAXLEN`),
 * with no further command.
 */
const APPEND_EVENT = defineScript({
  name: 'eventAppend',
  keys: ['ids'],
  args: ['maxLen', 'message', 'publish'],
  keyLists: ['logs'],
  argLists: ['channels', 'fields'],
  body: `
local id = redis.call('XADD', ids, 'MAXLEN', '1', '*', 'x', '1')
for i = 1, #logs do
  redis.call('XADD', logs[i], 'MAXLEN', maxLen, id, unpack(fields))
end
local text = id .. '\\n' .. message
for i = 1, #channels do redis.call(publish, channels[i], text) end
return id`,
});

const EPOCH = defineScript({
  name: 'eventEpoch',
  keys: ['epoch'],
  args: ['candidate'],
  body: `
local current = redis.call('GET', epoch)
if current then return current end
redis.call('SET', epoch, candidate)
return candidate`,
});

type RawEntry = [string, string[] | null];

export class RedisEvents implements EventLog {
  /** One order per partition of the keyspace (`Partition` in `keyspace.ts`). */
  readonly partitions: number;

  constructor(
    private readonly redis: RedisConnection,
    private readonly maxLen: number,
  ) {
    this.partitions = redis.partitions.length;
  }

  toConversation(conversationId: string, payload: string): Promise<string> {
    const p = this.redis.partitionFor(conversationId);
    return this.append(
      p,
      [conversationLog(p, conversationId)],
      ['e', payload],
      [channelName(p, { conversation: conversationId })],
      payload,
    );
  }

  toInbox(userId: string, payload: string): Promise<string> {
    const p = this.redis.partitionFor(userId);
    return this.append(p, [inbox(p, userId)], ['e', payload], [channelName(p, { user: userId })], payload);
  }

  mark(userIds: readonly string[], mark: Mark): Promise<string> {
    const unique = [...new Set(userIds)];
    const p = this.redis.partitionFor(mark.conversationId);
    return this.append(
      p,
      unique.map((user) => inbox(p, user)),
      ['m', mark.change, 'c', mark.conversationId],
      unique.map((user) => channelName(p, { user })),
      markText(mark),
    );
  }

  conversationAfter(conversationId: string, after: string, count: number): Promise<LogEntry[]> {
    return this.rangeAfter(
      conversationLog(this.redis.partitionFor(conversationId), conversationId),
      after,
      count,
    );
  }

  inboxAfter(userId: string, partition: number, after: string, count: number): Promise<LogEntry[]> {
    return this.rangeAfter(inbox(this.redis.partition(partition), userId), after, count);
  }

  async trimmedAfter(log: LogName, after: string): Promise<boolean> {
    const name =
      'conversation' in log
        ? conversationLog(this.redis.partitionFor(log.conversation), log.conversation)
        : inbox(this.redis.partition(log.partition), log.inbox);
    let raw: unknown[];
    try {
      raw = (await this.redis.run(() =>
        this.redis.client.call('XINFO', 'STREAM', this.redis.key(name)),
      )) as unknown[];
    } catch (error) {
      if (error instanceof Error && /no such key/i.test(error.message)) return false;
      throw error;
    }
    const info = pairs(raw);
    const first = info['first-entry'] as RawEntry | null;
    const length = Number(info.length);
    let maxDeletedId = (info['max-deleted-entry-id'] as string | undefined) ?? '0-0';
    // Trimming (MAXLEN) does not move max-deleted-entry-id; when entries were trimmed, everything
    // removed lies below the first entry that is left.
    if (first && Number(info['entries-added'] ?? length) > length) {
      const below = predecessor(first[0]);
      if (compareStreamIds(below, maxDeletedId) > 0) maxDeletedId = below;
    }
    return compareStreamIds(maxDeletedId, after) > 0;
  }

  newestIds(): Promise<string[]> {
    return Promise.all(
      this.redis.partitions.map(async (p) => {
        const ids = this.redis.key(eventIdsStream(p));
        const raw = (await this.redis.run(() =>
          this.redis.client.call('XREVRANGE', ids, '+', '-', 'COUNT', 1),
        )) as RawEntry[];
        return raw[0]?.[0] ?? '0-0';
      }),
    );
  }

  /**
   * Each partition claims an epoch of its own (a master that lost its data loses its epoch
   * with it); with several, the deployment's is a digest of them all, so it changes whenever
   * any of them does.
   */
  async epoch(): Promise<string> {
    const epochs = await Promise.all(
      this.redis.partitions.map(async (p) =>
        String(
          await this.redis.eval(EPOCH, { keys: { epoch: epochKey(p) }, args: { candidate: newEpoch() } }),
        ),
      ),
    );
    if (epochs.length === 1) return epochs[0] as string;
    return createHash('sha256').update(epochs.join('.')).digest('base64url').slice(0, 10);
  }

  private async append(
    p: Partition,
    logs: string[],
    fields: string[],
    channels: string[],
    message: string,
  ): Promise<string> {
    return String(
      await this.redis.eval(APPEND_EVENT, {
        keys: { ids: eventIdsStream(p) },
        args: { maxLen: this.maxLen, message, publish: this.redis.publishCommand },
        keyLists: { logs },
        argLists: { channels: channels.map(this.redis.key), fields },
      }),
    );
  }

  private async rangeAfter(log: string, after: string, count: number): Promise<LogEntry[]> {
    const raw = (await this.redis.run(() =>
      this.redis.client.call('XRANGE', this.redis.key(log), `(${after}`, '+', 'COUNT', count),
    )) as RawEntry[];
    const out: LogEntry[] = [];
    for (const [id, flat] of raw) {
      const fields = flat ?? [];
      const value = (name: string) => {
        for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
        return undefined;
      };
      const payload = value('e');
      const change = value('m');
      const conversationId = value('c');
      if (payload !== undefined) out.push({ id, payload });
      else if ((change === 'in' || change === 'out') && conversationId) {
        out.push({ id, mark: { change, conversationId } });
      }
    }
    return out;
  }
}

/** The largest stream id below `id`. */
function predecessor(id: string): string {
  const [ms = 0n, n = 0n] = id.split('-').map((part) => BigInt(part));
  if (n > 0n) return `${ms}-${n - 1n}`;
  return ms > 0n ? `${ms - 1n}-18446744073709551615` : '0-0';
}

export function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}
