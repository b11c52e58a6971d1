import type { Mark } from '../../contracts/events.js';
import { channelName, eventPartition } from '../keyspace.js';
import { type EventLog, type LogEntry, type LogName, markText, newEpoch } from '../ports/events.js';
import { compareStreamIds } from '../types.js';
import type { MemoryBus } from './bus.js';
import { IdClock } from './ids.js';

/** A log: its entries oldest first, and the highest id trimmed away from it (`0-0`: none). */
interface Log {
  entries: LogEntry[];
  trimmedUpTo: string;
}

/**
 * Event logs of the in-process engine: an array of entries per conversation and per inbox (one
 * per user and order), and an id clock per order.
 */
export class MemoryEvents implements EventLog {
  private readonly conversations = new Map<string, Log>();
  /** By `<partition>:<user id>`. */
  private readonly inboxes = new Map<string, Log>();
  private readonly ids: IdClock[];
  private currentEpoch: string | null = null;

  constructor(
    private readonly bus: MemoryBus,
    private readonly maxLen: number,
    readonly partitions = 1,
  ) {
    this.ids = Array.from({ length: partitions }, () => new IdClock());
  }

  private clock(id: string): IdClock {
    return this.ids[eventPartition(id, this.partitions)] as IdClock;
  }

  toConversation(conversationId: string, payload: string): Promise<string> {
    return Promise.resolve(this.announce(conversationId, payload));
  }

  /** `toConversation`, at once: for a message log write that announces itself in the same step. */
  announce(conversationId: string, payload: string): string {
    const id = this.clock(conversationId).next();
    this.add(this.conversations, conversationId, { id, payload });
    this.bus.deliver(channelName('', { conversation: conversationId }), `${id}\n${payload}`);
    return id;
  }

  toInbox(userId: string, payload: string): Promise<string> {
    const id = this.clock(userId).next();
    this.add(this.inboxes, `${eventPartition(userId, this.partitions)}:${userId}`, { id, payload });
    this.bus.deliver(channelName('', { user: userId }), `${id}\n${payload}`);
    return Promise.resolve(id);
  }

  mark(userIds: readonly string[], mark: Mark): Promise<string> {
    const id = this.clock(mark.conversationId).next();
    const partition = eventPartition(mark.conversationId, this.partitions);
    const text = `${id}\n${markText(mark)}`;
    for (const userId of new Set(userIds)) {
      this.add(this.inboxes, `${partition}:${userId}`, { id, mark: { ...mark } });
      this.bus.deliver(channelName('', { user: userId }), text);
    }
    return Promise.resolve(id);
  }

  conversationAfter(conversationId: string, after: string, count: number): Promise<LogEntry[]> {
    return Promise.resolve(page(this.conversations.get(conversationId), after, count));
  }

  inboxAfter(userId: string, partition: number, after: string, count: number): Promise<LogEntry[]> {
    return Promise.resolve(page(this.inboxes.get(`${partition}:${userId}`), after, count));
  }

  trimmedAfter(log: LogName, after: string): Promise<boolean> {
    const found =
      'conversation' in log
        ? this.conversations.get(log.conversation)
        : this.inboxes.get(`${log.partition}:${log.inbox}`);
    return Promise.resolve(compareStreamIds(found?.trimmedUpTo ?? '0-0', after) > 0);
  }

  newestIds(): Promise<string[]> {
    return Promise.resolve(this.ids.map((clock) => clock.newest));
  }

  epoch(): Promise<string> {
    this.currentEpoch ??= newEpoch();
    return Promise.resolve(this.currentEpoch);
  }

  private add(logs: Map<string, Log>, name: string, entry: LogEntry): void {
    let log = logs.get(name);
    if (!log) {
      log = { entries: [], trimmedUpTo: '0-0' };
      logs.set(name, log);
    }
    log.entries.push(entry);
    if (log.entries.length > this.maxLen) {
      const removed = log.entries.splice(0, log.entries.length - this.maxLen);
      log.trimmedUpTo = removed[removed.length - 1]?.id ?? log.trimmedUpTo;
    }
  }
}

function page(log: Log | undefined, after: string, count: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (const entry of log?.entries ?? []) {
    if (compareStreamIds(entry.id, after) <= 0) continue;
    out.push(entry.mark ? { id: entry.id, mark: { ...entry.mark } } : entry);
    if (out.length >= count) break;
  }
  return out;
}
