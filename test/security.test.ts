import { createHmac } from 'node:crypto';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { App } from '../server/src/app.js';
import { connect, signUp, wsUrl } from './support/client.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { expectCode, rejection } from './support/errors.js';
import { tap } from './support/events.js';
import { type RawSocket, call, codeOf, openRaw } from './support/raw-socket.js';
import { clearOfWindowEnd } from './support/windows.js';

/**
 * Hostile clients: raw WebSocket abuse, oversized requests, forged and stale tokens, login
 * brute force, foreign origins, and secrets that must never be echoed or logged.
 */

const LIMITS = {
  maxBatchSize: 10,
  maxBodyBytes: 64 * 1024,
  maxWsPayloadBytes: 16 * 1024,
  maxSubscriptionsPerConnection: 3,
  maxConnectionsPerUser: 4,
};

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  // Trace level: whatever any layer might log, the secrets checks below see it. Without the
  // refresh-token reuse grace, so that a second presentation counts as reuse at once
  // (test/refresh-grace.test.ts covers the grace).
  app = await deployment.start({ logLevel: 'trace', limits: LIMITS, jwt: { refreshReuseGraceMs: 0 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

/** A plain WebSocket client of this file's app (`path` such as `?token=…`). */
const openRawHere = (path: string) => openRaw(app.url, path);

/** The plain way a process shows it is still up: a fresh client gets an answer. */
async function stillServing(): Promise<void> {
  const probe = connect(app.url);
  expect((await probe.api.health.query()).db).toBe(true);
  expect((await probe.ws.health.query()).db).toBe(true);
  await probe.close();
}

// --- JWT helpers ------------------------------------------------------------------------------

function b64(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
function sign(header: object, claims: object, key: string, hash = 'sha256'): string {
  const body = `${b64(header)}.${b64(claims)}`;
  return `${body}.${createHmac(hash, key).update(body).digest('base64url')}`;
}
function claimsOf(token: string): Record<string, unknown> {
  const [, payload = ''] = token.split('.');
  return JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
}

describe(`raw WebSocket abuse (${engineLabel})`, () => {
  it('answers garbage frames with parse errors and keeps serving the same connection', async () => {
    const user = await signUp(app.url);
    const raw = await openRawHere(`?token=${user.tokens.accessToken}`);
    const frames = [
      'garbage',
      '{',
      '[]',
      '{}',
      'null',
      '12345',
      '{"id":{"nested":true},"method":"query","params":{"path":"auth.me"}}',
      '{"id":1,"method":"nonsense","params":{"path":"auth.me","input":{"json":null}}}',
      '{"id":2,"method":"query","params":{"path":"no.such.procedure","input":{"json":null}}}',
      '{"id":3,"method":"query","params":null}',
      '{"id":4,"method":"query","params":{"path":"__proto__","input":{"json":null}}}',
      '{"id":5,"method":"query","params":{"path":"constructor","input":{"json":null}}}',
      '{"id":6,"method":"query","params":{"path":"auth.me","input":{"json":null,"meta":{"values":{"__proto__.polluted":["undefined"]}}}}}',
      `{"id":7,"method":"mutation","params":{"path":"user.update","input":{"json":{"displayName":${'['.repeat(5000)}${']'.repeat(5000)}}}}}`,
    ];
    for (const frame of frames) raw.send(frame);
    raw.socket.send(Buffer.from([0xff, 0x00, 0xfe, 0x01]), { binary: true });
    for (const id of [2, 4, 5]) {
      const answer = await raw.next((m) => m.id === id);
      expect(codeOf(answer), JSON.stringify(answer)).toBe('NOT_FOUND');
    }
    const update = await raw.next((m) => m.id === 7);
    expect(codeOf(update)).toBe('BAD_REQUEST');
    // The connection still works, for this user, after all of that.
    raw.send(call(100, 'query', 'auth.me'));
    const me = await raw.next((m) => m.id === 100);
    expect(superjson.deserialize(me.result?.data as never)).toMatchObject({ id: user.user.id });
    for (const message of raw.received) expect(codeOf(message)).not.toBe('INTERNAL_SERVER_ERROR');
    expect(Object.prototype).not.toHaveProperty('polluted');
    raw.socket.close();
    await stillServing();
  });

  it('closes a connection that sends an oversized frame with 1009, and serves the next one', async () => {
    const raw = await openRawHere('');
    raw.send(call(1, 'query', 'health'));
    await raw.next((m) => m.id === 1);
    raw.send('x'.repeat(LIMITS.maxWsPayloadBytes + 1));
    expect((await raw.closed).code).toBe(1009);
    await stillServing();
    // The client's fault, not a failure of the server: nothing logged as one.
    expect(deployment.logLines.filter((line) => line.includes('procedure failed'))).toEqual([]);
  });

  it('refuses malformed connectionParams without authenticating anyone', async () => {
    const user = await signUp(app.url);
    const malformed = [
      'not json',
      '[]',
      '"a string"',
      JSON.stringify({ method: 'connectionParams', data: 'token' }),
      JSON.stringify({ method: 'connectionParams', data: { token: 12345 } }),
      JSON.stringify({ method: 'connectionParams', data: { token: { nested: user.tokens.accessToken } } }),
      JSON.stringify({ method: 'connectionParams', data: { token: [user.tokens.accessToken] } }),
      JSON.stringify({ method: 'connectionParams', data: { token: 'x'.repeat(10_000) } }),
      JSON.stringify({ method: 'connectionParams', data: { token: '' } }),
      `{"method":"connectionParams","data":{"__proto__":{"token":${JSON.stringify(user.tokens.accessToken)}}}}`,
    ];
    for (const first of malformed) {
      const raw = await openRawHere('?connectionParams=1');
      raw.send(first);
      raw.send(call(1, 'query', 'auth.me'));
      // Either the server drops the connection, or the call runs without a user.
      const outcome = await Promise.race([
        raw.closed.then(() => 'closed'),
        raw.next((m) => m.id === 1).then((m) => codeOf(m) ?? 'answered'),
      ]);
      expect(['closed', 'UNAUTHORIZED', 'PARSE_ERROR'], first).toContain(outcome);
      raw.socket.close();
    }
    // A well-formed one works, so the refusals above are about the shape.
    const good = await openRawHere('?connectionParams=1');
    good.send({ method: 'connectionParams', data: { token: user.tokens.accessToken } });
    good.send(call(1, 'query', 'auth.me'));
    const me = await good.next((m) => m.id === 1);
    expect(superjson.deserialize(me.result?.data as never)).toMatchObject({ id: user.user.id });
    good.socket.close();
    await stillServing();
  });

  it('caps subscriptions per connection with TOO_MANY_REQUESTS', async () => {
    const user = await signUp(app.url);
    const raw = await openRawHere(`?token=${user.tokens.accessToken}`);
    const flood = 12;
    for (let id = 1; id <= flood; id++) raw.send(call(id, 'subscription', 'events', {}));
    const expected = flood - LIMITS.maxSubscriptionsPerConnection;
    // Every subscription answered, started or refused: exactly the extra ones were refused.
    const answered = () =>
      new Set(raw.received.filter((m) => m.error || m.result?.type === 'started').map((m) => m.id));
    await vi.waitFor(() => expect(answered().size).toBe(flood), 10_000);
    const errors = raw.received.filter((m) => m.error);
    expect(errors).toHaveLength(expected);
    expect(errors).toHaveLength(flood - LIMITS.maxSubscriptionsPerConnection);
    for (const error of errors) expect(codeOf(error)).toBe('TOO_MANY_REQUESTS');
    raw.socket.close();
    await stillServing();
  });

  it('caps connections per user across the deployment with TOO_MANY_REQUESTS', async () => {
    const user = await signUp(app.url);
    const sockets: RawSocket[] = [];
    for (let i = 0; i < LIMITS.maxConnectionsPerUser; i++) {
      const raw = await openRawHere(`?token=${user.tokens.accessToken}`);
      raw.send(call(1, 'subscription', 'events', {}));
      await raw.next((m) => m.id === 1 && m.result?.type === 'started');
      sockets.push(raw);
    }
    await expectEventually(
      async () =>
        (await app.services.broker.inspect.connections(user.user.id, Date.now())) === sockets.length,
    );
    const extra = await openRawHere(`?token=${user.tokens.accessToken}`);
    extra.send(call(1, 'subscription', 'events', {}));
    const refused = await extra.next((m) => m.id === 1 && m.error !== undefined);
    expect(codeOf(refused)).toBe('TOO_MANY_REQUESTS');
    // Another user is not affected by this one's connections.
    const other = await signUp(app.url);
    const theirs = await tap(other, app, other.user.id);
    await theirs.stop();
    await other.close();
    for (const raw of [...sockets, extra]) raw.socket.close();
    await stillServing();
  });

  it('refuses a batch larger than maxBatchSize with one 4xx, over HTTP and over the WebSocket', async () => {
    const user = await signUp(app.url);
    const count = LIMITS.maxBatchSize + 1;
    const paths = Array.from({ length: count }, () => 'auth.me').join(',');
    const inputs = Object.fromEntries(Array.from({ length: count }, (_, i) => [i, { json: null }]));
    const response = await fetch(
      `${app.url}/trpc/${paths}?batch=1&input=${encodeURIComponent(JSON.stringify(inputs))}`,
      { headers: { authorization: `Bearer ${user.tokens.accessToken}` } },
    );
    expect(response.status).toBe(400);
    const body: unknown = await response.json();
    // One refusal for the whole batch, not one answer per call.
    const errors = Array.isArray(body) ? body : [body];
    expect(errors.length).toBeLessThanOrEqual(1);
    expect(JSON.stringify(body)).toContain('BAD_REQUEST');

    const raw = await openRawHere(`?token=${user.tokens.accessToken}`);
    raw.send(Array.from({ length: count }, (_, i) => call(i + 1, 'query', 'auth.me')));
    for (let id = 1; id <= count; id++) {
      expect(codeOf(await raw.next((m) => m.id === id))).toBe('BAD_REQUEST');
    }
    expect(raw.received.filter((m) => m.result)).toEqual([]);
    raw.socket.close();
    await stillServing();
  });

  it('refuses an oversized HTTP body with one 413 PAYLOAD_TOO_LARGE', async () => {
    const body = JSON.stringify({
      json: { email: 'a@example.test', password: 'x'.repeat(LIMITS.maxBodyBytes) },
    });
    const response = await fetch(`${app.url}/trpc/auth.login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    expect(response.status).toBe(413);
    expect(await response.text()).toContain('PAYLOAD_TOO_LARGE');
    await stillServing();
  });
});

async function expectEventually(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await check())) throw new Error('condition never held');
    },
    { timeout: timeoutMs, interval: 20 },
  );
}

describe(`tokens over HTTP (${engineLabel})`, () => {
  it('refuses a token it accepted before once that token expires or its session ends', async () => {
    // HTTP requests reuse the verification of a token they have seen: that must not outlive
    // the token, nor skip the revocation check.
    const ida = await signUp(app.url);
    const claims = claimsOf(ida.tokens.accessToken);
    const exp = Math.floor(Date.now() / 1000) + 2;
    const shortLived = connect(
      app.url,
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp }, deployment.jwtSecret),
    );
    await expect(shortLived.api.auth.me.query()).resolves.toMatchObject({ id: ida.user.id });
    await expect(shortLived.api.auth.me.query()).resolves.toMatchObject({ id: ida.user.id });
    await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 200));
    await expectCode(shortLived.api.auth.me.query(), 'UNAUTHORIZED');

    await expect(ida.api.auth.me.query()).resolves.toMatchObject({ id: ida.user.id });
    await ida.api.auth.logout.mutate({});
    await expectCode(ida.api.auth.me.query(), 'UNAUTHORIZED');
    await Promise.all([shortLived.close(), ida.close()]);
  });

  it('refuses every call of a revoked session, batched or alone, message.send included', async () => {
    const [jo, kim] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await jo.api.conversation.openDirect.mutate({ userId: kim.user.id });
    await jo.api.message.send.mutate({ conversationId: id, content: 'before' });
    await jo.api.auth.logout.mutate({});
    // Made in one tick: the two queries go out as one HTTP request, sharing one context.
    await Promise.all([
      expectCode(jo.api.auth.me.query(), 'UNAUTHORIZED'),
      expectCode(jo.api.conversation.list.query({}), 'UNAUTHORIZED'),
      expectCode(
        jo.api.message.send.mutate({ conversationId: id, content: 'after, batched' }),
        'UNAUTHORIZED',
      ),
    ]);
    await expectCode(jo.api.message.send.mutate({ conversationId: id, content: 'after' }), 'UNAUTHORIZED');
    const seen = await kim.api.message.list.query({ conversationId: id });
    expect(seen.items.map((m) => m.content)).toEqual(['before']);
    await Promise.all([jo.close(), kim.close()]);
  });
});

describe(`tokens over the WebSocket (${engineLabel})`, () => {
  it('refuses forged, foreign and misused tokens in connectionParams and in ?token=', async () => {
    const carol = await signUp(app.url);
    const claims = claimsOf(carol.tokens.accessToken);
    const now = Math.floor(Date.now() / 1000);
    const forged = [
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`,
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}`,
      sign({ alg: 'HS512', typ: 'JWT' }, claims, deployment.jwtSecret, 'sha512'),
      sign({ alg: 'HS256', typ: 'JWT' }, claims, 'not the secret at all, but long enough'),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp: now - 1 }, deployment.jwtSecret),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, iss: 'elsewhere' }, deployment.jwtSecret),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, aud: 'elsewhere' }, deployment.jwtSecret),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, typ: 'refresh' }, deployment.jwtSecret),
      sign({ alg: 'RS256', typ: 'JWT' }, claims, deployment.jwtSecret),
      carol.tokens.refreshToken,
    ];
    for (const token of forged) {
      const viaParams = connect(app.url, token);
      await expectCode(viaParams.ws.auth.me.query(), 'UNAUTHORIZED');
      await viaParams.close();
      const raw = await openRawHere(`?token=${encodeURIComponent(token)}`);
      raw.send(call(1, 'query', 'auth.me'));
      expect(codeOf(await raw.next((m) => m.id === 1))).toBe('UNAUTHORIZED');
      raw.send(call(2, 'subscription', 'events', {}));
      expect(codeOf(await raw.next((m) => m.id === 2 && m.error !== undefined))).toBe('UNAUTHORIZED');
      raw.socket.close();
    }
    // The same claims signed properly work: each refusal above was for the reason it tests.
    const genuine = connect(app.url, sign({ alg: 'HS256', typ: 'JWT' }, claims, deployment.jwtSecret));
    await expect(genuine.ws.auth.me.query()).resolves.toMatchObject({ id: carol.user.id });
    await genuine.close();
  });

  it('stops honouring an access token that expires while its connection is open', async () => {
    const dan = await signUp(app.url);
    const claims = claimsOf(dan.tokens.accessToken);
    const exp = Math.floor(Date.now() / 1000) + 2;
    const shortLived = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, exp }, deployment.jwtSecret);
    const client = connect(app.url, shortLived);
    await expect(client.ws.auth.me.query()).resolves.toMatchObject({ id: dan.user.id });
    const events = await tap(client, app, dan.user.id);
    await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 200));
    await expectCode(client.ws.auth.me.query(), 'UNAUTHORIZED');
    await expectEventually(() => Promise.resolve(events.errors.length > 0));
    expect((events.errors[0] as { data?: { code?: string } }).data?.code).toBe('UNAUTHORIZED');
    await client.close();
  });

  it('stops honouring a session revoked while its connection is open', async () => {
    const eve = await signUp(app.url);
    const socket = connect(app.url, eve.tokens.accessToken);
    await expect(socket.ws.auth.me.query()).resolves.toMatchObject({ id: eve.user.id });
    const events = await tap(socket, app, eve.user.id);
    await eve.api.auth.logout.mutate({ everywhere: true });
    await expectCode(socket.ws.auth.me.query(), 'UNAUTHORIZED');
    await expectEventually(() => Promise.resolve(events.errors.length > 0));

    // Replaying a rotated refresh token ends the family, open sockets included.
    const fay = await signUp(app.url);
    const open = connect(app.url, fay.tokens.accessToken);
    await expect(open.ws.auth.me.query()).resolves.toMatchObject({ id: fay.user.id });
    await fay.api.auth.refresh.mutate({ refreshToken: fay.tokens.refreshToken });
    await expectCode(fay.api.auth.refresh.mutate({ refreshToken: fay.tokens.refreshToken }), 'UNAUTHORIZED');
    await expectCode(open.ws.auth.me.query(), 'UNAUTHORIZED');
    await Promise.all([socket.close(), open.close()]);
  });

  it('under concurrent refreshes of one token, at most one succeeds and the rest are UNAUTHORIZED', async () => {
    const gus = await signUp(app.url);
    const attempts = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) =>
        (i % 2 ? gus.ws : gus.api).auth.refresh.mutate({ refreshToken: gus.tokens.refreshToken }),
      ),
    );
    const succeeded = attempts.filter((a) => a.status === 'fulfilled');
    expect(succeeded.length).toBeLessThanOrEqual(1);
    for (const attempt of attempts) {
      if (attempt.status === 'rejected') {
        expect((attempt.reason as { data?: { code?: string } }).data?.code).toBe('UNAUTHORIZED');
      }
    }
    await gus.close();
  });
});

describe(`login throttling (${engineLabel})`, () => {
  it('throttles brute force from one address across many accounts with TOO_MANY_REQUESTS', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({
        limits: { loginFailuresPerAccount: 100, loginFailuresPerAddress: 5, loginDelaySeconds: 60 },
      });
      const victim = await signUp(target.url);
      const anon = connect(target.url);
      for (let i = 0; i < 5; i++) {
        await expectCode(
          anon.api.auth.login.mutate({ username: `nobody${i}`, password: 'guessing123' }),
          'UNAUTHORIZED',
        );
      }
      // Every sign-in from this address without a device token waits now, the right password too.
      const throttled = await expectCode(
        anon.api.auth.login.mutate({ username: victim.user.username, password: victim.password }),
        'TOO_MANY_REQUESTS',
      );
      expect(throttled.message).toMatch(/try again in \d+ s/);
      await anon.close();
      await victim.close();
    } finally {
      await local.cleanup();
    }
  });

  describe.skipIf(!engines.redisUrl)(
    engines.redisUrl
      ? 'across instances'
      : 'across instances (skipped: needs TEST_REDIS_URL; the in-process broker is one instance)',
    () => {
      it('counts failures on two instances of one deployment together', async () => {
        const local = await TestDeployment.create();
        try {
          const limits = { loginFailuresPerAccount: 4, loginFailuresPerAddress: 1000, loginDelaySeconds: 60 };
          const [one, two] = [await local.start({ limits }), await local.start({ limits })];
          const victim = await signUp(one.url);
          const clients = [connect(one.url), connect(two.url)];
          for (let i = 0; i < 4; i++) {
            await expectCode(
              (clients[i % 2] ?? clients[0])?.api.auth.login.mutate({
                username: victim.user.username,
                password: `wrong guess ${i}`,
              }) ?? Promise.resolve(),
              'UNAUTHORIZED',
            );
          }
          for (const client of clients) {
            await expectCode(
              client.api.auth.login.mutate({ username: victim.user.username, password: victim.password }),
              'TOO_MANY_REQUESTS',
            );
            await client.close();
          }
          await victim.close();
        } finally {
          await local.cleanup();
        }
      });

      it('counts sends and connections per user on two instances together', async () => {
        const local = await TestDeployment.create();
        try {
          const limits = { sendsPerUser: 4, sendWindowSeconds: 3600, maxConnectionsPerUser: 2 };
          const [one, two] = [await local.start({ limits }), await local.start({ limits })];
          const al = await signUp(one.url);
          const bo = await signUp(one.url);
          const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
          const onTwo = connect(two.url, al.tokens.accessToken);
          await clearOfWindowEnd(3600);
          for (let i = 0; i < 4; i++) {
            await (i % 2 ? onTwo : al).api.message.send.mutate({ conversationId: id, content: `m${i}` });
          }
          await expectCode(
            al.api.message.send.mutate({ conversationId: id, content: 'x' }),
            'TOO_MANY_REQUESTS',
          );
          await expectCode(
            onTwo.api.message.send.mutate({ conversationId: id, content: 'x' }),
            'TOO_MANY_REQUESTS',
          );

          // One event stream on each instance is the limit; a third, on either, is refused.
          const first = await tap(al, one, al.user.id);
          const second = await tap(onTwo, one, al.user.id);
          const third = connect(one.url, al.tokens.accessToken);
          const errors: unknown[] = [];
          const subscription = third.api.events.subscribe({}, { onError: (error) => errors.push(error) });
          await expectEventually(() => Promise.resolve(errors.length > 0));
          expect((errors[0] as { data?: { code?: string } }).data?.code).toBe('TOO_MANY_REQUESTS');
          subscription.unsubscribe();
          await Promise.all([first.stop(), second.stop()]);
          await Promise.all([al.close(), bo.close(), onTwo.close(), third.close()]);
        } finally {
          await local.cleanup();
        }
      });
    },
  );
});

describe(`origins (${engineLabel})`, () => {
  it('refuses a WebSocket upgrade from an origin not in CORS_ORIGINS, allows listed ones', async () => {
    const allowed = 'https://chat.example.test';
    const guarded = await deployment.start({ corsOrigins: [allowed], limits: LIMITS });
    const url = wsUrl(guarded.url);
    const attempt = (origin?: string) =>
      new Promise<number>((resolve, reject) => {
        const socket = new WebSocket(url, origin ? { headers: { origin } } : {});
        socket.once('open', () => {
          socket.close();
          resolve(101);
        });
        socket.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          socket.terminate();
        });
        socket.once('error', reject);
      });
    expect(await attempt('https://evil.example.test')).toBe(403);
    expect(await attempt('null')).toBe(403);
    expect(await attempt(`${allowed}.evil.test`)).toBe(403);
    expect(await attempt(allowed)).toBe(101);
    // Clients that are not browsers send no Origin; CORS does not concern them.
    expect(await attempt()).toBe(101);

    // Browsers are told the same over HTTP: only a listed origin gets CORS headers.
    const preflight = (origin: string) =>
      fetch(`${guarded.url}/trpc/auth.me`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'GET' },
      });
    expect((await preflight(allowed)).headers.get('access-control-allow-origin')).toBe(allowed);
    expect(
      (await preflight('https://evil.example.test')).headers.get('access-control-allow-origin'),
    ).toBeNull();
  });
});

describe(`secrets (${engineLabel})`, () => {
  it('never writes a password, token or secret to the log or into an error response', async () => {
    const password = 'Sup3r-Secret-Passphrase';
    const newPassword = 'An0ther-Secret-Passphrase';
    const wrongPassword = 'Wr0ng-Secret-Guess';
    const shortPassword = 'Sh0rt!';
    const anon = connect(app.url);
    const { user, tokens } = await anon.api.auth.register.mutate({
      email: 'keeper@example.test',
      username: 'keeper',
      password,
    });
    const responses: string[] = [];
    const record = async (promise: Promise<unknown>) => {
      const error = await rejection(promise);
      responses.push(JSON.stringify({ message: error.message, data: error.data }));
    };
    await record(anon.api.auth.login.mutate({ username: 'keeper', password: wrongPassword }));
    await record(
      anon.api.auth.register.mutate({
        email: 'k2@example.test',
        username: 'keeper2',
        password: shortPassword,
      }),
    );
    await record(
      anon.api.auth.register.mutate({ email: 'keeper@example.test', username: 'keeper', password }),
    );
    const session = await anon.api.auth.login.mutate({ username: 'keeper', password });
    const client = connect(app.url, session.tokens.accessToken);
    await client.ws.auth.me.query();
    const raw = await openRawHere(`?token=${session.tokens.accessToken}`);
    raw.send(call(1, 'query', 'auth.me'));
    await raw.next((m) => m.id === 1);
    raw.socket.close();
    await record(client.api.user.update.mutate({ password: newPassword, currentPassword: wrongPassword }));
    await client.api.user.update.mutate({ password: newPassword, currentPassword: password });
    const { tokens: rotated } = await anon.api.auth.refresh.mutate({
      refreshToken: session.tokens.refreshToken,
    });
    // Reuse: logged as a warning, which must name the session, not the token.
    await record(anon.api.auth.refresh.mutate({ refreshToken: session.tokens.refreshToken }));
    await record(anon.api.auth.refresh.mutate({ refreshToken: `${tokens.refreshToken}x` }));
    await record(connect(app.url, `${tokens.accessToken}x`).api.auth.me.query());
    await record(client.api.user.delete.mutate({ password: wrongPassword }));
    await client.close();
    await anon.close();

    const secrets = {
      password,
      newPassword,
      wrongPassword,
      shortPassword,
      jwtSecret: deployment.jwtSecret,
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      loginAccessToken: session.tokens.accessToken,
      loginRefreshToken: session.tokens.refreshToken,
      rotatedRefreshToken: rotated.refreshToken,
      // The signature part alone is enough to be a leak.
      accessSignature: tokens.accessToken.split('.')[2] ?? '',
    };
    expect(deployment.logLines.length).toBeGreaterThan(0);
    expect(responses).toHaveLength(8);
    const log = deployment.logLines.join('\n');
    for (const [name, secret] of Object.entries(secrets)) {
      expect(secret.length, name).toBeGreaterThan(5);
      expect(log.includes(secret), `log contains ${name}`).toBe(false);
      for (const response of responses)
        expect(response.includes(secret), `response contains ${name}`).toBe(false);
    }
    expect(log).not.toMatch(/Bearer\s+ey/);
    expect(user.id).toBeTruthy();
  });
});
