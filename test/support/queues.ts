import { eventPartition } from '../../server/src/broker/keyspace.js';
import { type QueueEntry, queueTotals, type WorkQueue } from '../../server/src/broker/ports/queue.js';
import type { Broker } from '../../server/src/broker/types.js';

/**
 * A deployment's worker queues, one per partition of sends (`Broker.queues`): what tests read
 * across them, and the one a conversation's changes go to.
 */

/** The queue a conversation's message changes go to. */
export function queueOf(broker: Broker, conversationId: string): WorkQueue {
  return broker.queues[eventPartition(conversationId, broker.queues.length)] as WorkQueue;
}

/** Every queue's dead letters, up to `count` of each. */
export async function deadLetters(broker: Broker, count = 100): Promise<QueueEntry[]> {
  return (await Promise.all(broker.queues.map((queue) => queue.deadLetters(count)))).flat();
}

/** Whether nothing in any queue is left to write (a queue no worker read yet must be empty). */
export async function isDrained(broker: Broker): Promise<boolean> {
  const infos = await Promise.all(broker.queues.map((queue) => queue.info()));
  return infos.every(({ length, group }) =>
    group === null ? length === 0 : group.lag === 0 && group.pending === 0,
  );
}

/** Entries not yet written, across every queue. */
export async function unwritten(broker: Broker): Promise<number> {
  return (await queueTotals(broker.queues)).unwritten;
}
