import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversations } from '../drizzle/schema.js';
import type { App } from '../server/src/app.js';
import { signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode, rejection } from './support/errors.js';
import { type EventTap, tap } from './support/events.js';

/**
 * Group changes cost what changed: one system message and one membership event per call,
 * one conversation update per member; a group has at most `maxGroupMembers`; and membership
 * changes of one group take turns, so concurrent ones neither pass the cap nor leave the group
 * without an owner.
 */

const MAX_GROUP_MEMBERS = 8;

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  // With the worker writing while unread counts are taken: a count must not miss a message
  // written in the middle of it.
  app = await deployment.start({ limits: { maxGroupMembers: MAX_GROUP_MEMBERS } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

type User = Awaited<ReturnType<typeof signUp>>;

async function users(count: number): Promise<User[]> {
  return Promise.all(Array.from({ length: count }, () => signUp(app.url)));
}

/** Waits for `content`, sent after the change under test, on every tap: nothing of the change is still on its way. */
async function sentinel(sender: User, conversationId: string, taps: EventTap[], content: string) {
  await sender.api.message.send.mutate({ conversationId, content });
  for (const events of taps) {
    await events.until(() => events.of('message.created').some((e) => e.message.content === content));
  }
}

const systemMessages = (events: EventTap) =>
  events.of('message.created').filter((e) => e.message.type === 'system');

describe(`group changes (${engineLabel})`, () => {
  it('adding five users to a group of three sends each member one member.joined and one system message', async () => {
    const [owner, bo, cy] = await users(3);
    if (!owner || !bo || !cy) throw new Error('users missing');
    const newcomers = await users(5);
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Five more',
      memberIds: [bo.user.id, cy.user.id],
    });
    const taps = await Promise.all([owner, bo, cy].map((u) => tap(u, app, u.user.id)));
    const first = newcomers[0];
    if (!first) throw new Error('users missing');
    const newcomerTap = await tap(first, app, first.user.id);
    const ids = newcomers.map((u) => u.user.id);
    await owner.api.conversation.addMembers.mutate({ id: group.id, userIds: ids });
    await sentinel(owner, group.id, [...taps, newcomerTap], 'after the five');
    for (const events of [...taps, newcomerTap]) {
      expect(events.of('member.joined')).toEqual([
        { type: 'member.joined', conversationId: group.id, userIds: ids, by: owner.user.id },
      ]);
      expect(systemMessages(events).map((e) => e.message.content)).toEqual([
        `${owner.user.username} added 5 people`,
      ]);
    }
    // Those already in get only the change; a newcomer gets the conversation once, with everyone.
    for (const events of taps) expect(events.of('conversation.upserted')).toEqual([]);
    const upserts = newcomerTap.of('conversation.upserted');
    expect(upserts).toHaveLength(1);
    expect(upserts[0]?.conversation.members).toHaveLength(8);
    expect(upserts[0]?.conversation.memberCount).toBe(8);
    await newcomerTap.stop();
    // A few names are spelled out.
    const [dd, ee] = await users(2);
    if (!dd || !ee) throw new Error('users missing');
    const small = await owner.api.conversation.createGroup.mutate({ name: 'Two more', memberIds: [] });
    await owner.api.conversation.addMembers.mutate({ id: small.id, userIds: [dd.user.id, ee.user.id] });
    const history = await owner.api.message.list.query({ conversationId: small.id, afterSeq: 0 });
    expect(history.items.map((m) => m.content)).toContain(
      `${owner.user.username} added ${dd.user.username} and ${ee.user.username}`,
    );
    await Promise.all(taps.map((events) => events.stop()));
  });

  it('a rename sends each member the same conversation.updated and one system message; unread counts stay their own', async () => {
    const [owner, bo, cy, dd] = await users(4);
    if (!owner || !bo || !cy || !dd) throw new Error('users missing');
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Before',
      memberIds: [bo.user.id, cy.user.id, dd.user.id],
    });
    // Different unread counts: bo read up to the first message, cy everything, dd nothing.
    const first = await owner.api.message.send.mutate({ conversationId: group.id, content: 'one' });
    const second = await owner.api.message.send.mutate({ conversationId: group.id, content: 'two' });
    await bo.api.conversation.markRead.mutate({ id: group.id, seq: first.seq });
    await cy.api.conversation.markRead.mutate({ id: group.id, seq: second.seq });
    const everyone = [owner, bo, cy, dd];
    const taps = await Promise.all(everyone.map((u) => tap(u, app, u.user.id)));
    await owner.api.conversation.rename.mutate({ id: group.id, name: 'After' });
    await sentinel(owner, group.id, taps, 'after the rename');
    for (const events of taps) {
      expect(events.of('conversation.updated')).toMatchObject([
        {
          type: 'conversation.updated',
          conversationId: group.id,
          name: 'After',
          memberCount: 4,
          by: owner.user.id,
        },
      ]);
      expect(events.of('conversation.updated')).toHaveLength(1);
      expect(events.of('conversation.updated')[0]?.updatedAt).toBeInstanceOf(Date);
      expect(events.of('conversation.upserted')).toEqual([]);
      expect(systemMessages(events)).toHaveLength(1);
    }
    const counts = await Promise.all(
      everyone.map(async (u) => (await u.api.conversation.byId.query({ id: group.id })).unreadCount),
    );
    expect(new Set(counts).size).toBe(4);
    await Promise.all(taps.map((events) => events.stop()));
  });

  it(`caps a group at maxGroupMembers (${MAX_GROUP_MEMBERS}), also under concurrent additions`, async () => {
    const [owner, admin] = await users(2);
    if (!owner || !admin) throw new Error('users missing');
    const candidates = await users(MAX_GROUP_MEMBERS);
    const tooMany = await rejection(
      owner.api.conversation.createGroup.mutate({
        name: 'Crowd',
        memberIds: candidates.map((u) => u.user.id),
      }),
    );
    expect(tooMany.data.code).toBe('BAD_REQUEST');
    expect(tooMany.data.zodError).toMatchObject({ fieldErrors: { memberIds: [expect.any(String)] } });

    for (let round = 0; round < 4; round++) {
      const { id } = await owner.api.conversation.createGroup.mutate({
        name: `Race ${round}`,
        memberIds: [admin.user.id],
      });
      await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });
      // 2 + 4 + 4 > 8: the two calls cannot both succeed.
      const first = candidates.slice(0, 4).map((u) => u.user.id);
      const second = candidates.slice(4, 8).map((u) => u.user.id);
      const outcomes = await Promise.allSettled([
        owner.api.conversation.addMembers.mutate({ id, userIds: first }),
        admin.api.conversation.addMembers.mutate({ id, userIds: second }),
      ]);
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      const refused = outcomes.find((o) => o.status === 'rejected');
      const error = (refused as PromiseRejectedResult).reason as Awaited<ReturnType<typeof rejection>>;
      expect(error.data.code).toBe('BAD_REQUEST');
      expect(error.data.zodError).toMatchObject({ fieldErrors: { userIds: [expect.any(String)] } });
      const group = await owner.api.conversation.byId.query({ id });
      expect(group.members).toHaveLength(6);
    }

    // Up to the cap, and not one more; members already in do not count twice.
    const { id } = await owner.api.conversation.createGroup.mutate({
      name: 'Full',
      memberIds: candidates.slice(0, 6).map((u) => u.user.id),
    });
    await expectCode(
      owner.api.conversation.addMembers.mutate({
        id,
        userIds: [admin.user.id, candidates[6]?.user.id ?? ''],
      }),
      'BAD_REQUEST',
    );
    await owner.api.conversation.addMembers.mutate({
      id,
      userIds: [admin.user.id, candidates[0]?.user.id ?? ''],
    });
    expect((await owner.api.conversation.byId.query({ id })).members).toHaveLength(MAX_GROUP_MEMBERS);
  });
});

