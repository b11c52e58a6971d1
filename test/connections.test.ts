import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { App } from '../server/src/app.js';
import { signUp, wsUrl } from './support/client.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { type RawSocket, call, codeOf, openRaw } from './support/raw-socket.js';

/**
 * Caps on connections that hold under a burst: `events` streams per user (across instances),
 * WebSockets per user and per address, a deadline for sockets that never authenticate, and
 * the WebSocket's slow-consumer rule, pings and a maximum duration for server-sent events.
 */

const LIMITS = {
  maxConnectionsPerUser: 7,
  maxSubscriptionsPerConnection: 20,
  maxSocketsPerUser: 4,
  maxSocketsPerAddress: 1_000,
  unauthenticatedSocketMs: 600,
};

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ limits: LIMITS });
});
afterAll(async () => {
  await deployment?.cleanup();
});

/** The HTTP status an upgrade was refused with, or 101 when it was accepted. */
function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl(url), { headers });
    socket.once('open', () => {
      socket.close();
      resolve(101);
    });
    socket.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    socket.once('error', reject);
  });
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await check())) throw new Error('condition not met in time');
    },
    { timeout: timeoutMs, interval: 20 },
  );
}

describe(`event streams per user (${engineLabel})`, () => {
  it(`starts exactly maxConnectionsPerUser (${LIMITS.maxConnectionsPerUser}) of 60 concurrent subscriptions, across instances`, async () => {
    // On Redis, a second instance of the deployment shares the count; the in-process broker
    // is one instance's.
    const second = engines.redisUrl ? await deployment.start({ limits: LIMITS }) : app;
    const user = await signUp(app.url);
    const sockets = await Promise.all(
      [app, second, app].map((target) => openRaw(target.url, `?token=${user.tokens.accessToken}`)),
    );
    // 3 sockets x 20 subscriptions, sent at once.
    sockets.forEach((raw) => {
      for (let id = 1; id <= 20; id++) raw.send(call(id, 'subscription', 'events', {}));
    });
    const answered = (raw: RawSocket, id: number) =>
      raw.received.some((m) => m.id === id && (m.error !== undefined || m.result?.type === 'started'));
    await until(() =>
      sockets.every((raw) => Array.from({ length: 20 }, (_, i) => i + 1).every((id) => answered(raw, id))),
    );
    const all = sockets.flatMap((raw) => raw.received);
    const started = all.filter((m) => m.result?.type === 'started');
    const refused = all.filter((m) => m.error !== undefined);
    expect(started).toHaveLength(LIMITS.maxConnectionsPerUser);
    expect(refused).toHaveLength(60 - LIMITS.maxConnectionsPerUser);
    for (const message of refused) expect(codeOf(message)).toBe('TOO_MANY_REQUESTS');
    expect(await app.services.broker.inspect.connections(user.user.id, Date.now())).toBe(
      LIMITS.maxConnectionsPerUser,
    );
    for (const raw of sockets) raw.socket.close();
    await until(async () => (await app.services.broker.inspect.connections(user.user.id, Date.now())) === 0);
  });
});

