import { createTRPCClient, httpBatchLink } from '@trpc/client';
import superjson from 'superjson';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createParleyClient } from '../client-sdk/src/index.js';
import type { App } from '../server/src/app.js';
import { appRouter, type AppRouter } from '../server/src/routers/_app.js';
import { connect } from './support/client.js';
import { tap } from './support/events.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { expectCode, rejection } from './support/errors.js';

/**
 * Rate limits and the password-guess throttle: guesses are reserved before hashing, counted per
 * account however it is named, never lock the owner out, and every procedure has a budget.
 * The app trusts X-Forwarded-For, so a test can call from as many addresses as it likes.
 */

const PASSWORD = 'correct horse battery';

let deployment: TestDeployment;
/** Small allowances, a long delay past them, small budgets for the procedures under test. */
let app: App;

const perUser = (max: number) => ({ per: 'user' as const, max, windowSeconds: 60 });

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({
    trustProxy: true,
    limits: {
      loginFailuresPerAccount: 5,
      loginFailuresPerAddress: 50,
      loginFailuresPerDevice: 5,
      loginDelaySeconds: 60,
      loginMaxDelaySeconds: 60,
      budgets: {
        registration: { per: 'address', max: 3, windowSeconds: 600 },
        edits: perUser(3),
        markRead: perUser(3),
        groupChanges: perUser(3),
        userSearch: perUser(3),
      },
    },
  });
});
afterAll(async () => {
  await deployment?.cleanup();
});

let addresses = 0;
/** A client address of its own, as the trusted proxy would forward it. */
function newAddress(): string {
  addresses += 1;
  return `10.${(addresses >> 16) & 255}.${(addresses >> 8) & 255}.${addresses & 255}`;
}

/** The real tRPC client over HTTP, calling from `address`, signed in with `token` when given. */
function from(target: App, address: string, token?: string) {
  return createTRPCClient<AppRouter>({
    links: [
      httpBatchLink({
        url: `${target.url}/trpc`,
        transformer: superjson,
        headers: () => ({
          'x-forwarded-for': address,
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        }),
      }),
    ],
  });
}

let users = 0;
/** Registers a user from an address of its own (registration is budgeted per address). */
async function register(target: App, address = newAddress()) {
  users += 1;
  const username = `lim${users}_${Math.random().toString(36).slice(2, 7)}`;
  const email = `${username}@example.test`;
  const session = await from(target, address).auth.register.mutate({ email, username, password: PASSWORD });
  return {
    ...session,
    username,
    email,
    address,
    api: from(target, address, session.tokens.accessToken),
  };
}

interface BatchResult {
  code: string;
  retryAfter?: number;
}

/** One HTTP batch of calls to `path`, as raw JSON, so the response's headers can be read too. */
async function batch(target: App, path: string, inputs: unknown[], headers: Record<string, string>) {
  const response = await fetch(`${target.url}/trpc/${inputs.map(() => path).join(',')}?batch=1`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(Object.fromEntries(inputs.map((input, i) => [String(i), { json: input }]))),
  });
  const body = (await response.json()) as {
    error?: { json?: { data?: { code?: string; retryAfter?: number } } };
  }[];
  const results: BatchResult[] = body.map((item) => ({
    code: item.error?.json?.data?.code ?? 'OK',
    retryAfter: item.error?.json?.data?.retryAfter,
  }));
  return { response, results, count: (code: string) => results.filter((r) => r.code === code).length };
}

/** Wrong guesses at `username`'s password, one from each of `count` addresses of their own. */
async function othersFail(target: App, username: string, count: number) {
  for (let i = 0; i < count; i++) {
    await expectCode(
      from(target, newAddress()).auth.login.mutate({ username, password: `wrong guess ${i}` }),
      'UNAUTHORIZED',
    );
  }
}

