import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { initTRPC, tracked, TRPCError } from '@trpc/server';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { z } from 'zod';
import { serveWebSocket } from '../server/src/http/ws.js';
import { call } from './support/raw-socket.js';

/**
 * Parley's WebSocket handler against tRPC's own adapter as the oracle: one small router served
 * by both, the same raw frames sent to each, and the frames they answer compared.
 *
 * The oracle is the `@trpc/server` installed here. Its version is pinned exactly (no caret) in
 * package.json, server/package.json and client-sdk/package.json: Parley's handler follows the
 * adapter of that version, frame for frame, so an upgrade of `@trpc/*` is a deliberate change
 * that runs this file first.
 */
interface Ctx {
  name: string | null;
}

const t = initTRPC.context<Ctx>().create({
  transformer: superjson,
  // A stack names the handler's own source lines, which must differ; everything else the
  // formatter is given (type, path, input with lastEventId merged, ctx) is echoed to compare.
  errorFormatter({ shape, type, path, input, ctx }) {
    const { stack: _stack, ...data } = shape.data;
    return { ...shape, data: { ...data, call: { type, path, input, name: ctx?.name ?? null } } };
  },
});

const router = t.router({
  hello: t.procedure.query(({ ctx }) => ({ greeting: `hello ${ctx.name ?? 'nobody'}`, at: new Date(0) })),
  echo: t.procedure.input(z.object({ n: z.number().int() })).query(({ input }) => input),
  twice: t.procedure.input(z.number()).mutation(({ input }) => input * 2),
  missing: t.procedure.query(() => {
    throw new TRPCError({ code: 'NOT_FOUND', message: 'no such thing' });
  }),
  crash: t.procedure.query(() => {
    throw new Error('boom');
  }),
  streamFromQuery: t.procedure.query(async function* () {
    yield await Promise.resolve(1);
  }),
  count: t.procedure
    .input(z.object({ to: z.number().int(), lastEventId: z.string().optional() }))
    .subscription(async function* ({ input, signal }) {
      const from = input.lastEventId ? Number(input.lastEventId) + 1 : 1;
      for (let i = from; i <= input.to; i++) yield tracked(String(i), { i, at: new Date(i) });
      if (input.to < 0) throw new TRPCError({ code: 'BAD_REQUEST', message: 'negative' });
      // Then waits until stopped.
      await new Promise((resolve) => signal?.addEventListener('abort', resolve));
    }),
  untracked: t.procedure.subscription(async function* () {
    yield await Promise.resolve('a');
    yield 'b';
  }),
});

function createContext(connectionParams: Record<string, string | undefined> | null): Promise<Ctx> {
  if (connectionParams?.name === 'intruder') {
    return Promise.reject(new TRPCError({ code: 'UNAUTHORIZED', message: 'not you' }));
  }
  return Promise.resolve({ name: connectionParams?.name ?? null });
}

const maxBatchSize = 3;

interface Served {
  url: string;
  broadcastReconnectNotification(): void;
  close(): Promise<void>;
}

async function serve(kind: 'trpc' | 'parley'): Promise<Served> {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  let stop = () => undefined as void;
  let broadcastReconnectNotification: () => void;
  if (kind === 'trpc') {
    ({ broadcastReconnectNotification } = applyWSSHandler({
      wss,
      router,
      createContext: ({ info }) => createContext(info.connectionParams),
      maxBatchSize,
    }));
  } else {
    const handler = serveWebSocket({
      wss,
      router,
      createContext: ({ connectionParams }) => createContext(connectionParams),
      // Far beyond any scenario: keep-alive timing is not compared.
      keepAlive: { pingMs: 60_000, pongWaitMs: 60_000 },
      maxBatchSize,
      onError: () => undefined,
    });
    broadcastReconnectNotification = () => handler.broadcastReconnectNotification();
    stop = () => handler.close();
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`,
    broadcastReconnectNotification,
    close: async () => {
      stop();
      server.closeAllConnections();
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** What one handler answered on one connection: every frame, parsed when JSON, then how it closed. */
type Transcript = { frames: unknown[]; closed: { code: number; reason: string } | null };

/** A raw client for one scenario: sends frames and waits for answers, recording all of them. */
class Peer {
  readonly frames: unknown[] = [];
  closed: { code: number; reason: string } | null = null;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer, isBinary) => {
      const text = data.toString('utf8');
      let frame: unknown = text;
      if (!isBinary && text !== 'PING' && text !== 'PONG') frame = JSON.parse(text);
      this.frames.push(frame);
      for (const waiter of [...this.waiters]) waiter();
    });
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const waiter of [...this.waiters]) waiter();
    });
  }

  static async open(url: string): Promise<Peer> {
    const socket = new WebSocket(url);
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    return new Peer(socket);
  }

  send(message: unknown, options: { binary?: boolean } = {}): void {
    const text = typeof message === 'string' ? message : JSON.stringify(message);
    this.socket.send(options.binary ? Buffer.from(text) : text, { binary: options.binary ?? false });
  }

  /** Resolves once a frame (a parsed message, or `PING`/`PONG`) matches `done`. */
  until(done: (frame: Frame) => boolean, what: string): Promise<void> {
    const found = () => this.frames.some((frame) => done(isFrame(frame) ? frame : { text: String(frame) }));
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!found() && !this.closed) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        if (!found()) {
          reject(new Error(`closed before ${what}: ${JSON.stringify(this.frames)}`));
        } else resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no ${what}: ${JSON.stringify(this.frames)}`));
      }, 5_000);
      this.waiters.add(check);
      check();
    });
  }

  answered(id: string | number | null, type?: string): Promise<void> {
    return this.until(
      (frame) => frame.id === id && (type === undefined || frame.result?.type === type),
      `answer to ${String(id)}${type ? ` (${type})` : ''}`,
    );
  }

  /**
   * "Nothing more arrives" for what was sent before: a last query whose answer must come
   * after every answer the handler was still to give, then the connection is closed.
   */
  async finish(): Promise<void> {
    this.send(call(999, 'query', 'hello'));
    await this.answered(999);
    await this.close();
  }

  async closedByServer(): Promise<void> {
    if (this.closed) return;
    await new Promise((resolve) => this.socket.once('close', resolve));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const closed = new Promise((resolve) => this.socket.once('close', resolve));
    this.socket.close();
    await closed;
  }
}

