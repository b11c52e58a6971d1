import type {
  DeadLetterSelection,
  PendingEntry,
  QueueEntry,
  QueueInfo,
  RequeuedEntry,
  WorkQueue,
  WrittenChange,
} from '../ports/queue.js';
import { compareStreamIds } from '../types.js';
import { IdClock } from './ids.js';
import type { PendingCopies } from './pending.js';

/** An entry delivered to a consumer and not acknowledged yet. */
interface Delivery {
  deliveredAt: number;
  deliveries: number;
}

/** The persist group: how far it has read, and what each consumer holds. */
interface Group {
  lastDeliveredId: string;
  /** Per consumer: entry id → its delivery. */
  pending: Map<string, Map<string, Delivery>>;
}

/** The worker's queue in the in-process engine: entries in order, one group, dead letters. */
export class MemoryQueue implements WorkQueue {
  private readonly entriesInOrder: QueueEntry[] = [];
  private readonly dead: QueueEntry[] = [];
  private readonly ids = new IdClock();
  private readonly deadIds = new IdClock();
  private group: Group | null = null;
  /** Blocked reads, woken by the next entry. */
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(private readonly copies: PendingCopies) {}

  /** Queues a change at once: for the message log, in the same step as its guards. */
  push(fields: Record<string, string>): string {
    const id = this.ids.next();
    this.entriesInOrder.push({ id, fields: { ...fields } });
    for (const wake of [...this.waiters]) wake();
    return id;
  }

  prepare(): Promise<void> {
    this.group ??= { lastDeliveredId: '0-0', pending: new Map() };
    return Promise.resolve();
  }

