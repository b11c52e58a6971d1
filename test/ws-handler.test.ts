import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { initTRPC, tracked, TRPCError } from '@trpc/server';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { serveWebSocket, type WsHandler } from '../server/src/http/ws.js';

/**
 * Parley's WebSocket handler on its own, with a small router: what `wsLink` relies on for
 * any procedure, beyond the `events` stream that the rest of the suite exercises.
 */
const t = initTRPC.context<{ name: string | null }>().create({ transformer: superjson });
const cleanedUp: string[] = [];
const router = t.router({
  hello: t.procedure.query(({ ctx }) => ({ greeting: `hello ${ctx.name ?? 'nobody'}`, at: new Date(0) })),
  twice: t.procedure.input((value) => Number(value)).mutation(({ input }) => input * 2),
  count: t.procedure
    .input((value) => value as { to: number; lastEventId?: string })
    .subscription(async function* ({ input, signal }) {
      try {
        const from = input.lastEventId ? Number(input.lastEventId) + 1 : 1;
        for (let i = from; i <= input.to; i++) yield tracked(String(i), { i });
        if (input.to < 0) throw new TRPCError({ code: 'BAD_REQUEST', message: 'negative' });
        // Then waits until stopped.
        await new Promise((resolve) => signal?.addEventListener('abort', resolve));
      } finally {
        cleanedUp.push(`count ${input.to}`);
      }
    }),
});

let server: http.Server;
let handler: WsHandler;
let url: string;

beforeAll(async () => {
  server = http.createServer();
  const wss = new WebSocketServer({ server });
  handler = serveWebSocket({
    wss,
    router,
    createContext: ({ connectionParams }) => Promise.resolve({ name: connectionParams?.name ?? null }),
    keepAlive: { pingMs: 300, pongWaitMs: 300 },
    maxBatchSize: 10,
    onError: () => undefined,
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  handler.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function client(name: string) {
  const wsClient = createWSClient({
    url,
    WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    connectionParams: () => ({ name }),
  });
  return {
    wsClient,
    api: createTRPCClient<typeof router>({ links: [wsLink({ client: wsClient, transformer: superjson })] }),
  };
}

describe('WebSocket handler', () => {
  it('answers queries and mutations with the connection’s context, transformed', async () => {
    const { wsClient, api } = client('al');
    await expect(api.hello.query()).resolves.toEqual({ greeting: 'hello al', at: new Date(0) });
    await expect(api.twice.mutate(21)).resolves.toBe(42);
    await wsClient.close();
  });

  it('iterates an ordinary stream: tracked ids, resume from lastEventId, stop runs its cleanup', async () => {
    const { wsClient, api } = client('bo');
    const seen: { id: string; i: number }[] = [];
    const subscription = api.count.subscribe(
      { to: 3 },
      { onData: (event) => seen.push({ id: event.id, i: event.data.i }) },
    );
    await vi.waitFor(() => expect(seen).toHaveLength(3), 3_000);
    expect(seen).toEqual([
      { id: '1', i: 1 },
      { id: '2', i: 2 },
      { id: '3', i: 3 },
    ]);
    subscription.unsubscribe();
    await vi.waitFor(() => expect(cleanedUp).toContain('count 3'), 3_000);

    const resumed: number[] = [];
    const again = api.count.subscribe(
      { to: 5, lastEventId: '3' },
      { onData: (event) => resumed.push(event.data.i) },
    );
    await vi.waitFor(() => expect(resumed).toHaveLength(2), 3_000);
    expect(resumed).toEqual([4, 5]);
    again.unsubscribe();
    await wsClient.close();
  });

  it('sends a stream’s error to its subscriber, and cleans up when the socket closes', async () => {
    const { wsClient, api } = client('cy');
    const errors: unknown[] = [];
    api.count.subscribe({ to: -1 }, { onError: (error) => errors.push(error) });
    await vi.waitFor(() => expect(errors).toHaveLength(1), 3_000);
    expect((errors[0] as { data?: { code?: string } }).data?.code).toBe('BAD_REQUEST');
    expect(cleanedUp).toContain('count -1');

    const data: number[] = [];
    api.count.subscribe({ to: 7 }, { onData: (event) => data.push(event.data.i) });
    await vi.waitFor(() => expect(data).toHaveLength(7), 3_000);
    await wsClient.close();
    await vi.waitFor(() => expect(cleanedUp).toContain('count 7'), 3_000);
  });

  it('pings a quiet connection and cuts it off when no answer comes', async () => {
    const quiet = async (answer: boolean) => {
      const socket = new WebSocket(url);
      const received: string[] = [];
      socket.on('message', (data: Buffer) => {
        const text = data.toString();
        received.push(text);
        if (text === 'PING' && answer) socket.send('PONG');
      });
      const closed = new Promise<number>((resolve) => socket.once('close', resolve));
      await new Promise((resolve) => socket.once('open', resolve));
      return { socket, received, closed };
    };
    const silent = await quiet(false);
    const answering = await quiet(true);
    // Terminated: no close frame, so the client sees 1006.
    await expect(silent.closed).resolves.toBe(1006);
    expect(silent.received).toContain('PING');
    expect(answering.received).toContain('PING');
    expect(answering.socket.readyState).toBe(WebSocket.OPEN);
    answering.socket.close();
  });
});