describe(`password guesses (${engineLabel})`, () => {
  it('of one HTTP batch of 50 wrong guesses at one account, evaluates only the allowance; the rest are TOO_MANY_REQUESTS', async () => {
    const victim = await register(app);
    const guesses = Array.from({ length: 50 }, (_, i) => ({
      username: victim.username,
      password: `guess ${i}`,
    }));
    const { response, results, count } = await batch(app, 'auth.login', guesses, {
      'x-forwarded-for': newAddress(),
    });
    expect(count('UNAUTHORIZED')).toBe(5);
    expect(count('TOO_MANY_REQUESTS')).toBe(45);
    for (const result of results.filter((r) => r.code === 'TOO_MANY_REQUESTS')) {
      expect(result.retryAfter).toBeGreaterThan(0);
      expect(result.retryAfter).toBeLessThanOrEqual(60);
    }
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('counts guesses by username and by email against one account', async () => {
    const victim = await register(app);
    const attacker = from(app, newAddress());
    for (let i = 0; i < 3; i++) {
      await expectCode(
        attacker.auth.login.mutate({ username: victim.username, password: `by name ${i}` }),
        'UNAUTHORIZED',
      );
    }
    for (let i = 0; i < 2; i++) {
      await expectCode(
        attacker.auth.login.mutate({ email: victim.email, password: `by email ${i}` }),
        'UNAUTHORIZED',
      );
    }
    await expectCode(
      attacker.auth.login.mutate({ email: victim.email.toUpperCase(), password: 'x1234567' }),
      'TOO_MANY_REQUESTS',
    );
    await expectCode(
      attacker.auth.login.mutate({ username: victim.username, password: 'x1234567' }),
      'TOO_MANY_REQUESTS',
    );
  });

  it("counts a signed-in user's password checks (user.update, user.delete) against the account too", async () => {
    const victim = await register(app);
    // A stolen access token is no way around the throttle.
    for (let i = 0; i < 3; i++) {
      await expectCode(
        victim.api.user.update.mutate({ password: 'new password 1', currentPassword: `guess ${i}` }),
        'FORBIDDEN',
      );
    }
    for (let i = 0; i < 2; i++) {
      await expectCode(victim.api.user.delete.mutate({ password: `guess ${i}` }), 'BAD_REQUEST');
    }
    const update = await expectCode(
      victim.api.user.update.mutate({ password: 'new password 1', currentPassword: 'guess 9' }),
      'TOO_MANY_REQUESTS',
    );
    expect(update.data.retryAfter).toBeGreaterThan(0);
    await expectCode(victim.api.user.delete.mutate({ password: 'guess 9' }), 'TOO_MANY_REQUESTS');
    await expectCode(
      from(app, newAddress()).auth.login.mutate({ username: victim.username, password: 'guess 10' }),
      'TOO_MANY_REQUESTS',
    );
  });

  it("after others' failures, signs the owner in at once with their device token, and only with theirs", async () => {
    const owner = await register(app);
    const other = await register(app);
    await othersFail(app, owner.username, 5);
    const elsewhere = from(app, newAddress());
    await expectCode(
      elsewhere.auth.login.mutate({ username: owner.username, password: PASSWORD }),
      'TOO_MANY_REQUESTS',
    );
    // Another account's device token, or a forged one, is no device token.
    for (const deviceToken of [other.deviceToken, `${owner.deviceToken.split('.')[0]}.forged`]) {
      await expectCode(
        elsewhere.auth.login.mutate({ username: owner.username, password: PASSWORD, deviceToken }),
        'TOO_MANY_REQUESTS',
      );
    }
    const signedIn = await from(app, owner.address).auth.login.mutate({
      username: owner.username,
      password: PASSWORD,
      deviceToken: owner.deviceToken,
    });
    expect(signedIn.user.id).toBe(owner.user.id);
    expect(signedIn.deviceToken).toBe(owner.deviceToken);
    // The device's own failures are its own: five of them slow that device alone.
    for (let i = 0; i < 5; i++) {
      await expectCode(
        from(app, owner.address).auth.login.mutate({
          email: owner.email,
          password: `typo ${i}xx`,
          deviceToken: owner.deviceToken,
        }),
        'UNAUTHORIZED',
      );
    }
    await expectCode(
      from(app, owner.address).auth.login.mutate({
        email: owner.email,
        password: PASSWORD,
        deviceToken: owner.deviceToken,
      }),
      'TOO_MANY_REQUESTS',
    );
  });

  it("without a device token, slows the owner after others' failures instead of locking them out", async () => {
    const quick = await deployment.start({
      trustProxy: true,
      limits: { loginFailuresPerAccount: 3, loginDelaySeconds: 1, loginMaxDelaySeconds: 2 },
    });
    const owner = await register(quick);
    await othersFail(quick, owner.username, 3);
    // More guesses past the allowance: each is let through only after a growing wait.
    const attacker = from(quick, newAddress());
    for (let i = 0; i < 5; i++) {
      await attacker.auth.login
        .mutate({ username: owner.username, password: `more ${i}xx` })
        .catch(() => undefined);
    }
    const owned = from(quick, owner.address);
    const slowed = await expectCode(
      owned.auth.login.mutate({ username: owner.username, password: PASSWORD }),
      'TOO_MANY_REQUESTS',
    );
    expect(slowed.data.retryAfter).toBeGreaterThan(0);
    expect(slowed.data.retryAfter).toBeLessThanOrEqual(2);
    // A refused attempt costs nothing, so trying again until it is let through is how to wait.
    const session = await vi.waitFor(
      () => owned.auth.login.mutate({ username: owner.username, password: PASSWORD }),
      { timeout: 10_000, interval: 250 },
    );
    expect(session.user.id).toBe(owner.user.id);
  });

  it('signs in the other users behind an address that failed 50 times, with their device tokens', async () => {
    const shared = newAddress();
    const neighbour = await register(app, shared);
    const nobodies = Array.from({ length: 50 }, (_, i) => ({
      username: `nobody_${i}_${users}`,
      password: 'guessing',
    }));
    const failures = await batch(app, 'auth.login', nobodies, { 'x-forwarded-for': shared });
    expect(failures.count('UNAUTHORIZED')).toBe(50);
    const behind = from(app, shared);
    // Without a device token, every sign-in from that address waits now...
    await expectCode(
      behind.auth.login.mutate({ username: neighbour.username, password: PASSWORD }),
      'TOO_MANY_REQUESTS',
    );
    // ...but a device that signed in before is counted on its own.
    const session = await behind.auth.login.mutate({
      username: neighbour.username,
      password: PASSWORD,
      deviceToken: neighbour.deviceToken,
    });
    expect(session.user.id).toBe(neighbour.user.id);
    // And other addresses are not affected at all.
    const elsewhere = await register(app);
    await from(app, newAddress()).auth.login.mutate({ username: elsewhere.username, password: PASSWORD });
  });

  it('keeps the device token in the SDK across sign-out and sends it with login', async () => {
    const address = newAddress();
    const client = createParleyClient({
      url: app.url,
      WebSocket,
    });
    try {
      const username = `sdk_${Math.random().toString(36).slice(2, 8)}`;
      const me = await client.register({ username, email: `${username}@example.test`, password: PASSWORD });
      expect(client.deviceToken).toEqual(expect.any(String));
      await client.logout();
      expect(client.tokens).toBeNull();
      expect(client.deviceToken).toEqual(expect.any(String));
      await othersFail(app, username, 5);
      await expectCode(
        from(app, address).auth.login.mutate({ username, password: PASSWORD }),
        'TOO_MANY_REQUESTS',
      );
      expect((await client.login({ username, password: PASSWORD })).id).toBe(me.id);
    } finally {
      await client.close();
    }
  });
});

describe(`password hashing and registration (${engineLabel})`, () => {
  it('budgets registrations per address, with retryAfter and a Retry-After header', async () => {
    const address = newAddress();
    for (let i = 0; i < 3; i++) await register(app, address);
    const refused = await expectCode(
      from(app, address).auth.register.mutate({
        email: 'one.more@example.test',
        username: 'one_more',
        password: PASSWORD,
      }),
      'TOO_MANY_REQUESTS',
    );
    expect(refused.data.retryAfter).toBeGreaterThan(500);
    expect(refused.data.retryAfter).toBeLessThanOrEqual(600);
    const raw = await batch(
      app,
      'auth.register',
      [{ email: 'raw@example.test', username: 'raw_one', password: PASSWORD }],
      { 'x-forwarded-for': address },
    );
    expect(raw.response.status).toBe(429);
    expect(Number(raw.response.headers.get('retry-after'))).toBe(raw.results[0]?.retryAfter);
    // Another address registers as usual.
    await register(app);
  });

  it('refuses the password hashes it cannot hold at once with TOO_MANY_REQUESTS, retryAfter and a Retry-After header', async () => {
    const busy = await deployment.start({
      // Hashes long enough (16 MiB each) that ten arriving together overlap.
      passwordHashCost: 14,
      limits: { passwordHashConcurrency: 1, passwordHashQueue: 1 },
    });
    const signUps = Array.from({ length: 10 }, (_, i) => {
      const username = `burst_${i}_${Math.random().toString(36).slice(2, 7)}`;
      return { username, email: `${username}@example.test`, password: PASSWORD };
    });
    const { response, results, count } = await batch(busy, 'auth.register', signUps, {});
    // One hashing, one waiting (two, should the first be done before the last arrives); the rest
    // answered at once instead of queueing behind them.
    expect(count('OK')).toBeGreaterThanOrEqual(2);
    expect(count('TOO_MANY_REQUESTS')).toBeGreaterThanOrEqual(5);
    expect(count('OK') + count('TOO_MANY_REQUESTS')).toBe(10);
    for (const result of results.filter((r) => r.code === 'TOO_MANY_REQUESTS')) {
      expect(result.retryAfter).toBeGreaterThanOrEqual(1);
    }
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Nothing is held: one of those refused registers now.
    const again = signUps.find((_, i) => results[i]?.code === 'TOO_MANY_REQUESTS');
    if (!again) throw new Error('no registration was refused');
    await from(busy, newAddress()).auth.register.mutate(again);
  });
});

describe(`budgets (${engineLabel})`, () => {
  it('gives every procedure of the router a budget, or names who counts it', async () => {
    // Imported here, so that the other tests of this file run on code without the table too.
    const { defaultBudgets, procedureBudgets } = await import('../server/src/limits/budgets.js');
    const paths = Object.keys(appRouter._def.procedures);
    expect(paths.length).toBeGreaterThan(20);
    for (const path of paths) {
      const entry = procedureBudgets[path];
      expect(entry, path).toBeDefined();
      if (typeof entry === 'string') expect(Object.keys(defaultBudgets), path).toContain(entry);
      else expect(entry?.countedBy, path).toMatch(/\w/);
    }
    expect(Object.keys(procedureBudgets).sort()).toEqual([...paths].sort());
  });

  it('budgets editing and deleting messages together, per user', async () => {
    const [al, bo] = [await register(app), await register(app)];
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const mine = await al.api.message.send.mutate({ conversationId: id, content: 'one' });
    const other = await al.api.message.send.mutate({ conversationId: id, content: 'two' });
    await al.api.message.edit.mutate({ id: mine.id, content: 'one, edited' });
    await al.api.message.edit.mutate({ id: mine.id, content: 'one, edited again' });
    await al.api.message.delete.mutate({ id: other.id });
    const refused = await expectCode(
      al.api.message.edit.mutate({ id: mine.id, content: 'flood' }),
      'TOO_MANY_REQUESTS',
    );
    expect(refused.data.retryAfter).toBeGreaterThan(0);
    expect(refused.data.retryAfter).toBeLessThanOrEqual(60);
    await expectCode(al.api.message.delete.mutate({ id: mine.id }), 'TOO_MANY_REQUESTS');
    // Bo's budget is his own.
    const his = await bo.api.message.send.mutate({ conversationId: id, content: 'three' });
    await bo.api.message.edit.mutate({ id: his.id, content: 'three, edited' });
  });

  it('budgets markRead per user', async () => {
    const [al, bo] = [await register(app), await register(app)];
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const { seq } = await al.api.message.send.mutate({ conversationId: id, content: 'read me' });
    for (let i = 0; i < 3; i++) await bo.api.conversation.markRead.mutate({ id, seq });
    await expectCode(bo.api.conversation.markRead.mutate({ id, seq }), 'TOO_MANY_REQUESTS');
    await al.api.conversation.markRead.mutate({ id, seq });
  });

  it('budgets group changes per user', async () => {
    const [owner, member, late] = [await register(app), await register(app), await register(app)];
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Budget',
      memberIds: [member.user.id],
    });
    await owner.api.conversation.rename.mutate({ id: group.id, name: 'Budget 2' });
    await owner.api.conversation.setRole.mutate({ id: group.id, userId: member.user.id, role: 'admin' });
    await owner.api.conversation.addMembers.mutate({ id: group.id, userIds: [late.user.id] });
    await expectCode(
      owner.api.conversation.removeMember.mutate({ id: group.id, userId: late.user.id }),
      'TOO_MANY_REQUESTS',
    );
    await expectCode(
      owner.api.conversation.rename.mutate({ id: group.id, name: 'Budget 3' }),
      'TOO_MANY_REQUESTS',
    );
    // The admin's own budget is untouched.
    await member.api.conversation.removeMember.mutate({ id: group.id, userId: late.user.id });
  });

  it('budgets user search per user', async () => {
    const [al, bo] = [await register(app), await register(app)];
    for (let i = 0; i < 3; i++) await al.api.user.list.query({ query: 'lim' });
    const refused = await expectCode(al.api.user.list.query({ query: 'lim' }), 'TOO_MANY_REQUESTS');
    expect(refused.message).toMatch(/try again in \d+ s/);
    await bo.api.user.list.query({ query: 'lim' });
  });

  it('coalesces typing: two calls in a row send the others one event', async () => {
    const [al, bo] = [await register(app), await register(app)];
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const listener = connect(app.url, bo.tokens.accessToken);
    const events = await tap(listener, app, bo.user.id);
    expect(await al.api.conversation.typing.mutate({ id })).toEqual({ ok: true });
    expect(await al.api.conversation.typing.mutate({ id })).toEqual({ ok: true });
    // The sentinel: once the message after both calls is in, any second typing event would be too.
    await al.api.message.send.mutate({ conversationId: id, content: 'sentinel' });
    await events.until((received) => received.some((r) => r.event.type === 'message.created'));
    expect(events.of('typing')).toHaveLength(1);
    // Bo typing in the same conversation is his own signal.
    await bo.api.conversation.typing.mutate({ id });
    await events.stop();
    await listener.close();
  });

  describe.skipIf(!engines.redisUrl)(
    engines.redisUrl
      ? 'across instances'
      : 'across instances (skipped: needs TEST_REDIS_URL; the in-process broker is one instance)',
    () => {
      it('counts one budget on two instances together', async () => {
        const limits = { budgets: { userSearch: perUser(4) } };
        const [one, two] = [await deployment.start({ limits }), await deployment.start({ limits })];
        const al = await register(one);
        const onTwo = from(two, al.address, al.tokens.accessToken);
        const onOne = from(one, al.address, al.tokens.accessToken);
        for (let i = 0; i < 4; i++) await (i % 2 ? onTwo : onOne).user.list.query({});
        await expectCode(onOne.user.list.query({}), 'TOO_MANY_REQUESTS');
        const refused = await rejection(onTwo.user.list.query({}));
        expect(refused.data.code).toBe('TOO_MANY_REQUESTS');
      });
    },
  );
});
