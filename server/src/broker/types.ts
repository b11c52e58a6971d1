import type { EventBus, EventLog } from './ports/events.js';
import type { BrokerInspection } from './ports/inspect.js';
import type { LimitStore } from './ports/limits.js';
import type { MessageLog } from './ports/message-log.js';
import type { PresenceStore } from './ports/presence.js';
import type { WorkQueue } from './ports/queue.js';
import type { RosterStore } from './ports/rosters.js';
import type { SessionStore } from './ports/sessions.js';
import type { TypingClaims } from './ports/typing.js';

export type { SubscriptionWatcher, Unsubscribe } from './ports/events.js';

/**
 * What Parley needs from Redis, with two engines: `RedisBroker` (ioredis) for deployments and
 * `MemoryBroker` for the single-process default. Each concern is a port of its own (`ports/`),
 * implemented by both engines and held to one contract suite per port (`test/ports/`); what is
 * left here passes `test/broker.contract.test.ts`.
 *
 * Every key and channel name is logical (`keyspace.ts`): the engine adds its prefix. Ids of
 * logs and queues are Redis stream ids (`<ms>-<n>`) in both engines and compare in that order.
 */
export interface Broker {
  readonly engine: 'redis' | 'memory';
  readonly rosters: RosterStore;
  readonly events: EventLog;
  readonly bus: EventBus;
  readonly messages: MessageLog;
  /**
   * The worker's queues, one per partition of sends (one without Redis): a worker reads each
   * (`app.ts` runs one `PersistenceWorker` per queue).
   */
  readonly queues: readonly [WorkQueue, ...WorkQueue[]];
  readonly presence: PresenceStore;
  readonly limits: LimitStore;
  readonly typing: TypingClaims;
  readonly sessions: SessionStore;
  /** For tests and repairs by hand, beside the ports (`ports/inspect.ts`). */
  readonly inspect: BrokerInspection;

  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** Compares two stream ids (`<ms>-<n>`) numerically, without allocating (hot path). */
export function compareStreamIds(a: string, b: string): number {
  const aDash = a.indexOf('-');
  const bDash = b.indexOf('-');
  const aMs = aDash < 0 ? a : a.slice(0, aDash);
  const bMs = bDash < 0 ? b : b.slice(0, bDash);
  const byMs = compareDigits(aMs, bMs);
  if (byMs !== 0) return byMs;
  return compareDigits(aDash < 0 ? '0' : a.slice(aDash + 1), bDash < 0 ? '0' : b.slice(bDash + 1));
}

/** Compares two unsigned decimal numbers written without leading zeros. */
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

export const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** Thrown when the broker cannot be reached; the API maps it to a clear, retryable error. */
export class BrokerUnavailableError extends Error {
  override name = 'BrokerUnavailableError';

  constructor(
    message: string,
    options?: ErrorOptions & {
      /** The command went out before the connection failed or timed out: it may have run. */
      outcomeUnknown?: boolean;
    },
  ) {
    super(message, options);
    this.outcomeUnknown = options?.outcomeUnknown ?? false;
  }

  readonly outcomeUnknown: boolean;
}
