import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../server/src/app.js';
import type { ParleyClient } from '../../client-sdk/src/index.js';
import { TestDeployment } from '../support/env.js';
import { sdkUser } from '../support/sdk.js';
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

const sdkClients: ParleyClient[] = [];

afterAll(async () => {
  await Promise.all(sdkClients.map((client) => client.close()));
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

    // A new display name shows at once; signing out everywhere returns to the sign-in form.
    await bob.page.getByRole('button', { name: 'Profile' }).click();
    await bob.page.getByLabel('Display name').fill('Bobby');
    await bob.page.getByRole('button', { name: 'Save' }).click();
    await bob.page
      .getByRole('navigation', { name: 'Conversations' })
      .getByText('Bobby', { exact: true })
      .waitFor();
    await bob.page.getByRole('button', { name: 'Profile' }).click();
    await bob.page.getByRole('button', { name: 'Sign out everywhere' }).click();
    await bob.page.getByRole('button', { name: 'Sign in' }).waitFor();
    await Promise.all([ann.context.close(), bob.context.close()]);
  });

  it('shows a person who was offline every message sent meanwhile, once and in order', async () => {
    const ann = await signUp(browser, app.url, 'Ann');
    const bob = await signUp(browser, app.url, 'Bob');
    await openDirect(ann, bob);
    await send(ann, 'before');
    await openFromList(bob, 'Ann');
    await expect.poll(() => messageTexts(bob.page)).toEqual(['before']);

    await bob.context.setOffline(true);
    const banner = bob.page.getByRole('status');
    await banner.getByText('You are offline').waitFor();
    const sent = Array.from({ length: 6 }, (_, i) => `while away ${i + 1}`);
    for (const text of sent) await send(ann, text);
    await expect.poll(() => messageTexts(ann.page)).toEqual(['before', ...sent]);
    await screenshot(bob.page, 'offline-banner');
    // Nothing reaches Bob meanwhile: what he sees next comes from the resumed stream.
    expect(await messageTexts(bob.page)).toEqual(['before']);

    await bob.context.setOffline(false);
    await expect
      .poll(() => bob.page.locator('[data-connection]').getAttribute('data-connection'))
      .toBe('live');
    await expect.poll(() => messageTexts(bob.page)).toEqual(['before', ...sent]);
    await send(bob, 'back');
    await expect.poll(() => messageTexts(ann.page)).toEqual(['before', ...sent, 'back']);
    await Promise.all([ann.context.close(), bob.context.close()]);
  });

  it('runs a group of three: created with two members, roles, a rename and a removal, live for everyone', async () => {
    const ann = await signUp(browser, app.url, 'Ann');
    const bob = await signUp(browser, app.url, 'Bob');
    const cy = await signUp(browser, app.url, 'Cy');

    await ann.page.getByRole('button', { name: 'New group' }).click();
    await ann.page.getByLabel('Group name').fill('Crew');
    for (const other of [bob, cy]) {
      await ann.page.getByLabel('Add people').fill(other.username);
      await ann.page.getByRole('button', { name: `Add ${other.displayName}` }).click();
    }
    await ann.page.getByRole('button', { name: 'Create group' }).click();
    await ann.page.getByRole('heading', { name: 'Crew' }).waitFor();
    await send(ann, 'Welcome to the crew');

    await openFromList(bob, 'Crew');
    await openFromList(cy, 'Crew');
    for (const person of [bob, cy]) {
      await expect.poll(() => messageTexts(person.page)).toEqual(['Welcome to the crew']);
    }

    // The owner makes Bob an admin; Bob, now allowed, renames the group for everyone.
    await ann.page.getByRole('button', { name: 'Group details' }).click();
    await ann.page.getByLabel('Role of Bob').selectOption('admin');
    await bob.page.getByRole('button', { name: 'Group details' }).click();
    await bob.page.getByLabel('Group name').fill('Crew two');
    await bob.page.getByRole('button', { name: 'Rename' }).click();
    for (const person of [ann, bob, cy])
      await person.page.getByRole('heading', { name: 'Crew two' }).waitFor();

    // Ann removes Cy: Cy loses the group; the others see the notice and talk on without Cy.
    await ann.page.getByRole('button', { name: 'Remove Cy' }).click();
    await cy.page.getByText('This conversation is not yours any more').waitFor();
    await cy.page
      .getByRole('navigation', { name: 'Conversations' })
      .getByRole('button', { name: 'Crew two' })
      .waitFor({ state: 'detached' });
    await bob.page.getByRole('log').getByText(`${ann.username} removed ${cy.username}`).waitFor();
    await bob.page.getByText('2 members', { exact: true }).first().waitFor();
    await send(bob, 'Just the two of us now');
    await expect
      .poll(() => messageTexts(ann.page))
      .toEqual(['Welcome to the crew', 'Just the two of us now']);
    await screenshot(ann.page, 'group');
    expect(await cy.page.getByText('Just the two of us now').count()).toBe(0);
    await Promise.all([ann.context.close(), bob.context.close(), cy.context.close()]);
  });

  it('pages back through a long history at phone width, and shows edits and deletions to the other side', async () => {
    // Seventy messages from someone using the SDK, then the app on a phone-sized screen.
    const dee = await sdkUser(app, sdkClients);
    await dee.api.user.update.mutate({ displayName: 'Dee' });
    const eve = await signUp(browser, app.url, 'Eve', 390);
    const found = await dee.api.user.list.query({ query: eve.username });
    const eveId = found.items[0]?.id;
    if (!eveId) throw new Error('Eve not found');
    const room = await dee.api.conversation.openDirect.mutate({ userId: eveId });
    for (let i = 1; i <= 70; i += 1) {
      await dee.api.message.send.mutate({ conversationId: room.id, content: `history ${i}` });
    }
    await openFromList(eve, 'Dee');
    const log = eve.page.getByRole('log', { name: 'Messages' });
    // The newest page first; scrolling to the top brings the older ones, in order, without repeats.
    await log.getByText('history 70', { exact: true }).waitFor();
    expect(await log.getByText('history 1', { exact: true }).count()).toBe(0);
    await expect
      .poll(
        async () => {
          await log.evaluate((element) => {
            (element as unknown as { scrollTop: number }).scrollTop = 0;
          });
          return messageTexts(eve.page);
        },
        { timeout: 20_000 },
      )
      .toEqual(Array.from({ length: 70 }, (_, i) => `history ${i + 1}`));
    await log.getByText('Beginning of the conversation').waitFor();

    // Dee edits one message and deletes another: Eve sees the new text and a tombstone.
    const page = await dee.api.message.list.query({ conversationId: room.id, limit: 2 });
    const [latest, before] = page.items;
    if (!latest || !before) throw new Error('expected two messages');
    await dee.api.message.edit.mutate({ id: latest.id, content: 'history 70, corrected' });
    await dee.api.message.delete.mutate({ id: before.id });
    await log.getByText('history 70, corrected').waitFor();
    await log.getByText('This message was deleted').waitFor();
    expect(await log.getByText('history 69', { exact: true }).count()).toBe(0);
    await send(eve, 'Got it all');
    await log.getByText('Got it all').waitFor();
    await screenshot(eve.page, 'phone');
    await eve.context.close();
  });
});
