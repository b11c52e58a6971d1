import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { loadConfig } from '../server/src/config/index.js';
import { hashRefreshToken } from '../server/src/credentials/tokens.js';
import { connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { expectCode } from './support/errors.js';

/**
 * A refresh token presented again shortly after it was rotated (two tabs sharing one storage
 * that refreshed together) gets the same successor instead of ending the session; after the
 * grace, or once the successor has moved on, it is reuse and ends the whole family.
 */

const GRACE_MS = 1_500;

let deployment: TestDeployment;
let app: App;
/** A second instance on the same database and broker (on Redis; the same one in-process). */
let other: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ jwt: { refreshReuseGraceMs: GRACE_MS } });
  other = engines.redisUrl ? await deployment.start({ jwt: { refreshReuseGraceMs: GRACE_MS } }) : app;
});
afterAll(async () => {
  await deployment?.cleanup();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function refresh(target: App, refreshToken: string) {
  return connect(target.url).api.auth.refresh.mutate({ refreshToken });
}

async function expectSignedIn(target: App, accessToken: string, userId: string) {
  await expect(connect(target.url, accessToken).api.auth.me.query()).resolves.toMatchObject({ id: userId });
}

describe(`refresh-token reuse grace (${engineLabel})`, () => {
  it('gives a token presented again within the grace the same successor, on any instance, and keeps the session', async () => {
    const ada = await signUp(app.url);
    const first = await refresh(app, ada.tokens.refreshToken);
    const again = await refresh(other, ada.tokens.refreshToken);
    expect(again.tokens.refreshToken).toBe(first.tokens.refreshToken);
    await expectSignedIn(app, first.tokens.accessToken, ada.user.id);
    await expectSignedIn(other, again.tokens.accessToken, ada.user.id);
    // The shared successor carries the session on.
    const next = await refresh(other, again.tokens.refreshToken);
    await expectSignedIn(app, next.tokens.accessToken, ada.user.id);
  });

  it('gives every one of concurrent refreshes with one token the same successor', async () => {
    const bo = await signUp(app.url);
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => refresh(i % 2 ? other : app, bo.tokens.refreshToken)),
    );
    const successors = new Set(results.map((result) => result.tokens.refreshToken));
    expect(successors.size).toBe(1);
    for (const result of results) await expectSignedIn(app, result.tokens.accessToken, bo.user.id);
  });

  it('treats a token presented again after the grace as reuse and ends the whole family', async () => {
    const cy = await signUp(app.url);
    const { tokens } = await refresh(app, cy.tokens.refreshToken);
    await sleep(GRACE_MS + 100);
    await expectCode(refresh(other, cy.tokens.refreshToken), 'UNAUTHORIZED');
    await expectCode(refresh(app, tokens.refreshToken), 'UNAUTHORIZED');
    await expectCode(connect(app.url, tokens.accessToken).api.auth.me.query(), 'UNAUTHORIZED');
    expect(deployment.logLines.some((line) => line.includes('rotated refresh token reused'))).toBe(true);
  });

  it('treats a token as reuse within the grace once its successor was rotated in turn', async () => {
    const dd = await signUp(app.url);
    const second = await refresh(app, dd.tokens.refreshToken);
    const third = await refresh(app, second.tokens.refreshToken);
    await expectCode(refresh(other, dd.tokens.refreshToken), 'UNAUTHORIZED');
    await expectCode(refresh(app, third.tokens.refreshToken), 'UNAUTHORIZED');
  });

  it('hands nothing out within the grace once the session was logged out', async () => {
    const ed = await signUp(app.url);
    const { tokens } = await refresh(app, ed.tokens.refreshToken);
    await connect(app.url, tokens.accessToken).api.auth.logout.mutate({ refreshToken: tokens.refreshToken });
    await expectCode(refresh(other, ed.tokens.refreshToken), 'UNAUTHORIZED');
  });

  it('keeps the successor in the broker only sealed, and never logs it', async () => {
    const fi = await signUp(app.url);
    const { tokens } = await refresh(app, fi.tokens.refreshToken);
    const stored = await app.services.broker.sessions.successor(hashRefreshToken(fi.tokens.refreshToken));
    expect(stored).toEqual(expect.any(String));
    expect(stored).not.toContain(tokens.refreshToken);
    const again = await refresh(other, fi.tokens.refreshToken);
    expect(again.tokens.refreshToken).toBe(tokens.refreshToken);
    const secrets = [fi.tokens.refreshToken, tokens.refreshToken];
    expect(deployment.logLines.filter((line) => secrets.some((secret) => line.includes(secret)))).toEqual([]);
  });

  it('with a grace of 0, any second presentation is reuse', async () => {
    const strict = await deployment.start({ jwt: { refreshReuseGraceMs: 0 } });
    const gus = await signUp(strict.url);
    const { tokens } = await refresh(strict, gus.tokens.refreshToken);
    await expectCode(refresh(strict, gus.tokens.refreshToken), 'UNAUTHORIZED');
    await expectCode(refresh(strict, tokens.refreshToken), 'UNAUTHORIZED');
  });
});

describe('JWT_REFRESH_REUSE_GRACE', () => {
  it('defaults to 10 s, reads 0 as off, and refuses what it cannot read or more than a minute', () => {
    expect(loadConfig({}).jwt.refreshReuseGraceMs).toBe(10_000);
    expect(loadConfig({ JWT_REFRESH_REUSE_GRACE: '0' }).jwt.refreshReuseGraceMs).toBe(0);
    expect(loadConfig({ JWT_REFRESH_REUSE_GRACE: '2500ms' }).jwt.refreshReuseGraceMs).toBe(2_500);
    expect(loadConfig({ JWT_REFRESH_REUSE_GRACE: '5' }).jwt.refreshReuseGraceMs).toBe(5_000);
    expect(() => loadConfig({ JWT_REFRESH_REUSE_GRACE: '2m' })).toThrow(
      /JWT_REFRESH_REUSE_GRACE: must be at most 1m/,
    );
    expect(() => loadConfig({ JWT_REFRESH_REUSE_GRACE: 'soon' })).toThrow(
      /JWT_REFRESH_REUSE_GRACE: must be a duration/,
    );
  });
});
