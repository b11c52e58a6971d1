import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const webDist = path.join(repoRoot, 'web', 'dist');
export const screenshots = path.join(repoRoot, 'test', 'web', 'screenshots');

/** Debian's Chromium; `.ci/run` installs it with apt when it is missing. Nothing is downloaded. */
const CHROMIUM = '/usr/bin/chromium';

/**
 * Starts headless Chromium. Playwright gives every launch a new, empty user-data-dir of its own
 * (a browser from `launch` holds several contexts, one per user here, which a persistent
 * profile could not); the flags keep Chromium off the network, which this machine does not have.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  if (!existsSync(path.join(webDist, 'index.html')))
    throw new Error('web/dist is not built: run `npm run test:web` (it builds the app first)');
  await mkdir(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export interface Person {
  context: BrowserContext;
  page: Page;
  username: string;
  displayName: string;
}

let people = 0;

/** A new browser context (its own storage) with the app open and a new account signed in. */
export async function signUp(
  browser: Browser,
  url: string,
  displayName: string,
  width = 1100,
): Promise<Person> {
  people += 1;
  const username = `${displayName.toLowerCase()}_${people}_${Date.now().toString(36)}`;
  const context = await browser.newContext({ viewport: { width, height: 720 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`[${displayName}] page error:`, error));
  await page.goto(url);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill(`${username}@example.com`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Display name').fill(displayName);
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
  return { context, page, username, displayName };
}

/** Finds `other` with the search box and opens the direct conversation with them. */
export async function openDirect(person: Person, other: Person): Promise<void> {
  await person.page.getByLabel('Find people').fill(other.username);
  await person.page.getByRole('button', { name: `Message ${other.displayName}` }).click();
  await person.page.getByRole('heading', { name: other.displayName }).waitFor();
}

/** Opens a conversation from the list by its title. */
export async function openFromList(person: Person, title: string): Promise<void> {
  await person.page
    .getByRole('navigation', { name: 'Conversations' })
    .getByRole('button', { name: title })
    .click();
  await person.page.getByRole('heading', { name: title }).waitFor();
}

export async function send(person: Person, text: string): Promise<void> {
  const composer = person.page.getByLabel('Message', { exact: true });
  await composer.fill(text);
  await composer.press('Enter');
}

/** The text of every chat message shown (not system notices), oldest first. */
export function messageTexts(page: Page): Promise<string[]> {
  return page.locator('[role="log"] li.message .body').allTextContents();
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(screenshots, `${name}.png`) });
}