describe(`WebSockets per user and per address (${engineLabel})`, () => {
  it(`refuses a user's socket beyond maxSocketsPerUser (${LIMITS.maxSocketsPerUser}) with TOO_MANY_REQUESTS and 1008, and admits one again once another closes`, async () => {
    const user = await signUp(app.url);
    const other = await signUp(app.url);
    const held: RawSocket[] = [];
    for (let i = 0; i < LIMITS.maxSocketsPerUser; i++) {
      // Half with ?token=, half with connectionParams, as wsLink sends them.
      const raw =
        i % 2
          ? await openRaw(app.url, `?token=${user.tokens.accessToken}`)
          : await openRaw(app.url, '?connectionParams=1');
      if (i % 2 === 0) raw.send({ method: 'connectionParams', data: { token: user.tokens.accessToken } });
      raw.send(call(1, 'query', 'auth.me'));
      await raw.next((m) => m.id === 1 && m.result !== undefined);
      held.push(raw);
    }
    const extra = await openRaw(app.url, `?token=${user.tokens.accessToken}`);
    const refusal = await extra.next((m) => m.id === null);
    expect(codeOf(refusal)).toBe('TOO_MANY_REQUESTS');
    expect((await extra.closed).code).toBe(1008);
    // Another user is not affected.
    const theirs = await openRaw(app.url, `?token=${other.tokens.accessToken}`);
    theirs.send(call(1, 'query', 'auth.me'));
    await theirs.next((m) => m.id === 1 && m.result !== undefined);
    // Once one closes, there is room for one more.
    held[0]?.socket.close();
    await held[0]?.closed;
    let again: RawSocket | null = null;
    await until(async () => {
      const raw = await openRaw(app.url, `?token=${user.tokens.accessToken}`);
      raw.send(call(1, 'query', 'auth.me'));
      const answer = await Promise.race([raw.next((m) => m.id === 1 || m.id === null), raw.closed]);
      if ('code' in answer) return false;
      again = raw;
      return answer.result !== undefined;
    });
    for (const raw of [...held, theirs, again as RawSocket | null]) raw?.socket.close();
  });

  it('refuses upgrades beyond maxSocketsPerAddress with 429, counting the forwarded address behind a trusted proxy', async () => {
    const proxied = await deployment.start({
      trustProxy: true,
      limits: { ...LIMITS, maxSocketsPerAddress: 3 },
    });
    const user = await signUp(proxied.url);
    const from = (address: string) => ({ 'x-forwarded-for': `198.51.100.1, ${address}` });
    const held = await Promise.all(
      Array.from({ length: 3 }, () =>
        openRaw(proxied.url, `?token=${user.tokens.accessToken}`, from('203.0.113.7')),
      ),
    );
    expect(await upgradeStatus(proxied.url, from('203.0.113.7'))).toBe(429);
    // Another client behind the same proxy is not affected.
    expect(await upgradeStatus(proxied.url, from('203.0.113.8'))).toBe(101);
    held[0]?.socket.close();
    await held[0]?.closed;
    await until(async () => (await upgradeStatus(proxied.url, from('203.0.113.7'))) === 101);
    for (const raw of held) raw.socket.close();
  });

  it('keeps nothing of the upgrade request while the socket is open, and frees its place once it closes', async () => {
    const limited = await deployment.start({ limits: { ...LIMITS, maxSocketsPerAddress: 1 } });
    const [user, other] = await Promise.all([signUp(limited.url), signUp(limited.url)]);
    const direct = await user.api.conversation.openDirect.mutate({ userId: other.user.id });
    // The server's own request objects, seen (never held) as each upgrade arrives.
    const requests: WeakRef<http.IncomingMessage>[] = [];
    type Emit = (this: http.Server, event: string | symbol, ...args: unknown[]) => boolean;
    const server = http.Server.prototype as { emit: Emit };
    // Called with the server as `this` below, as Node calls it.
    const emit = server.emit;
    server.emit = function (event, ...args) {
      if (event === 'upgrade') requests.push(new WeakRef(args[0] as http.IncomingMessage));
      return emit.call(this, event, ...args);
    };
    let raw: RawSocket;
    try {
      raw = await openRaw(limited.url, `?token=${user.tokens.accessToken}`);
    } finally {
      server.emit = emit;
    }
    raw.send(call(1, 'subscription', 'events'));
    await raw.next((message) => message.id === 1 && message.result?.type === 'started');
    expect(requests).toHaveLength(1);
    // A full collection in a later turn of the loop: a WeakRef holds its target until then.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    await until(async () => {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      return requests[0]?.deref() === undefined;
    });
    // The socket, open all along, still has its stream and holds the address's one place.
    await other.api.message.send.mutate({ conversationId: direct.id, content: 'still here' });
    await raw.next((message) => message.id === 1 && message.result?.type === 'data');
    expect(await upgradeStatus(limited.url, {})).toBe(429);
    raw.socket.close();
    await raw.closed;
    await until(async () => (await upgradeStatus(limited.url, {})) === 101);
  });
});

describe(`sockets that never authenticate (${engineLabel})`, () => {
  it(`closes a socket not authenticated within ${LIMITS.unauthenticatedSocketMs} ms with 1008, never one that authenticates`, async () => {
    const user = await signUp(app.url);
    const anonymous = await openRaw(app.url);
    const silent = await openRaw(app.url, '?connectionParams=1');
    const noToken = await openRaw(app.url, '?connectionParams=1');
    noToken.send({ method: 'connectionParams', data: {} });
    const byUrl = await openRaw(app.url, `?token=${user.tokens.accessToken}`);
    const byParams = await openRaw(app.url, '?connectionParams=1');
    byParams.send({ method: 'connectionParams', data: { token: user.tokens.accessToken } });
    // An anonymous socket still answers public calls until its deadline.
    anonymous.send(call(1, 'query', 'health'));
    await anonymous.next((m) => m.id === 1);
    for (const raw of [anonymous, silent, noToken]) {
      const { code, reason } = await raw.closed;
      expect(code).toBe(1008);
      expect(reason).toBe('Authentication required');
    }
    // Opened together with those, past the same deadline: still open and serving.
    for (const raw of [byUrl, byParams]) {
      expect(raw.socket.readyState).toBe(WebSocket.OPEN);
      raw.send(call(2, 'query', 'auth.me'));
      await raw.next((m) => m.id === 2 && m.result !== undefined);
      raw.socket.close();
    }
  });
});

