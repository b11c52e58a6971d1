import type { QueueEntry } from './queue.js';

/**
 * What tests (and an operator repairing by hand) read or force in the broker beside the ports:
 * nothing in the product calls these, so they are not part of any port. Both engines implement
 * them over the same state their ports keep.
 */
export interface BrokerInspection {
  /** How many of the user's streams are live at `now` (dropping those that are not). */
  connections(userId: string, now: number): Promise<number>;
  /**
   * Ends a clientMessageId's claim now, as its expiry (`CLIENT_ID_TTL_MS`) would, for what
   * follows the expiry. Says whether there was one.
   */
  expireClaim(senderId: string, conversationId: string, clientMessageId: string): Promise<boolean>;
  /** The work queue's entries after `after`, oldest first. */
  queueEntries(after: string, count: number): Promise<QueueEntry[]>;
  /**
   * Queues an entry as it is given, with no pending copy and no guard: what no writer would
   * queue, for what the worker does with it.
   */
  addQueueEntry(fields: Record<string, string>): Promise<string>;
}

/** The parts of an engine that keep what `BrokerInspection` reads. */
export interface InspectedParts {
  presence: { connections(userId: string, now: number): Promise<number> };
  messages: {
    expireClaim(senderId: string, conversationId: string, clientMessageId: string): Promise<boolean>;
  };
  queue: {
    entries(after: string, count: number): Promise<QueueEntry[]>;
    add(fields: Record<string, string>): Promise<string>;
  };
}

/** An engine's inspection, over its own presence, message log and queue. */
export function inspectionOf(parts: InspectedParts): BrokerInspection {
  return {
    connections: (userId, now) => parts.presence.connections(userId, now),
    expireClaim: (senderId, conversationId, clientMessageId) =>
      parts.messages.expireClaim(senderId, conversationId, clientMessageId),
    queueEntries: (after, count) => parts.queue.entries(after, count),
    addQueueEntry: (fields) => parts.queue.add(fields),
  };
}