interface Frame {
  /** A frame that is not JSON. */
  text?: string;
  method?: string;
  id?: unknown;
  result?: { type?: string };
  error?: unknown;
}

const isFrame = (frame: unknown): frame is Frame => typeof frame === 'object' && frame !== null;

type Scenario = (peer: Peer, served: Served) => Promise<void>;

/**
 * The answers, grouped by request id in the order each was sent. Across ids the two handlers
 * may interleave concurrent calls differently (a batch's calls run side by side); within one
 * id the order is the protocol (started, data…, stopped) and is kept.
 */
function normalize(transcript: Transcript): Transcript {
  const key = (frame: unknown) => (isFrame(frame) ? JSON.stringify(frame.id ?? null) : `"${String(frame)}"`);
  const frames = transcript.frames
    .map((frame, index) => ({ frame, index }))
    .sort((a, b) => key(a.frame).localeCompare(key(b.frame)) || a.index - b.index)
    .map(({ frame }) => frame);
  return { frames, closed: transcript.closed };
}

let oracle: Served;
let parley: Served;

beforeAll(async () => {
  [oracle, parley] = await Promise.all([serve('trpc'), serve('parley')]);
});
afterAll(async () => {
  await Promise.all([oracle?.close(), parley?.close()]);
});

async function run(served: Served, query: string, scenario: Scenario): Promise<Transcript> {
  const peer = await Peer.open(`${served.url}${query}`);
  try {
    await scenario(peer, served);
  } finally {
    await peer.close();
  }
  return normalize({ frames: peer.frames, closed: peer.closed });
}

/**
 * The one known difference, in wording only: Parley's encoder refuses a binary frame with its
 * own message (same code, same shape). Any other difference fails.
 */
const knownWording: [parley: string, trpc: string][] = [
  [
    'Binary WebSocket frames are not accepted: messages are JSON text frames',
    'jsonEncoder received binary data. JSON uses text frames. Use a binary encoder for binary data.',
  ],
];

/** Runs `scenario` against both handlers; Parley's answers must equal tRPC's. */
async function conforms(scenario: Scenario, query = ''): Promise<Transcript> {
  const expected = await run(oracle, query, scenario);
  let actual = JSON.stringify(await run(parley, query, scenario));
  for (const [ours, theirs] of knownWording)
    actual = actual.replaceAll(JSON.stringify(ours), JSON.stringify(theirs));
  expect(JSON.parse(actual)).toEqual(expected);
  return expected;
}

