import { expect, vi } from 'vitest';
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
  const before = await app.services.broker.inspect.connections(userId, Date.now());
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
      // Done as soon as the subscription fails, too: that is then the error.
      await vi.waitFor(
        () => {
          if (errors.length > 0 || predicate(received)) return;
          throw new Error(`timed out; received: ${JSON.stringify(received.map((r) => r.event.type))}`);
        },
        { timeout: timeoutMs, interval: 20 },
      );
      failed();
    },
    lastId: () => received[received.length - 1]?.id,
    async stop() {
      const count = await connections();
      subscription.unsubscribe();
      await expect
        .poll(connections, { timeout: 3_000, interval: 10, message: 'the server let the subscription go' })
        .toBeLessThan(count);
    },
  };
  const connections = () => app.services.broker.inspect.connections(userId, Date.now());
  const failed = () => {
    if (errors.length > 0) throw new Error(`subscription failed: ${String(errors[0])}`);
  };
  // Live once the server has answered `started` (the stream's start is fixed then: an event
  // sent before could precede it) and counts the connection (some instance does).
  await vi.waitFor(
    async () => {
      if (errors.length > 0) return;
      if (!started || (await connections()) <= before) throw new Error('subscription did not start');
    },
    { timeout: 10_000, interval: 10 },
  );
  failed();
  return result;
}
