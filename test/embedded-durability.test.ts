import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ParleyProcess, runParley } from './support/cli.js';
import { type TestClient, connect, signUp } from './support/client.js';
import { expectCode } from './support/errors.js';

// These run `parley` itself on the embedded engines (PGlite in DATA_DIR, the in-process
// broker), whatever engines the rest of the suite uses: they are about that mode.

/** A fixed secret, so access tokens stay valid across a restart. */
const jwtSecret = randomBytes(32).toString('hex');

const scratch = mkdtempSync(join(tmpdir(), 'parley-embedded-'));
const template = join(scratch, 'template');
let dirs = 0;
/** A data directory of its own, migrated already: creating one takes PGlite several seconds. */
const dataDir = () => {
  const dir = join(scratch, `data-${++dirs}`);
  cpSync(template, dir, { recursive: true });
  return dir;
};

beforeAll(async () => {
  const migrated = await runParley(['migrate'], embedded(template), 60_000);
  expect(migrated.code, migrated.stderr).toBe(0);
}, 60_000);
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** No DATABASE_URL and no REDIS_URL: the embedded engines. */
const embedded = (dir: string, extra: Record<string, string> = {}) => ({
  NODE_ENV: 'test',
  JWT_SECRET: jwtSecret,
  DATA_DIR: dir,
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_FORMAT: 'json',
  LOG_LEVEL: 'info',
  ...extra,
});

interface Sent {
  id: string;
  senderId: string;
  seq: number;
  clientMessageId: string;
  content: string;
}

/** Every message of a conversation, oldest first, page by page. */
async function history(client: TestClient, conversationId: string) {
  const items: { id: string; seq: number }[] = [];
  let cursor: string | null = null;
  do {
    const page = await client.api.message.list.query({ conversationId, afterSeq: 0, limit: 100, cursor });
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

describe('the embedded engines across a crash', () => {
  it(
    'keeps every acknowledged send once with its seq, hands out no seq twice and refuses a logged-out token after a SIGKILL mid-burst',
    { timeout: 90_000 },
    async () => {
      const dir = dataDir();
      const first = await ParleyProcess.start(['start'], embedded(dir));
      const clients: TestClient[] = [];
      let second: ParleyProcess | null = null;
      try {
        const [al, bo, cy] = await Promise.all([signUp(first.url), signUp(first.url), signUp(first.url)]);
        clients.push(al, bo, cy);
        const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });

        // A second session of al's, logged out; and cy logged out everywhere.
        const anonymous = connect(first.url);
        const other = await anonymous.api.auth.login.mutate({
          username: al.user.username,
          password: al.password,
        });
        await anonymous.close();
        const loggedOut = connect(first.url, other.tokens.accessToken);
        clients.push(loggedOut);
        await expect(loggedOut.api.auth.me.query()).resolves.toMatchObject({ id: al.user.id });
        await loggedOut.api.auth.logout.mutate({ refreshToken: other.tokens.refreshToken });
        await cy.api.auth.logout.mutate({ everywhere: true });
        await expectCode(loggedOut.api.auth.me.query(), 'UNAUTHORIZED');
        await expectCode(cy.api.auth.me.query(), 'UNAUTHORIZED');

        // Eight senders keep sends in flight; the process is killed once 60 have resolved.
        const acknowledged: Sent[] = [];
        let reached: () => void = () => undefined;
        const enough = new Promise<void>((resolve) => (reached = resolve));
        let crashed = false;
        const senders = Array.from({ length: 8 }, async (_, k) => {
          const sender = k % 2 === 0 ? al : bo;
          for (let i = 0; !crashed; i++) {
            const clientMessageId = `burst-${k}-${i}`;
            const content = `message ${k}.${i}`;
            try {
              const sent = await sender.api.message.send.mutate({
                conversationId: id,
                content,
                clientMessageId,
              });
              acknowledged.push({
                id: sent.id,
                senderId: sent.senderId,
                seq: sent.seq,
                clientMessageId,
                content,
              });
              if (acknowledged.length >= 60) reached();
            } catch {
              return; // the server is gone
            }
          }
        });
        await enough;
        await first.stop('SIGKILL');
        crashed = true;
        await Promise.all(senders);
        expect(acknowledged.length).toBeGreaterThanOrEqual(60);

        second = await ParleyProcess.start(['start'], embedded(dir));
        const al2 = connect(second.url, al.tokens.accessToken);
        clients.push(al2);
        const stored = await history(al2, id);

        // Every acknowledged send is there once, with the seq it was given.
        const byId = new Map(stored.map((message) => [message.id, message]));
        const missing = acknowledged.filter((sent) => byId.get(sent.id)?.seq !== sent.seq);
        expect(missing, `${missing.length} of ${acknowledged.length} acknowledged sends lost`).toEqual([]);
        expect(byId.size).toBe(stored.length);
        // No seq twice, whether the send was acknowledged or not.
        const seqs = stored.map((message) => message.seq);
        expect(new Set(seqs).size).toBe(seqs.length);

        // New sends get fresh seqs, above every one handed out and acknowledged before.
        const highest = Math.max(...acknowledged.map((sent) => sent.seq));
        const fresh = await al2.api.message.send.mutate({ conversationId: id, content: 'after the crash' });
        expect(fresh.seq).toBeGreaterThan(highest);
        expect(seqs).not.toContain(fresh.seq);

        // A retry of al's last acknowledged send finds no claim in the fresh broker and is
        // answered from the database: the same message, not a second one.
        const last = acknowledged.filter((sent) => sent.senderId === al.user.id).at(-1);
        expect(last).toBeDefined();
        const retried = await al2.api.message.send.mutate({
          conversationId: id,
          content: last?.content ?? '',
          clientMessageId: last?.clientMessageId,
        });
        expect(retried).toMatchObject({ id: last?.id, seq: last?.seq });
        expect(await history(al2, id)).toHaveLength(stored.length + 1);

        // Logouts from before the crash still hold; a token of a live session still works.
        for (const token of [other.tokens.accessToken, cy.tokens.accessToken]) {
          const refused = connect(second.url, token);
          clients.push(refused);
          await expectCode(refused.api.auth.me.query(), 'UNAUTHORIZED');
        }
        await expect(al2.api.auth.me.query()).resolves.toMatchObject({ id: al.user.id });
      } finally {
        await Promise.all(clients.map((client) => client.close()));
        await first.stop('SIGKILL');
        if (second) expect(await second.stop('SIGTERM')).toBe(0);
      }
    },
  );
});

