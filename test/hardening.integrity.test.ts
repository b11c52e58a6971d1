import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import type { Message } from '../server/src/contracts/schemas.js';
import type { WireMessage } from '../server/src/messages/store.js';
import { signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { deadLetters, isDrained } from './support/queues.js';
import { expectCode } from './support/errors.js';
import { tap } from './support/events.js';

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ worker: { blockMs: 50 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

type Row = { id: string; seq: number; content: string; deleted_at: Date | null };

async function rows(target: App, conversationId: string): Promise<Row[]> {
  const result = await target.services.db.execute(
    sql`select id, seq::int as seq, content, deleted_at from messages where conversation_id = ${conversationId} order by seq`,
  );
  return (Array.isArray(result) ? result : (result as { rows: Row[] }).rows) as Row[];
}

/** Waits until the worker has written (or set aside for good) everything in the stream. */
async function drained(target: App, timeoutMs = 20_000): Promise<void> {
  await expect.poll(() => isDrained(target.services.broker), { timeout: timeoutMs, interval: 25 }).toBe(true);
}

/** A message as the API would append it, for entries written to the stream directly. */
function wire(
  conversationId: string,
  sender: { id: string; username: string },
  seq: number,
  content: string,
) {
  const message: WireMessage = {
    id: randomUUID(),
    conversationId,
    seq,
    senderId: sender.id,
    senderUsername: sender.username,
    type: 'text',
    content,
    clientMessageId: null,
    sentAt: Date.now(),
    editedAt: null,
    deletedAt: null,
  };
  return message;
}

const LONE = 'lone \udc00 surrogate';

describe(`text the API accepts (${engineLabel})`, () => {
  it('refuses a lone surrogate or NUL in every kind of string input with a field-level BAD_REQUEST', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const group = await al.api.conversation.createGroup.mutate({ name: 'team', memberIds: [bo.user.id] });
    const sent = await al.api.message.send.mutate({ conversationId: id, content: 'original' });
    const fieldOf = async (call: Promise<unknown>, field: string) => {
      const error = await expectCode(call, 'BAD_REQUEST');
      expect(error.data.zodError, `${field}: ${error.message}`).toMatchObject({
        fieldErrors: { [field]: [expect.any(String)] },
      });
    };
    for (const bad of [LONE, 'high \ud800', 'nul \u0000 byte']) {
      await fieldOf(al.api.message.send.mutate({ conversationId: id, content: bad }), 'content');
      await fieldOf(al.api.message.edit.mutate({ id: sent.id, content: bad }), 'content');
      await fieldOf(al.api.user.update.mutate({ displayName: bad }), 'displayName');
      await fieldOf(al.api.conversation.createGroup.mutate({ name: bad, memberIds: [] }), 'name');
      await fieldOf(al.api.conversation.rename.mutate({ id: group.id, name: bad }), 'name');
      await fieldOf(al.api.user.list.query({ query: bad }), 'query');
      await fieldOf(al.api.message.list.query({ conversationId: id, cursor: bad }), 'cursor');
      await fieldOf(
        al.api.user.update.mutate({ password: 'new password 1', currentPassword: bad }),
        'currentPassword',
      );
      await fieldOf(al.api.user.delete.mutate({ password: bad }), 'password');
      await fieldOf(al.api.auth.refresh.mutate({ refreshToken: bad }), 'refreshToken');
      await fieldOf(al.api.auth.logout.mutate({ refreshToken: bad }), 'refreshToken');
      await fieldOf(al.api.auth.login.mutate({ username: bad, password: 'whatever1' }), 'username');
      await fieldOf(al.api.auth.login.mutate({ username: al.user.username, password: bad }), 'password');
      const fresh = `fresh_${randomUUID().slice(0, 8)}`;
      await fieldOf(
        al.api.auth.register.mutate({
          email: `${fresh}@example.test`,
          username: fresh,
          password: 'correct horse battery',
          displayName: bad,
        }),
        'displayName',
      );
      await fieldOf(
        al.api.auth.register.mutate({
          email: `${fresh}@example.test`,
          username: fresh,
          password: `pw ${bad}`,
        }),
        'password',
      );
      await fieldOf(
        al.api.auth.register.mutate({
          email: `${fresh}@example.test`,
          username: bad,
          password: 'long enough',
        }),
        'username',
      );
    }
    // Nothing of it was accepted: no new message, the original unedited, the names unchanged.
    const history = await al.api.message.list.query({ conversationId: id });
    expect(history.items.map((m) => [m.id, m.content, m.editedAt])).toEqual([[sent.id, 'original', null]]);
    expect((await al.api.auth.me.query()).displayName).toBe(al.user.username);
    expect((await al.api.conversation.byId.query({ id: group.id })).name).toBe('team');
    await drained(app);
    expect((await rows(app, id)).map((r) => r.content)).toEqual(['original']);
    expect(await deadLetters(app.services.broker)).toEqual([]);
    await Promise.all([al.close(), bo.close()]);
  });

  it('refuses an unstorable string in any input, even one no schema checks (the raw-input check)', async () => {
    const al = await signUp(app.url);
    // `events` takes a plain string, and an unknown key is dropped by every schema: both are
    // refused all the same, with the field named.
    const refused = new Promise<void>((resolve, reject) => {
      const subscription = al.api.events.subscribe(
        { lastEventId: LONE },
        {
          onStarted: () => reject(new Error('the subscription started')),
          onError: (error) => {
            subscription.unsubscribe();
            reject(error);
          },
          onComplete: resolve,
        },
      );
    });
    await expectCode(refused, 'BAD_REQUEST');
    const error = await expectCode(
      al.api.conversation.byId.query({ id: randomUUID(), ['x\u0000']: 1 } as unknown as { id: string }),
      'BAD_REQUEST',
    );
    expect(error.data.zodError).toMatchObject({ fieldErrors: { 'x\u0000': [expect.any(String)] } });
    await al.close();
  });

  it('refuses bidi controls, zero-width and C0/C1 control characters in names and messages', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const group = await al.api.conversation.createGroup.mutate({ name: 'team', memberIds: [bo.user.id] });
    const hiding = {
      'right-to-left override': 'evil\u202Etxt.exe',
      'left-to-right embedding': 'a\u202Ab',
      'first-strong isolate': 'a\u2068b\u2069',
      'zero-width space': 'ad\u200Bmin',
      'word joiner': 'ad\u2060min',
      'byte order mark': 'ad\uFEFFmin',
      'lone zero-width joiner': '\u200Dadmin',
      'zero-width non-joiner beside a space': 'ad \u200Cmin',
      'C1 control (NEL)': 'a\u0085b',
      'C1 control (CSI)': 'a\u009Bb',
      'C0 control (ESC)': 'a\u001Bb',
      DEL: 'a\u007Fb',
    };
    for (const [what, text] of Object.entries(hiding)) {
      for (const [field, call] of [
        ['content', al.api.message.send.mutate({ conversationId: id, content: text })],
        ['displayName', al.api.user.update.mutate({ displayName: text })],
        ['name', al.api.conversation.createGroup.mutate({ name: text, memberIds: [] })],
        ['name', al.api.conversation.rename.mutate({ id: group.id, name: text })],
      ] as const) {
        const error = await expectCode(call, 'BAD_REQUEST');
        expect(error.data.zodError, `${what} in ${field}`).toMatchObject({
          fieldErrors: { [field]: [expect.any(String)] },
        });
      }
    }
    // A name is one line; a message may hold newlines and tabs.
    await expectCode(al.api.user.update.mutate({ displayName: 'two\nlines' }), 'BAD_REQUEST');
    // What real text needs stays: joiners inside emoji and words, marks, right-to-left script.
    const family =
      'family \u{1F468}\u200D\u{1F469}\u200D\u{1F467} \u{1F3F3}\uFE0F\u200D\u{1F308} \u{1F9D1}\u{1F3FD}\u200D\u{1F4BB}';
    const persian = '\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645';
    const devanagari = '\u0915\u094D\u200D\u0937';
    for (const text of [family, persian, devanagari, 'שלום', 'e\u0301']) {
      await expect(al.api.user.update.mutate({ displayName: text })).resolves.toMatchObject({
        displayName: text,
      });
      await expect(al.api.conversation.rename.mutate({ id: group.id, name: text })).resolves.toMatchObject({
        name: text,
      });
    }
    const multiline = `${family}\n\t${persian}`;
    const message = await al.api.message.send.mutate({ conversationId: id, content: multiline });
    expect(message.content).toBe(multiline);
    await Promise.all([al.close(), bo.close()]);
  });

  it("refuses a display name that reads as another user's username, at register and on update", async () => {
    const suffix = randomUUID().slice(0, 6);
    const [al, bo] = await Promise.all([signUp(app.url, `al_${suffix}`), signUp(app.url, `bo_${suffix}`)]);
    const lookalikes = [
      `BO_${suffix}`.toUpperCase(),
      // Fullwidth letters, which NFKC folds to ASCII.
      `ｂｏ＿${suffix}`.replace(/[a-z0-9]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)),
      ` bo_${suffix} `,
      `b\u200Do_${suffix}`,
    ];
    for (const name of lookalikes) {
      const error = await expectCode(al.api.user.update.mutate({ displayName: name }), 'CONFLICT');
      expect(error.data.zodError, name).toMatchObject({ fieldErrors: { displayName: [expect.any(String)] } });
    }
    const fresh = `cy_${suffix}`;
    const error = await expectCode(
      al.api.auth.register.mutate({
        email: `${fresh}@example.test`,
        username: fresh,
        password: 'correct horse battery',
        displayName: `Bo_${suffix}`,
      }),
      'CONFLICT',
    );
    expect(error.data.zodError).toMatchObject({ fieldErrors: { displayName: [expect.any(String)] } });
    // One's own username, in any case, is fine: it is the default display name.
    await expect(al.api.user.update.mutate({ displayName: `AL_${suffix}` })).resolves.toMatchObject({
      displayName: `AL_${suffix}`,
    });
    const cy = await al.api.auth.register.mutate({
      email: `${fresh}@example.test`,
      username: fresh,
      password: 'correct horse battery',
      displayName: fresh.toUpperCase(),
    });
    expect(cy.user.displayName).toBe(fresh.toUpperCase());
    // A deleted account's name is free again, as a username and so as a display name.
    await bo.api.user.delete.mutate({ password: bo.password });
    await expect(al.api.user.update.mutate({ displayName: `bo_${suffix}` })).resolves.toBeTruthy();
    await Promise.all([al.close(), bo.close()]);
  });
});

