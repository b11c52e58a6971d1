import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { App } from '../server/src/app.js';
import type { AppRouter } from '../server/src/routers/_app.js';
import { pendingKey } from '../server/src/broker/keyspace.js';
import { toWire } from '../server/src/messages/store.js';
import { PersistenceWorker } from '../server/src/worker/persist.js';
import { connect, signUp, wsUrl } from './support/client.js';
import {
  TestDeployment,
  engineLabel,
  engines,
  onRealEngines,
  openRedis,
  testPartitionFor,
} from './support/env.js';
import { deadLetters, isDrained, queueOf } from './support/queues.js';
import { expectCode } from './support/errors.js';
import { clearOfWindowEnd } from './support/windows.js';

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ worker: { blockMs: 100 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

type Row = { id: string; seq: number; content: string; deleted_at: Date | null; edited_at: Date | null };

async function rows(target: App, conversationId: string): Promise<Row[]> {
  const result = await target.services.db.execute(
    sql`select id, seq::int as seq, content, deleted_at, edited_at from messages where conversation_id = ${conversationId} order by seq`,
  );
  return (Array.isArray(result) ? result : (result as { rows: Row[] }).rows) as Row[];
}

/** A stored message's times, as milliseconds since the epoch. */
async function storedTimes(target: App, id: string): Promise<Record<string, number | null>> {
  const result = await target.services.db.execute(
    sql`select (extract(epoch from sent_at) * 1000)::float8 as sent_at,
               (extract(epoch from edited_at) * 1000)::float8 as edited_at,
               (extract(epoch from deleted_at) * 1000)::float8 as deleted_at
        from messages where id = ${id}`,
  );
  const [row] = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as Record<
    string,
    number | string | null
  >[];
  return Object.fromEntries(Object.entries(row ?? {}).map(([k, v]) => [k, v === null ? null : Number(v)]));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An app of `local` running without its worker, and a direct conversation of two of its users. */
async function apiOnlyConversation(local: TestDeployment) {
  const apiOnly = await local.start({ runWorker: false });
  const [al, bo] = await Promise.all([signUp(apiOnly.url), signUp(apiOnly.url)]);
  const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
  return { apiOnly, al, bo, id };
}

/** Waits until the worker has written everything in the stream. */
async function drained(target: App, timeoutMs = 15_000): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await isDrained(target.services.broker))) throw new Error('worker did not drain');
    },
    { timeout: timeoutMs, interval: 25 },
  );
}

