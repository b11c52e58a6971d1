import type { AddressInfo } from 'node:net';
import { createTRPCClient, createWSClient, TRPCClientError, type TRPCLink, wsLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import { observable } from '@trpc/server/observable';
import { afterEach, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';

/**
 * How a tRPC client's call is answered, with `observableToPromise` as patched
 * (patches/@trpc+server+11.25.2.patch): an answered call makes no abort of its own, and a call
 * whose link completes without an answer still fails as aborted. And how a call goes out over
 * tRPC's WebSocket client, as patched (patches/@trpc+client+11.25.2.patch): without waiting for
 * a timer.
 */
const t = initTRPC.create();
const router = t.router({ ping: t.procedure.mutation(() => 'pong') });
const caller = t.createCallerFactory(router)({});

/** A client whose one link ends each call as `end` says: with the procedure's answer, or not. */
function clientEnding(end: 'answer' | 'complete' | 'error') {
  const link: TRPCLink<typeof router> = () => () =>
    observable((observer) => {
      if (end === 'error') {
        observer.error(TRPCClientError.from(new Error('refused')));
        return;
      }
      if (end === 'complete') {
        observer.complete();
        return;
      }
      void caller.ping().then((data) => {
        observer.next({ result: { type: 'data', data } });
        observer.complete();
      });
    });
  return createTRPCClient<typeof router>({ links: [link] });
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** Resolves after `rounds` turns of the event loop, each one polling for I/O; no timer involved. */
async function turns(rounds: number): Promise<'waiting'> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
  return 'waiting';
}

describe('a tRPC client call', () => {
  it('resolves with its answer without making an AbortController', async () => {
    const made = vi.spyOn(globalThis, 'AbortController');
    expect(await clientEnding('answer').ping.mutate()).toBe('pong');
    expect(made).not.toHaveBeenCalled();
  });

  it('fails as aborted when its link completes without an answer', async () => {
    const failure = await clientEnding('complete')
      .ping.mutate()
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(failure).toBeInstanceOf(TRPCClientError);
    expect((failure as TRPCClientError<typeof router>).cause).toMatchObject({ name: 'AbortError' });
  });

  it("fails with its link's error", async () => {
    await expect(clientEnding('error').ping.mutate()).rejects.toThrow('refused');
  });
});

describe("a call over tRPC's WebSocket client", () => {
  it('goes out and is answered without waiting for a timer', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((resolve) => wss.once('listening', resolve));
    applyWSSHandler({ wss, router, createContext: () => ({}) });
    const wsClient = createWSClient({
      url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
      WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    });
    const api = createTRPCClient<typeof router>({ links: [wsLink({ client: wsClient })] });
    try {
      // The socket opens first, with every timer it may need.
      expect(await api.ping.mutate()).toBe('pong');
      // From here on no `setTimeout` fires: tRPC's client used to wait for one (1 ms at least in
      // Node) before writing each call, and the call would still be waiting.
      vi.useFakeTimers({ toFake: ['setTimeout'] });
      expect(await Promise.race([api.ping.mutate(), turns(2_000)])).toBe('pong');
    } finally {
      vi.useRealTimers();
      await wsClient.close();
      for (const socket of wss.clients) socket.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  });
});
