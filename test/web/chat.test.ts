import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
 * The web app in real Chromium against a real Parley (embedded engines) serving the built app:
 * what two or three people see while they talk.
 */
let deployment: TestDeployment;
let app: App;
let browser: Browser;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ webDir: webDist });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await deployment?.cleanup();
});

describe('the web app', () => {
  it('lets two people sign up, open a direct conversation and talk both ways, with typing and a read receipt', async () => {
    const ann = await signUp(browser, app.url, 'Ann');
    const bob = await signUp(browser, app.url, 'Bob');

    await openDirect(ann, bob);
    await send(ann, 'Hi Bob!');
    await expect.poll(() => messageTexts(ann.page)).toEqual(['Hi Bob!']);

    // Bob's list shows the new conversation, its last message and one unread, without a reload.
    const bobsList = bob.page.getByRole('navigation', { name: 'Conversations' });
    await bobsList.getByText('Ann: Hi Bob!').waitFor();
    await bobsList.getByLabel('1 unread').waitFor();

    await openFromList(bob, 'Ann');
    await expect.poll(() => messageTexts(bob.page)).toEqual(['Hi Bob!']);
    // Opening it read it: the badge goes, and Ann sees her message seen.
    await bobsList.getByLabel('1 unread').waitFor({ state: 'detached' });
    await ann.page.getByText('Seen', { exact: true }).waitFor();

    // Bob types: Ann sees it; his message then ends the indicator.
    await bob.page.getByLabel('Message', { exact: true }).pressSequentially('Hel');
    await ann.page.getByText('Bob is typing…').waitFor();
    await screenshot(ann.page, 'dm-typing');
    await bob.page.getByLabel('Message', { exact: true }).fill('Hello Ann, how are you?');
    await bob.page.getByRole('button', { name: 'Send' }).click();
    await expect.poll(() => messageTexts(ann.page)).toEqual(['Hi Bob!', 'Hello Ann, how are you?']);
    await ann.page.getByText('Bob is typing…').waitFor({ state: 'detached' });
    await expect.poll(() => messageTexts(bob.page)).toEqual(['Hi Bob!', 'Hello Ann, how are you?']);
    await screenshot(bob.page, 'dm-bob');
    await Promise.all([ann.context.close(), bob.context.close()]);
  });
});
