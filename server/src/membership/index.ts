import { and, eq, inArray, isNull } from 'drizzle-orm';
import { conversations, members, users } from '../../../drizzle/schema.js';
import type { Broker } from '../broker/types.js';
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
 */
/** Who is in a conversation, as cached in the broker for the send path. */
interface Roster {
  members: string[];
}

/** A roster as the broker holds it: its key, its exact text, and its members. */
export interface SendRoster {
  key: string;
  text: string;
  members: string[];
}

const rosterKey = (conversationId: string) => `roster:${conversationId}`;
const ROSTER_TTL_MS = 10 * 60 * 1000;
/** Rosters this instance keeps for the send path; the oldest goes first beyond this. */
const LOCAL_ROSTERS = 10_000;

export class Memberships {
  /** This instance's copies of broker rosters, for the send path (see `sendRoster`). */
  private readonly local = new Map<string, SendRoster>();

  constructor(
    private readonly db: Database,
    private readonly broker: Broker,
  ) {}

  /**
   * The roster a send goes out with: this instance's copy when it has one (with `fresh`, or
   * without a copy, the broker's). A copy may be out of date; the send's append requires the
   * broker's roster to still be this text (`AppendOptions.requireValue`), and when it is not,
   * the send asks again with `fresh`. So a send costs no round trip for its roster, and none
   * is ever accepted on a roster that changed.
   */
  async sendRoster(conversationId: string, fresh = false): Promise<SendRoster> {
    const copy = fresh ? undefined : this.local.get(conversationId);
    if (copy) return copy;
    const key = rosterKey(conversationId);
    let text = await this.broker.get(key);
    if (text === null) {
      const filled = JSON.stringify(await this.load(conversationId));
      const set = await this.broker.set(key, filled, { ttlMs: ROSTER_TTL_MS, nx: true });
      text = set ? filled : ((await this.broker.get(key)) ?? filled);
    }
    const roster: SendRoster = { key, text, members: (JSON.parse(text) as Roster).members };
    this.local.delete(conversationId);
    this.local.set(conversationId, roster);
    if (this.local.size > LOCAL_ROSTERS) {
      const oldest = this.local.keys().next();
      if (!oldest.done) this.local.delete(oldest.value);
    }
    return roster;
  }

  /**
   * Members of a live conversation (empty when it is deleted or unknown), from the broker's
   * cache so that sending works while PostgreSQL is unreachable. A cache fill only writes
   * when no entry exists, and every membership change overwrites the entry after its commit,
   * so a fill that read before a change can never outlive it.
   */
  private async roster(conversationId: string): Promise<Roster> {
    const cached = await this.broker.get(rosterKey(conversationId));
    if (cached) return JSON.parse(cached) as Roster;
    const roster = await this.load(conversationId);
    await this.broker.set(rosterKey(conversationId), JSON.stringify(roster), {
      ttlMs: ROSTER_TTL_MS,
      nx: true,
    });
    return roster;
  }

  /** Call after every committed membership change of the conversation. */
  async refresh(conversationId: string): Promise<void> {
    // This instance's copy goes at once; other instances' sends find theirs out of date.
    this.local.delete(conversationId);
    const roster = await this.load(conversationId);
    await this.broker.set(rosterKey(conversationId), JSON.stringify(roster), { ttlMs: ROSTER_TTL_MS });
  }

  private async load(conversationId: string): Promise<Roster> {
    const rows = await this.db
      .select({ userId: members.userId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(and(eq(members.conversationId, conversationId), isNull(conversations.deletedAt)));
    return { members: rows.map((row) => row.userId) };
  }

  async find(userId: string, conversationId: string): Promise<Membership | null> {
    const [row] = await this.db
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
          eq(members.conversationId, conversationId),
          eq(members.userId, userId),
          isNull(conversations.deletedAt),
        ),
      );
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

  /** Every member of a live conversation, after checking that `userId` is one of them. */
  async recipients(userId: string, conversationId: string): Promise<string[]> {
    const { members: ids } = await this.roster(conversationId);
    if (!ids.includes(userId)) throw new NotFound('Conversation');
    return ids;
  }

  async memberIds(conversationId: string): Promise<string[]> {
    return (await this.roster(conversationId)).members;
  }

  /** Everyone who shares at least one conversation with the user (they see its presence). */
  async contactsOf(userId: string): Promise<string[]> {
    const mine = this.db
      .select({ id: members.conversationId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(and(eq(members.userId, userId), isNull(conversations.deletedAt)));
    const rows = await this.db
      .selectDistinct({ userId: members.userId })
      .from(members)
      .innerJoin(users, eq(users.id, members.userId))
      .where(and(inArray(members.conversationId, mine), isNull(users.deletedAt)));
    return rows.map((row) => row.userId).filter((id) => id !== userId);
  }
}