describe(`conversations (${engineLabel})`, () => {
  it('opens one direct conversation per pair, in either direction and under concurrency', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const opened = await Promise.all([
      al.api.conversation.openDirect.mutate({ userId: bo.user.id }),
      bo.api.conversation.openDirect.mutate({ userId: al.user.id }),
      al.api.conversation.openDirect.mutate({ userId: bo.user.id }),
      bo.api.conversation.openDirect.mutate({ userId: al.user.id }),
    ]);
    expect(new Set(opened.map((c) => c.id)).size).toBe(1);
    const [conversation] = opened;
    expect(conversation).toMatchObject({ type: 'direct', name: null, lastSeq: 0, unreadCount: 0 });
    expect(conversation?.members.map((m) => m.userId).sort()).toEqual([al.user.id, bo.user.id].sort());
    await expectCode(al.api.conversation.openDirect.mutate({ userId: al.user.id }), 'BAD_REQUEST');
    await expectCode(
      al.api.conversation.openDirect.mutate({ userId: '00000000-0000-4000-8000-000000000000' }),
      'NOT_FOUND',
    );
  });

  it('creates groups with an owner, and records membership changes as system messages', async () => {
    const [al, bo, cy] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const group = await al.api.conversation.createGroup.mutate({ name: ' Team ', memberIds: [bo.user.id] });
    expect(group).toMatchObject({ type: 'group', name: 'Team', createdBy: al.user.id });
    expect(group.members.find((m) => m.userId === al.user.id)?.role).toBe('owner');
    await al.api.conversation.addMembers.mutate({ id: group.id, userIds: [cy.user.id] });
    await cy.api.conversation.leave.mutate({ id: group.id });
    await al.api.conversation.removeMember.mutate({ id: group.id, userId: bo.user.id });
    const history = await al.api.message.list.query({ conversationId: group.id, afterSeq: 0 });
    expect(history.items.map((m) => [m.type, m.content])).toEqual([
      ['system', `${al.user.username} created the group "Team"`],
      ['system', `${al.user.username} added ${cy.user.username}`],
      ['system', `${cy.user.username} left`],
      ['system', `${al.user.username} removed ${bo.user.username}`],
    ]);
    await expectCode(cy.api.conversation.byId.query({ id: group.id }), 'NOT_FOUND');
  });

  it('enforces the permission matrix for group management', async () => {
    const [owner, admin, member, outsider] = await Promise.all([
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
    ]);
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Matrix',
      memberIds: [admin.user.id, member.user.id],
    });
    const id = group.id;
    await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });

    // Members cannot manage; admins can, except roles and deletion; the owner stays.
    await expectCode(member.api.conversation.rename.mutate({ id, name: 'x' }), 'FORBIDDEN');
    await expectCode(
      member.api.conversation.addMembers.mutate({ id, userIds: [outsider.user.id] }),
      'FORBIDDEN',
    );
    await expectCode(member.api.conversation.removeMember.mutate({ id, userId: admin.user.id }), 'FORBIDDEN');
    await expectCode(
      admin.api.conversation.setRole.mutate({ id, userId: member.user.id, role: 'admin' }),
      'FORBIDDEN',
    );
    await expectCode(admin.api.conversation.delete.mutate({ id }), 'FORBIDDEN');
    await expectCode(admin.api.conversation.removeMember.mutate({ id, userId: owner.user.id }), 'FORBIDDEN');
    await expect(admin.api.conversation.rename.mutate({ id, name: 'Renamed' })).resolves.toMatchObject({
      name: 'Renamed',
    });
    await expect(
      admin.api.conversation.addMembers.mutate({ id, userIds: [outsider.user.id] }),
    ).resolves.toBeTruthy();
    await expect(
      admin.api.conversation.removeMember.mutate({ id, userId: outsider.user.id }),
    ).resolves.toBeTruthy();

    // A direct conversation has exactly its two members and no name.
    const direct = await owner.api.conversation.openDirect.mutate({ userId: member.user.id });
    await expectCode(owner.api.conversation.rename.mutate({ id: direct.id, name: 'x' }), 'FORBIDDEN');
    await expectCode(
      owner.api.conversation.addMembers.mutate({ id: direct.id, userIds: [admin.user.id] }),
      'FORBIDDEN',
    );
    await expectCode(owner.api.conversation.leave.mutate({ id: direct.id }), 'FORBIDDEN');

    await expect(owner.api.conversation.delete.mutate({ id })).resolves.toEqual({ ok: true });
    await expectCode(admin.api.conversation.byId.query({ id }), 'NOT_FOUND');
  });

  it('hands a group to an admin when the owner leaves', async () => {
    const [owner, admin, member] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const { id } = await owner.api.conversation.createGroup.mutate({
      name: 'Heirs',
      memberIds: [member.user.id, admin.user.id],
    });
    await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });
    await owner.api.conversation.leave.mutate({ id });
    const after = await member.api.conversation.byId.query({ id });
    expect(after.members.find((m) => m.userId === admin.user.id)?.role).toBe('owner');
    expect(after.members.some((m) => m.userId === owner.user.id)).toBe(false);
  });

  it('a non-member learns nothing: every procedure that takes an id answers NOT_FOUND', async () => {
    const [al, bo, eve] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const group = await al.api.conversation.createGroup.mutate({ name: 'Private', memberIds: [bo.user.id] });
    const message = await al.api.message.send.mutate({ conversationId: group.id, content: 'secret' });
    const id = group.id;
    const missing = '00000000-0000-4000-8000-000000000000';
    const calls: [string, (target: string) => Promise<unknown>][] = [
      ['conversation.byId', (c) => eve.api.conversation.byId.query({ id: c })],
      ['conversation.rename', (c) => eve.api.conversation.rename.mutate({ id: c, name: 'x' })],
      [
        'conversation.addMembers',
        (c) => eve.api.conversation.addMembers.mutate({ id: c, userIds: [eve.user.id] }),
      ],
      [
        'conversation.removeMember',
        (c) => eve.api.conversation.removeMember.mutate({ id: c, userId: bo.user.id }),
      ],
      [
        'conversation.setRole',
        (c) => eve.api.conversation.setRole.mutate({ id: c, userId: bo.user.id, role: 'admin' }),
      ],
      ['conversation.leave', (c) => eve.api.conversation.leave.mutate({ id: c })],
      ['conversation.delete', (c) => eve.api.conversation.delete.mutate({ id: c })],
      ['conversation.markRead', (c) => eve.api.conversation.markRead.mutate({ id: c, seq: 1 })],
      ['conversation.typing', (c) => eve.api.conversation.typing.mutate({ id: c })],
      ['message.send', (c) => eve.api.message.send.mutate({ conversationId: c, content: 'hi' })],
      ['message.list', (c) => eve.api.message.list.query({ conversationId: c })],
    ];
    for (const [name, call] of calls) {
      // The same answer for a conversation that exists and one that does not.
      const real = await expectCode(call(id), 'NOT_FOUND');
      const absent = await expectCode(call(missing), 'NOT_FOUND');
      expect(real.message, name).toBe(absent.message);
    }
    for (const call of [
      (m: string) => eve.api.message.byId.query({ id: m }),
      (m: string) => eve.api.message.edit.mutate({ id: m, content: 'x' }),
      (m: string) => eve.api.message.delete.mutate({ id: m }),
    ]) {
      const real = await expectCode(call(message.id), 'NOT_FOUND');
      const absent = await expectCode(call(missing), 'NOT_FOUND');
      expect(real.message).toBe(absent.message);
    }
    const history = await al.api.message.list.query({ conversationId: id });
    expect(history.items.map((m) => m.content)).toContain('secret');
    expect((await al.api.conversation.byId.query({ id })).name).toBe('Private');
  });
});

