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
  /** The ids as an event id carries them; rebuilt after a change (`text`). */
  private written: string | null = null;

  constructor(private last: string[]) {}

  /** The last durable id sent in `partition`'s order. */
  at(partition: number): string {
    return this.last[partition] ?? '0-0';
  }

  /** A copy of the ids, by partition. */
  snapshot(): string[] {
    return [...this.last];
  }

  /** The ids as an event id carries them: the one id with one order, joined by `_` with more. */
  text(): string {
    if (this.last.length === 1) return this.last[0] as string;
    this.written ??= this.last.join('_');
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
    this.written = null;
    this.outside = null;
  }

  private set(partition: number, id: string): void {
    this.last[partition] = id;
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
  const ids = value.slice(dot + 1).split('_');
  if (ids.length !== partitions || !ids.every((id) => STREAM_ID.test(id))) return null;
  return { epoch: value.slice(0, dot), ids };
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
