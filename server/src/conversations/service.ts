import { z } from 'zod';
import { uuidv7 } from '../ids.js';
import { and, asc, desc, eq, inArray, isNull, lt, lte, sql } from 'drizzle-orm';
import { conversations, members, users } from '../../../drizzle/schema.js';
import type { TypingClaims } from '../broker/ports/typing.js';
import type { Conversation, Member, Role } from '../contracts/schemas.js';
import type { Limits } from '../config/index.js';
import type { Database } from '../db/index.js';
import { Forbidden, Invalid, NotFound } from '../errors.js';
import type { MessageService, Sender } from '../messages/service.js';
import type { MessageStore } from '../messages/store.js';
import { CursorField, decodeCursor, encodeCursor } from '../pagination.js';
import type { EventPublisher } from '../contracts/events.js';
import type { Memberships } from '../membership/index.js';
import type { CreateGroup, ListConversations, ListMembers } from './schemas.js';

/** How long a `typing` signal lasts unless repeated. */
export const TYPING_TTL_MS = 5_000;
/**
 * At most one `typing` event per user and conversation in this long, however often the client
 * calls: shorter than `TYPING_TTL_MS`, so that steady typing keeps the signal on without a gap.
 */
export const TYPING_COALESCE_MS = 3_000;

/**
 * A timestamp as PostgreSQL writes it as text, in a cursor: a JavaScript date would cut its
 * microseconds, and a page would then start again at the rows that share the last one's
 * millisecond.
 */
const TimestampText = z.string().regex(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d)?$/);

/** A conversation carries this many of its members; `conversation.members` pages through all. */
export const MEMBERS_PREVIEW = 50;

/** A system message names at most this many added members; past it, it counts them. */
const NAMES_IN_SYSTEM_MESSAGE = 3;

type ConversationRow = typeof conversations.$inferSelect;
type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0];