describe(`clientMessageId (${engineLabel})`, () => {
  it('is scoped to its conversation: the same id elsewhere is a new message, a retry in place is the first', async () => {
    const [al, bo, cy] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const group = await al.api.conversation.createGroup.mutate({ name: 'old', memberIds: [bo.user.id] });
    const direct = await al.api.conversation.openDirect.mutate({ userId: cy.user.id });
    const inGroup = await al.api.message.send.mutate({
      conversationId: group.id,
      content: 'in the group',
      clientMessageId: 'same-1',
    });
    await al.api.conversation.leave.mutate({ id: group.id });
    // The sender left the group: the same id in another conversation is that conversation's.
    const inDirect = await al.api.message.send.mutate({
      conversationId: direct.id,
      content: 'in the direct conversation',
      clientMessageId: 'same-1',
    });
    expect(inDirect.id).not.toBe(inGroup.id);
    expect(inDirect).toMatchObject({
      conversationId: direct.id,
      content: 'in the direct conversation',
      seq: 1,
    });
    const retry = await al.api.message.send.mutate({
      conversationId: direct.id,
      content: 'retried',
      clientMessageId: 'same-1',
    });
    expect(retry).toMatchObject({ id: inDirect.id, content: 'in the direct conversation' });
    // The same after the worker wrote them and the broker's claims expired (PostgreSQL's key).
    await drained(app);
    await app.services.broker.inspect.expireClaim(al.user.id, group.id, 'same-1');
    await app.services.broker.inspect.expireClaim(al.user.id, direct.id, 'same-1');
    const third = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const [again, elsewhere] = await Promise.all([
      al.api.message.send.mutate({ conversationId: direct.id, content: 'again', clientMessageId: 'same-1' }),
      al.api.message.send.mutate({
        conversationId: third.id,
        content: 'elsewhere',
        clientMessageId: 'same-1',
      }),
    ]);
    expect(again.id).toBe(inDirect.id);
    expect(elsewhere).toMatchObject({ conversationId: third.id, content: 'elsewhere' });
    expect([inGroup.id, inDirect.id]).not.toContain(elsewhere.id);
    await drained(app);
    expect((await rows(app, third.id)).map((r) => r.id)).toEqual([elsewhere.id]);
    expect((await rows(app, direct.id)).map((r) => r.id)).toEqual([inDirect.id]);
    await Promise.all([al.close(), bo.close(), cy.close()]);
  });
});

