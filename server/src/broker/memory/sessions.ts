import { revokedSessionKey, revokedUserKey } from '../keyspace.js';
import type { SessionHolder, SessionStore } from '../ports/sessions.js';
import { ExpiringMap } from './expiring.js';

const SESSION_MARK = revokedSessionKey('');
const USER_MARK = revokedUserKey('');

/**
 * Session marks of the in-process engine: the revoked sessions, the time before which each
 * user's tokens are revoked, and the sealed successors of rotated refresh tokens, each expiring.
 */
export class MemorySessions implements SessionStore {
  private readonly revokedSessions = new ExpiringMap<true>();
  /** User → every access token issued at or before this time (ms) is revoked. */
  private readonly revokedUsers = new ExpiringMap<number>();
  /** Refresh token hash → its successor, sealed. */
  private readonly successors = new ExpiringMap<string>();

  revokeSession(sessionId: string, forMs: number): Promise<void> {
    this.revokedSessions.set(sessionId, true, Date.now() + forMs);
    return Promise.resolve();
  }

  revokeUserBefore(userId: string, at: number, forMs: number): Promise<void> {
    this.revokedUsers.set(userId, at, Date.now() + forMs);
    return Promise.resolve();
  }

  revokedAmong(holders: readonly SessionHolder[]): Promise<boolean[]> {
    return Promise.resolve(
      holders.map((holder) => {
        if (this.revokedSessions.get(holder.sessionId)) return true;
        const before = this.revokedUsers.get(holder.userId);
        return before !== undefined && before >= holder.issuedAt;
      }),
    );
  }

  keepSuccessor(tokenHash: string, sealed: string, forMs: number): Promise<void> {
    this.successors.set(tokenHash, sealed, Date.now() + forMs);
    return Promise.resolve();
  }

  successor(tokenHash: string): Promise<string | null> {
    return Promise.resolve(this.successors.get(tokenHash) ?? null);
  }

  /**
   * The value a revocation mark's key holds, as the Redis engine stores it (null when there is
   * none), for the send step, which names the marks by key (`Refusal`) and checks them in the
   * same step as its append.
   */
  markValue(key: string): string | null {
    if (key.startsWith(SESSION_MARK)) {
      return this.revokedSessions.get(key.slice(SESSION_MARK.length)) ? '1' : null;
    }
    if (key.startsWith(USER_MARK)) {
      const before = this.revokedUsers.get(key.slice(USER_MARK.length));
      return before === undefined ? null : String(before);
    }
    return null;
  }
}
