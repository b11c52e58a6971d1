import { type BrokerInspection, inspectionOf } from '../ports/inspect.js';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import type { Broker } from '../types.js';
import { MemoryBus } from './bus.js';
import { MemoryEvents } from './events.js';
import { MemoryLimits } from './limits.js';
import { MemoryMessageLog } from './message-log.js';
import { PendingCopies } from './pending.js';
import { MemoryPresence } from './presence.js';
import { MemoryQueue } from './queue.js';
import { MemoryRosters } from './rosters.js';
import { MemorySessions } from './sessions.js';
import { MemoryTyping } from './typing.js';

/**
 * The single-process broker: each port's operations on plain data held in memory, with the same
 * outcomes as the Redis engine (the contract suites hold both to them). An operation runs without
 * a pause, so it is one atomic step, as a script is in Redis. Handlers run on a later tick, as
 * they would after a network hop, so no caller can come to rely on synchronous delivery.
 */
export class MemoryBroker implements Broker {
  readonly engine = 'memory' as const;
  readonly rosters = new MemoryRosters();
  readonly presence = new MemoryPresence();
  readonly limits = new MemoryLimits();
  readonly typing = new MemoryTyping();
  readonly sessions = new MemorySessions();
  readonly bus = new MemoryBus();
  readonly events: MemoryEvents;
  /** Pending copies: written by the message log, released by the queue. */
  private readonly copies = new PendingCopies();
  private readonly queue = new MemoryQueue(this.copies);
  /** One queue: the in-process engine has no hash slots to spread. */
  readonly queues: readonly [MemoryQueue] = [this.queue];
  readonly messages: MemoryMessageLog;
  readonly inspect: BrokerInspection;
  private closed = false;

  constructor(options: { eventLogLength?: number; eventPartitions?: number } = {}) {
    this.events = new MemoryEvents(
      this.bus,
      options.eventLogLength ?? EVENT_LOG_LENGTH,
      options.eventPartitions ?? 1,
    );
    this.messages = new MemoryMessageLog(
      this.rosters,
      (session) => this.sessions.isRevoked(session),
      this.events,
      this.queue,
      this.copies,
    );
    this.inspect = inspectionOf({ presence: this.presence, messages: this.messages, queue: this.queue });
  }

  ping(): Promise<boolean> {
    return Promise.resolve(!this.closed);
  }

  close(): Promise<void> {
    this.closed = true;
    this.queue.close();
    this.bus.close();
    return Promise.resolve();
  }
}