describe(`deletion (${engineLabel})`, () => {
  it('an edit racing a moderator’s delete never brings the message back', async () => {
    const [al, mod, cy] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const { id } = await mod.api.conversation.createGroup.mutate({
      name: 'moderated',
      memberIds: [al.user.id, cy.user.id],
    });
    const watcher = await tap(cy, app, cy.user.id);
    const sent: Message[] = [];
    for (let i = 0; i < 40; i++) {
      sent.push(await al.api.message.send.mutate({ conversationId: id, content: `message ${i}` }));
    }
    const outcomes: PromiseSettledResult<unknown>[] = [];
    // Rounds of races, each edit and delete sent together, half of them before the worker wrote
    // the message and half after.
    for (const [index, round] of [sent.slice(0, 20), sent.slice(20)].entries()) {
      if (index === 1) await drained(app);
      const settled = await Promise.allSettled(
        round.flatMap((message) => [
          al.api.message.edit.mutate({ id: message.id, content: `edited ${message.content}` }),
          mod.api.message.delete.mutate({ id: message.id }),
        ]),
      );
      outcomes.push(...settled);
    }
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        expect((outcome.reason as { data?: { code?: string } }).data?.code).toBe('FORBIDDEN');
      }
    }
    const deleted = (message: Pick<Message, 'content' | 'deletedAt'>) => [
      message.content,
      message.deletedAt !== null,
    ];
    const check = async () => {
      for (const message of sent) {
        const now = await cy.api.message.byId.query({ id: message.id });
        expect(deleted(now), message.content).toEqual(['', true]);
      }
      const history = await cy.api.message.list.query({ conversationId: id, limit: 100 });
      for (const item of history.items.filter((m) => m.type === 'text'))
        expect(deleted(item)).toEqual(['', true]);
    };
    await check();
    await drained(app);
    await check();
    const ids = new Set(sent.map((m) => m.id));
    for (const row of (await rows(app, id)).filter((r) => ids.has(r.id))) {
      expect([row.content, row.deleted_at !== null]).toEqual(['', true]);
    }
    // A sentinel after everything: whatever the races published has arrived before it.
    const sentinel = await mod.api.message.send.mutate({ conversationId: id, content: 'sentinel' });
    await watcher.until((received) =>
      received.some((r) => r.event.type === 'message.created' && r.event.message.id === sentinel.id),
    );
    const events = watcher.received.map((r) => r.event);
    for (const message of sent) {
      const deletedAt = events.findIndex((e) => e.type === 'message.deleted' && e.messageId === message.id);
      expect(deletedAt, message.content).toBeGreaterThanOrEqual(0);
      const updatedAfter = events
        .slice(deletedAt)
        .filter((e) => e.type === 'message.updated' && e.message.id === message.id);
      expect(updatedAfter, message.content).toEqual([]);
    }
    await watcher.stop();
    await Promise.all([al.close(), mod.close(), cy.close()]);
  });

  it('the worker never clears a deletion, whatever order the changes arrive in', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const sender = { id: al.user.id, username: al.user.username };
    const broker = app.services.broker;
    const change = (message: WireMessage) =>
      broker.inspect.addQueueEntry({ op: 'update', m: JSON.stringify(message) });
    // An edit that comes after the tombstone, in a later batch and in the same batch.
    const apart = wire(id, sender, 1, 'apart');
    await change(apart);
    await change({ ...apart, content: '', deletedAt: Date.now() });
    await drained(app);
    await change({ ...apart, content: 'edited after the deletion', editedAt: Date.now() });
    const together = wire(id, sender, 2, 'together');
    await change({ ...together, content: '', deletedAt: Date.now() });
    await change({ ...together, content: 'edited after the deletion', editedAt: Date.now() });
    await drained(app);
    expect((await rows(app, id)).map((r) => [r.id, r.content, r.deleted_at !== null])).toEqual([
      [apart.id, '', true],
      [together.id, '', true],
    ]);
    await Promise.all([al.close(), bo.close()]);
  });
});

