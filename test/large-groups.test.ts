import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode } from './support/errors.js';
import { type EventTap, tap } from './support/events.js';

/**
 * Past `largeGroup` members a group gets no typing, no shared read receipts and no presence,
 * so nothing of it grows with the group on every keystroke, read or connect; and members are
 * read a page at a time (a conversation carries only the first 50).
 */

const LARGE_GROUP = 4;

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ limits: { largeGroup: LARGE_GROUP, maxGroupMembers: 100 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

type User = Awaited<ReturnType<typeof signUp>>;

async function users(count: number): Promise<User[]> {
  return Promise.all(Array.from({ length: count }, () => signUp(app.url)));
}

async function sentinel(sender: User, conversationId: string, taps: EventTap[], content: string) {
  await sender.api.message.send.mutate({ conversationId, content });
  for (const events of taps) {
    await events.until(() => events.of('message.created').some((e) => e.message.content === content));
  }
}

describe(`large groups (${engineLabel})`, () => {
  it('sends no typing and no one else’s read receipts past largeGroup, but the reader’s own devices get theirs', async () => {
    const [owner, bo, ...rest] = await users(LARGE_GROUP + 1);
    if (!owner || !bo) throw new Error('users missing');
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Large',
      memberIds: [bo.user.id, ...rest.map((u) => u.user.id)],
    });
    const small = await owner.api.conversation.createGroup.mutate({ name: 'Small', memberIds: [bo.user.id] });
    const boTap = await tap(bo, app, bo.user.id);
    const ownerPhone = connect(app.url, owner.tokens.accessToken);
    const ownerTap = await tap(ownerPhone, app, owner.user.id);
    const first = await owner.api.message.send.mutate({ conversationId: group.id, content: 'hello all' });
    await owner.api.conversation.typing.mutate({ id: group.id });
    await owner.api.conversation.markRead.mutate({ id: group.id, seq: first.seq });
    // The same calls in a small group do reach the others: the rule is the size.
    await owner.api.conversation.typing.mutate({ id: small.id });
    await owner.api.conversation.markRead.mutate({ id: small.id, seq: 0 });
    const smallFirst = await owner.api.message.send.mutate({ conversationId: small.id, content: 'small' });
    await owner.api.conversation.markRead.mutate({ id: small.id, seq: smallFirst.seq });
    await sentinel(owner, group.id, [boTap, ownerTap], 'after the signals');
    await sentinel(owner, small.id, [boTap, ownerTap], 'after the signals, small');
    expect(boTap.of('typing').map((e) => e.conversationId)).toEqual([small.id]);
    expect(boTap.of('read').map((e) => e.conversationId)).toEqual([small.id]);
    // The reader's other device still learns of its own read, in both.
    expect(ownerTap.of('read').map((e) => [e.conversationId, e.seq])).toEqual([
      [group.id, first.seq],
      [small.id, smallFirst.seq],
    ]);
    await Promise.all([boTap.stop(), ownerTap.stop()]);
    await ownerPhone.close();
  });

  it('makes nobody a contact through a large group: no presence to its members', async () => {
    const [owner, bo, cy, ...rest] = await users(LARGE_GROUP + 1);
    if (!owner || !bo || !cy) throw new Error('users missing');
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Crowd',
      memberIds: [bo.user.id, cy.user.id, ...rest.map((u) => u.user.id)],
    });
    // bo and cy also share a direct conversation: cy sees bo's presence, the owner does not.
    await bo.api.conversation.openDirect.mutate({ userId: cy.user.id });
    const [ownerTap, cyTap] = await Promise.all([tap(owner, app, owner.user.id), tap(cy, app, cy.user.id)]);
    const boTap = await tap(bo, app, bo.user.id);
    await cyTap.until(() => cyTap.of('presence').some((e) => e.userId === bo.user.id && e.online));
    await sentinel(bo, group.id, [ownerTap, cyTap], 'bo is here');
    expect(ownerTap.of('presence').filter((e) => e.userId === bo.user.id)).toEqual([]);
    await Promise.all([ownerTap.stop(), cyTap.stop(), boTap.stop()]);
  });

  it(
    'carries the first 50 members in a conversation and pages through all of them with conversation.members',
    { timeout: 120_000 },
    async () => {
      const local = await TestDeployment.create();
      try {
        const big = await local.start({ limits: { maxGroupMembers: 100 } });
        const people = await Promise.all(Array.from({ length: 61 }, () => signUp(big.url)));
        const [owner, ...others] = people;
        if (!owner) throw new Error('users missing');
        const group = await owner.api.conversation.createGroup.mutate({
          name: 'Sixty',
          memberIds: others.slice(0, 30).map((u) => u.user.id),
        });
        await owner.api.conversation.addMembers.mutate({
          id: group.id,
          userIds: others.slice(30).map((u) => u.user.id),
        });
        const view = await owner.api.conversation.byId.query({ id: group.id });
        expect(view.memberCount).toBe(61);
        expect(view.members).toHaveLength(50);
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const page: Awaited<ReturnType<typeof owner.api.conversation.members.query>> =
            await owner.api.conversation.members.query({ id: group.id, limit: 25, cursor });
          expect(page.items.length).toBeLessThanOrEqual(25);
          seen.push(...page.items.map((m) => m.userId));
          cursor = page.nextCursor;
        } while (cursor);
        expect(seen).toHaveLength(61);
        expect(new Set(seen)).toEqual(new Set(people.map((u) => u.user.id)));
        expect(seen.slice(0, 50)).toEqual(view.members.map((m) => m.userId));
        // Only members may page through them; a forged cursor is the caller's error.
        const outsider = await signUp(big.url);
        await expectCode(outsider.api.conversation.members.query({ id: group.id }), 'NOT_FOUND');
        await expectCode(
          owner.api.conversation.members.query({ id: group.id, cursor: 'bm90IGEgY3Vyc29y' }),
          'BAD_REQUEST',
        );
        await Promise.all([...people, outsider].map((u) => u.close()));
      } finally {
        await local.cleanup();
      }
    },
  );
});
