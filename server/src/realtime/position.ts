import { compareStreamIds, STREAM_ID } from '../broker/types.js';
import type { ParleyEvent } from '../contracts/events.js';
import type { Delivery } from './hub.js';

/**
 * Where one subscription stands: in each event order (`EventLog.partitions`), the last durable
 * event it sent; and the conversations it does not follow from there (left, or not yet
 * joined): their events are not for this user.
 *
 * A client holds it as the id of the last event it received (`<epoch>.<ids>`, see
 * `formatPosition`), and a stream resumed from there sends what came after it in every order.
 */
export class StreamPosition {
  private outside: Set<string> | null = null;
  /** With several orders, each id as an event id carries it (`compact`). */
  private compacted: string[] | null;
  /** The ids as an event id carries them; rebuilt after a change (`text`). */
  private written: string | null = null;

  constructor(private last: string[]) {
    this.compacted = last.length > 1 ? last.map(compact) : null;
  }

  /** The last durable id sent in `partition`'s order. */
  at(partition: number): string {
    return this.last[partition] ?? '0-0';
  }

  /** A copy of the ids, by partition. */
  snapshot(): string[] {
    return [...this.last];
  }

  /**
   * The ids as an event id carries them: the one id as it is with one order; with more, each
   * in base 36 (`compact`), joined by `_`. Every frame carries it, twice.
   */
  text(): string {
    if (!this.compacted) return this.last[0] as string;
    this.written ??= this.compacted.join('_');
    return this.written;
  }

  /**
   * Whether to send `delivery`; it is then sent under this position. A durable event at or
   * below the position in its order was sent already (by a backfill or a catch-up) or precedes
   * the stream's start.
   */
  admit(delivery: Delivery, userId: string): boolean {
    const { event } = delivery;
    if (!event) return false;
    if (delivery.id !== null) {
      if (compareStreamIds(delivery.id, this.at(delivery.partition)) <= 0) return false;
      this.set(delivery.partition, delivery.id);
    }
    if (event.type === 'conversation.upserted') {
      this.outside?.delete(event.conversation.id);
      return true;
    }
    // A user's own typing comes back on the conversation's channel.
    if (event.type === 'typing' && event.userId === userId) return false;
    if (this.outside) {
      const conversationId = conversationOf(event);
      if (conversationId && this.outside.has(conversationId)) return false;
    }
    return true;
  }

  leave(conversationId: string): void {
    (this.outside ??= new Set()).add(conversationId);
  }

  /** Moves past a durable id of `partition` without sending anything under it. */
  skipTo(partition: number, id: string): void {
    if (compareStreamIds(id, this.at(partition)) > 0) this.set(partition, id);
  }

  /** Starts over at `last`, after a `resync`. */
  restart(last: readonly string[]): void {
    this.last = [...last];
    this.compacted = last.length > 1 ? last.map(compact) : null;
    this.written = null;
    this.outside = null;
  }

  private set(partition: number, id: string): void {
    this.last[partition] = id;
    if (this.compacted) this.compacted[partition] = compact(id);
    this.written = null;
  }
}

/** An event id: the epoch, then the position's ids (`StreamPosition.text`). */
export function formatPosition(epoch: string, ids: string): string {
  return `${epoch}.${ids}`;
}

/**
 * The epoch and the ids of an event id, for a deployment of `partitions` orders; null when it
 * is not one (another deployment's, or one from before the orders changed).
 */
export function parsePosition(value: string, partitions: number): { epoch: string; ids: string[] } | null {
  const dot = value.lastIndexOf('.');
  if (dot <= 0) return null;
  const written = value.slice(dot + 1);
  const ids = partitions === 1 ? [written] : written.split('_').map(expand);
  if (ids.length !== partitions) return null;
  const valid: string[] = [];
  for (const id of ids) {
    if (id === null || !STREAM_ID.test(id)) return null;
    valid.push(id);
  }
  return { epoch: value.slice(0, dot), ids: valid };
}

/** A stream id (`<ms>-<n>`, decimal) with both numbers in base 36: `1733500000000-12` is `m4cx54hs-c`. */
function compact(id: string): string {
  const dash = id.indexOf('-');
  return `${base36(id.slice(0, dash))}-${base36(id.slice(dash + 1))}`;
}

function base36(decimal: string): string {
  // Below 2^53 a number is exact; a stream id's numbers go up to 2^64 - 1.
  return decimal.length <= 15 ? Number(decimal).toString(36) : BigInt(decimal).toString(36);
}

/** `compact`'s inverse; null for anything else. */
function expand(text: string): string | null {
  const match = /^([0-9a-z]{1,13})-([0-9a-z]{1,13})$/.exec(text);
  if (!match) return null;
  const [ms, n] = [fromBase36(match[1] ?? ''), fromBase36(match[2] ?? '')];
  return ms === null || n === null ? null : `${ms}-${n}`;
}

function fromBase36(text: string): string | null {
  let value = 0n;
  for (const digit of text) value = value * 36n + BigInt(parseInt(digit, 36));
  return value < 2n ** 64n ? value.toString() : null;
}

function conversationOf(event: ParleyEvent): string | null {
  switch (event.type) {
    case 'message.created':
    case 'message.updated':
      return event.message.conversationId;
    case 'message.deleted':
    case 'member.joined':
    case 'member.left':
    case 'member.updated':
    case 'typing':
    case 'read':
    case 'conversation.removed':
    case 'conversation.updated':
      return event.conversationId;
    case 'conversation.upserted':
      return event.conversation.id;
    case 'presence':
    case 'resync':
      return null;
  }
}
