/**
 * The worker's queue: every accepted message change (`MessageLog`), in order, each delivered to
 * one worker of the persist group and kept pending for it until acknowledged, so a change is
 * written to PostgreSQL at least once whatever crashes. Ids are stream ids (`<ms>-<n>`).
 */
export interface WorkQueue {
  /** Creates the group (and the queue) when missing, reading from the first entry. */
  prepare(): Promise<void>;
  /**
   * Entries never delivered to the group, now pending for `consumer`; waits up to `blockMs` for
   * one. Fails (NOGROUP) while the group does not exist.
   */
  readNew(consumer: string, count: number, blockMs?: number): Promise<QueueEntry[]>;
  /** `consumer`'s own pending entries after `after`, again (each read counts as a delivery). */
  readOwn(consumer: string, after: string, count: number): Promise<QueueEntry[]>;
  /** Done with these entries; returns how many were pending. */
  ack(ids: readonly string[]): Promise<number>;
  /** The oldest pending entries, whoever holds them. */
  pending(count: number): Promise<PendingEntry[]>;
  /**
   * Takes over entries idle for at least `minIdleMs` from any consumer (one more delivery each);
   * entries trimmed away meanwhile are dropped, not returned.
   */
  claimIdle(consumer: string, minIdleMs: number, count: number): Promise<QueueEntry[]>;
  /** How long the queue is, and where the group stands (null before `prepare`). */
  info(): Promise<QueueInfo>;
  /** Removes the entries below `id` (none that is still unwritten); returns how many. */
  trimBelow(id: string): Promise<number>;
  /** Sets an entry that cannot be written aside, with why, and acknowledges it, in one step. */
  deadLetter(entry: QueueEntry, reason: string): Promise<void>;
  /**
   * Drops the pending copies (`MessageLog`) these written changes left, each only while it is
   * still the copy that entry wrote (a newer change keeps its own); returns how many.
   */
  release(written: readonly WrittenChange[]): Promise<number>;

  /** The entries set aside (`deadLetter`), oldest first, each with `entry` and `reason` (`parley dead-letters`). */
  deadLetters(count: number): Promise<QueueEntry[]>;
  /**
   * Moves dead letters back into the queue, in one step: up to `count` of the oldest, or the one
   * whose id is `id` (none when there is no such dead letter). Each becomes a new entry with the
   * fields it was set aside with, plus `v`, the entry it was first queued as (kept when it has
   * one already): its change keeps that place among the message's changes, so it never undoes a
   * newer one (`parley dead-letters --requeue`).
   */
  requeueDeadLetters(which: DeadLetterSelection): Promise<RequeuedEntry[]>;
}

/** Which dead letters to move back: the oldest `count`, or the one with this `id`. */
export type DeadLetterSelection = { count: number } | { id: string };

/** A dead letter moved back into the queue. */
export interface RequeuedEntry {
  /** Its id among the dead letters. */
  id: string;
  /** The queue entry it was set aside from. */
  entry: string;
  /** The queue entry it is now. */
  requeued: string;
}

/**
 * Across a deployment's queues: entries in them (written or not), and entries not yet written
 * (undelivered plus delivered and unacknowledged; a queue without its group is all unwritten).
 */
export async function queueTotals(
  queues: readonly WorkQueue[],
): Promise<{ length: number; unwritten: number }> {
  const infos = await Promise.all(queues.map((queue) => queue.info()));
  let length = 0;
  let unwritten = 0;
  for (const { length: entries, group } of infos) {
    length += entries;
    unwritten += group ? group.lag + group.pending : entries;
  }
  return { length, unwritten };
}

export interface QueueEntry {
  id: string;
  fields: Record<string, string>;
}

export interface PendingEntry {
  id: string;
  consumer: string;
  idleMs: number;
  deliveries: number;
}

export interface QueueInfo {
  length: number;
  group: {
    /** Entries delivered to the group and not yet acknowledged. */
    pending: number;
    /** Entries in the queue not yet delivered to the group. */
    lag: number;
    lastDeliveredId: string;
  } | null;
}

export interface WrittenChange {
  entryId: string;
  conversationId: string;
  messageId: string;
}