/** Reads a server-sent events response as it arrives, event by event, until it ends. */
function readEvents(response: Response) {
  const body = response.body;
  if (!body) throw new Error('no body');
  const reader = body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const decoder = new TextDecoder();
  const events: { event?: string; data?: string; id?: string }[] = [];
  let pending = '';
  const ended = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return 'ended' as const;
      pending += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = pending.indexOf('\n\n')) >= 0) {
        const block = pending.slice(0, end);
        pending = pending.slice(end + 2);
        const event: { event?: string; data?: string; id?: string } = {};
        for (const line of block.split('\n')) {
          const colon = line.indexOf(': ');
          const field = line.slice(0, colon);
          if (field === 'event' || field === 'data' || field === 'id') event[field] = line.slice(colon + 2);
        }
        if (Object.keys(event).length > 0) events.push(event);
      }
    }
  })();
  return { events, ended };
}

async function pair(target: App) {
  const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
  const conversation = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
  return { al, bo, conversation };
}

describe(`events over server-sent events (${engineLabel})`, () => {
  it('cuts off an SSE reader that stops reading, as the WebSocket does, so the server holds nothing for it', async () => {
    const strict = await deployment.start({
      limits: { ...LIMITS, maxSocketBufferBytes: 64 * 1024, maxQueuedEvents: 100, sendsPerUser: 100_000 },
    });
    const { al, bo, conversation } = await pair(strict);
    const response = await fetch(`${strict.url}/trpc/events`, {
      headers: { authorization: `Bearer ${bo.tokens.accessToken}` },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    await until(async () => (await strict.services.broker.inspect.connections(bo.user.id, Date.now())) === 1);
    // The body is never read from here on.
    const big = 'x'.repeat(3_990);
    let sent = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (sent < 3_000 && strict.services.realtime.hub.count() > 0) {
          sent++;
          await al.api.message.send.mutate({ conversationId: conversation.id, content: `${sent} ${big}` });
        }
      }),
    );
    expect(strict.services.realtime.hub.count()).toBe(0);
    await until(async () => (await strict.services.broker.inspect.connections(bo.user.id, Date.now())) === 0);
    // The response was cut off, not ended: whoever reads it now learns it broke.
    const { ended } = readEvents(response);
    await expect(ended).rejects.toThrow();
  });

  it('pings an idle SSE stream, ends it after the maximum duration without `return`, and resumes it with Last-Event-ID', async () => {
    const timed = await deployment.start({ limits: { ...LIMITS, ssePingMs: 100, sseMaxDurationMs: 1_500 } });
    const { al, bo, conversation } = await pair(timed);
    const headers = { authorization: `Bearer ${bo.tokens.accessToken}` };
    const opened = Date.now();
    const first = readEvents(await fetch(`${timed.url}/trpc/events`, { headers }));
    await until(() => first.events.some((e) => e.event === 'ping'));
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'one' });
    await until(() => first.events.some((e) => e.data?.includes('"one"')));
    const lastId = first.events.find((e) => e.data?.includes('"one"'))?.id;
    expect(lastId).toBeTruthy();
    // The server ends the response; an EventSource reconnects by itself, as after a `return`
    // it would not.
    await expect(first.ended).resolves.toBe('ended');
    expect(Date.now() - opened).toBeGreaterThanOrEqual(1_400);
    expect(first.events.map((e) => e.event)).not.toContain('return');
    await until(async () => (await timed.services.broker.inspect.connections(bo.user.id, Date.now())) === 0);

    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'two' });
    const second = readEvents(
      await fetch(`${timed.url}/trpc/events`, { headers: { ...headers, 'last-event-id': lastId ?? '' } }),
    );
    await until(() => second.events.some((e) => e.data?.includes('"two"')));
    expect(second.events.filter((e) => e.data?.includes('"one"'))).toEqual([]);
    await second.ended;
  });
});

describe(`shutting down (${engineLabel})`, () => {
  it('answers a request in flight, then cuts a connection that never sent one instead of waiting a minute for it', async () => {
    const closing = await deployment.start();
    const { al, conversation } = await pair(closing);
    const silent = net.connect(closing.port, '127.0.0.1');
    await once(silent, 'connect');
    const cut = once(silent, 'close');

    // A send whose body is still coming when the shutdown starts.
    const body = JSON.stringify({ json: { conversationId: conversation.id, content: 'last' } });
    const request = http.request({
      host: '127.0.0.1',
      port: closing.port,
      method: 'POST',
      path: '/trpc/message.send',
      agent: false,
      headers: {
        authorization: `Bearer ${al.tokens.accessToken}`,
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      },
    });
    const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
      request.once('error', reject);
      request.once('response', (response) => {
        let text = '';
        response.on('data', (chunk: Buffer) => (text += chunk.toString()));
        response.once('end', () => resolve({ status: response.statusCode ?? 0, text }));
      });
    });
    await new Promise<void>((resolve) => request.write(body.slice(0, 10), () => resolve()));
    const closed = closing.close();
    setTimeout(() => request.end(body.slice(10)), 300);
    const { status, text } = await answered;
    expect(status).toBe(200);
    expect(text).toContain('"last"');
    await closed;
    await cut;
  });
});
