import { z } from 'zod';
import { v7 as uuidv7 } from 'uuid';
import { and, asc, desc, eq, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import { conversations, members, users } from '../../../drizzle/schema.js';
import type { Broker } from '../broker/types.js';
import type { Database } from '../db/index.js';
import { Forbidden, Invalid, NotFound } from '../errors.js';
import type { MessageService, Sender } from '../messages/service.js';
import type { MessageStore } from '../messages/store.js';
import { CursorField, decodeCursor, encodeCursor } from '../pagination.js';
import type { EventPublisher, ParleyEvent } from '../realtime/events.js';
import type { Memberships } from './membership.js';
import type { Conversation, CreateGroup, ListConversations, Member } from './schemas.js';

/** How long a `typing` signal lasts unless repeated. */
export const TYPING_TTL_MS = 5_000;
/**
 * At most one `typing` event per user and conversation in this long, however often the client
 * calls: shorter than `TYPING_TTL_MS`, so that steady typing keeps the signal on without a gap.
 */
export const TYPING_COALESCE_MS = 3_000;

type ConversationRow = typeof conversations.$inferSelect;

export class ConversationService {
  constructor(
    private readonly db: Database,
    private readonly store: MessageStore,
    private readonly memberships: Memberships,
    private readonly messages: MessageService,
    private readonly events: EventPublisher,
    private readonly broker: Broker,
  ) {}

  /** The same pair always gets the same conversation, whoever opens it and however often. */
  async openDirect(me: Sender, otherId: string): Promise<Conversation> {
    if (otherId === me.id) throw new Invalid('must be someone other than yourself', 'userId');
    await this.requireUsers([otherId]);
    const directKey = [me.id, otherId].sort().join(':');
    const id = uuidv7();
    const created = await this.db.transaction(async (tx) => {
      const [row] = await tx
        .insert(conversations)
        .values({ id, type: 'direct', createdBy: me.id, directKey })
        .onConflictDoNothing({ target: conversations.directKey })
        .returning({ id: conversations.id });
      if (!row) return false;
      await tx.insert(members).values([
        { conversationId: id, userId: me.id, role: 'member' },
        { conversationId: id, userId: otherId, role: 'member' },
      ]);
      return true;
    });
    const [existing] = await this.db
      .select({ id: conversations.id, deletedAt: conversations.deletedAt })
      .from(conversations)
      .where(eq(conversations.directKey, directKey));
    if (!existing) throw new NotFound('Conversation');
    if (created) {
      await this.memberships.refresh(existing.id);
      await this.announce(existing.id, [me.id, otherId]);
    }
    return this.view(existing.id, me.id);
  }

  async createGroup(me: Sender, input: CreateGroup): Promise<Conversation> {
    const others = [...new Set(input.memberIds)].filter((id) => id !== me.id);
    await this.requireUsers(others);
    const id = uuidv7();
    await this.db.transaction(async (tx) => {
      await tx.insert(conversations).values({ id, type: 'group', name: input.name, createdBy: me.id });
      await tx
        .insert(members)
        .values([
          { conversationId: id, userId: me.id, role: 'owner' as const },
          ...others.map((userId) => ({ conversationId: id, userId, role: 'member' as const })),
        ]);
    });
    await this.memberships.refresh(id);
    await this.messages.appendSystem(id, me, `${me.username} created the group "${input.name}"`);
    await this.announce(id, [me.id, ...others]);
    return this.view(id, me.id);
  }

  async list(userId: string, input: ListConversations) {
    const after = decodeCursor(input.cursor, z.object({ at: CursorField.at, id: CursorField.id }));
    const rows = await this.db
      .select({ id: conversations.id, lastActivityAt: conversations.lastActivityAt })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(
        and(
          eq(members.userId, userId),
          isNull(conversations.deletedAt),
          after
            ? or(
                lt(conversations.lastActivityAt, new Date(after.at)),
                and(eq(conversations.lastActivityAt, new Date(after.at)), lt(conversations.id, after.id)),
              )
            : undefined,
        ),
      )
      .orderBy(desc(conversations.lastActivityAt), desc(conversations.id))
      .limit(input.limit + 1);
    const page = rows.slice(0, input.limit);
    const views = await this.views(
      page.map((row) => row.id),
      userId,
    );
    const last = page[page.length - 1];
    return {
      items: page.flatMap((row) => views.get(row.id) ?? []),
      nextCursor:
        rows.length > input.limit && last
          ? encodeCursor({ at: last.lastActivityAt.toISOString(), id: last.id })
          : null,
    };
  }

  async byId(userId: string, id: string): Promise<Conversation> {
    await this.memberships.require(userId, id);
    return this.view(id, userId);
  }

  async rename(me: Sender, id: string, name: string): Promise<Conversation> {
    await this.memberships.requireManager(me.id, id);
    await this.db.update(conversations).set({ name, updatedAt: new Date() }).where(eq(conversations.id, id));
    await this.messages.appendSystem(id, me, `${me.username} renamed the group to "${name}"`);
    await this.announce(id, await this.memberships.memberIds(id));
    return this.view(id, me.id);
  }

  async addMembers(me: Sender, id: string, userIds: string[]): Promise<Conversation> {
    await this.memberships.requireManager(me.id, id);
    const wanted = [...new Set(userIds)];
    const found = await this.requireUsers(wanted);
    const added = await this.db
      .insert(members)
      .values(wanted.map((userId) => ({ conversationId: id, userId, role: 'member' as const })))
      .onConflictDoNothing()
      .returning({ userId: members.userId });
    if (added.length > 0) {
      await this.memberships.refresh(id);
      await this.touch(id);
      const everyone = await this.memberships.memberIds(id);
      for (const { userId } of added) {
        await this.messages.appendSystem(id, me, `${me.username} added ${found.get(userId) ?? 'someone'}`);
        await this.publish(everyone, { type: 'member.joined', conversationId: id, userId, by: me.id });
      }
      await this.announce(id, everyone);
    }
    return this.view(id, me.id);
  }

  async removeMember(me: Sender, id: string, userId: string): Promise<Conversation> {
    if (userId === me.id) throw new Invalid('use conversation.leave to leave a conversation', 'userId');
    const mine = await this.memberships.requireManager(me.id, id);
    const target = await this.memberships.find(userId, id);
    if (!target) throw new NotFound('Member');
    if (target.role === 'owner') throw new Forbidden('The owner cannot be removed');
    if (target.role === 'admin' && mine.role !== 'owner') {
      throw new Forbidden('Only the owner can remove an admin');
    }
    await this.dropMember(id, me, userId, 'removed');
    return this.view(id, me.id);
  }

  async setRole(me: Sender, id: string, userId: string, role: 'admin' | 'member'): Promise<Conversation> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type !== 'group' || mine.role !== 'owner')
      throw new Forbidden('Only the owner can change roles');
    if (userId === me.id) throw new Forbidden('The owner keeps the owner role');
    const [updated] = await this.db
      .update(members)
      .set({ role })
      .where(and(eq(members.conversationId, id), eq(members.userId, userId)))
      .returning({ userId: members.userId });
    if (!updated) throw new NotFound('Member');
    await this.touch(id);
    await this.announce(id, await this.memberships.memberIds(id));
    return this.view(id, me.id);
  }

  /**
   * Leaves a group. An owner who leaves hands the group to the longest-standing admin (or
   * member); the last one out deletes it. A direct conversation cannot be left.
   */
  async leave(me: Sender, id: string): Promise<{ ok: true }> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type === 'direct') throw new Forbidden('A direct conversation cannot be left');
    if (mine.role === 'owner') {
      const [heir] = await this.db
        .select({ userId: members.userId })
        .from(members)
        .where(and(eq(members.conversationId, id), sql`${members.userId} <> ${me.id}`))
        .orderBy(sql`case ${members.role} when 'admin' then 0 else 1 end`, asc(members.joinedAt))
        .limit(1);
      if (!heir) {
        await this.softDelete(id, [me.id]);
        return { ok: true };
      }
      await this.db
        .update(members)
        .set({ role: 'owner' })
        .where(and(eq(members.conversationId, id), eq(members.userId, heir.userId)));
    }
    await this.dropMember(id, me, me.id, 'left');
    return { ok: true };
  }

  async delete(me: Sender, id: string): Promise<{ ok: true }> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type !== 'group' || mine.role !== 'owner') {
      throw new Forbidden('Only the owner can delete a conversation');
    }
    await this.softDelete(id, await this.memberships.memberIds(id));
    return { ok: true };
  }

  /** Moves the read position forward, never back, and never past the last message. */
  async markRead(userId: string, id: string, seq: number): Promise<{ lastReadSeq: number }> {
    await this.memberships.require(userId, id);
    const ceiling = await this.store.currentSeq(id);
    const target = Math.min(seq, ceiling);
    const [moved] = await this.db
      .update(members)
      .set({ lastReadSeq: target })
      .where(and(eq(members.conversationId, id), eq(members.userId, userId), lt(members.lastReadSeq, target)))
      .returning({ lastReadSeq: members.lastReadSeq });
    if (moved) {
      await this.publish(await this.memberships.memberIds(id), {
        type: 'read',
        conversationId: id,
        userId,
        seq: moved.lastReadSeq,
      });
      return moved;
    }
    const current = await this.memberships.require(userId, id);
    return { lastReadSeq: current.lastReadSeq };
  }

  /**
   * Ephemeral: never written to PostgreSQL. Coalesced across instances: only the call that
   * claims the user's slot in this conversation (a key set only when absent, expiring after
   * `TYPING_COALESCE_MS`) sends the event; the others succeed without one.
   */
  async typing(userId: string, id: string): Promise<{ ok: true }> {
    const recipients = await this.memberships.recipients(userId, id);
    const until = new Date(Date.now() + TYPING_TTL_MS);
    const claimed = await this.broker.set(`typing:${id}:${userId}`, until.toISOString(), {
      ttlMs: TYPING_COALESCE_MS,
      nx: true,
    });
    if (!claimed) return { ok: true };
    await this.publish(
      recipients.filter((member) => member !== userId),
      { type: 'typing', conversationId: id, userId, until },
    );
    return { ok: true };
  }

  private async dropMember(id: string, actor: Sender, userId: string, how: 'left' | 'removed') {
    const [gone] = await this.db
      .delete(members)
      .where(and(eq(members.conversationId, id), eq(members.userId, userId)))
      .returning({ userId: members.userId });
    if (!gone) throw new NotFound('Member');
    await this.memberships.refresh(id);
    const [user] = await this.db.select({ username: users.username }).from(users).where(eq(users.id, userId));
    const name = user?.username ?? 'someone';
    await this.touch(id);
    await this.messages.appendSystem(
      id,
      actor,
      how === 'left' ? `${name} left` : `${actor.username} removed ${name}`,
    );
    const remaining = await this.memberships.memberIds(id);
    await this.publish([...remaining, userId], {
      type: 'member.left',
      conversationId: id,
      userId,
      by: how === 'left' ? null : actor.id,
    });
    await this.publish([userId], { type: 'conversation.removed', conversationId: id });
    await this.announce(id, remaining);
  }

  private async softDelete(id: string, recipients: string[]): Promise<void> {
    await this.db.update(conversations).set({ deletedAt: new Date() }).where(eq(conversations.id, id));
    await this.memberships.refresh(id);
    await this.publish(recipients, { type: 'conversation.removed', conversationId: id });
  }

  private async touch(id: string): Promise<void> {
    await this.db.update(conversations).set({ updatedAt: new Date() }).where(eq(conversations.id, id));
  }

  /** Sends each recipient the conversation as they see it (their own unread count). */
  private async announce(id: string, recipients: string[]): Promise<void> {
    const views = await Promise.all(
      recipients.map(async (userId) => [userId, await this.view(id, userId)] as const),
    );
    await Promise.all(
      views.map(([userId, conversation]) =>
        this.publish([userId], { type: 'conversation.upserted', conversation }),
      ),
    );
  }

  private async publish(recipients: string[], event: ParleyEvent): Promise<void> {
    await this.events.publish(recipients, event);
  }

  /** Checks that every id is an active user; returns id → username. */
  private async requireUsers(ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const rows = await this.db
      .select({ id: users.id, username: users.username })
      .from(users)
      .where(and(inArray(users.id, ids), isNull(users.deletedAt)));
    if (rows.length !== new Set(ids).size) throw new NotFound('User');
    return new Map(rows.map((row) => [row.id, row.username]));
  }

  private async view(id: string, viewerId: string): Promise<Conversation> {
    const views = await this.views([id], viewerId);
    const view = views.get(id);
    if (!view) throw new NotFound('Conversation');
    return view;
  }

  /** Builds the `Conversation` shape for many conversations in a fixed number of queries. */
  private async views(ids: string[], viewerId: string): Promise<Map<string, Conversation>> {
    const out = new Map<string, Conversation>();
    if (ids.length === 0) return out;
    const [rows, memberRows] = await Promise.all([
      this.db.select().from(conversations).where(inArray(conversations.id, ids)),
      this.db
        .select({
          conversationId: members.conversationId,
          userId: members.userId,
          username: users.username,
          displayName: users.displayName,
          role: members.role,
          joinedAt: members.joinedAt,
          lastReadSeq: members.lastReadSeq,
        })
        .from(members)
        .innerJoin(users, eq(users.id, members.userId))
        .where(inArray(members.conversationId, ids))
        .orderBy(asc(members.joinedAt), asc(users.username)),
    ]);
    const membersOf = new Map<string, Member[]>();
    const readPositions = new Map<string, number>();
    for (const { conversationId, ...member } of memberRows) {
      const list = membersOf.get(conversationId) ?? [];
      list.push(member);
      membersOf.set(conversationId, list);
      if (member.userId === viewerId) readPositions.set(conversationId, member.lastReadSeq);
    }
    const [latest, unread] = await Promise.all([
      this.store.latest(ids),
      this.store.unreadCounts(viewerId, readPositions),
    ]);
    for (const row of rows as ConversationRow[]) {
      const lastMessage = latest.get(row.id) ?? null;
      out.set(row.id, {
        id: row.id,
        type: row.type,
        name: row.name,
        createdBy: row.createdBy,
        createdAt: row.createdAt,
        updatedAt: row.updatedAt,
        members: membersOf.get(row.id) ?? [],
        lastMessage,
        lastSeq: Math.max(row.lastSeq, lastMessage?.seq ?? 0),
        unreadCount: Math.max(0, unread.get(row.id) ?? 0),
      });
    }
    return out;
  }
}
