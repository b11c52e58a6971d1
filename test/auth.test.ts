import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import type { AppRouter } from '../server/src/routers/_app.js';
import { connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode, rejection } from './support/errors.js';

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({
    limits: { loginFailuresPerAccount: 3, loginFailuresPerAddress: 1000, loginDelaySeconds: 60 },
    // Reuse counts at once here; test/refresh-grace.test.ts covers the reuse grace.
    jwt: { refreshReuseGraceMs: 0 },
  });
});
afterAll(async () => {
  await deployment?.cleanup();
});

function b64(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe(`auth (${engineLabel})`, () => {
  it('registers, logs in by email or username, and answers me', async () => {
    const anon = connect(app.url);
    const { user, tokens } = await anon.api.auth.register.mutate({
      email: 'Ada@Example.test',
      username: 'ada',
      password: 'analytical engine',
      displayName: 'Ada L.',
    });
    expect(user).toMatchObject({ username: 'ada', email: 'ada@example.test', displayName: 'Ada L.' });
    expect(user.createdAt).toBeInstanceOf(Date);
    expect(tokens.expiresIn).toBe(15 * 60);

    const byEmail = await anon.api.auth.login.mutate({
      email: 'ADA@example.test',
      password: 'analytical engine',
    });
    const byName = await anon.api.auth.login.mutate({ username: 'ADA', password: 'analytical engine' });
    expect(byEmail.user.id).toBe(user.id);
    expect(byName.user.id).toBe(user.id);

    const me = await connect(app.url, byName.tokens.accessToken).api.auth.me.query();
    expect(me).toMatchObject({ id: user.id, username: 'ada' });
    await anon.close();
  });

  it('refuses taken usernames and emails case-insensitively with CONFLICT, naming neither', async () => {
    const anon = connect(app.url);
    await anon.api.auth.register.mutate({
      email: 'bo@example.test',
      username: 'Bo_1',
      password: 'password one',
    });
    const name = await expectCode(
      anon.api.auth.register.mutate({
        email: 'other@example.test',
        username: 'bo_1',
        password: 'password one',
      }),
      'CONFLICT',
    );
    const email = await expectCode(
      anon.api.auth.register.mutate({ email: 'BO@example.test', username: 'bo_2', password: 'password one' }),
      'CONFLICT',
    );
    // The same answer for both, so that it does not point at a registered email.
    expect(email.message).toBe(name.message);
    expect(email.data.zodError).toBeNull();
    expect(name.data.zodError).toBeNull();
  });

  it('rejects bad input with BAD_REQUEST and field-level messages', async () => {
    const anon = connect(app.url);
    const error = await expectCode(
      anon.api.auth.register.mutate({ email: 'not-an-email', username: 'a!', password: 'short' }),
      'BAD_REQUEST',
    );
    const fields = (error.data.zodError as { fieldErrors: Record<string, string[]> }).fieldErrors;
    expect(Object.keys(fields).sort()).toEqual(['email', 'password', 'username']);
    await expectCode(
      anon.api.auth.register.mutate({
        email: 'x@example.test',
        username: 'x'.repeat(33),
        password: 'password one',
      }),
      'BAD_REQUEST',
    );
  });

  it('gives the same error for an unknown user and a wrong password', async () => {
    const anon = connect(app.url);
    await anon.api.auth.register.mutate({
      email: 'cyd@example.test',
      username: 'cyd',
      password: 'right password',
    });
    const unknown = await expectCode(
      anon.api.auth.login.mutate({ username: 'nobody', password: 'whatever1' }),
      'UNAUTHORIZED',
    );
    const wrong = await expectCode(
      anon.api.auth.login.mutate({ username: 'cyd', password: 'wrong password' }),
      'UNAUTHORIZED',
    );
    expect(unknown.message).toBe(wrong.message);
  });

  it('slows sign-ins to an account after its failures with TOO_MANY_REQUESTS, saying how long to wait', async () => {
    const anon = connect(app.url);
    await anon.api.auth.register.mutate({
      email: 'dee@example.test',
      username: 'dee',
      password: 'right password',
    });
    for (let i = 0; i < 3; i++) {
      await expectCode(
        anon.api.auth.login.mutate({ username: 'dee', password: `wrong ${i}xxxx` }),
        'UNAUTHORIZED',
      );
    }
    // Without the device token of an earlier sign-in, the right password waits too.
    const slowed = await expectCode(
      anon.api.auth.login.mutate({ username: 'dee', password: 'right password' }),
      'TOO_MANY_REQUESTS',
    );
    expect(slowed.data.retryAfter).toBeGreaterThan(0);
    expect(slowed.data.retryAfter).toBeLessThanOrEqual(60);
  });

  it('rotates refresh tokens, and a reused one revokes its whole family', async () => {
    const alice = await signUp(app.url);
    const first = alice.tokens.refreshToken;
    const { tokens: second } = await alice.api.auth.refresh.mutate({ refreshToken: first });
    expect(second.refreshToken).not.toBe(first);
    const { tokens: third } = await alice.api.auth.refresh.mutate({ refreshToken: second.refreshToken });

    // Replaying the first token: refused, and every token of the family dies with it.
    await expectCode(alice.api.auth.refresh.mutate({ refreshToken: first }), 'UNAUTHORIZED');
    await expectCode(alice.api.auth.refresh.mutate({ refreshToken: third.refreshToken }), 'UNAUTHORIZED');
    await expectCode(connect(app.url, third.accessToken).api.auth.me.query(), 'UNAUTHORIZED');
  });

  it('lets at most one of two concurrent refreshes with one token succeed', async () => {
    const bob = await signUp(app.url);
    const results = await Promise.allSettled([
      bob.api.auth.refresh.mutate({ refreshToken: bob.tokens.refreshToken }),
      bob.api.auth.refresh.mutate({ refreshToken: bob.tokens.refreshToken }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeLessThanOrEqual(1);
  });

  it('refuses forged, foreign and misused tokens', async () => {
    const carol = await signUp(app.url);
    const [header, payload] = carol.tokens.accessToken.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const sign = (h: object, p: object, key: string) => {
      const body = `${b64(h)}.${b64(p)}`;
      return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
    };
    const forged = [
      `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`,
      `${header}.${b64({ ...claims, sub: '00000000-0000-4000-8000-000000000000' })}.${carol.tokens.accessToken.split('.')[2]}`,
      sign({ alg: 'HS256', typ: 'JWT' }, claims, 'a'.repeat(64)),
      sign({ alg: 'HS512', typ: 'JWT' }, claims, deployment.jwtSecret),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, iss: 'someone-else' }, deployment.jwtSecret),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, aud: 'someone-else' }, deployment.jwtSecret),
      sign(
        { alg: 'HS256', typ: 'JWT' },
        { ...claims, exp: Math.floor(Date.now() / 1000) - 10 },
        deployment.jwtSecret,
      ),
      sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, typ: 'refresh' }, deployment.jwtSecret),
      carol.tokens.refreshToken,
      'garbage',
    ];
    for (const token of forged) {
      await expectCode(connect(app.url, token).api.auth.me.query(), 'UNAUTHORIZED');
    }
    // The genuine token still works, and the same claims signed correctly too: the checks above
    // failed for the reason each one tests.
    await expect(connect(app.url, carol.tokens.accessToken).api.auth.me.query()).resolves.toMatchObject({
      id: carol.user.id,
    });
    const genuine = sign({ alg: 'HS256', typ: 'JWT' }, claims, deployment.jwtSecret);
    await expect(connect(app.url, genuine).api.auth.me.query()).resolves.toMatchObject({ id: carol.user.id });
  });

  it('authenticates WebSocket calls with connectionParams or ?token=', async () => {
    const dan = await signUp(app.url);
    await expect(dan.ws.auth.me.query()).resolves.toMatchObject({ id: dan.user.id });
    const { createTRPCClient, createWSClient, wsLink } = await import('@trpc/client');
    const { default: WebSocket } = await import('ws');
    const { default: superjson } = await import('superjson');
    const wsClient = createWSClient({
      url: `${app.url.replace('http', 'ws')}/ws?token=${dan.tokens.accessToken}`,
      WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    });
    const viaQuery = createTRPCClient<AppRouter>({
      links: [wsLink({ client: wsClient, transformer: superjson })],
    });
    await expect(viaQuery.auth.me.query()).resolves.toMatchObject({ id: dan.user.id });
    await wsClient.close();
    await dan.close();
  });

  it('logout ends the session; logout everywhere ends them all', async () => {
    const eve = await signUp(app.url);
    const second = await eve.api.auth.login.mutate({ username: eve.user.username, password: eve.password });
    await eve.api.auth.logout.mutate({});
    await expectCode(eve.api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(eve.api.auth.refresh.mutate({ refreshToken: eve.tokens.refreshToken }), 'UNAUTHORIZED');
    const other = connect(app.url, second.tokens.accessToken);
    await expect(other.api.auth.me.query()).resolves.toMatchObject({ id: eve.user.id });
    await other.api.auth.logout.mutate({ everywhere: true });
    await expectCode(other.api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(
      other.api.auth.refresh.mutate({ refreshToken: second.tokens.refreshToken }),
      'UNAUTHORIZED',
    );
    // A fresh login after "everywhere" works at once.
    const again = await other.api.auth.login.mutate({ username: eve.user.username, password: eve.password });
    await expect(connect(app.url, again.tokens.accessToken).api.auth.me.query()).resolves.toMatchObject({
      id: eve.user.id,
    });
  });

  it('needs a token for authenticated procedures', async () => {
    const anon = connect(app.url);
    await expectCode(anon.api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(anon.api.user.list.query({}), 'UNAUTHORIZED');
  });
});

describe(`users (${engineLabel})`, () => {
  it('lists with prefix search and a cursor that covers everyone once', async () => {
    const viewer = await signUp(app.url, 'zed_viewer');
    for (const name of ['pq_one', 'pq_two', 'pq_three', 'PQ_four', 'pqx']) await signUp(app.url, name);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { items: { username: string }[]; nextCursor: string | null } =
        await viewer.api.user.list.query({
          query: 'pq_',
          limit: 2,
          cursor,
        });
      seen.push(...page.items.map((u) => u.username));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['PQ_four', 'pq_one', 'pq_three', 'pq_two']);
    await expectCode(viewer.api.user.list.query({ cursor: 'not-a-cursor' }), 'BAD_REQUEST');
    await expectCode(viewer.api.user.list.query({ limit: 101 }), 'BAD_REQUEST');
  });

  it('reads a user by id; an unknown id is NOT_FOUND and a malformed one BAD_REQUEST', async () => {
    const a = await signUp(app.url);
    const b = await signUp(app.url);
    await expect(a.api.user.byId.query({ id: b.user.id })).resolves.toMatchObject({
      id: b.user.id,
      username: b.user.username,
    });
    const publicView = await a.api.user.byId.query({ id: b.user.id });
    expect(publicView).not.toHaveProperty('email');
    await expectCode(a.api.user.byId.query({ id: '00000000-0000-4000-8000-000000000000' }), 'NOT_FOUND');
    await expectCode(a.api.user.byId.query({ id: 'nope' }), 'BAD_REQUEST');
  });

  it('changes the password only with the current one, ending other sessions', async () => {
    const fay = await signUp(app.url);
    const laptop = await fay.api.auth.login.mutate({ username: fay.user.username, password: fay.password });
    const missing = await expectCode(
      fay.api.user.update.mutate({ password: 'brand new password' }),
      'BAD_REQUEST',
    );
    expect(missing.data.zodError).toMatchObject({ fieldErrors: { currentPassword: [expect.any(String)] } });
    await expectCode(
      fay.api.user.update.mutate({ password: 'brand new password', currentPassword: 'not it at all' }),
      'FORBIDDEN',
    );
    const me = await fay.api.user.update.mutate({
      password: 'brand new password',
      currentPassword: fay.password,
      displayName: '  Fay  ',
    });
    expect(me.displayName).toBe('Fay');
    // This device keeps working; the laptop's session is over.
    await expect(fay.api.auth.me.query()).resolves.toMatchObject({ id: fay.user.id });
    await expectCode(connect(app.url, laptop.tokens.accessToken).api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(
      fay.api.auth.refresh.mutate({ refreshToken: laptop.tokens.refreshToken }),
      'UNAUTHORIZED',
    );
    await expectCode(
      fay.api.auth.login.mutate({ username: fay.user.username, password: fay.password }),
      'UNAUTHORIZED',
    );
    await expect(
      fay.api.auth.login.mutate({ username: fay.user.username, password: 'brand new password' }),
    ).resolves.toBeTruthy();
  });

  it('touch records last seen', async () => {
    const gus = await signUp(app.url);
    const { lastSeenAt } = await gus.api.user.touch.mutate();
    expect(lastSeenAt).toBeInstanceOf(Date);
    const me = await gus.api.auth.me.query();
    expect(me.lastSeenAt?.getTime()).toBe(lastSeenAt.getTime());
  });

  it('deletes the account with its password, ending every session and freeing the name', async () => {
    const hal = await signUp(app.url);
    const other = await signUp(app.url);
    await expectCode(hal.api.user.delete.mutate({ password: 'wrong password' }), 'BAD_REQUEST');
    await expect(hal.api.user.delete.mutate({ password: hal.password })).resolves.toEqual({ ok: true });
    await expectCode(hal.api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(hal.api.auth.refresh.mutate({ refreshToken: hal.tokens.refreshToken }), 'UNAUTHORIZED');
    await expectCode(other.api.user.byId.query({ id: hal.user.id }), 'NOT_FOUND');
    await expect(signUp(app.url, hal.user.username)).resolves.toBeTruthy();
  });

  it('never sends a stack trace or leaks internals to clients', async () => {
    const anon = connect(app.url);
    const error = await rejection(anon.api.auth.login.mutate({ username: 'x', password: 'y' }));
    expect(error.data).not.toHaveProperty('stack');
  });
});