export class ConversationService {
  constructor(
    private readonly db: Database,
    private readonly store: MessageStore,
    private readonly memberships: Memberships,
    private readonly messages: MessageService,
    private readonly events: EventPublisher,
    private readonly typingClaims: TypingClaims,
    private readonly limits: Pick<Limits, 'maxGroupMembers' | 'largeGroup'>,
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
      await this.events.mark([me.id, otherId], { change: 'in', conversationId: existing.id });
    }
    return this.view(existing.id, me.id);
  }

  async createGroup(me: Sender, input: CreateGroup): Promise<Conversation> {
    const others = [...new Set(input.memberIds)].filter((id) => id !== me.id);
    if (others.length + 1 > this.limits.maxGroupMembers) {
      throw new Invalid(`a group has at most ${this.limits.maxGroupMembers} members`, 'memberIds');
    }
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
    await this.events.mark([me.id, ...others], { change: 'in', conversationId: id });
    await this.messages.appendSystem(id, me, `${me.username} created the group "${input.name}"`);
    return this.view(id, me.id);
  }

  async list(userId: string, input: ListConversations) {
    // A cursor from before positions were PostgreSQL's text holds an ISO date: still taken.
    const after = decodeCursor(
      input.cursor,
      z.object({ at: z.union([TimestampText, CursorField.at]), id: CursorField.id }),
    );
    const rows = await this.db
      .select({ id: conversations.id, position: sql<string>`${conversations.lastActivityAt}::text` })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(
        and(
          eq(members.userId, userId),
          isNull(conversations.deletedAt),
          after
            ? sql`(${conversations.lastActivityAt}, ${conversations.id}) < (${after.at}::timestamptz, ${after.id}::uuid)`
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
      items: page.flatMap((row) => views.get(row.id)?.conversation ?? []),
      nextCursor: rows.length > input.limit && last ? encodeCursor({ at: last.position, id: last.id }) : null,
    };
  }

  async byId(userId: string, id: string): Promise<Conversation> {
    await this.memberships.require(userId, id);
    return this.view(id, userId);
  }

  async rename(me: Sender, id: string, name: string): Promise<Conversation> {
    await this.memberships.requireManager(me.id, id);
    const updatedAt = new Date();
    await this.db.update(conversations).set({ name, updatedAt }).where(eq(conversations.id, id));
    await this.messages.appendSystem(id, me, `${me.username} renamed the group to "${name}"`);
    await this.events.toConversation(id, {
      type: 'conversation.updated',
      conversationId: id,
      name,
      memberCount: await this.memberships.size(id),
      updatedAt,
      by: me.id,
    });
    return this.view(id, me.id);
  }

  /**
   * Adds users to a group, up to `maxGroupMembers`. However many are added, the call makes one
   * system message and one `member.joined` naming them all; each newcomer's devices get the
   * conversation, and the others only the change, whatever the group's size.
   */
  async addMembers(me: Sender, id: string, userIds: string[]): Promise<Conversation> {
    await this.memberships.requireManager(me.id, id);
    const wanted = [...new Set(userIds)];
    const found = await this.requireUsers(wanted);
    const { maxGroupMembers } = this.limits;
    const inserted = await this.db.transaction(async (tx) => {
      // Counted and inserted under the conversation's lock: concurrent additions take turns,
      // so together they never pass the cap.
      await lockLive(tx, id);
      const current = await tx
        .select({ userId: members.userId })
        .from(members)
        .where(eq(members.conversationId, id));
      const present = new Set(current.map((row) => row.userId));
      const newcomers = wanted.filter((userId) => !present.has(userId));
      if (current.length + newcomers.length > maxGroupMembers) {
        const room = Math.max(0, maxGroupMembers - current.length);
        throw new Invalid(
          `a group has at most ${maxGroupMembers} members; this one has room for ${room} more`,
          'userIds',
        );
      }
      if (newcomers.length === 0) return [];
      const rows = await tx
        .insert(members)
        .values(newcomers.map((userId) => ({ conversationId: id, userId, role: 'member' as const })))
        .onConflictDoNothing()
        .returning({ userId: members.userId });
      await tx.update(conversations).set({ updatedAt: new Date() }).where(eq(conversations.id, id));
      return rows;
    });
    if (inserted.length > 0) {
      const addedIds = new Set(inserted.map((row) => row.userId));
      // In the order the caller gave them.
      const added = wanted.filter((userId) => addedIds.has(userId));
      await this.memberships.refresh(id);
      await this.events.mark(added, { change: 'in', conversationId: id });
      await this.messages.appendSystem(
        id,
        me,
        `${me.username} added ${namesOf(added.map((userId) => found.get(userId) ?? 'someone'))}`,
      );
      await this.events.toConversation(id, {
        type: 'member.joined',
        conversationId: id,
        userIds: added,
        by: me.id,
      });
    }
    return this.view(id, me.id);
  }

  async removeMember(me: Sender, id: string, userId: string): Promise<Conversation> {
    if (userId === me.id) throw new Invalid('use conversation.leave to leave a conversation', 'userId');
    await this.memberships.requireManager(me.id, id);
    await this.db.transaction(async (tx) => {
      // Roles are read under the conversation's lock: a concurrent leave may have just made
      // the target the owner, or taken the caller's role.
      await lockLive(tx, id);
      const mine = await roleIn(tx, id, me.id);
      if (!mine) throw new NotFound('Conversation');
      if (mine === 'member') throw new Forbidden('Only group admins and the owner can do that');
      const target = await roleIn(tx, id, userId);
      if (!target) throw new NotFound('Member');
      if (target === 'owner') throw new Forbidden('The owner cannot be removed');
      if (target === 'admin' && mine !== 'owner') throw new Forbidden('Only the owner can remove an admin');
      await this.deleteMember(tx, id, userId);
    });
    await this.memberDropped(id, me, userId, 'removed');
    return this.view(id, me.id);
  }

  async setRole(me: Sender, id: string, userId: string, role: 'admin' | 'member'): Promise<Conversation> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type !== 'group' || mine.role !== 'owner')
      throw new Forbidden('Only the owner can change roles');
    if (userId === me.id) throw new Forbidden('The owner keeps the owner role');
    await this.db.transaction(async (tx) => {
      // Under the lock, so that a concurrent leave cannot hand the group to the member whose
      // role this is about to change, or take the ownership this call relies on.
      await lockLive(tx, id);
      if ((await roleIn(tx, id, me.id)) !== 'owner') throw new Forbidden('Only the owner can change roles');
      const target = await roleIn(tx, id, userId);
      if (!target) throw new NotFound('Member');
      await tx
        .update(members)
        .set({ role })
        .where(and(eq(members.conversationId, id), eq(members.userId, userId)));
      await tx.update(conversations).set({ updatedAt: new Date() }).where(eq(conversations.id, id));
    });
    await this.events.toConversation(id, {
      type: 'member.updated',
      conversationId: id,
      userId,
      role,
      by: me.id,
    });
    return this.view(id, me.id);
  }

  /**
   * Leaves a group. An owner who leaves hands the group to the longest-standing admin (or
   * member); the last one out deletes it. A direct conversation cannot be left. Leaves of one
   * group take turns under its lock, each deciding on what the others left: when the owner
   * and its only admin leave at once, whichever goes second finds the group as the first left
   * it, so the group keeps an owner for as long as it has members.
   */
  async leave(me: Sender, id: string): Promise<{ ok: true }> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type === 'direct') throw new Forbidden('A direct conversation cannot be left');
    const outcome = await this.db.transaction(async (tx) => {
      await lockLive(tx, id);
      const role = await roleIn(tx, id, me.id);
      if (!role) throw new NotFound('Conversation');
      if (role === 'owner') {
        const [heir] = await tx
          .select({ userId: members.userId })
          .from(members)
          .where(and(eq(members.conversationId, id), sql`${members.userId} <> ${me.id}`))
          .orderBy(sql`case ${members.role} when 'admin' then 0 else 1 end`, asc(members.joinedAt))
          .limit(1);
        if (!heir) {
          await tx.update(conversations).set({ deletedAt: new Date() }).where(eq(conversations.id, id));
          return 'deleted' as const;
        }
        await tx
          .update(members)
          .set({ role: 'owner' })
          .where(and(eq(members.conversationId, id), eq(members.userId, heir.userId)));
      }
      await this.deleteMember(tx, id, me.id);
      return 'left' as const;
    });
    if (outcome === 'deleted') {
      await this.memberships.refresh(id);
      await this.events.toConversation(id, { type: 'conversation.removed', conversationId: id });
      return { ok: true };
    }
    await this.memberDropped(id, me, me.id, 'left');
    return { ok: true };
  }

  async delete(me: Sender, id: string): Promise<{ ok: true }> {
    const mine = await this.memberships.require(me.id, id);
    if (mine.type !== 'group' || mine.role !== 'owner') {
      throw new Forbidden('Only the owner can delete a conversation');
    }
    await this.db.update(conversations).set({ deletedAt: new Date() }).where(eq(conversations.id, id));
    await this.memberships.refresh(id);
    await this.events.toConversation(id, { type: 'conversation.removed', conversationId: id });
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
      const event = { type: 'read' as const, conversationId: id, userId, seq: moved.lastReadSeq };
      // Receipts go to every member up to `largeGroup`; past it, only to the reader's devices.
      if (await this.isLarge(id)) await this.events.toUser(userId, event);
      else await this.events.toConversation(id, event);
      return moved;
    }
    const current = await this.memberships.require(userId, id);
    return { lastReadSeq: current.lastReadSeq };
  }

  /**
   * Ephemeral: never written to PostgreSQL. Coalesced across instances: only the call that
   * claims the user's slot in this conversation (held for `TYPING_COALESCE_MS`) sends the event;
   * the others succeed without one.
   */
  async typing(userId: string, id: string): Promise<{ ok: true }> {
    if (!(await this.memberships.isMember(userId, id))) throw new NotFound('Conversation');
    // Nobody is told who types in a group past `largeGroup`.
    if (await this.isLarge(id)) return { ok: true };
    const until = new Date(Date.now() + TYPING_TTL_MS);
    const claimed = await this.typingClaims.claim(id, userId, TYPING_COALESCE_MS);
    if (!claimed) return { ok: true };
    await this.events.toConversation(id, { type: 'typing', conversationId: id, userId, until });
    return { ok: true };
  }

  /**
   * The members of a conversation the caller is in, a page at a time, longest-standing first
   * (a conversation carries only the first `MEMBERS_PREVIEW`).
   */
  async members(userId: string, input: ListMembers) {
    await this.memberships.require(userId, input.id);
    const after = decodeCursor(input.cursor, z.object({ at: TimestampText, id: CursorField.id }));
    const rows = await this.db
      .select({
        userId: members.userId,
        username: users.username,
        displayName: users.displayName,
        role: members.role,
        joinedAt: members.joinedAt,
        lastReadSeq: members.lastReadSeq,
        position: sql<string>`${members.joinedAt}::text`,
      })
      .from(members)
      .innerJoin(users, eq(users.id, members.userId))
      .where(
        and(
          eq(members.conversationId, input.id),
          after
            ? sql`(${members.joinedAt}, ${members.userId}) > (${after.at}::timestamptz, ${after.id}::uuid)`
            : undefined,
        ),
      )
      .orderBy(asc(members.joinedAt), asc(members.userId))
      .limit(input.limit + 1);
    const page = rows.slice(0, input.limit);
    const last = page[page.length - 1];
    return {
      items: page.map(({ position: _position, ...member }) => member),
      nextCursor:
        rows.length > input.limit && last ? encodeCursor({ at: last.position, id: last.userId }) : null,
    };
  }

  private async isLarge(id: string): Promise<boolean> {
    return (await this.memberships.size(id)) > this.limits.largeGroup;
  }

  private async deleteMember(tx: Transaction, id: string, userId: string): Promise<void> {
    await tx.delete(members).where(and(eq(members.conversationId, id), eq(members.userId, userId)));
    await tx.update(conversations).set({ updatedAt: new Date() }).where(eq(conversations.id, id));
  }

  /** What follows a committed departure: the roster, the events and one system message. */
  private async memberDropped(id: string, actor: Sender, userId: string, how: 'left' | 'removed') {
    await this.memberships.refresh(id);
    const [user] = await this.db.select({ username: users.username }).from(users).where(eq(users.id, userId));
    const name = user?.username ?? 'someone';
    // The one who went still gets `member.left`, then nothing more of the conversation.
    await this.events.toConversation(id, {
      type: 'member.left',
      conversationId: id,
      userIds: [userId],
      by: how === 'left' ? null : actor.id,
    });
    await this.events.mark([userId], { change: 'out', conversationId: id });
    await this.messages.appendSystem(
      id,
      actor,
      how === 'left' ? `${name} left` : `${actor.username} removed ${name}`,
    );
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
    const view = (await this.views([id], viewerId)).get(id);
    if (!view) throw new NotFound('Conversation');
    return view.conversation;
  }

  /** The conversation as `viewerId` sees it, for their stream; null once it is deleted. */
  async viewOf(id: string, viewerId: string): Promise<Conversation | null> {
    const view = (await this.views([id], viewerId)).get(id);
    return view && !view.deletedAt ? view.conversation : null;
  }

  /**
   * Builds the `Conversation` shape for many conversations in a fixed number of queries, with
   * the unread counts of `viewerId` (none without one) and the first `MEMBERS_PREVIEW` members
   * of each, whatever its size.
   */
  private async views(
    ids: string[],
    viewerId: string | null,
  ): Promise<Map<string, { conversation: Conversation; deletedAt: Date | null }>> {
    const out = new Map<string, { conversation: Conversation; deletedAt: Date | null }>();
    if (ids.length === 0) return out;
    const ranked = this.db
      .select({
        conversationId: members.conversationId,
        userId: members.userId,
        username: users.username,
        displayName: users.displayName,
        role: members.role,
        joinedAt: members.joinedAt,
        lastReadSeq: members.lastReadSeq,
        rank: sql<number>`row_number() over (partition by ${members.conversationId} order by ${members.joinedAt}, ${members.userId})`.as(
          'rank',
        ),
        total: sql<number>`count(*) over (partition by ${members.conversationId})`.as('total'),
      })
      .from(members)
      .innerJoin(users, eq(users.id, members.userId))
      .where(inArray(members.conversationId, ids))
      .as('ranked');
    const [rows, memberRows, own] = await Promise.all([
      this.db.select().from(conversations).where(inArray(conversations.id, ids)),
      this.db.select().from(ranked).where(lte(ranked.rank, MEMBERS_PREVIEW)).orderBy(asc(ranked.rank)),
      viewerId === null
        ? Promise.resolve([])
        : this.db
            .select({ conversationId: members.conversationId, lastReadSeq: members.lastReadSeq })
            .from(members)
            .where(and(inArray(members.conversationId, ids), eq(members.userId, viewerId))),
    ]);
    const membersOf = new Map<string, Member[]>();
    const counts = new Map<string, number>();
    for (const { conversationId, rank: _rank, total, ...member } of memberRows) {
      const list = membersOf.get(conversationId) ?? [];
      list.push(member);
      membersOf.set(conversationId, list);
      counts.set(conversationId, Number(total));
    }
    const readPositions = new Map(own.map((row) => [row.conversationId, row.lastReadSeq]));
    const [latest, unread] = await Promise.all([
      this.store.latest(ids),
      viewerId === null ? new Map<string, number>() : this.store.unreadCounts(viewerId, readPositions),
    ]);
    for (const row of rows as ConversationRow[]) {
      const lastMessage = latest.get(row.id) ?? null;
      out.set(row.id, {
        deletedAt: row.deletedAt,
        conversation: {
          id: row.id,
          type: row.type,
          name: row.name,
          createdBy: row.createdBy,
          createdAt: row.createdAt,
          updatedAt: row.updatedAt,
          members: membersOf.get(row.id) ?? [],
          memberCount: counts.get(row.id) ?? 0,
          lastMessage,
          lastSeq: Math.max(row.lastSeq, lastMessage?.seq ?? 0),
          unreadCount: Math.max(0, unread.get(row.id) ?? 0),
        },
      });
    }
    return out;
  }
}

/**
 * Locks a live conversation's row until the transaction ends: membership changes of one
 * conversation take turns. `NO KEY UPDATE`, so the worker's inserts of messages (which check
 * their conversation with `KEY SHARE`) go on meanwhile.
 */
async function lockLive(tx: Transaction, id: string): Promise<void> {
  const [row] = await tx
    .select({ id: conversations.id })
    .from(conversations)
    .where(and(eq(conversations.id, id), isNull(conversations.deletedAt)))
    .for('no key update');
  if (!row) throw new NotFound('Conversation');
}

async function roleIn(tx: Transaction, id: string, userId: string): Promise<Role | null> {
  const [row] = await tx
    .select({ role: members.role })
    .from(members)
    .where(and(eq(members.conversationId, id), eq(members.userId, userId)));
  return row?.role ?? null;
}

/** "bo", "bo and cy", "bo, cy and dd"; past a few names, "5 people". */
function namesOf(names: string[]): string {
  if (names.length > NAMES_IN_SYSTEM_MESSAGE) return `${names.length} people`;
  if (names.length <= 1) return names[0] ?? 'nobody';
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}
