/**
 * What the broker keeps for sessions (`credentials/sessions.ts`): the marks that revoke access
 * tokens still within their lifetime, and a rotated refresh token's sealed successor for the
 * reuse grace. The send step reads the same marks, by their keys (`revokedSessionKey`,
 * `revokedUserKey`), in its own atomic step (the message log's `session` guard): a session mark holds
 * `1`, a user mark the time (ms) at or before which every token was revoked.
 */
export interface SessionStore {
  /** Marks the session (a refresh-token family) revoked for `forMs`. */
  revokeSession(sessionId: string, forMs: number): Promise<void>;
  /** Revokes every access token of the user issued at or before `at` (ms), for `forMs`. */
  revokeUserBefore(userId: string, at: number, forMs: number): Promise<void>;
  /** Which of these holders' sessions are revoked, in order. */
  revokedAmong(holders: readonly SessionHolder[]): Promise<boolean[]>;
  /** Keeps `sealed`, the successor of the refresh token hashed `tokenHash`, for `forMs`. */
  keepSuccessor(tokenHash: string, sealed: string, forMs: number): Promise<void>;
  /** The sealed successor kept by `keepSuccessor`, or null (never kept, or expired). */
  successor(tokenHash: string): Promise<string | null>;
}

/** Who holds an access token: enough to find the marks that revoke it. */
export interface SessionHolder {
  userId: string;
  sessionId: string;
  /** When the access token was issued (ms). */
  issuedAt: number;
}
