import type { SessionHolder, SessionStore } from '../ports/sessions.js';
import { ExpiringMap } from './expiring.js';

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
    return Promise.resolve(holders.map((holder) => this.isRevoked(holder)));
  }

  keepSuccessor(tokenHash: string, sealed: string, forMs: number): Promise<void> {
    this.successors.set(tokenHash, sealed, Date.now() + forMs);
    return Promise.resolve();
  }

  successor(tokenHash: string): Promise<string | null> {
    return Promise.resolve(this.successors.get(tokenHash) ?? null);
  }

  /** Whether the holder's session is revoked, at once: the message log's guard, in its step. */
  isRevoked(holder: SessionHolder): boolean {
    if (this.revokedSessions.get(holder.sessionId)) return true;
    const before = this.revokedUsers.get(holder.userId);
    return before !== undefined && before >= holder.issuedAt;
  }
}
