import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { and, asc, eq, gt, inArray, isNull, or, sql } from 'drizzle-orm';
import { conversations, members, users } from '../../../drizzle/schema.js';
import type { PasswordGuesses } from '../credentials/guesses.js';
import type { Passwords } from '../credentials/passwords.js';
import type { Sessions } from '../credentials/sessions.js';
import type { AuthUser } from '../credentials/tokens.js';
import type { Database } from '../db/index.js';
import { Conflict, Forbidden, Invalid, NotFound } from '../errors.js';
import { CursorField, decodeCursor, encodeCursor } from '../pagination.js';
import { nameKey } from '../text.js';
import type { ListUsers, Me, PublicUser, Register, UpdateUser } from './schemas.js';

/** Who is online right now, across every instance. */
export interface OnlineLookup {
  onlineAmong(userIds: string[]): Promise<Set<string>>;
}

type UserRow = typeof users.$inferSelect;

const UNIQUE_VIOLATION = '23505';

/** When each user was last seen; presence records it as a user's last connection goes. */
export class LastSeen {
  constructor(private readonly db: Database) {}

  async touch(userId: string): Promise<{ lastSeenAt: Date }> {
    const lastSeenAt = new Date();
    const [row] = await this.db
      .update(users)
      .set({ lastSeenAt })
      .where(and(eq(users.id, userId), isNull(users.deletedAt)))
      .returning({ lastSeenAt: users.lastSeenAt });
    if (!row) throw new NotFound('User');
    return { lastSeenAt };
  }
}

export class UserService {
  constructor(
    private readonly db: Database,
    private readonly sessions: Sessions,
    private readonly passwords: Passwords,
    private readonly guesses: PasswordGuesses,
    private readonly presence: OnlineLookup,
    private readonly lastSeen: LastSeen,
  ) {}

  async create(input: Register): Promise<Me> {
    if (input.displayName !== undefined) await this.requireOwnName(input.displayName, input.username);
    const passwordHash = await this.passwords.hash(input.password);
    try {
      const [row] = await this.db
        .insert(users)
        .values({
          id: randomUUID(),
          email: input.email.toLowerCase(),
          username: input.username,
          displayName: input.displayName ?? input.username,
          passwordHash,
        })
        .returning();
      if (!row) throw new Error('insert returned no row');
      return toMe(row, false);
    } catch (error) {
      // One answer for both, naming neither field, so that it does not single out a registered
      // email. (A probe with a fresh username still learns it: without email verification a
      // sign-up can only succeed or fail. The registration budget per address bounds the rate.)
      if (uniqueViolation(error) !== null) throw new Conflict('Username or email is already taken');
      throw error;
    }
  }

  async findCredentials(by: { email: string } | { username: string }) {
    const [row] = await this.db
      .select({ id: users.id, username: users.username, passwordHash: users.passwordHash })
      .from(users)
      .where(
        and(
          isNull(users.deletedAt),
          'email' in by
            ? eq(sql`lower(${users.email})`, by.email.toLowerCase())
            : eq(sql`lower(${users.username})`, by.username.toLowerCase()),
        ),
      );
    return row ?? null;
  }

  async findActive(id: string): Promise<UserRow | null> {
    const [row] = await this.db
      .select()
      .from(users)
      .where(and(eq(users.id, id), isNull(users.deletedAt)));
    return row ?? null;
  }

  async me(id: string): Promise<Me> {
    const row = await this.findActive(id);
    if (!row) throw new NotFound('User');
    const online = await this.presence.onlineAmong([id]);
    return toMe(row, online.has(id));
  }

  /** A user's profile; their presence only when `viewerId` shares a conversation with them. */
  async byId(viewerId: string, id: string): Promise<PublicUser> {
    const row = await this.findActive(id);
    if (!row) throw new NotFound('User');
    const [user] = await this.asSeenBy(viewerId, [row]);
    if (!user) throw new NotFound('User');
    return user;
  }

  /**
   * Profiles as `viewerId` may see them: `online` and `lastSeenAt` are shown to the people who
   * share a conversation with that user (as the event stream does), and hidden from others.
   */
  private async asSeenBy(viewerId: string, rows: UserRow[]): Promise<PublicUser[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((row) => row.id);
    const [contacts, online] = await Promise.all([
      this.contactsAmong(viewerId, ids),
      this.presence.onlineAmong(ids),
    ]);
    return rows.map((row) =>
      contacts.has(row.id)
        ? toPublic(row, online.has(row.id))
        : { ...toPublic(row, false), lastSeenAt: null },
    );
  }

  /** Those of `ids` who share a live conversation with `viewerId` (the viewer included). */
  private async contactsAmong(viewerId: string, ids: string[]): Promise<Set<string>> {
    const contacts = new Set(ids.includes(viewerId) ? [viewerId] : []);
    const others = ids.filter((id) => id !== viewerId);
    if (others.length === 0) return contacts;
    const mine = this.db
      .select({ conversationId: members.conversationId })
      .from(members)
      .innerJoin(conversations, eq(conversations.id, members.conversationId))
      .where(and(eq(members.userId, viewerId), isNull(conversations.deletedAt)));
    const rows = await this.db
      .selectDistinct({ userId: members.userId })
      .from(members)
      .where(and(inArray(members.userId, others), inArray(members.conversationId, mine)));
    for (const row of rows) contacts.add(row.userId);
    return contacts;
  }

