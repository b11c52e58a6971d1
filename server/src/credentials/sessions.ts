import { randomUUID } from 'node:crypto';
import { and, eq, gt, isNull, max, ne } from 'drizzle-orm';
import { sessions } from '../../../drizzle/schema.js';
import type { SessionHolder, SessionStore } from '../broker/ports/sessions.js';
import type { EventBus } from '../broker/ports/events.js';
import type { Config } from '../config/index.js';
import type { Database } from '../db/index.js';
import type { Logger } from '../logger.js';
import type { Tokens } from './schemas.js';
import {
  type AuthUser,
  hashRefreshToken,
  newRefreshToken,
  openWithRefreshToken,
  sealForRefreshToken,
  signAccessToken,
} from './tokens.js';

export interface Revocation {
  userId: string;
  /** One session family, or every session of the user when null. */
  sessionId: string | null;
}

export type { SessionHolder };

/**
 * What `rotate` found: a token rotated just now (`again` null: issue its successor), or one
 * rotated within the reuse grace, whose successor refresh token is `again`.
 */
export interface Rotation {
  userId: string;
  familyId: string;
  again: string | null;
}

/**
 * How long a second presentation waits at most for the successor of a rotation still under way
 * on another request: the winner writes it right after its conditional UPDATE.
 */
const SUCCESSOR_WAIT_MS = 3_000;

/**
 * Refresh-token sessions. A login starts a family; each refresh rotates to a new row of the
 * same family. Revocation is written to PostgreSQL (refresh tokens) and to the broker
 * (access tokens still in their lifetime, and open sockets on every instance).
 */