describe(`leaving at once (${engineLabel})`, () => {
  it('the owner and the only admin leaving at once leave the group with an owner among those who stay', async () => {
    const [owner, admin, m1, m2] = await users(4);
    if (!owner || !admin || !m1 || !m2) throw new Error('users missing');
    for (let round = 0; round < 6; round++) {
      const { id } = await owner.api.conversation.createGroup.mutate({
        name: `Exodus ${round}`,
        memberIds: [admin.user.id, m1.user.id, m2.user.id],
      });
      await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });
      await Promise.all([
        owner.api.conversation.leave.mutate({ id }),
        admin.api.conversation.leave.mutate({ id }),
      ]);
      const group = await m1.api.conversation.byId.query({ id });
      expect(group.members.map((m) => m.userId).sort()).toEqual([m1.user.id, m2.user.id].sort());
      expect(group.members.filter((m) => m.role === 'owner')).toHaveLength(1);
      // The new owner can manage the group.
      const heir = group.members.find((m) => m.role === 'owner');
      const manager = heir?.userId === m1.user.id ? m1 : m2;
      await expect(
        manager.api.conversation.rename.mutate({ id, name: 'Still managed' }),
      ).resolves.toBeTruthy();
    }
  });

  it('the owner and the last other member leaving at once delete the group', async () => {
    const [owner, member] = await users(2);
    if (!owner || !member) throw new Error('users missing');
    for (let round = 0; round < 6; round++) {
      const { id } = await owner.api.conversation.createGroup.mutate({
        name: `Last ones ${round}`,
        memberIds: [member.user.id],
      });
      await Promise.all([
        owner.api.conversation.leave.mutate({ id }),
        member.api.conversation.leave.mutate({ id }),
      ]);
      await expectCode(owner.api.conversation.byId.query({ id }), 'NOT_FOUND');
      await expectCode(member.api.conversation.byId.query({ id }), 'NOT_FOUND');
      // Deleted, not left behind empty (and live) by two leaves that each saw the other stay.
      const [row] = await app.services.db
        .select({ deletedAt: conversations.deletedAt })
        .from(conversations)
        .where(eq(conversations.id, id));
      expect(row?.deletedAt).toBeInstanceOf(Date);
    }
  });

  it('an owner removing its heir while leaving never leaves the group without an owner', async () => {
    const [owner, admin, member] = await users(3);
    if (!owner || !admin || !member) throw new Error('users missing');
    for (let round = 0; round < 6; round++) {
      const { id } = await owner.api.conversation.createGroup.mutate({
        name: `Succession ${round}`,
        memberIds: [admin.user.id, member.user.id],
      });
      await owner.api.conversation.setRole.mutate({ id, userId: admin.user.id, role: 'admin' });
      // The leave hands the group to the admin, whom the removal takes out: one of them goes
      // first, and the other decides on what it left.
      await Promise.allSettled([
        owner.api.conversation.leave.mutate({ id }),
        owner.api.conversation.removeMember.mutate({ id, userId: admin.user.id }),
      ]);
      const group = await member.api.conversation.byId.query({ id });
      expect(group.members.map((m) => m.userId)).not.toContain(owner.user.id);
      expect(group.members.filter((m) => m.role === 'owner')).toHaveLength(1);
    }
  });
});

describe(`conversation.list pages (${engineLabel})`, () => {
  it('pages through conversations whose last activity shares a millisecond, each once, newest first', async () => {
    const [me, ...others] = await users(5);
    if (!me) throw new Error('users missing');
    const opened = await Promise.all(
      others.map((other) => me.api.conversation.openDirect.mutate({ userId: other.user.id })),
    );
    // Four activities within one millisecond, microseconds apart (the worker only ever moves
    // last_activity_at forward, so these stay).
    const stamps = [
      '2999-01-01 00:00:00.000104+00',
      '2999-01-01 00:00:00.000103+00',
      '2999-01-01 00:00:00.000102+00',
      '2999-01-01 00:00:00.000101+00',
    ];
    for (const [i, conversation] of opened.entries()) {
      await app.services.db
        .update(conversations)
        .set({ lastActivityAt: sql`${stamps[i]}::timestamptz` })
        .where(eq(conversations.id, conversation.id));
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page: Awaited<ReturnType<typeof me.api.conversation.list.query>> =
        await me.api.conversation.list.query({ limit: 1, cursor });
      seen.push(...page.items.map((item) => item.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor && seen.length < 10);
    expect(seen).toEqual(opened.map((conversation) => conversation.id));
  });
});
