import { expect, vi } from 'vitest';
import WebSocket from 'ws';
import type { App } from '../../server/src/app.js';
import {
  createParleyClient,
  type ParleyClient,
  type ParleyClientOptions,
} from '../../client-sdk/src/index.js';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `condition` holds, or fails with `message()` after `timeoutMs`. */
export async function waitFor(condition: () => boolean, message: () => string, timeoutMs = 10_000) {
  await vi.waitFor(
    () => {
      if (!condition()) throw new Error(message());
    },
    { timeout: timeoutMs, interval: 20 },
  );
}

/**
 * Resolves once the server counts one more live event stream for `userId` than `before`: from
 * then on, everything published to the user reaches it.
 */
export async function streamLive(app: App, userId: string, before = 0): Promise<void> {
  await expect
    .poll(() => app.services.broker.inspect.connections(userId, Date.now()), {
      timeout: 10_000,
      interval: 10,
      message: 'the event stream started',
    })
    .toBeGreaterThan(before);
}

/** A `ws` WebSocket that counts the connections it opens. */
export function countingWebSocket() {
  const counter = { opened: 0 };
  class Counting extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      counter.opened += 1;
    }
  }
  return { WebSocket: Counting, counter };
}

let counter = 0;

/** Fresh registration details. */
export function newUser(prefix = 'sdk') {
  counter += 1;
  const username = `${prefix}_${counter}_${Math.random().toString(36).slice(2, 7)}`;
  return { username, email: `${username}@example.test`, password: 'correct horse battery' };
}

/** Registers a new user with the SDK; `track` collects clients to close after the file. */
export async function sdkUser(
  app: App,
  track: ParleyClient[],
  options: Partial<ParleyClientOptions> = {},
): Promise<ParleyClient & { id: string; username: string; password: string }> {
  const client = createParleyClient({ url: app.url, ...options });
  track.push(client);
  const credentials = newUser();
  const me = await client.register(credentials);
  return Object.assign(client, { id: me.id, username: credentials.username, password: credentials.password });
}