describe(`messages (${engineLabel})`, () => {
  it('pages through history newest first, covering every message once, and afterSeq catches up', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const sent = [];
    for (let i = 1; i <= 23; i++) {
      const sender = i % 2 ? al : bo;
      sent.push(await sender.api.message.send.mutate({ conversationId: id, content: `message ${i}` }));
    }
    expect(sent.map((m) => m.seq)).toEqual(Array.from({ length: 23 }, (_, i) => i + 1));

    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page: { items: { seq: number }[]; nextCursor: string | null } = await bo.api.message.list.query({
        conversationId: id,
        limit: 5,
        cursor,
      });
      seen.push(...page.items.map((m) => m.seq));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(Array.from({ length: 23 }, (_, i) => 23 - i));

    const after = await bo.api.message.list.query({ conversationId: id, afterSeq: 20 });
    expect(after.items.map((m) => m.content)).toEqual(['message 21', 'message 22', 'message 23']);
    expect(after.nextCursor).toBeNull();
    const catchUp = await bo.api.message.list.query({ conversationId: id, afterSeq: 10, limit: 5 });
    expect(catchUp.items.map((m) => m.seq)).toEqual([11, 12, 13, 14, 15]);
    const rest = await bo.api.message.list.query({
      conversationId: id,
      cursor: catchUp.nextCursor,
      limit: 50,
    });
    expect(rest.items.map((m) => m.seq)).toEqual([16, 17, 18, 19, 20, 21, 22, 23]);

    await drained(app);
    expect((await rows(app, id)).map((r) => r.seq)).toEqual(Array.from({ length: 23 }, (_, i) => i + 1));
  });

  it('validates content: trimmed, 1-4000 characters, no control characters', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const message = await al.api.message.send.mutate({ conversationId: id, content: '  hello\n\tworld  ' });
    expect(message.content).toBe('hello\n\tworld');
    for (const content of ['   ', 'x'.repeat(4001), 'bell\u0007', 'nul\u0000']) {
      const error = await expectCode(
        al.api.message.send.mutate({ conversationId: id, content }),
        'BAD_REQUEST',
      );
      expect(error.data.zodError).toMatchObject({ fieldErrors: { content: [expect.any(String)] } });
    }
    await expect(
      al.api.message.send.mutate({ conversationId: id, content: 'y'.repeat(4000) }),
    ).resolves.toBeTruthy();
  });

  it.skipIf(!onRealEngines)(
    'refuses a send on an instance whose copy of the roster is out of date, and accepts a new member’s (needs PostgreSQL + Redis)',
    async () => {
      const second = await deployment.start({ worker: { blockMs: 100 } });
      const [al, bo, cy] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
      const group = await al.api.conversation.createGroup.mutate({
        name: 'rosters',
        memberIds: [bo.user.id],
      });
      const boOnSecond = connect(second.url, bo.tokens.accessToken);
      const cyOnSecond = connect(second.url, cy.tokens.accessToken);
      // The second instance now holds a copy of the roster: al and bo.
      await boOnSecond.api.message.send.mutate({ conversationId: group.id, content: 'bo, before' });
      // Changed through the first instance: bo removed, cy added.
      await al.api.conversation.removeMember.mutate({ id: group.id, userId: bo.user.id });
      await al.api.conversation.addMembers.mutate({ id: group.id, userIds: [cy.user.id] });
      await expectCode(
        boOnSecond.api.message.send.mutate({ conversationId: group.id, content: 'bo, removed' }),
        'NOT_FOUND',
      );
      await cyOnSecond.api.message.send.mutate({ conversationId: group.id, content: 'cy, added' });
      await drained(app);
      const contents = (await rows(app, group.id)).map((row) => row.content);
      expect(contents).toContain('bo, before');
      expect(contents).toContain('cy, added');
      expect(contents).not.toContain('bo, removed');
      await Promise.all([al.close(), bo.close(), cy.close(), boOnSecond.close(), cyOnSecond.close()]);
    },
  );

  it('refuses message.send over a socket whose session was revoked, on every path that answers it', async () => {
    const [al, bo, cy] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const { id: elsewhere } = await bo.api.conversation.openDirect.mutate({ userId: cy.user.id });
    // One connection for the whole test: its context was built before the revocation.
    let opened = 0;
    const wsClient = createWSClient({
      url: wsUrl(app.url),
      WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
      connectionParams: () => ({ token: al.tokens.accessToken }),
      onOpen: () => (opened += 1),
    });
    const socket = createTRPCClient<AppRouter>({
      links: [wsLink({ client: wsClient, transformer: superjson })],
    });
    await socket.message.send.mutate({ conversationId: id, content: 'before', clientMessageId: 'r-1' });
    await drained(app);
    // The claim has expired: only PostgreSQL knows this clientMessageId now.
    expect(await app.services.broker.inspect.expireClaim(al.user.id, id, 'r-1')).toBe(true);
    await al.api.auth.logout.mutate({ everywhere: true });
    // A new message (refused by the append itself), a retry answered from PostgreSQL, and a
    // conversation the sender is not in: each is refused for the session, none answered.
    for (const call of [
      () => socket.message.send.mutate({ conversationId: id, content: 'after' }),
      () => socket.message.send.mutate({ conversationId: id, content: 'before', clientMessageId: 'r-1' }),
      () => socket.message.send.mutate({ conversationId: elsewhere, content: 'not mine' }),
    ]) {
      expect((await expectCode(call(), 'UNAUTHORIZED')).message).toBe('Session ended');
    }
    expect(opened).toBe(1);
    await drained(app);
    expect((await rows(app, id)).map((row) => row.content)).toEqual(['before']);
    await wsClient.close();
    await Promise.all([al.close(), bo.close(), cy.close()]);
  });

  it('returns the first message for a repeated clientMessageId, never a second one', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const first = await al.api.message.send.mutate({
      conversationId: id,
      content: 'once',
      clientMessageId: 'c-1',
    });
    const again = await al.api.message.send.mutate({
      conversationId: id,
      content: 'twice',
      clientMessageId: 'c-1',
    });
    expect(again).toEqual(first);
    // Concurrent duplicates, over HTTP and the socket at once.
    const racing = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        (i % 2 ? al.ws : al.api).message.send.mutate({
          conversationId: id,
          content: 'race',
          clientMessageId: 'c-2',
        }),
      ),
    );
    expect(new Set(racing.map((m) => m.id)).size).toBe(1);
    // Another sender may use the same key.
    const other = await bo.api.message.send.mutate({
      conversationId: id,
      content: 'mine',
      clientMessageId: 'c-1',
    });
    expect(other.id).not.toBe(first.id);
    await drained(app);
    // After the worker wrote it, the key still maps to the first message.
    const later = await al.api.message.send.mutate({
      conversationId: id,
      content: 'late',
      clientMessageId: 'c-1',
    });
    expect(later.id).toBe(first.id);
    expect((await rows(app, id)).map((r) => r.content)).toEqual(['once', 'race', 'mine']);
  });

  it('answers retries from PostgreSQL once the broker claim expired, many at once', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const senderOf = (i: number) => (i % 2 ? bo : al);
    const firsts = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        senderOf(i).ws.message.send.mutate({
          conversationId: id,
          content: `first ${i}`,
          clientMessageId: `expired-${i}`,
        }),
      ),
    );
    await drained(app);
    // The claims expire (here: are deleted); only PostgreSQL still knows these keys.
    for (const m of firsts) {
      expect(
        await app.services.broker.inspect.expireClaim(m.senderId, m.conversationId, m.clientMessageId ?? ''),
      ).toBe(true);
    }
    // Retries and new sends together, so the lookups share queries.
    const again = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        senderOf(i).ws.message.send.mutate({
          conversationId: id,
          content: `retry ${i}`,
          clientMessageId: `expired-${i}`,
        }),
      ),
    );
    expect(again.slice(0, 12)).toEqual(firsts);
    expect(again.slice(12).map((m) => m.content)).toEqual(['retry 12', 'retry 13', 'retry 14', 'retry 15']);
    // The same key from the other sender is a different message.
    const swapped = await bo.ws.message.send.mutate({
      conversationId: id,
      content: 'b',
      clientMessageId: 'expired-0',
    });
    expect(swapped.id).not.toBe(firsts[0]?.id);
    await drained(app);
    const stored = await rows(app, id);
    expect(stored).toHaveLength(17);
    expect(stored.map((r) => r.seq)).toEqual(Array.from({ length: 17 }, (_, i) => i + 1));
  });

  it('a send marked firstAttempt: the claim still catches a repeat, and past it PostgreSQL is asked only for a retry', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 1 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const send = (content: string, firstAttempt?: boolean) =>
        al.ws.message.send.mutate({ conversationId: id, content, clientMessageId: 'once', firstAttempt });
      const first = await send('first', true);
      // Within the broker's claim, a repeat marked as a first attempt is still the first message.
      expect(await send('repeat', true)).toEqual(first);
      await drained(target);
      expect(await target.services.broker.inspect.expireClaim(al.user.id, id, 'once')).toBe(true);
      // A retry answered from PostgreSQL claims nothing again.
      expect(await send('a retry')).toEqual(first);
      const wronglyFirst = await send('said to be first', true);
      const history = async () =>
        (await bo.api.message.list.query({ conversationId: id, limit: 10 })).items.map((m) => m.id);
      if (!engines.redisUrl) {
        // Answered only once written (the in-process broker), a send still asks PostgreSQL.
        expect(wronglyFirst).toEqual(first);
        expect(await history()).toEqual([first.id]);
        return;
      }
      // Past the claim only PostgreSQL knows the id, and it is asked for a retry only: this
      // second message is refused by PostgreSQL's unique index and set aside.
      expect(wronglyFirst.id).not.toBe(first.id);
      await expect
        .poll(async () => (await deadLetters(target.services.broker)).map((letter) => letter.fields.reason), {
          timeout: 15_000,
        })
        .toEqual([expect.stringMatching(/unique|duplicate/i)]);
      expect(await history()).toEqual([first.id]);
    } finally {
      await local.cleanup();
    }
  });

  it('a send whose conversation is deleted on its way to PostgreSQL: NOT_FOUND where answered once written', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 1 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      await al.api.message.send.mutate({ conversationId: id, content: 'before' });
      await drained(target);
      // Gone from PostgreSQL while the broker still lets the sender in: what a deletion that
      // lands between a send's checks and its write leaves.
      await target.services.db.execute(sql`delete from conversations where id = ${id}`);
      const late = al.api.message.send.mutate({ conversationId: id, content: 'late' });
      if (!engines.redisUrl) {
        // The in-process broker answers once written: the sender learns the conversation is gone.
        const refused = await expectCode(late, 'NOT_FOUND');
        expect(refused.message).toBe('Conversation not found');
      } else {
        // Acknowledged once queued, as every send there; the worker sets it aside.
        await expect(late).resolves.toMatchObject({ content: 'late' });
      }
      await expect
        .poll(async () => (await deadLetters(target.services.broker)).map((letter) => letter.fields.reason), {
          timeout: 15_000,
        })
        .toEqual([expect.stringMatching(/no such conversation$/)]);
    } finally {
      await local.cleanup();
    }
  });

  it('edits (sender only) and deletes (sender or admin) leave a gapless history with tombstones', async () => {
    const [owner, admin, member] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const { id } = await owner.api.conversation.createGroup.mutate({
      name: 'Edits',
      memberIds: [admin.user.id, member.user.id],
    });
    await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });
    const mine = await member.api.message.send.mutate({ conversationId: id, content: 'typo' });
    const theirs = await owner.api.message.send.mutate({ conversationId: id, content: 'by owner' });

    await expectCode(admin.api.message.edit.mutate({ id: mine.id, content: 'not yours' }), 'FORBIDDEN');
    const edited = await member.api.message.edit.mutate({ id: mine.id, content: 'fixed' });
    expect(edited).toMatchObject({ content: 'fixed', seq: mine.seq });
    expect(edited.editedAt).toBeInstanceOf(Date);

    await expectCode(member.api.message.delete.mutate({ id: theirs.id }), 'FORBIDDEN');
    await expect(admin.api.message.delete.mutate({ id: mine.id })).resolves.toEqual({ ok: true });
    await expect(owner.api.message.delete.mutate({ id: theirs.id })).resolves.toEqual({ ok: true });
    await expectCode(member.api.message.edit.mutate({ id: mine.id, content: 'again' }), 'FORBIDDEN');

    const tombstone = await member.api.message.byId.query({ id: mine.id });
    expect(tombstone).toMatchObject({ content: '', seq: mine.seq });
    expect(tombstone.deletedAt).toBeInstanceOf(Date);
    await drained(app);
    const stored = await rows(app, id);
    expect(stored.map((r) => r.seq)).toEqual(stored.map((_, i) => i + 1));
    const row = stored.find((r) => r.id === mine.id);
    expect(row?.content).toBe('');
    // The written times are the ones the API answered with, to the millisecond.
    const times = await storedTimes(app, mine.id);
    expect(times).toEqual({
      sent_at: mine.sentAt.getTime(),
      edited_at: edited.editedAt?.getTime(),
      deleted_at: tombstone.deletedAt?.getTime(),
    });
  });

  it('reads its writes: history, byId, edit and delete work before the worker writes anything', async () => {
    const local = await TestDeployment.create();
    try {
      const { apiOnly, al, bo, id } = await apiOnlyConversation(local);
      const sent = [];
      for (let i = 0; i < 5; i++)
        sent.push(await al.api.message.send.mutate({ conversationId: id, content: `m${i}` }));
      expect(await rows(apiOnly, id)).toEqual([]);

      const page = await bo.api.message.list.query({ conversationId: id });
      expect(page.items.map((m) => m.content)).toEqual(['m4', 'm3', 'm2', 'm1', 'm0']);
      expect(await bo.api.message.byId.query({ id: sent[2]?.id ?? '' })).toMatchObject({ content: 'm2' });
      await al.api.message.edit.mutate({ id: sent[1]?.id ?? '', content: 'm1 edited' });
      await al.api.message.delete.mutate({ id: sent[3]?.id ?? '' });
      const list = await bo.api.conversation.list.query();
      expect(list.items[0]).toMatchObject({ id, lastSeq: 5, unreadCount: 4 });
      expect(list.items[0]?.lastMessage?.content).toBe('m4');

      // A worker started later writes everything once, edits and deletions included.
      const worker = new PersistenceWorker(
        apiOnly.services.db,
        queueOf(apiOnly.services.broker, id),
        { ...apiOnly.services.config.worker, blockMs: 50 },
        apiOnly.services.log,
      );
      worker.start();
      try {
        await drained(apiOnly);
      } finally {
        await worker.stop();
      }
      expect((await rows(apiOnly, id)).map((r) => r.content)).toEqual(['m0', 'm1 edited', 'm2', '', 'm4']);
      const again = await bo.api.message.list.query({ conversationId: id });
      expect(again.items.map((m) => m.content)).toEqual(['m4', '', 'm2', 'm1 edited', 'm0']);
    } finally {
      await local.cleanup();
    }
  });

  it('after a small batch the worker waits its linger, and writes what came meanwhile as one batch', async () => {
    const local = await TestDeployment.create();
    try {
      const { apiOnly, al, id } = await apiOnlyConversation(local);
      const { broker, db, log, config } = apiOnly.services;
      const batches: number[] = [];
      let batched = () => undefined as void;
      const nextBatch = () =>
        new Promise<void>((resolve) => {
          batched = resolve;
        });
      const worker = new PersistenceWorker(
        db,
        queueOf(broker, id),
        { ...config.worker, blockMs: 50, lingerMs: 2_000 },
        log,
        {
          onBatch: (size) => {
            batches.push(size);
            batched();
          },
        },
      );
      await al.api.message.send.mutate({ conversationId: id, content: 'first' });
      const first = nextBatch();
      worker.start();
      try {
        await first;
        // While the worker waits after that batch of one, five sends trickle in.
        const second = nextBatch();
        for (let i = 0; i < 5; i++)
          await al.api.message.send.mutate({ conversationId: id, content: `m${i}` });
        await second;
        await drained(apiOnly);
      } finally {
        await worker.stop();
      }
      expect(batches).toEqual([1, 5]);
      expect((await rows(apiOnly, id)).map((r) => r.content)).toEqual([
        'first',
        'm0',
        'm1',
        'm2',
        'm3',
        'm4',
      ]);
    } finally {
      await local.cleanup();
    }
  });

  it('a change moved back from the dead letters keeps its place: an older edit never undoes a newer one', async () => {
    const local = await TestDeployment.create();
    try {
      const { apiOnly, al, id } = await apiOnlyConversation(local);
      const { broker, db, log, config } = apiOnly.services;
      const sent = await al.api.message.send.mutate({ conversationId: id, content: 'first' });
      const one = await al.api.message.edit.mutate({ id: sent.id, content: 'one' });
      const oneEntry = await broker.messages.pendingEntry(sent.id);
      if (!oneEntry) throw new Error('the edit is not pending');
      await al.api.message.edit.mutate({ id: sent.id, content: 'two' });
      // The first edit as `parley dead-letters --requeue` queues it again after it was set aside:
      // a new entry, after the second edit's, with `v`, the entry it was first queued as.
      await broker.inspect.addQueueEntry({ op: 'update', m: JSON.stringify(toWire(one)), v: oneEntry });

      const writeAll = async () => {
        const workers = broker.queues.map(
          (queue) => new PersistenceWorker(db, queue, { ...config.worker, blockMs: 50 }, log),
        );
        for (const worker of workers) worker.start();
        try {
          await drained(apiOnly);
        } finally {
          await Promise.all(workers.map((worker) => worker.stop()));
        }
      };
      // Read in one batch with the second edit, then in one of its own: it loses both times.
      await writeAll();
      expect((await rows(apiOnly, id)).map((r) => r.content)).toEqual(['two']);
      await broker.inspect.addQueueEntry({ op: 'update', m: JSON.stringify(toWire(one)), v: oneEntry });
      await writeAll();
      expect((await rows(apiOnly, id)).map((r) => r.content)).toEqual(['two']);
    } finally {
      await local.cleanup();
    }
  });

  it("keeps a deleted account's messages readable in other people's conversations", async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const sent = await al.api.message.send.mutate({ conversationId: id, content: 'goodbye' });
    await al.api.user.delete.mutate({ password: al.password });
    const history = await bo.api.message.list.query({ conversationId: id });
    expect(history.items.map((m) => [m.id, m.senderUsername, m.content])).toEqual([
      [sent.id, al.user.username, 'goodbye'],
    ]);
    await expect(bo.api.conversation.byId.query({ id })).resolves.toMatchObject({ id });
  });

  it('counts unread messages from others after the read position, which never moves back', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    for (let i = 0; i < 4; i++) await al.api.message.send.mutate({ conversationId: id, content: `a${i}` });
    await bo.api.message.send.mutate({ conversationId: id, content: 'b' });
    expect((await bo.api.conversation.byId.query({ id })).unreadCount).toBe(4);
    expect((await al.api.conversation.byId.query({ id })).unreadCount).toBe(1);
    expect(await bo.api.conversation.markRead.mutate({ id, seq: 3 })).toEqual({ lastReadSeq: 3 });
    expect((await bo.api.conversation.byId.query({ id })).unreadCount).toBe(1);
    expect(await bo.api.conversation.markRead.mutate({ id, seq: 1 })).toEqual({ lastReadSeq: 3 });
    // Never past the last message.
    expect(await bo.api.conversation.markRead.mutate({ id, seq: 999 })).toEqual({ lastReadSeq: 5 });
    expect((await bo.api.conversation.byId.query({ id })).unreadCount).toBe(0);
  });

  it('lists conversations by newest activity, with a cursor', async () => {
    const [al, bo, cy, dee] = await Promise.all([
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
    ]);
    const withBo = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const withCy = await al.api.conversation.openDirect.mutate({ userId: cy.user.id });
    const withDee = await al.api.conversation.openDirect.mutate({ userId: dee.user.id });
    await al.api.message.send.mutate({ conversationId: withDee.id, content: '1' });
    await al.api.message.send.mutate({ conversationId: withBo.id, content: '2' });
    await al.api.message.send.mutate({ conversationId: withCy.id, content: '3' });
    await drained(app);
    const first = await al.api.conversation.list.query({ limit: 2 });
    const second = await al.api.conversation.list.query({ limit: 2, cursor: first.nextCursor });
    expect([...first.items, ...second.items].map((c) => c.id)).toEqual([withCy.id, withBo.id, withDee.id]);
    expect(second.nextCursor).toBeNull();
  });

  it('throttles sends per user with TOO_MANY_REQUESTS', async () => {
    const local = await TestDeployment.create();
    try {
      const limited = await local.start({ limits: { sendsPerUser: 3, sendWindowSeconds: 3600 } });
      const [al, bo] = await Promise.all([signUp(limited.url), signUp(limited.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      await clearOfWindowEnd(3600);
      for (let i = 0; i < 3; i++) await al.api.message.send.mutate({ conversationId: id, content: `${i}` });
      await expectCode(
        al.api.message.send.mutate({ conversationId: id, content: 'one too many' }),
        'TOO_MANY_REQUESTS',
      );
      await expect(
        bo.api.message.send.mutate({ conversationId: id, content: 'bo is fine' }),
      ).resolves.toBeTruthy();
    } finally {
      await local.cleanup();
    }
  });
});

describe(`persistence worker (${engineLabel})`, () => {
  it('moves a poison entry to the dead-letter stream while later messages are written', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 2 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const broker = target.services.broker;
      // Unreadable, and readable but refused by PostgreSQL (no such conversation).
      await broker.inspect.addQueueEntry({ op: 'create', m: '{not json' });
      await broker.inspect.addQueueEntry({
        op: 'create',
        m: JSON.stringify({
          id: '01900000-0000-7000-8000-000000000001',
          conversationId: '00000000-0000-4000-8000-000000000000',
          seq: 1,
          senderId: al.user.id,
          senderUsername: al.user.username,
          type: 'text',
          content: 'orphan',
          clientMessageId: null,
          sentAt: Date.now(),
          editedAt: null,
          deletedAt: null,
        }),
      });
      // In a real conversation, from a sender that does not exist.
      await broker.inspect.addQueueEntry({
        op: 'create',
        m: JSON.stringify({
          id: '01900000-0000-7000-8000-000000000002',
          conversationId: id,
          seq: 1_000,
          senderId: '00000000-0000-4000-8000-000000000000',
          senderUsername: 'nobody',
          type: 'text',
          content: 'from nobody',
          clientMessageId: null,
          sentAt: Date.now(),
          editedAt: null,
          deletedAt: null,
        }),
      });
      const good = await al.api.message.send.mutate({ conversationId: id, content: 'after the poison' });
      await drained(target, 20_000);
      expect((await rows(target, id)).map((r) => r.id)).toEqual([good.id]);
      const dead = await deadLetters(broker);
      // Each refused entry is retried on its own schedule, so they may be set aside in any order.
      expect(dead).toHaveLength(3);
      expect(dead.map((entry) => entry.fields.reason)).toEqual(
        expect.arrayContaining([
          'unreadable entry',
          expect.stringMatching(/violates foreign key: no such conversation/),
          expect.stringMatching(/violates foreign key: no such sender/),
        ]),
      );
    } finally {
      await local.cleanup();
    }
  });

  it('keeps every message tied to its conversation and its sender, whoever writes to the table', async () => {
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const kept = await al.api.message.send.mutate({ conversationId: id, content: 'kept' });
    const reply = await bo.api.message.send.mutate({ conversationId: id, content: 'reply' });
    await drained(app);
    const db = app.services.db;
    const missing = '00000000-0000-4000-8000-00000000dead';
    const insert = (conversationId: string, senderId: string) =>
      db.execute(sql`insert into messages (id, conversation_id, seq, sender_id, sender_username, content, sent_at)
                     values (gen_random_uuid(), ${conversationId}, 999, ${senderId}, 'x', 'x', now())`);
    const refusal = async (statement: Promise<unknown>) => {
      const error = await statement.then(
        () => null,
        (e: unknown) => e,
      );
      let cause: unknown = error;
      while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
      const code = (cause as { code?: unknown } | null)?.code;
      return `${String(code)}: ${cause instanceof Error ? cause.message : 'no error'}`;
    };
    expect(await refusal(insert(missing, al.user.id))).toMatch(/^23503: .*no such conversation/);
    expect(await refusal(insert(id, missing))).toMatch(/^23503: .*no such sender/);
    expect(
      await refusal(db.execute(sql`update messages set conversation_id = ${missing} where id = ${kept.id}`)),
    ).toMatch(/^23503: .*no such conversation/);
    // A sender with messages cannot be removed outright (accounts are deleted by anonymising them).
    await db.execute(sql`delete from members where conversation_id = ${id}`);
    expect(await refusal(db.execute(sql`delete from users where id = ${bo.user.id}`))).toMatch(
      /^23503: .*the user sent messages/,
    );
    expect((await rows(app, id)).map((r) => r.id)).toEqual([kept.id, reply.id]);
    // Removing a conversation outright removes its messages with it.
    await db.execute(sql`delete from conversations where id = ${id}`);
    expect(await rows(app, id)).toEqual([]);
  });

  it('writes entries a vanished worker had read but not acknowledged, exactly once', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ runWorker: false });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      for (let i = 0; i < 30; i++) await al.api.message.send.mutate({ conversationId: id, content: `m${i}` });
      const { broker, db, log, config } = target.services;
      // A worker that read a batch and died before its commit.
      const queue = queueOf(broker, id);
      await queue.prepare();
      const taken = await queue.readNew('ghost', 20);
      expect(taken).toHaveLength(20);
      // Two workers at once, each claiming after the idle timeout: every row written once.
      const settings = { ...config.worker, blockMs: 50, claimIdleMs: 200 };
      const workers = [
        new PersistenceWorker(db, queue, { ...settings, consumerName: 'w1' }, log),
        new PersistenceWorker(db, queue, { ...settings, consumerName: 'w2' }, log),
      ];
      for (const worker of workers) worker.start();
      try {
        await drained(target);
      } finally {
        await Promise.all(workers.map((worker) => worker.stop()));
      }
      const stored = await rows(target, id);
      expect(stored.map((r) => r.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      expect(new Set(stored.map((r) => r.id)).size).toBe(30);
    } finally {
      await local.cleanup();
    }
  });

  it('writes concurrent batches that share conversations and messages without deadlock', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ runWorker: false });
      const people = await Promise.all(Array.from({ length: 4 }, () => signUp(target.url)));
      const [owner, ...others] = people as [(typeof people)[0], ...typeof people];
      const groups = await Promise.all(
        ['a', 'b', 'c'].map((name) =>
          owner.api.conversation.createGroup.mutate({ name, memberIds: others.map((o) => o.user.id) }),
        ),
      );
      // Messages interleaved across the conversations, and edits that follow their originals
      // several batches later: concurrent batches touch the same conversations and messages.
      const sent: { id: string; conversationId: string; by: (typeof people)[0] }[] = [];
      for (let i = 0; i < 90; i++) {
        const by = people[i % people.length];
        const group = groups[i % groups.length];
        if (!by || !group) throw new Error('unreachable');
        const conversationId = group.id;
        const message = await by.api.message.send.mutate({ conversationId, content: `m${i}` });
        sent.push({ id: message.id, conversationId, by });
      }
      for (const [i, message] of sent.entries()) {
        if (i % 3 === 0) await message.by.api.message.edit.mutate({ id: message.id, content: `edited ${i}` });
      }
      const { broker, db, config } = target.services;
      // What the workers warn about, to show that no batch deadlocked or failed and was retried.
      const warnings: string[] = [];
      const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
      // Small batches, several in flight, and two workers at once.
      const settings = { ...config.worker, blockMs: 50, batchSize: 4, concurrency: 4 };
      const workers = broker.queues.flatMap((queue) => [
        new PersistenceWorker(db, queue, { ...settings, consumerName: 'c1' }, log),
        new PersistenceWorker(db, queue, { ...settings, consumerName: 'c2' }, log),
      ]);
      for (const worker of workers) worker.start();
      try {
        await drained(target, 30_000);
      } finally {
        await Promise.all(workers.map((worker) => worker.stop()));
      }
      expect(warnings.filter((line) => /deadlock|batch failed/i.test(line))).toEqual([]);
      expect(workers.reduce((n, worker) => n + worker.stats.deadLettered, 0)).toBe(0);
      expect(await deadLetters(broker)).toEqual([]);
      for (const group of groups) {
        const stored = await rows(target, group.id);
        const expected = sent.flatMap((m, i) =>
          m.conversationId === group.id ? [i % 3 === 0 ? `edited ${i}` : `m${i}`] : [],
        );
        // Each conversation's system message (created) comes first, then its 30 messages.
        expect(stored.slice(-expected.length).map((r) => r.content)).toEqual(expected);
        expect(stored.map((r) => r.seq)).toEqual(stored.map((_, i) => i + 1));
        const result = await db.execute(
          sql`select last_seq::int as last_seq from conversations where id = ${group.id}`,
        );
        const [conversation] = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as {
          last_seq: number;
        }[];
        expect(conversation?.last_seq).toBe(stored.length);
        expect(await broker.messages.pendingOf(group.id)).toEqual([]);
      }
    } finally {
      await local.cleanup();
    }
  });
});