  async readNew(consumer: string, count: number, blockMs = 0): Promise<QueueEntry[]> {
    const deadline = Date.now() + blockMs;
    for (;;) {
      const group = this.requireGroup();
      const out = this.after(group.lastDeliveredId, count);
      if (out.length > 0) {
        const now = Date.now();
        const held = this.heldBy(group, consumer);
        for (const entry of out) held.set(entry.id, { deliveredAt: now, deliveries: 1 });
        group.lastDeliveredId = out[out.length - 1]?.id ?? group.lastDeliveredId;
        return out;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.closed) return [];
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, remaining);
        this.waiters.add(wake);
      });
    }
  }

  readOwn(consumer: string, after: string, count: number): Promise<QueueEntry[]> {
    return answer(() => this.ownAfter(consumer, after, count));
  }

  private ownAfter(consumer: string, after: string, count: number): QueueEntry[] {
    const group = this.requireGroup();
    const held = group.pending.get(consumer);
    const out: QueueEntry[] = [];
    if (!held) return out;
    const now = Date.now();
    for (const id of [...held.keys()].sort(compareStreamIds)) {
      if (out.length >= count) break;
      if (compareStreamIds(id, after) <= 0) continue;
      const entry = this.find(id);
      if (!entry) continue; // trimmed away while pending
      const delivery = held.get(id);
      // As in Redis, reading a pending entry again counts as another delivery.
      held.set(id, { deliveredAt: now, deliveries: (delivery?.deliveries ?? 0) + 1 });
      out.push(copy(entry));
    }
    return out;
  }

  ack(ids: readonly string[]): Promise<number> {
    let acked = 0;
    for (const id of ids) {
      for (const held of this.group?.pending.values() ?? []) if (held.delete(id)) acked++;
    }
    return Promise.resolve(acked);
  }

  pending(count: number): Promise<PendingEntry[]> {
    return answer(() => {
      const now = Date.now();
      return this.deliveries(this.requireGroup())
        .slice(0, count)
        .map(({ id, consumer, delivery }) => ({
          id,
          consumer,
          idleMs: now - delivery.deliveredAt,
          deliveries: delivery.deliveries,
        }));
    });
  }

  claimIdle(consumer: string, minIdleMs: number, count: number): Promise<QueueEntry[]> {
    return answer(() => this.claim(consumer, minIdleMs, count));
  }

  private claim(consumer: string, minIdleMs: number, count: number): QueueEntry[] {
    const group = this.requireGroup();
    const now = Date.now();
    const out: QueueEntry[] = [];
    for (const { id, consumer: holder, delivery } of this.deliveries(group)) {
      if (out.length >= count) break;
      if (now - delivery.deliveredAt < minIdleMs) continue;
      group.pending.get(holder)?.delete(id);
      const entry = this.find(id);
      // Trimmed away while pending: dropped from the group, as Redis does on a claim.
      if (!entry) continue;
      this.heldBy(group, consumer).set(id, { deliveredAt: now, deliveries: delivery.deliveries + 1 });
      out.push(copy(entry));
    }
    return out;
  }

  info(): Promise<QueueInfo> {
    const length = this.entriesInOrder.length;
    const group = this.group;
    if (!group) return Promise.resolve({ length, group: null });
    const lag = this.entriesInOrder.filter(
      (entry) => compareStreamIds(entry.id, group.lastDeliveredId) > 0,
    ).length;
    let pending = 0;
    for (const held of group.pending.values()) pending += held.size;
    return Promise.resolve({ length, group: { pending, lag, lastDeliveredId: group.lastDeliveredId } });
  }

  trimBelow(id: string): Promise<number> {
    let removed = 0;
    while (this.entriesInOrder[0] && compareStreamIds(this.entriesInOrder[0].id, id) < 0) {
      this.entriesInOrder.shift();
      removed++;
    }
    return Promise.resolve(removed);
  }

  async deadLetter(entry: QueueEntry, reason: string): Promise<void> {
    this.dead.push({ id: this.deadIds.next(), fields: { ...entry.fields, entry: entry.id, reason } });
    await this.ack([entry.id]);
  }

  release(written: readonly WrittenChange[]): Promise<number> {
    return Promise.resolve(this.copies.release(written));
  }

  entries(after: string, count: number): Promise<QueueEntry[]> {
    return Promise.resolve(this.after(after, count));
  }

  deadLetters(count: number): Promise<QueueEntry[]> {
    return Promise.resolve(this.dead.slice(0, count).map(copy));
  }

  requeueDeadLetters(which: DeadLetterSelection): Promise<RequeuedEntry[]> {
    let letters: QueueEntry[];
    if ('id' in which) {
      const at = this.dead.findIndex((letter) => letter.id === which.id);
      letters = at < 0 ? [] : this.dead.splice(at, 1);
    } else {
      letters = this.dead.splice(0, which.count);
    }
    const moved = letters.map(({ id, fields }) => {
      const entry = fields.entry ?? '';
      const original: Record<string, string> = { v: entry };
      for (const [name, value] of Object.entries(fields)) {
        if (name !== 'entry' && name !== 'reason') original[name] = value;
      }
      return { id, entry, requeued: this.push(original) };
    });
    return Promise.resolve(moved);
  }

  add(fields: Record<string, string>): Promise<string> {
    return Promise.resolve(this.push(fields));
  }

  close(): void {
    this.closed = true;
    for (const wake of [...this.waiters]) wake();
  }

  private requireGroup(): Group {
    // The error Redis gives, so callers handle one message.
    if (!this.group) throw new Error(`NOGROUP No such key or consumer group`);
    return this.group;
  }

  private heldBy(group: Group, consumer: string): Map<string, Delivery> {
    let held = group.pending.get(consumer);
    if (!held) {
      held = new Map();
      group.pending.set(consumer, held);
    }
    return held;
  }

  /** Every pending delivery of the group, oldest entry first. */
  private deliveries(group: Group) {
    const all: { id: string; consumer: string; delivery: Delivery }[] = [];
    for (const [consumer, held] of group.pending) {
      for (const [id, delivery] of held) all.push({ id, consumer, delivery });
    }
    return all.sort((a, b) => compareStreamIds(a.id, b.id));
  }

  private after(after: string, count: number): QueueEntry[] {
    const out: QueueEntry[] = [];
    for (const entry of this.entriesInOrder) {
      if (compareStreamIds(entry.id, after) <= 0) continue;
      out.push(copy(entry));
      if (out.length >= count) break;
    }
    return out;
  }

  private find(id: string): QueueEntry | undefined {
    // Entries are in id order: the first one left tells whether `id` was trimmed.
    const first = this.entriesInOrder[0];
    if (!first || compareStreamIds(id, first.id) < 0) return undefined;
    return this.entriesInOrder.find((entry) => entry.id === id);
  }
}

/** What `read` returns, or its error, as a promise (as a network call would fail). */
function answer<T>(read: () => T): Promise<T> {
  try {
    return Promise.resolve(read());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}

function copy(entry: QueueEntry): QueueEntry {
  return { id: entry.id, fields: { ...entry.fields } };
}
