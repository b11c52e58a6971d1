import { and, eq, gte, inArray, isNull, or, sql } from 'drizzle-orm';
import { conversations, members, users } from '../../../drizzle/schema.js';
import type { RosterStore } from '../broker/ports/rosters.js';
import type { Database } from '../db/index.js';
import { Forbidden, NotFound } from '../errors.js';
import type { Role } from '../contracts/schemas.js';

export interface Membership {
  conversationId: string;
  type: 'direct' | 'group';
  role: Role;
  lastReadSeq: number;
}

/**
 * Who belongs where. A conversation the caller is not in is reported as not found, so
 * nobody learns that it exists.
 *
 * The broker holds each active conversation's roster (`RosterStore`), which a send checks in the
 * same step as its append: one lookup, whatever the group's size. It is filled from PostgreSQL
 * when missing and dropped after every committed change.
 */
export class Memberships {
  /**
   * The queries every connection and most calls make, built once: drizzle builds a query anew
   * on each call otherwise, some kilobytes of objects each time (and PostgreSQL prepares the
   * text once per connection either way).
   */
  private readonly roster;
  private readonly current;
  private readonly membership;
  private readonly contacts;

  constructor(
    private readonly db: Database,
    private readonly rosters: RosterStore,
  ) {
    this.roster = db
      .select({ userId: members.userId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(
        and(eq(members.conversationId, sql.placeholder('conversationId')), isNull(conversations.deletedAt)),
      )
      .prepare('parley_roster');
    this.current = db
      .select({ id: members.conversationId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(and(eq(members.userId, sql.placeholder('userId')), isNull(conversations.deletedAt)))
      .prepare('parley_conversations_of');
    this.membership = db
      .select({
        conversationId: members.conversationId,
        type: conversations.type,
        role: members.role,
        lastReadSeq: members.lastReadSeq,
      })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(
        and(
          eq(members.conversationId, sql.placeholder('conversationId')),
          eq(members.userId, sql.placeholder('userId')),
          isNull(conversations.deletedAt),
        ),
      )
      .prepare('parley_membership');
    // Each of the user's conversations is counted up to one past `largeGroup` only, so a
    // connect costs the same in a group of 10,000 as in one of 1,001.
    const small = sql`(select count(*) from (select 1 from ${members} as peer where peer.conversation_id = ${members.conversationId} limit ${sql.placeholder('countUpTo')}) as counted) <= ${sql.placeholder('largeGroup')}`;
    const mine = db
      .select({ id: members.conversationId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(and(eq(members.userId, sql.placeholder('userId')), isNull(conversations.deletedAt), small));
    this.contacts = db
      .selectDistinct({ userId: members.userId })
      .from(members)
      .innerJoin(users, eq(users.id, members.userId))
      .where(and(inArray(members.conversationId, mine), isNull(users.deletedAt)))
      .prepare('parley_contacts_of');
  }

  /** Puts the conversation's roster in the broker, unless it is there or changed meanwhile. */
  async fillRoster(conversationId: string): Promise<void> {
    const version = await this.rosters.version(conversationId);
    await this.rosters.fill(conversationId, await this.load(conversationId), version);
  }

  /**
   * Call after every committed membership change of the conversation: the roster is dropped and
   * filled again at once, so the next send finds it.
   */
  async refresh(conversationId: string): Promise<void> {
    await this.rosters.invalidate(conversationId);
    await this.fillRoster(conversationId);
  }

  /** Whether the user is in the live conversation, from the broker's roster. */
  async isMember(userId: string, conversationId: string): Promise<boolean> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const answer = await this.rosters.has(conversationId, userId);
      if (answer !== null) return answer;
      await this.fillRoster(conversationId);
    }
    return (await this.load(conversationId)).includes(userId);
  }

  /** How many members the conversation has, from the broker's roster. */
  async size(conversationId: string): Promise<number> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const size = await this.rosters.size(conversationId);
      if (size !== null) return size;
      await this.fillRoster(conversationId);
    }
    return (await this.load(conversationId)).length;
  }

  private async load(conversationId: string): Promise<string[]> {
    const rows = await this.roster.execute({ conversationId });
    return rows.map((row) => row.userId);
  }

  /**
   * The conversations whose events a user's stream reads: those they are in, and those deleted
   * at or after `sinceMs` while they were in them.
   */
  async conversationsOf(userId: string, sinceMs: number | null = null): Promise<string[]> {
    if (sinceMs === null) return (await this.current.execute({ userId })).map((row) => row.id);
    const rows = await this.db
      .select({ id: members.conversationId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(
        and(
          eq(members.userId, userId),
          or(isNull(conversations.deletedAt), gte(conversations.deletedAt, new Date(sinceMs))),
        ),
      );
    return rows.map((row) => row.id);
  }

  async find(userId: string, conversationId: string): Promise<Membership | null> {
    const [row] = await this.membership.execute({ conversationId, userId });
    return row ?? null;
  }

  async require(userId: string, conversationId: string): Promise<Membership> {
    const membership = await this.find(userId, conversationId);
    if (!membership) throw new NotFound('Conversation');
    return membership;
  }

  /** A group the caller may manage (admin or owner). */
  async requireManager(userId: string, conversationId: string): Promise<Membership> {
    const membership = await this.require(userId, conversationId);
    if (membership.type !== 'group') throw new Forbidden('A direct conversation cannot be changed');
    if (membership.role === 'member') throw new Forbidden('Only group admins and the owner can do that');
    return membership;
  }

  /**
   * Everyone who shares a direct conversation or a group of at most `largeGroup` members with
   * the user (they see its presence); a large group makes nobody a contact.
   */
  async contactsOf(userId: string, largeGroup: number): Promise<string[]> {
    const rows = await this.contacts.execute({ userId, countUpTo: largeGroup + 1, largeGroup });
    return rows.map((row) => row.userId).filter((id) => id !== userId);
  }
}