describe.skipIf(!onRealEngines)(`pending copies (${engineLabel}; needs Redis)`, () => {
  it('acknowledges a written entry only once its pending copy is released', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ runWorker: false });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      for (let i = 0; i < 5; i++) await al.api.message.send.mutate({ conversationId: id, content: `m${i}` });
      const { broker, db, log, config } = target.services;
      // The conversation's pending hash becomes a string: releasing its copies fails (WRONGTYPE).
      const redis = openRedis(config.redisUrl ?? '');
      const copies = `${config.redisPrefix}${pendingKey(testPartitionFor(id), id)}`;
      await redis.set(copies, 'not a hash');
      const worker = new PersistenceWorker(
        db,
        queueOf(broker, id),
        { ...config.worker, blockMs: 50, claimIdleMs: 400 },
        log,
      );
      worker.start();
      try {
        await expect.poll(async () => (await rows(target, id)).length, { timeout: 10_000 }).toBe(5);
        await sleep(200);
        // Written, but not acknowledged: the entries wait to be written and released again.
        expect((await queueOf(broker, id).info()).group?.pending).toBe(5);
        await redis.del(copies);
        await drained(target);
      } finally {
        await worker.stop();
        await redis.quit();
      }
      const stored = await rows(target, id);
      expect(stored.map((r) => r.content)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    } finally {
      await local.cleanup();
    }
  });
});

