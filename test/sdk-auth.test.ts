import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import {
  type AuthChange,
  createParleyClient,
  errorCode,
  type ParleyClientOptions,
  type StoredTokens,
} from '../client-sdk/src/index.js';
import { fileTokenStorage } from '../client-sdk/src/node.js';
import { connect } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';

let deployment: TestDeployment;
/** Access tokens live two seconds here, so expiry happens within a test. */
let app: App;
const clients: { close(): Promise<void> }[] = [];
let workDir: string;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ jwt: { accessTtlSeconds: 2 } });
  workDir = await mkdtemp(path.join(tmpdir(), 'parley-sdk-auth-'));
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
  await rm(workDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let counter = 0;

function client(options: Partial<ParleyClientOptions> = {}) {
  const changes: AuthChange[] = [];
  const parley = createParleyClient({
    url: app.url,
    ...options,
    onAuthChange: (change) => {
      changes.push(change);
      options.onAuthChange?.(change);
    },
  });
  clients.push(parley);
  const refreshes = () => changes.filter((change) => change.type === 'refreshed').length;
  return { parley, changes, refreshes };
}

function credentials() {
  counter += 1;
  const username = `sdk_auth_${counter}_${Math.random().toString(36).slice(2, 7)}`;
  return { username, email: `${username}@example.test`, password: 'correct horse battery' };
}

/** Signs a user up with the plain tRPC client and returns the server's tokens. */
async function signUpRaw() {
  const input = credentials();
  const anonymous = connect(app.url);
  const session = await anonymous.api.auth.register.mutate(input);
  await anonymous.close();
  return { ...input, ...session };
}

describe(`@parley/client sessions (${engineLabel})`, () => {
  it('registers, logs in, attaches the token and knows the current user', async () => {
    const input = credentials();
    const { parley, changes } = client();
    expect(await parley.currentUser()).toBeNull();
    const registered = await parley.register(input);
    expect(parley.user?.id).toBe(registered.id);
    expect(await parley.api.auth.me.query()).toMatchObject({ id: registered.id, username: input.username });
    await parley.logout();
    expect(parley.tokens).toBeNull();
    expect(parley.user).toBeNull();
    expect(errorCode(await parley.api.auth.me.query().catch((error: unknown) => error))).toBe('UNAUTHORIZED');

    const me = await parley.login({ username: input.username, password: input.password });
    expect(me.id).toBe(registered.id);
    expect((await parley.currentUser())?.createdAt).toBeInstanceOf(Date);
    expect(changes.map((change) => change.type)).toEqual(['signedIn', 'signedOut', 'signedIn']);
  });

  it('refreshes shortly before expiry, with no call to prompt it', async () => {
    const { parley, refreshes, changes } = client();
    await parley.register(credentials());
    const first = parley.tokens;
    await sleep(2_600);
    // A quarter of a two-second life is left at 1.5 s: at least one refresh by now.
    expect(refreshes()).toBeGreaterThanOrEqual(1);
    expect(parley.tokens?.accessToken).not.toBe(first?.accessToken);
    expect(parley.tokens?.refreshToken).not.toBe(first?.refreshToken);
    await expect(parley.api.auth.me.query()).resolves.toMatchObject({ username: parley.user?.username });
    expect(changes.some((change) => change.type === 'signedOut')).toBe(false);
  });

  it('runs one refresh for many calls that wait on it', async () => {
    const user = await signUpRaw();
    await sleep(2_100); // the access token has expired
    const { parley, refreshes } = client({
      // The client believes the token is still good, so the server is the one to refuse it.
      tokens: { ...user.tokens, expiresIn: 3600 },
    });
    const results = await Promise.all(Array.from({ length: 12 }, () => parley.api.auth.me.query()));
    expect(results.every((me) => me.id === user.user.id)).toBe(true);
    expect(refreshes()).toBe(1);
    // Had two refreshes used the same refresh token, the server would have revoked the session.
    expect((await parley.api.user.touch.mutate()).lastSeenAt).toBeInstanceOf(Date);
  });

  it('refreshes before a call when the token is about to expire, once for concurrent calls', async () => {
    const user = await signUpRaw();
    const stale: StoredTokens = {
      accessToken: user.tokens.accessToken,
      refreshToken: user.tokens.refreshToken,
      expiresAt: Date.now() + 1_000,
      refreshAt: Date.now() - 1,
    };
    const { parley, refreshes } = client({ tokens: stale });
    await Promise.all([
      parley.api.auth.me.query(),
      parley.api.auth.me.query(),
      parley.api.user.touch.mutate(),
    ]);
    expect(refreshes()).toBe(1);
    expect(parley.tokens?.accessToken).not.toBe(stale.accessToken);
  });

  it('treats a refused login as an answer, not as a stale token', async () => {
    const user = await signUpRaw();
    const { parley, changes } = client();
    const error = await parley
      .login({ username: user.username, password: 'wrong password' })
      .catch((e: unknown) => e);
    expect(errorCode(error)).toBe('UNAUTHORIZED');
    expect(changes).toEqual([]);
  });

  it('signs out when the session was revoked, and says so', async () => {
    const { parley, changes } = client();
    await parley.register(credentials());
    const tokens = parley.tokens;
    if (!tokens) throw new Error('expected tokens');
    // Another device ends every session of this user.
    const other = connect(app.url, tokens.accessToken);
    await other.api.auth.logout.mutate({ everywhere: true });
    await other.close();

    const error = await parley.api.auth.me.query().catch((e: unknown) => e);
    expect(errorCode(error)).toBe('UNAUTHORIZED');
    expect(changes.at(-1)).toEqual({ type: 'signedOut', reason: 'expired' });
    expect(parley.tokens).toBeNull();
  });

  it('keeps tokens in the storage it is given, sync or async', async () => {
    let saved: StoredTokens | null = null;
    // Asynchronous, as browser or keychain storage would be.
    const storage = {
      get: () => Promise.resolve(saved),
      set: (tokens: StoredTokens) => {
        saved = tokens;
        return Promise.resolve();
      },
      clear: () => {
        saved = null;
        return Promise.resolve();
      },
    };
    const input = credentials();
    const first = client({ storage });
    const registered = await first.parley.register(input);
    expect(saved).toMatchObject({ accessToken: first.parley.tokens?.accessToken });
    await first.parley.close();

    // A new client (a reload, another run) starts signed in from the storage alone.
    const second = client({ storage });
    expect(await second.parley.currentUser()).toMatchObject({ id: registered.id });
    await sleep(2_100);
    await second.parley.api.auth.me.query();
    expect(second.refreshes()).toBeGreaterThanOrEqual(1);
    expect(saved).toMatchObject({ accessToken: second.parley.tokens?.accessToken });
    await second.parley.logout();
    expect(saved).toBeNull();
  });

  it('lets two processes share a session file without tripping refresh-token reuse', async () => {
    const file = path.join(workDir, 'shared-session.json');
    const first = client({ storage: fileTokenStorage(file) });
    const me = await first.parley.register(credentials());
    const second = client({ storage: fileTokenStorage(file) });
    expect(await second.parley.currentUser()).toMatchObject({ id: me.id });

    // Closing stops each client's refresh timer (calls still work), so that the refreshes below
    // happen one after the other, as with two command-line runs.
    await first.parley.close();
    await second.parley.close();
    await sleep(2_100);
    await first.parley.api.auth.me.query();
    const afterFirst = JSON.parse(await readFile(file, 'utf8')) as { tokens: StoredTokens };
    await expect(second.parley.api.auth.me.query()).resolves.toMatchObject({ id: me.id });
    expect(second.parley.tokens?.refreshToken).toBe(afterFirst.tokens.refreshToken);
    // The session is intact for both.
    await expect(first.parley.api.auth.me.query()).resolves.toMatchObject({ id: me.id });
  });
});
