import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { initTRPC, tracked, TRPCError } from '@trpc/server';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import {
  type DirectStream,
  serveWebSocket,
  type SubscriptionRequest,
  type WsHandler,
} from '../server/src/http/ws.js';

/**
 * Parley's WebSocket handler on its own, with a small router: what `wsLink` relies on for
 * any procedure, beyond the `events` stream that the rest of the suite exercises.
 */
const t = initTRPC.context<{ name: string | null }>().create({ transformer: superjson });
const cleanedUp: string[] = [];

/**
 * A stream that can write its own frames once handed the socket (`writeTo`), as `events` does:
 * one data frame when it starts, then an error if its input asks for one; iterated, it yields
 * `'iterated'` once.
 */
class Ticker implements DirectStream {
  static readonly made: Ticker[] = [];
  socket: WebSocket | null = null;
  request: SubscriptionRequest | null = null;
  stopped = false;
  private end: ((error: Error | null) => void) | null = null;

  constructor(readonly input: { fail?: boolean }) {
    Ticker.made.push(this);
  }

  writeTo(socket: WebSocket, request: SubscriptionRequest): this {
    this.socket = socket;
    this.request = request;
    return this;
  }

  start(end: (error: Error | null) => void): void {
    this.end = end;
    const { id, jsonrpc } = this.request ?? { id: null, jsonrpc: undefined };
    this.socket?.send(
      JSON.stringify({ id, jsonrpc, result: { type: 'data', data: superjson.serialize('tick') } }),
    );
    if (this.input.fail) end(new TRPCError({ code: 'BAD_REQUEST', message: 'failed' }));
  }

  stop(): void {
    this.stopped = true;
    this.end?.(null);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<string> {
    yield await Promise.resolve('iterated');
  }
}

const tickerProcedure = t.procedure
  .input((value) => (value ?? {}) as { fail?: boolean; refuse?: boolean })
  // A middleware that refuses: the stream is never made, and its error answers the call.
  .use(({ input, next }) => {
    if ((input as { refuse?: boolean }).refuse) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'no' });
    return next();
  })
  .subscription(({ input }) => new Ticker(input));

const router = t.router({
  ticks: tickerProcedure,
  otherTicks: tickerProcedure,
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
    directStream: (path, stream, socket, request) =>
      path === 'ticks' && stream instanceof Ticker ? stream.writeTo(socket, request) : null,
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

  it('hands the socket and the request to a stream that writes its own frames, after the procedure’s middlewares', async () => {
    const socket = new WebSocket(url);
    const frames: {
      id?: unknown;
      jsonrpc?: unknown;
      result?: { type: string; data?: unknown };
      error?: unknown;
    }[] = [];
    socket.on('message', (data: Buffer) => {
      const text = data.toString();
      if (text === 'PING') socket.send('PONG');
      else frames.push(JSON.parse(text) as (typeof frames)[number]);
    });
    await new Promise((resolve) => socket.once('open', resolve));
    const of = (id: unknown) =>
      frames.filter((frame) => frame.id === id).map((frame) => frame.result?.type ?? 'error');
    const made = Ticker.made.length;

    socket.send(
      JSON.stringify({ id: 1, method: 'subscription', params: { path: 'ticks', input: { json: {} } } }),
    );
    await vi.waitFor(() => expect(of(1)).toEqual(['started', 'data']), 3_000);
    const ticker = Ticker.made[made];
    expect(ticker?.request).toEqual({ id: 1, jsonrpc: undefined });
    socket.send(JSON.stringify({ id: 1, method: 'subscription.stop' }));
    await vi.waitFor(() => expect(of(1)).toEqual(['started', 'data', 'stopped']), 3_000);
    expect(ticker?.stopped).toBe(true);

    // Its error answers the call, with the request's own id and version, then `stopped`.
    socket.send(
      JSON.stringify({
        id: 'b',
        jsonrpc: '2.0',
        method: 'subscription',
        params: { path: 'ticks', input: { json: { fail: true } } },
      }),
    );
    await vi.waitFor(() => expect(of('b')).toEqual(['started', 'data', 'error', 'stopped']), 3_000);
    expect(frames.filter((frame) => frame.id === 'b').every((frame) => frame.jsonrpc === '2.0')).toBe(true);
    expect(JSON.stringify(frames.find((frame) => frame.id === 'b' && frame.error))).toContain('BAD_REQUEST');

    // Refused by a middleware: no stream at all. Another path's stream is iterated here.
    socket.send(
      JSON.stringify([
        { id: 3, method: 'subscription', params: { path: 'ticks', input: { json: { refuse: true } } } },
        { id: 4, method: 'subscription', params: { path: 'otherTicks', input: { json: {} } } },
      ]),
    );
    await vi.waitFor(() => expect(of(4)).toEqual(['started', 'data', 'stopped']), 3_000);
    await vi.waitFor(() => expect(of(3)).toEqual(['error']), 3_000);
    expect(JSON.stringify(frames.find((frame) => frame.id === 3))).toContain('UNAUTHORIZED');
    expect(frames.find((frame) => frame.id === 4)?.result).toBeDefined();
    const iterated = frames.find((frame) => frame.id === 4 && frame.result?.type === 'data');
    expect(superjson.deserialize(iterated?.result?.data as never)).toBe('iterated');
    expect(Ticker.made.length).toBe(made + 3);
    socket.close();
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