describe('Parley’s WebSocket handler answers as tRPC’s applyWSSHandler does', () => {
  it('queries and a mutation, their results transformed', async () => {
    const { frames } = await conforms(async (peer) => {
      peer.send(call(1, 'query', 'hello'));
      peer.send(call(2, 'mutation', 'twice', 21));
      peer.send({ ...call(3, 'query', 'echo', { n: 4 }), jsonrpc: '2.0' });
      await Promise.all([peer.answered(1), peer.answered(2), peer.answered(3)]);
      await peer.finish();
    });
    expect(frames).toContainEqual({
      id: 2,
      result: { type: 'data', data: { json: 42 } },
    });
  });

  it('errors: invalid input, a thrown TRPCError, an unknown error, an unknown procedure, a stream from a query', async () => {
    const { frames } = await conforms(async (peer) => {
      peer.send(call(1, 'query', 'echo', { n: 'four' }));
      peer.send(call(2, 'query', 'missing'));
      peer.send(call(3, 'query', 'crash'));
      peer.send(call(4, 'query', 'nowhere'));
      peer.send(call(5, 'query', 'streamFromQuery'));
      peer.send(call(6, 'mutation', 'hello'));
      await Promise.all([1, 2, 3, 4, 5, 6].map((id) => peer.answered(id)));
      await peer.finish();
    });
    expect(frames.filter((frame) => isFrame(frame) && frame.error)).toHaveLength(6);
  });

  it('a subscription: started, tracked data, resumed after lastEventId, stopped by subscription.stop', async () => {
    const { frames } = await conforms(async (peer) => {
      peer.send(call(1, 'subscription', 'count', { to: 3 }));
      await peer.until((frame) => frame.id === 1 && JSON.stringify(frame).includes('"id":"3"'), 'event 3');
      peer.send({ id: 1, method: 'subscription.stop' });
      await peer.answered(1, 'stopped');
      // wsLink resumes with `lastEventId` beside the input; it is merged into the input.
      peer.send({
        id: 2,
        method: 'subscription',
        params: { ...call(2, 'subscription', 'count', { to: 5 }).params, lastEventId: '3' },
      });
      await peer.until((frame) => frame.id === 2 && JSON.stringify(frame).includes('"id":"5"'), 'event 5');
      peer.send({ id: 2, method: 'subscription.stop' });
      await peer.answered(2, 'stopped');
      // A stop for an id that is not subscribed is not answered.
      peer.send({ id: 77, method: 'subscription.stop' });
      await peer.finish();
    });
    expect(
      frames.filter((frame) => isFrame(frame) && frame.id !== 999 && frame.result?.type === 'data'),
    ).toHaveLength(5);
  });

  it('a subscription that ends, one that fails, one with a duplicate id, one with invalid input', async () => {
    await conforms(async (peer) => {
      peer.send(call(1, 'subscription', 'untracked'));
      peer.send(call(2, 'subscription', 'count', { to: -1 }));
      peer.send(call(3, 'subscription', 'count', { to: 0 }));
      peer.send(call(4, 'subscription', 'count', { to: 'x' }));
      await Promise.all([
        peer.answered(1, 'stopped'),
        peer.answered(2, 'stopped'),
        peer.answered(3, 'started'),
      ]);
      peer.send(call(3, 'subscription', 'count', { to: 1 }));
      await peer.until((frame) => frame.id === 3 && frame.error !== undefined, 'duplicate id refused');
      await peer.answered(4);
      // A subscription on a query, a query on a subscription.
      peer.send(call(5, 'subscription', 'hello'));
      peer.send(call(6, 'query', 'count', { to: 1 }));
      await Promise.all([peer.answered(5), peer.answered(6)]);
      peer.send({ id: 3, method: 'subscription.stop' });
      await peer.answered(3, 'stopped');
      await peer.finish();
    });
  });

  it('a batch, and a batch larger than the limit', async () => {
    const { frames } = await conforms(async (peer) => {
      peer.send([
        call(1, 'query', 'hello'),
        call(2, 'mutation', 'twice', 2),
        call(3, 'subscription', 'untracked'),
      ]);
      await Promise.all([peer.answered(1), peer.answered(2), peer.answered(3, 'stopped')]);
      peer.send([
        call(4, 'query', 'hello'),
        { ...call(5, 'query', 'hello'), jsonrpc: '2.0' },
        { id: 6, method: 'subscription.stop' },
        call(7, 'query', 'hello'),
      ]);
      await Promise.all([peer.answered(4), peer.answered(5), peer.answered(7)]);
      peer.send([1, 2, 3, 4]);
      await peer.answered(null);
      await peer.finish();
    });
    expect(frames.filter((frame) => isFrame(frame) && frame.error)).toHaveLength(4);
  });

  it('connectionParams as the first message build the context', async () => {
    const { frames } = await conforms(async (peer) => {
      peer.send({ method: 'connectionParams', data: { name: 'al' } });
      peer.send(call(1, 'query', 'hello'));
      await peer.answered(1);
      await peer.finish();
    }, '?connectionParams=1');
    expect(JSON.stringify(frames)).toContain('hello al');
  });

  it('connectionParams refused by the context, and malformed ones, close the connection', async () => {
    for (const first of [
      { method: 'connectionParams', data: { name: 'intruder' } },
      'not json',
      { data: 5 },
    ]) {
      await conforms(async (peer) => {
        peer.send(first);
        peer.send(call(1, 'query', 'hello'));
        await peer.closedByServer();
      }, '?connectionParams=1');
    }
  });

  it('protocol frames: PING, a message without id, text that is not JSON, a binary frame, reconnect', async () => {
    await conforms(async (peer, served) => {
      peer.send('PING');
      await peer.until((frame) => frame.text === 'PONG', 'PONG');
      peer.send({ id: null, method: 'query', params: { path: 'hello' } });
      await peer.answered(null);
      peer.send('{ not json');
      peer.send({ id: 1, method: 'nonsense', params: { path: 'hello' } });
      peer.send(call(2, 'query', 'hello'), { binary: true });
      await peer.until(() => peer.frames.length >= 5, 'three more answers');
      served.broadcastReconnectNotification();
      await peer.until((frame) => frame.method === 'reconnect', 'reconnect');
      await peer.finish();
    });
  });
});