  async publicUsers(ids: string[]): Promise<Map<string, PublicUser>> {
    if (ids.length === 0) return new Map();
    const rows = await this.db.select().from(users).where(inArray(users.id, ids));
    const online = await this.presence.onlineAmong(ids);
    return new Map(rows.map((row) => [row.id, toPublic(row, online.has(row.id))]));
  }

  /** Prefix search on username or display name, in username order, keyset-paginated. */
  async list(
    viewerId: string,
    input: ListUsers,
  ): Promise<{ items: PublicUser[]; nextCursor: string | null }> {
    const after = decodeCursor(
      input.cursor,
      z.object({ username: CursorField.username, id: CursorField.id }),
    );
    const prefix = input.query ? `${escapeLike(input.query.toLowerCase())}%` : null;
    const rows = await this.db
      .select()
      .from(users)
      .where(
        and(
          isNull(users.deletedAt),
          prefix
            ? or(
                sql`lower(${users.username}) like ${prefix}`,
                sql`lower(${users.displayName}) like ${prefix}`,
              )
            : undefined,
          after
            ? or(
                gt(sql`lower(${users.username})`, after.username),
                and(eq(sql`lower(${users.username})`, after.username), gt(users.id, after.id)),
              )
            : undefined,
        ),
      )
      .orderBy(asc(sql`lower(${users.username})`), asc(users.id))
      .limit(input.limit + 1);
    const pageRows = rows.slice(0, input.limit);
    const last = pageRows[pageRows.length - 1];
    return {
      items: await this.asSeenBy(viewerId, pageRows),
      nextCursor:
        rows.length > input.limit && last
          ? encodeCursor({ username: last.username.toLowerCase(), id: last.id })
          : null,
    };
  }

  async update(user: AuthUser, input: UpdateUser): Promise<Me> {
    const current = await this.findActive(user.id);
    if (!current) throw new NotFound('User');
    const changes: Partial<typeof users.$inferInsert> = { updatedAt: new Date() };
    if (input.displayName !== undefined) {
      await this.requireOwnName(input.displayName, current.username);
      changes.displayName = input.displayName;
    }
    if (input.password !== undefined) {
      const allowance = [this.guesses.account(user.id)];
      if (!(await this.guesses.check(input.currentPassword ?? '', current.passwordHash, allowance))) {
        throw new Forbidden('Current password is wrong');
      }
      changes.passwordHash = await this.passwords.hash(input.password);
    }
    const [row] = await this.db.update(users).set(changes).where(eq(users.id, user.id)).returning();
    if (!row) throw new NotFound('User');
    // A new password ends every other session; this device keeps its own.
    if (input.password !== undefined) await this.sessions.revokeAll(user.id, user.sessionId);
    return this.me(row.id);
  }

  /**
   * Deletes the account: its name and address are freed, every session ends, and the
   * messages it sent stay readable in other people's conversations.
   */
  async delete(user: AuthUser, password: string): Promise<{ ok: true }> {
    const current = await this.findActive(user.id);
    if (!current) throw new NotFound('User');
    if (!(await this.guesses.check(password, current.passwordHash, [this.guesses.account(user.id)]))) {
      throw new Invalid('Password is wrong', 'password');
    }
    await this.db.update(users).set({ deletedAt: new Date() }).where(eq(users.id, user.id));
    await this.sessions.revokeAll(user.id);
    return { ok: true };
  }

  /**
   * Refuses a display name that reads as another user's username (the same `nameKey`), so no
   * one passes for someone else in a member list or a search; one's own username, the default
   * display name, is fine.
   */
  private async requireOwnName(displayName: string, ownUsername: string): Promise<void> {
    const key = nameKey(displayName);
    // Usernames are `[a-zA-Z0-9_.]`: a key with anything else cannot be one.
    if (key === ownUsername.toLowerCase() || !/^[a-z0-9_.]{3,32}$/.test(key)) return;
    const [other] = await this.db
      .select({ id: users.id })
      .from(users)
      .where(and(isNull(users.deletedAt), eq(sql`lower(${users.username})`, key)))
      .limit(1);
    if (other) throw new Conflict("Display name is another user's username", 'displayName');
  }

  touch(userId: string): Promise<{ lastSeenAt: Date }> {
    return this.lastSeen.touch(userId);
  }
}

export function toPublic(row: UserRow, online: boolean): PublicUser {
  return {
    id: row.id,
    username: row.username,
    displayName: row.displayName,
    lastSeenAt: row.lastSeenAt,
    online,
  };
}

function toMe(row: UserRow, online: boolean): Me {
  return { ...toPublic(row, online), email: row.email, createdAt: row.createdAt };
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** The name of the unique constraint a PostgreSQL error violated, if it is one. */
export function uniqueViolation(error: unknown): string | null {
  for (let e: unknown = error; e instanceof Error || (e && typeof e === 'object');) {
    const candidate = e as { code?: string; constraint?: string; constraint_name?: string; cause?: unknown };
    if (candidate.code === UNIQUE_VIOLATION) return candidate.constraint ?? candidate.constraint_name ?? '';
    e = candidate.cause;
    if (!e) break;
  }
  return null;
}
