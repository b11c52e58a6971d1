import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import {
  type AuthChange,
  createParleyClient,
  errorCode,
  localStorageTokenStorage,
  type ParleyClient,
  type WebStorage,
} from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { newUser, sleep, waitFor } from './support/sdk.js';

/**
 * Two browser tabs share one `localStorage`: here, two clients in one process share one Web
 * Storage (an in-memory one with its semantics: synchronous, string values) and talk over
 * `BroadcastChannel`, as tabs do. Node has no Web Locks, so the lease in the storage is what
 * keeps their refreshes apart. Access tokens live two seconds, so the session is refreshed
 * every half second or so.
 */

/** A Web Storage in memory, as `localStorage` behaves within one origin. */
class MemoryWebStorage implements WebStorage {
  private readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

let deployment: TestDeployment;
/** With the refresh-token reuse grace (the default, 10 s). */
let lenient: App;
/** Without it: any second presentation of a refresh token revokes the session. */
let strict: App;
const clients: ParleyClient[] = [];
let keys = 0;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  lenient = await deployment.start({ jwt: { accessTtlSeconds: 2, refreshReuseGraceMs: 10_000 } });
  strict = await deployment.start({ jwt: { accessTtlSeconds: 2, refreshReuseGraceMs: 0 } });
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
});

function tab(app: App, storage: WebStorage, key: string, crossTab: boolean) {
  const changes: AuthChange[] = [];
  const client = createParleyClient({
    url: app.url,
    storage: localStorageTokenStorage({ storage, key, crossTab }),
    onAuthChange: (change) => changes.push(change),
  });
  clients.push(client);
  return { client, changes };
}

/**
 * Signs in in one tab, opens a second on the same storage, and has both call the server for
 * `ms` while their session is refreshed underneath. Says whether both stayed signed in.
 */
async function twoTabs(app: App, crossTab: boolean, ms = 4_500) {
  const storage = new MemoryWebStorage();
  const key = `parley.tabs.${process.pid}.${(keys += 1)}`;
  const first = tab(app, storage, key, crossTab);
  const me = await first.client.register(newUser('tabs'));
  // The second tab starts from what the first stored, as a tab opened after sign-in does.
  const second = tab(app, storage, key, crossTab);
  expect(await second.client.currentUser()).toMatchObject({ id: me.id });

  const failures: unknown[] = [];
  const refreshTokens = new Set<string>();
  const deadline = Date.now() + ms;
  await Promise.all(
    [first, second].map(async ({ client }) => {
      while (Date.now() < deadline) {
        try {
          await client.api.auth.me.query();
        } catch (error) {
          failures.push(error);
        }
        if (client.tokens) refreshTokens.add(client.tokens.refreshToken);
        await sleep(50);
      }
    }),
  );
  const signedOut = [first, second].some(({ changes }) => changes.some((c) => c.type === 'signedOut'));
  return { first, second, failures, signedOut, refreshTokens, storage, key };
}

describe(`@parley/client tabs sharing localStorage (${engineLabel})`, () => {
  it('without the server grace, keeps both tabs signed in across many refreshes: one refreshes, the other takes its tokens', async () => {
    const run = await twoTabs(strict, true);
    expect(run.failures).toEqual([]);
    expect(run.signedOut).toBe(false);
    // Several refreshes happened, and the tabs hold the same tokens in the end.
    expect(run.refreshTokens.size).toBeGreaterThanOrEqual(4);
    await waitFor(
      () => run.first.client.tokens?.refreshToken === run.second.client.tokens?.refreshToken,
      () => 'the tabs hold different tokens',
    );
  });

  it('without the cross-tab lock, keeps both tabs signed in through the server grace', async () => {
    const run = await twoTabs(lenient, false);
    expect(run.failures).toEqual([]);
    expect(run.signedOut).toBe(false);
    expect(run.refreshTokens.size).toBeGreaterThanOrEqual(4);
  });

  it('with neither the lock nor the grace, the tabs refresh together and both are signed out', async () => {
    const run = await twoTabs(strict, false);
    expect(run.signedOut).toBe(true);
    expect(run.failures.some((error) => errorCode(error) === 'UNAUTHORIZED')).toBe(true);
  });

  it('with both (the default), keeps both tabs signed in', async () => {
    const run = await twoTabs(lenient, true, 3_000);
    expect(run.failures).toEqual([]);
    expect(run.signedOut).toBe(false);
  });

  it('follows a sign-out and a sign-in made in another tab, and keeps the device token across them', async () => {
    const storage = new MemoryWebStorage();
    const key = `parley.tabs.${process.pid}.${(keys += 1)}`;
    const first = tab(lenient, storage, key, true);
    const credentials = newUser('tabs');
    const me = await first.client.register(credentials);
    const second = tab(lenient, storage, key, true);
    expect(await second.client.currentUser()).toMatchObject({ id: me.id });

    await first.client.logout();
    await waitFor(
      () => second.changes.some((c) => c.type === 'signedOut'),
      () => 'the second tab did not follow the sign-out',
    );
    expect(second.client.tokens).toBeNull();
    expect(storage.getItem(`${key}.device`)).toBe(first.client.deviceToken);

    await first.client.login({ username: credentials.username, password: credentials.password });
    await waitFor(
      () => second.changes.some((c) => c.type === 'signedIn'),
      () => 'the second tab did not follow the sign-in',
    );
    expect(second.client.user).toMatchObject({ id: me.id });
    await expect(second.client.api.auth.me.query()).resolves.toMatchObject({ id: me.id });
  });

  it('says what to use where there is no localStorage', () => {
    expect(() => localStorageTokenStorage()).toThrow(/localStorage is not available here/);
  });
});
