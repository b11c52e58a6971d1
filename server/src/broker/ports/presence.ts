/**
 * Who is connected, across every instance: each user's live streams, each with the time it
 * expires unless refreshed, and the set of users online with the time their presence runs out.
 * Times are the application's clock (ms), given by the caller, so every instance measures an
 * expiry the same way it set it.
 */
export interface PresenceStore {
  /**
   * Counts a new stream of the user unless they already hold `max` live ones (those expiring
   * after `now`), and puts the user in the online set until `until`; in one step, so callers
   * racing on any instance never take more than `max` places between them. A stream already
   * counted keeps its place (its expiry moved to `until`). `first`: the user held no other live
   * stream, so they just came online.
   */
  connect(
    userId: string,
    stream: string,
    options: { max: number; now: number; until: number },
  ): Promise<{ connected: boolean; first: boolean }>;
  /**
   * Moves the expiry of each user's given streams, and of those users in the online set, to
   * `until`: one command per user and one for the online set, sent together.
   */
  heartbeat(streamsByUser: ReadonlyMap<string, readonly string[]>, until: number): Promise<void>;
  /**
   * Forgets one stream of the user, then does what `leaveIfGone` does, in one step; says whether
   * this call took the user offline.
   */
  disconnect(userId: string, stream: string, now: number): Promise<boolean>;
  /**
   * Takes the user out of the online set unless one of their streams is still live at `now`;
   * says whether this call did (so only one instance announces it).
   */
  leaveIfGone(userId: string, now: number): Promise<boolean>;
  /** Users in the online set whose presence ran out at or before `now`, soonest first, at most `count`. */
  expired(now: number, count: number): Promise<string[]>;
  /** When each user's presence runs out, null for a user not in the online set. */
  onlineUntil(userIds: readonly string[]): Promise<(number | null)[]>;
}