describe('the embedded data directory', () => {
  it(
    'is opened by one process at a time; a SIGKILLed holder does not block a restart',
    { timeout: 90_000 },
    async () => {
      const dir = dataDir();
      const first = await ParleyProcess.start(['start'], embedded(dir));
      let third: ParleyProcess | null = null;
      try {
        const al = await signUp(first.url);
        await al.close();
        // A second server, and a migration, on the same directory: both refused, naming it and
        // the process that holds it.
        for (const args of [['start'], ['migrate']]) {
          const refused = await runParley(args, embedded(dir), 30_000);
          expect(refused.code, refused.stderr).toBe(75);
          expect(refused.stderr).toContain(`DATA_DIR ${resolve(dir)} is in use`);
          expect(refused.stderr).toContain(`pid ${first.pid}`);
        }
        await expect(fetch(`${first.url}/healthz`).then((response) => response.status)).resolves.toBe(200);

        await first.stop('SIGKILL');
        third = await ParleyProcess.start(['start'], embedded(dir));
        // The same database, whole: the account made before the crash signs in.
        const back = connect(third.url);
        await expect(
          back.api.auth.login.mutate({ username: al.user.username, password: al.password }),
        ).resolves.toMatchObject({ user: { id: al.user.id } });
        await back.close();
      } finally {
        await first.stop('SIGKILL');
        if (third) expect(await third.stop('SIGTERM')).toBe(0);
      }
      // Stopped cleanly, it leaves the directory free.
      const migrated = await runParley(['migrate'], embedded(dir), 30_000);
      expect(migrated.code, migrated.stderr).toBe(0);
    },
  );

  it('refuses to run without its own persistence worker', async () => {
    const dir = join(scratch, 'never-opened');
    const cases: [string[], Record<string, string>, string][] = [
      [['start'], { PARLEY_WORKER: 'off' }, 'PARLEY_WORKER'],
      [['start', '--no-worker'], {}, '--no-worker'],
      [['worker'], {}, 'parley worker'],
    ];
    for (const [args, extra, named] of cases) {
      const result = await runParley(args, embedded(dir, extra), 20_000);
      expect(result.code, result.stderr).toBe(78);
      expect(result.stderr).toContain(`${named}: without REDIS_URL the broker is in-process`);
    }
  });
});
