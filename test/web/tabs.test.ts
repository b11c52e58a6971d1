import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { App } from '../../server/src/app.js';
import { TestDeployment } from '../support/env.js';
import {
  launchChromium,
  messageTexts,
  openDirect,
  openFromList,
  screenshot,
  send,
  signUp,
  webDist,
} from './browser.js';

/**
 * One person, two tabs of the app, and access tokens that last four seconds: the tabs share one
 * session in localStorage, refresh it one at a time (a refresh token used twice would end the
 * session everywhere), and both stay signed in and live through many refreshes and a reload.
 */
let deployment: TestDeployment;
let app: App;
let browser: Browser;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({
    webDir: webDist,
    jwt: { accessTtlSeconds: 4 },
  });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await deployment?.cleanup();
});

/** Records, inside the page, every refresh token the shared storage holds from now on. */
async function recordRefreshTokens(page: Page): Promise<void> {
  await page.evaluate(() => {
    // Runs in the page (this file is compiled without the DOM's types).
    const page = globalThis as unknown as {
      seenRefreshTokens: Set<string>;
      localStorage: { getItem(key: string): string | null };
    };
    const seen = new Set<string>();
    page.seenRefreshTokens = seen;
    setInterval(() => {
      const text = page.localStorage.getItem('parley.session');
      if (text) seen.add((JSON.parse(text) as { refreshToken: string }).refreshToken);
    }, 100);
  });
}

const refreshTokensSeen = (page: Page) =>
  page.evaluate(() => (globalThis as unknown as { seenRefreshTokens: Set<string> }).seenRefreshTokens.size);

it('keeps one person signed in and live in two tabs through several token refreshes and a reload', async () => {
  const ann = await signUp(browser, app.url, 'Ann');
  const bob = await signUp(browser, app.url, 'Bob');
  await openDirect(ann, bob);
  await send(ann, 'first');
  await openFromList(bob, 'Ann');

  // A second tab of Ann's: the same browser context, so the same localStorage and session.
  const second = await ann.context.newPage();
  await second.goto(app.url);
  await openFromList({ ...ann, page: second }, 'Bob');
  await expect.poll(() => messageTexts(second)).toEqual(['first']);

  await recordRefreshTokens(ann.page);
  await expect
    .poll(() => refreshTokensSeen(ann.page), { timeout: 20_000, interval: 250 })
    .toBeGreaterThanOrEqual(4);

  // Both tabs still send and receive live: their event streams moved to each new token.
  await send(bob, 'after refreshes');
  for (const page of [ann.page, second]) {
    await expect.poll(() => messageTexts(page)).toEqual(['first', 'after refreshes']);
  }
  await send({ ...ann, page: second }, 'from the second tab');
  await expect
    .poll(() => messageTexts(ann.page))
    .toEqual(['first', 'after refreshes', 'from the second tab']);

  // A reload picks the session up from storage; more refreshes go by in both tabs.
  await second.reload();
  await expect.poll(() => messageTexts(second)).toEqual(['first', 'after refreshes', 'from the second tab']);
  await recordRefreshTokens(second);
  await expect
    .poll(() => refreshTokensSeen(second), { timeout: 20_000, interval: 250 })
    .toBeGreaterThanOrEqual(3);
  await send(ann, 'still here');
  for (const page of [second, bob.page]) {
    await expect
      .poll(() => messageTexts(page))
      .toEqual(['first', 'after refreshes', 'from the second tab', 'still here']);
  }
  for (const page of [ann.page, second]) {
    expect(await page.getByRole('button', { name: 'Create account' }).count()).toBe(0);
    expect(await page.getByRole('button', { name: 'Sign in' }).count()).toBe(0);
  }
  await screenshot(second, 'two-tabs');

  // Signing out in one tab signs out the other too: they share one session.
  await second.getByRole('button', { name: 'Profile' }).click();
  await second.getByRole('button', { name: 'Sign out', exact: true }).click();
  for (const page of [second, ann.page]) await page.getByRole('button', { name: 'Sign in' }).waitFor();
  await Promise.all([ann.context.close(), bob.context.close()]);
});