export class Sessions {
  constructor(
    private readonly db: Database,
    private readonly marks: SessionStore,
    /** Where revocations are announced, for every instance. */
    private readonly bus: Pick<EventBus, 'publish'>,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  start(user: { id: string; username: string }): Promise<Tokens> {
    return this.issue(user, randomUUID());
  }

  /**
   * The conditional UPDATE lets exactly one caller rotate a token. Presenting a token that was
   * already rotated is a replay and revokes the whole family, except within the reuse grace
   * (`jwt.refreshReuseGraceMs`) while its successor is still the family's live token: then the
   * caller gets that same successor, so two clients sharing one storage (two browser tabs) that
   * refreshed together end up holding the same session instead of losing it.
   */
  async rotate(refreshToken: string): Promise<Rotation | null> {
    const tokenHash = hashRefreshToken(refreshToken);
    const [current] = await this.db
      .update(sessions)
      .set({ rotatedAt: new Date() })
      .where(
        and(
          eq(sessions.tokenHash, tokenHash),
          isNull(sessions.rotatedAt),
          isNull(sessions.revokedAt),
          gt(sessions.expiresAt, new Date()),
        ),
      )
      .returning({ userId: sessions.userId, familyId: sessions.familyId });
    if (current) return { ...current, again: null };
    const [seen] = await this.db
      .select({
        familyId: sessions.familyId,
        userId: sessions.userId,
        rotatedAt: sessions.rotatedAt,
        revokedAt: sessions.revokedAt,
      })
      .from(sessions)
      .where(eq(sessions.tokenHash, tokenHash));
    if (!seen?.rotatedAt) return null;
    if (!seen.revokedAt) {
      const found = await this.successorWithinGrace(refreshToken, tokenHash, seen.rotatedAt);
      if (found === 'unknown') return null;
      if (found !== 'reuse') return { userId: seen.userId, familyId: seen.familyId, again: found.successor };
    }
    this.log.warn(
      { userId: seen.userId, sessionId: seen.familyId },
      'rotated refresh token reused; session family revoked',
    );
    await this.revokeFamily(seen.userId, seen.familyId);
    return null;
  }

  /**
   * The successor of `refreshToken`, rotated at `rotatedAt`, when it is presented again within
   * the grace and that successor is still the family's live token; `reuse` otherwise;
   * `unknown` when it is within the grace but the successor cannot be read (the rotation that
   * made it failed before recording it): then the caller is refused, and nothing revoked.
   */
  private async successorWithinGrace(
    refreshToken: string,
    tokenHash: string,
    rotatedAt: Date,
  ): Promise<{ successor: string } | 'reuse' | 'unknown'> {
    const graceMs = this.config.jwt.refreshReuseGraceMs;
    if (graceMs <= 0) return 'reuse';
    const graceEnds = rotatedAt.getTime() + graceMs;
    const deadline = Math.min(graceEnds, Date.now() + SUCCESSOR_WAIT_MS);
    let sealed = await this.marks.successor(tokenHash);
    // The rotation may still be under way on another request, between its UPDATE and its write.
    for (let delay = 10; sealed === null && Date.now() < deadline; delay = Math.min(200, delay * 2)) {
      await new Promise((resolve) =>
        setTimeout(resolve, Math.min(delay, Math.max(1, deadline - Date.now()))),
      );
      sealed = await this.marks.successor(tokenHash);
    }
    if (sealed === null) return Date.now() < graceEnds ? 'unknown' : 'reuse';
    const successor = openWithRefreshToken(refreshToken, sealed);
    if (successor === null) return 'unknown';
    const [live] = await this.db
      .select({ id: sessions.id })
      .from(sessions)
      .where(
        and(
          eq(sessions.tokenHash, hashRefreshToken(successor)),
          isNull(sessions.rotatedAt),
          isNull(sessions.revokedAt),
          gt(sessions.expiresAt, new Date()),
        ),
      );
    return live ? { successor } : 'reuse';
  }

  async familyOf(userId: string, refreshToken: string): Promise<string | null> {
    const [row] = await this.db
      .select({ familyId: sessions.familyId })
      .from(sessions)
      .where(and(eq(sessions.tokenHash, hashRefreshToken(refreshToken)), eq(sessions.userId, userId)));
    return row?.familyId ?? null;
  }

  async revokeFamily(userId: string, familyId: string): Promise<void> {
    await this.db
      .update(sessions)
      .set({ revokedAt: new Date() })
      .where(and(eq(sessions.familyId, familyId), isNull(sessions.revokedAt)));
    await this.marks.revokeSession(familyId, this.accessTtlMs);
    await this.announce({ userId, sessionId: familyId });
  }

  /** Every session of the user, or every one but `keepFamilyId` (a password change). */
  async revokeAll(userId: string, keepFamilyId?: string): Promise<void> {
    if (keepFamilyId) {
      const families = await this.db
        .selectDistinct({ familyId: sessions.familyId })
        .from(sessions)
        .where(
          and(eq(sessions.userId, userId), ne(sessions.familyId, keepFamilyId), isNull(sessions.revokedAt)),
        );
      for (const { familyId } of families) await this.revokeFamily(userId, familyId);
      return;
    }
    const now = Date.now();
    await this.db
      .update(sessions)
      .set({ revokedAt: new Date(now) })
      .where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt)));
    await this.marks.revokeUserBefore(userId, now, this.accessTtlMs);
    await this.announce({ userId, sessionId: null });
  }

  /**
   * Sets again, from PostgreSQL, the mark of every session revoked within an access token's
   * lifetime, each for what is left of that lifetime: for a broker that starts empty (the
   * in-process one, after a restart), so that an access token of a session logged out before
   * stays refused. Every access token belongs to a session, so the sessions' marks cover the
   * user-wide ones too. Returns how many were set.
   */
  async restoreRevocations(): Promise<number> {
    const now = Date.now();
    const revoked = await this.db
      .select({ familyId: sessions.familyId, revokedAt: max(sessions.revokedAt) })
      .from(sessions)
      .where(gt(sessions.revokedAt, new Date(now - this.accessTtlMs)))
      .groupBy(sessions.familyId);
    let restored = 0;
    for (const { familyId, revokedAt } of revoked) {
      const ttlMs = (revokedAt?.getTime() ?? 0) + this.accessTtlMs - now;
      if (ttlMs <= 0) continue;
      await this.marks.revokeSession(familyId, ttlMs);
      restored += 1;
    }
    if (restored > 0) this.log.info({ sessions: restored }, 'session revocations restored from the database');
    return restored;
  }

  /**
   * Which of these sessions were revoked, in order: for holders that may have missed the
   * announcement (a subscription whose events channel was down). Throws while the broker is down.
   */
  revokedAmong(holders: readonly SessionHolder[]): Promise<boolean[]> {
    return this.marks.revokedAmong(holders);
  }

  /** Whether an access token's session was revoked; fails open while the broker is down. */
  async isRevoked(user: AuthUser): Promise<boolean> {
    try {
      // One command for both marks (`SessionStore.revokedAmong`): this runs on every call over a WebSocket.
      const [revoked] = await this.revokedAmong([
        { userId: user.id, sessionId: user.sessionId, issuedAt: user.issuedAt },
      ]);
      return revoked ?? false;
    } catch (error) {
      // Access tokens are short-lived; while the broker is down their signature is enough.
      this.log.warn({ err: error }, 'revocation check skipped: broker unavailable');
      return false;
    }
  }

  private get accessTtlMs(): number {
    return this.config.jwt.accessTtlSeconds * 1000;
  }

  private async announce(revocation: Revocation): Promise<void> {
    await this.bus.publish({ revocations: true }, JSON.stringify(revocation)).catch((error: unknown) => {
      this.log.warn({ err: error }, 'could not announce a revocation');
    });
  }

  /**
   * New tokens for the family. With `replacing` (the refresh token just rotated), the new
   * refresh token is also kept for the reuse grace, sealed with the one it replaces, so that a
   * second presentation of that one gets it too (see `rotate`).
   */
  async issue(user: { id: string; username: string }, familyId: string, replacing?: string): Promise<Tokens> {
    const refreshToken = newRefreshToken();
    await this.db.insert(sessions).values({
      id: randomUUID(),
      familyId,
      userId: user.id,
      tokenHash: hashRefreshToken(refreshToken),
      expiresAt: new Date(Date.now() + this.config.jwt.refreshTtlSeconds * 1000),
    });
    const graceMs = this.config.jwt.refreshReuseGraceMs;
    if (replacing !== undefined && graceMs > 0) {
      await this.marks
        .keepSuccessor(hashRefreshToken(replacing), sealForRefreshToken(replacing, refreshToken), graceMs)
        .catch((error: unknown) => {
          // The refresh itself succeeded; only a concurrent presentation of `replacing` is refused.
          this.log.warn(
            { err: error, userId: user.id, sessionId: familyId },
            'refresh successor not recorded',
          );
        });
    }
    return this.reissue(user, familyId, refreshToken);
  }

  /** Tokens with an existing refresh token of the family and a new access token. */
  async reissue(
    user: { id: string; username: string },
    familyId: string,
    refreshToken: string,
  ): Promise<Tokens> {
    const accessToken = await signAccessToken(this.config.jwt, user, familyId);
    return { accessToken, refreshToken, expiresIn: this.config.jwt.accessTtlSeconds };
  }
}
