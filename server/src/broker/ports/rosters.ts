/**
 * Who is in each live conversation, as the send step checks it (the message log's `roster`
 * guard): one lookup, whatever the group's size. A roster is filled from PostgreSQL when
 * missing and dropped after every committed membership change, with a version that makes a
 * fill read before the change fail instead of landing.
 */
export interface RosterStore {
  /** The roster's version, to hand to `fill`; null when none was set (or it expired). */
  version(conversationId: string): Promise<string | null>;
  /**
   * Fills the roster with `members` unless it exists already or its version is no longer
   * `version`, in one step; says whether it filled it. The roster then lives `ROSTER_TTL_MS`.
   */
  fill(conversationId: string, members: readonly string[], version: string | null): Promise<boolean>;
  /**
   * After a committed membership change: a new version (so a fill that read the members before
   * fails), then the roster dropped until filled again.
   */
  invalidate(conversationId: string): Promise<void>;
  /** Whether the roster holds the user; null when there is no roster. */
  has(conversationId: string, userId: string): Promise<boolean | null>;
  /** How many members the roster holds; null when there is no roster. */
  size(conversationId: string): Promise<number | null>;
}

/** How long a roster lives without being filled again. */
export const ROSTER_TTL_MS = 10 * 60 * 1000;
/** Longer than a roster: a fill that read an expired version can only fail, never land stale. */
export const ROSTER_VERSION_TTL_MS = 60 * 60 * 1000;
