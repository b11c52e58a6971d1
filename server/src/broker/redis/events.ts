import type { Mark } from '../../contracts/events.js';
import { channelName, conversationLog, epochKey, eventIdsStream, inbox } from '../keyspace.js';
import { type EventLog, type LogEntry, type LogName, markText, newEpoch } from '../ports/events.js';
import { compareStreamIds } from '../types.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

/**
 * One id from the one-entry id stream, reused in every log: a single global order. Then the
 * publish, so that a follower reading the log after it subscribed finds every event either
 * there or on the channel. Logs are capped by XADD itself (`MAXLEN`), with no further command.
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
  /** One order: every event shares the partition's id stream (`Partition` in `keyspace.ts`). */
  readonly partitions = 1;

  constructor(
    private readonly redis: RedisConnection,
    private readonly maxLen: number,
  ) {}

  private get p() {
    return this.redis.partition;
  }

  toConversation(conversationId: string, payload: string): Promise<string> {
    return this.append(
      [conversationLog(this.p, conversationId)],
      ['e', payload],
      [channelName(this.p, { conversation: conversationId })],
      payload,
    );
  }

  toInbox(userId: string, payload: string): Promise<string> {
    return this.append(
      [inbox(this.p, userId)],
      ['e', payload],
      [channelName(this.p, { user: userId })],
      payload,
    );
  }

  mark(userIds: readonly string[], mark: Mark): Promise<string> {
    const unique = [...new Set(userIds)];
    return this.append(
      unique.map((user) => inbox(this.p, user)),
      ['m', mark.change, 'c', mark.conversationId],
      unique.map((user) => channelName(this.p, { user })),
      markText(mark),
    );
  }

  conversationAfter(conversationId: string, after: string, count: number): Promise<LogEntry[]> {
    return this.rangeAfter(conversationLog(this.p, conversationId), after, count);
  }

  inboxAfter(userId: string, _partition: number, after: string, count: number): Promise<LogEntry[]> {
    return this.rangeAfter(inbox(this.p, userId), after, count);
  }

  async trimmedAfter(log: LogName, after: string): Promise<boolean> {
    const name = 'conversation' in log ? conversationLog(this.p, log.conversation) : inbox(this.p, log.inbox);
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

  async newestIds(): Promise<string[]> {
    const ids = this.redis.key(eventIdsStream(this.p));
    const raw = (await this.redis.run(() =>
      this.redis.client.call('XREVRANGE', ids, '+', '-', 'COUNT', 1),
    )) as RawEntry[];
    return [raw[0]?.[0] ?? '0-0'];
  }

  async epoch(): Promise<string> {
    return String(
      await this.redis.eval(EPOCH, { keys: { epoch: epochKey(this.p) }, args: { candidate: newEpoch() } }),
    );
  }

  private async append(
    logs: string[],
    fields: string[],
    channels: string[],
    message: string,
  ): Promise<string> {
    return String(
      await this.redis.eval(APPEND_EVENT, {
        keys: { ids: eventIdsStream(this.p) },
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