describe(`persistence worker (${engineLabel})`, () => {
  it('writes the messages around entries PostgreSQL refuses at once, and sets those aside alone', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const broker = target.services.broker;
      const sender = { id: al.user.id, username: al.user.username };
      const poison: string[] = [];
      const good: string[] = [];
      const burst = async (label: string) => {
        const sent = await Promise.all(
          Array.from({ length: 25 }, (_, i) =>
            al.api.message.send.mutate({ conversationId: id, content: `${label} message ${i}` }),
          ),
        );
        good.push(...sent.map((m) => m.id));
      };
      const deadLettered = async () => (await deadLetters(broker)).map((entry) => entry.fields.entry);
      // Rounds of an entry PostgreSQL refuses (a lone surrogate, which its JSON parser refuses)
      // among bursts of good messages, as a user sending a few such messages a second would.
      for (let round = 0; round < 6; round++) {
        const bad = wire(id, sender, 10_000 + round, LONE);
        const appended = { id: await broker.inspect.addQueueEntry({ op: 'create', m: JSON.stringify(bad) }) };
        poison.push(appended.id);
        // Likely in the refused entry's batch: written all the same.
        await burst(`round ${round} alongside`);
        // Once the worker has read the refused entry (and found it refused)...
        await expect
          .poll(async () => (await broker.queues[0].pending(10_000)).map((p) => p.id), {
            timeout: 30_000,
            interval: 10,
          })
          .toContain(appended.id);
        // ...messages sent after it are written while it still waits for its retries (about 4 s
        // in all), not behind them.
        await burst(`round ${round} after`);
        await expect
          .poll(async () => (await rows(target, id)).length, { timeout: 30_000, interval: 10 })
          .toBe(good.length);
        expect(await deadLettered()).not.toContain(appended.id);
      }
      expect((await rows(target, id)).map((r) => r.id).sort()).toEqual([...good].sort());
      // The refused entries were retried alone and then set aside, with PostgreSQL's reason.
      await drained(target, 30_000);
      const dead = await deadLetters(broker);
      expect((await deadLettered()).sort()).toEqual([...poison].sort());
      for (const entry of dead) expect(entry.fields.reason).toMatch(/json|surrogate|unicode/i);
      expect(target.workers.reduce((sum, worker) => sum + worker.stats.deadLettered, 0)).toBe(poison.length);
      const retried = local.logLines.filter((line) => line.includes('will retry it alone'));
      for (const entryId of poison) expect(retried.some((line) => line.includes(entryId))).toBe(true);
      await Promise.all([al.close(), bo.close()]);
    } finally {
      await local.cleanup();
    }
  });

  it('sets nothing aside while PostgreSQL refuses every write (read-only after a failover)', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 2 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const readOnly = async (on: boolean) => {
        if (local.databaseName) {
          await local.admin(
            `alter database "${local.databaseName}" set default_transaction_read_only = ${on ? 'on' : 'off'}`,
          );
          // Every connection starts again, with the new default.
          await local.admin(
            `select pg_terminate_backend(pid) from pg_stat_activity where datname = '${local.databaseName}' and pid <> pg_backend_pid()`,
          );
        } else {
          // The embedded database has one session, which every query shares.
          await target.services.db.execute(
            sql.raw(`set default_transaction_read_only = ${on ? 'on' : 'off'}`),
          );
        }
      };
      await readOnly(true);
      const paused = () => local.logLines.filter((line) => line.includes('persistence paused')).length;
      const before = paused();
      // On the embedded engines a send is acknowledged only once written, so this one waits
      // for the database (and may time out, as any send can): its retry is answered with it.
      const message = {
        conversationId: id,
        content: 'kept through the failover',
        clientMessageId: randomUUID(),
      };
      // A first attempt, as the SDK sends it: not looked up in PostgreSQL first, so on Redis it
      // is queued whatever the state of the connections whose backends were just ended (a
      // lookup could meet one of them before it is gone, fail, and leave nothing to write).
      const sending = al.api.message.send
        .mutate({ ...message, firstAttempt: true })
        .catch((error: unknown) => error);
      // Refused again and again, each time well past its two deliveries: never an entry's fault.
      const setAside = () => deadLetters(broker(target));
      await expect
        .poll(async () => paused() >= before + 4 || (await setAside()).length > 0, {
          timeout: 30_000,
          interval: 20,
        })
        .toBe(true);
      expect(await setAside()).toEqual([]);
      await readOnly(false);
      const first = await sending;
      if (first instanceof Error) await expectCode(Promise.reject(first), 'SERVICE_UNAVAILABLE');
      const sent = first instanceof Error ? await al.api.message.send.mutate(message) : (first as Message);
      await drained(target, 30_000);
      expect((await rows(target, id)).map((r) => r.id)).toEqual([sent.id]);
      expect(await setAside()).toEqual([]);
      await Promise.all([al.close(), bo.close()]);
    } finally {
      await local.cleanup();
    }
  });
});

const broker = (target: App) => target.services.broker;
