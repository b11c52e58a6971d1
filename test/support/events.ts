import type { App } from '../../server/src/app.js';
import type { ParleyEvent } from '../../server/src/contracts/events.js';
import type { TestClient } from './client.js';

export interface Received {
  id: string;
  event: ParleyEvent;
}

export interface EventTap {
  received: Received[];
  errors: unknown[];
  /** Events of one type, in arrival order. */
  of<T extends ParleyEvent['type']>(type: T): Extract<ParleyEvent, { type: T }>[];
  /** Resolves when `predicate` holds for what has arrived, or rejects after `timeoutMs`. */
  until(predicate: (received: Received[]) => boolean, timeoutMs?: number): Promise<void>;
  lastId(): string | undefined;
  /** Unsubscribes and waits until the server has let the subscription go. */
  stop(): Promise<void>;
}

/** Subscribes to `events` with the real client and records everything that arrives. */
export async function tap(
  client: TestClient,
  app: App,
  userId: string,
  input: { lastEventId?: string | null } = {},
): Promise<EventTap> {
  const received: Received[] = [];
  const errors: unknown[] = [];
  const before = await app.services.realtime.presence.connectionCount(userId);
  let started = false;
  const subscription = client.api.events.subscribe(input, {
    onStarted: () => {
      started = true;
    },
    onData: (envelope) => received.push({ id: envelope.id, event: envelope.data }),
    onError: (error) => errors.push(error),
  });
  const result: EventTap = {
    received,
    errors,
    of: <T extends ParleyEvent['type']>(type: T) =>
      received.map((r) => r.event).filter((e): e is Extract<ParleyEvent, { type: T }> => e.type === type),
    async until(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(received)) {
        if (errors.length > 0) throw new Error(`subscription failed: ${String(errors[0])}`);
        if (Date.now() > deadline) {
          throw new Error(`timed out; received: ${JSON.stringify(received.map((r) => r.event.type))}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    lastId: () => received[received.length - 1]?.id,
    async stop() {
      const count = await app.services.realtime.presence.connectionCount(userId);
      subscription.unsubscribe();
      const until = Date.now() + 3_000;
      while ((await app.services.realtime.presence.connectionCount(userId)) >= count && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
  };
  // Live once the server has answered `started` (the stream's start is fixed then: an event
  // sent before could precede it) and counts the connection (some instance does).
  const deadline = Date.now() + 10_000;
  while (!started || (await app.services.realtime.presence.connectionCount(userId)) <= before) {
    if (errors.length > 0) throw new Error(`subscription failed: ${String(errors[0])}`);
    if (Date.now() > deadline) throw new Error('subscription did not start');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return result;
}
