import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { watchSocket } from '../client-sdk/src/connection.js';
import { createParleyClient, type ParleyClient } from '../client-sdk/src/index.js';

/**
 * A stand-in for the server's WebSocket: a real `ws` server on port 0 that records what each
 * connection sends and answers only what a test tells it to.
 */
async function standIn(onConnection: (peer: Peer) => void = () => undefined) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  const peers: Peer[] = [];
  const waiting: (() => void)[] = [];
  server.on('connection', (socket: WebSocket) => {
    const peer = new Peer(socket);
    peers.push(peer);
    onConnection(peer);
    for (const wake of waiting.splice(0)) wake();
  });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  servers.push(server);
  return {
    url: `http://127.0.0.1:${port}`,
    peers,
    /** Resolves once `count` connections have been made. */
    async connections(count: number) {
      while (peers.length < count) await new Promise<void>((resolve) => waiting.push(resolve));
      return peers;
    },
  };
}

class Peer {
  readonly received: string[] = [];
  readonly closed: Promise<void>;
  private waiting: (() => void)[] = [];

  constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      this.received.push(data.toString('utf8'));
      for (const wake of this.waiting.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Resolves with the first text received that `match` accepts, waiting for it if need be. */
  async until(match: (text: string) => boolean): Promise<string> {
    for (;;) {
      const found = this.received.find(match);
      if (found !== undefined) return found;
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }
}

const servers: WebSocketServer[] = [];
const clients: ParleyClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  for (const server of servers.splice(0)) {
    for (const socket of server.clients) socket.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** A `ws` WebSocket that keeps every socket it makes. */
function recordingWebSocket() {
  const made: WebSocket[] = [];
  class Recording extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      made.push(this);
    }
  }
  return { WebSocket: Recording, made };
}

/** A client signed in with tokens the stand-in never checks, its event stream started. */
function client(url: string, options: Partial<Parameters<typeof createParleyClient>[0]> = {}) {
  const parley = createParleyClient({
    url,
    tokens: { accessToken: 'access', refreshToken: 'refresh', expiresIn: 3_600 },
    WebSocket,
    ...options,
  });
  clients.push(parley);
  return parley;
}

const isSubscription = (text: string) => text.includes('"method":"subscription"');

describe('@parley/client socket', () => {
  it("hands each frame to tRPC's listeners as one event, decoded once", async () => {
    const { WebSocket: Recording, made } = recordingWebSocket();
    const server = await standIn();
    const parley = client(server.url, { WebSocket: Recording });
    const received: { content: string; sentAt: Date }[] = [];
    parley.events.on('message.created', (event) => received.push(event.message));
    const ready = parley.events.ready();
    const [peer] = await server.connections(1);
    if (!peer) throw new Error('no connection');

    // The request's id, from the subscription the client sent.
    const sent = JSON.parse(await peer.until(isSubscription)) as { id: number } | { id: number }[];
    const { id } = Array.isArray(sent) ? (sent[0] as { id: number }) : sent;
    peer.socket.send(JSON.stringify({ id, result: { type: 'started' } }));
    await ready;
    const sentAt = '2026-12-07T06:00:00.000Z';
    const message = { id: 'm1', conversationId: 'c1', content: 'hello', sentAt };
    peer.socket.send(
      JSON.stringify({
        id,
        result: {
          type: 'data',
          id: 'e1',
          data: {
            json: { id: 'e1', data: { type: 'message.created', message } },
            meta: { values: { 'data.message.sentAt': ['Date'] }, v: 1 },
          },
        },
      }),
    );
    // tRPC's other listener: the server's PING is answered.
    peer.socket.send('PING');
    await peer.until((text) => text === 'PONG');

    expect(received).toEqual([{ ...message, sentAt: new Date(sentAt) }]);
    expect(parley.events.lastEventId).toBe('e1');
    // tRPC adds three listeners; `ws` would decode the frame and build an event for each.
    expect(made).toHaveLength(1);
    expect((made[0] as WebSocket).listenerCount('message')).toBe(1);
  });

  it('changes who gets events only from the next one when a listener comes or goes during one', async () => {
    const server = await standIn();
    const socket = new WebSocket(server.url.replace('http', 'ws'));
    const opened = new Promise((resolve) => socket.once('open', resolve));
    watchSocket(socket, { intervalMs: 60_000, pongTimeoutMs: 60_000 });
    const got: string[] = [];
    const text = (data: unknown) => (typeof data === 'string' ? data : '(binary)');
    const late = ({ data }: { data: unknown }) => got.push(`late ${text(data)}`);
    const second = ({ data }: { data: unknown }) => got.push(`second ${text(data)}`);
    socket.addEventListener('message', ({ data }) => {
      got.push(`first ${text(data)}`);
      if (data === 'one') {
        socket.removeEventListener('message', second);
        socket.addEventListener('message', late);
      }
    });
    socket.addEventListener('message', second);
    const [peer] = await server.connections(1);
    if (!peer) throw new Error('no connection');
    await opened;
    const closed = new Promise((resolve) => socket.once('close', resolve));
    peer.socket.send('one');
    peer.socket.send('two');
    peer.socket.close();
    await closed;
    expect(got).toEqual(['first one', 'second one', 'first two', 'late two']);
  });

  it('pings a quiet socket and reconnects when nothing answers', async () => {
    const server = await standIn();
    const parley = client(server.url, { keepAlive: { intervalMs: 100, pongTimeoutMs: 100 } });
    parley.events.on('message.created', () => undefined);
    const [first] = await server.connections(1);
    if (!first) throw new Error('no connection');

    await first.until((text) => text === 'PING');
    // Nothing answers: the client gives the socket up and opens another.
    await first.closed;
    const peers = await server.connections(2);
    // The stream is sent again on the new socket.
    await peers[1]?.until(isSubscription);
  });

  it('refuses keep-alive timings that are not a positive number of milliseconds', () => {
    for (const keepAlive of [{ intervalMs: 0 }, { pongTimeoutMs: -1 }, { intervalMs: Number.NaN }]) {
      expect(() => client('http://127.0.0.1:1', { keepAlive })).toThrow(
        /keepAlive\.(intervalMs|pongTimeoutMs) must be a positive number of milliseconds/,
      );
    }
  });

  it('takes any frame as a sign of life, and an answered PING keeps the socket', async () => {
    let pings = 0;
    const server = await standIn((peer) => {
      peer.socket.on('message', (data: Buffer) => {
        if (data.toString() === 'PING') {
          pings += 1;
          peer.socket.send('PONG');
        }
      });
    });
    const parley = client(server.url, { keepAlive: { intervalMs: 100, pongTimeoutMs: 50 } });
    parley.events.on('message.created', () => undefined);
    const [peer] = await server.connections(1);
    if (!peer) throw new Error('no connection');

    // While the server sends something every 30 ms, the client has nothing to ask.
    for (let frame = 0; frame < 15; frame++) {
      peer.socket.send('PING');
      await peer.until((text) => text === 'PONG');
      peer.received.splice(peer.received.indexOf('PONG'), 1);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    expect(pings).toBe(0);

    // Quiet, it is asked three times, answers each time, and stays.
    await vi.waitFor(() => expect(pings).toBeGreaterThanOrEqual(3), { timeout: 5_000, interval: 20 });
    expect(server.peers).toHaveLength(1);
    expect(peer.socket.readyState).toBe(WebSocket.OPEN);
  });
});