describe.skipIf(!onRealEngines)(`PostgreSQL outage (${engineLabel}; needs PostgreSQL + Redis)`, () => {
  it('keeps sends resolving while the database is unreachable, then writes each once', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const sent = [await al.api.message.send.mutate({ conversationId: id, content: 'before' })];
      await drained(target);

      await local.databaseDown();
      try {
        for (let i = 0; i < 20; i++) {
          sent.push(
            await (i % 2 ? al : bo).api.message.send.mutate({
              conversationId: id,
              content: `during ${i}`,
              clientMessageId: `outage-${i}`,
            }),
          );
        }
        const health = await al.api.health.query();
        expect(health).toMatchObject({ status: 'degraded', db: false, redis: true });
        expect(health.worker.lag).toBeGreaterThan(0);
        expect((await fetch(`${target.url}/readyz`)).status).toBe(503);
      } finally {
        await local.databaseUp();
      }

      await drained(target, 30_000);
      const stored = await rows(target, id);
      expect(stored.map((r) => r.id)).toEqual(sent.map((m) => m.id));
      expect(stored.map((r) => r.seq)).toEqual(sent.map((_, i) => i + 1));
      expect((await fetch(`${target.url}/readyz`)).status).toBe(200);
      const dead = await deadLetters(target.services.broker);
      expect(dead).toEqual([]);
    } finally {
      await local.cleanup();
    }
  });
});
