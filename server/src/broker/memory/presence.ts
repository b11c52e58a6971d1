import type { PresenceStore } from '../ports/presence.js';

/**
 * Presence of the in-process engine: each user's streams with when each expires, and the users
 * online with when their presence runs out.
 */
export class MemoryPresence implements PresenceStore {
  /** User → their streams: stream key → expiry (ms). */
  private readonly streams = new Map<string, Map<string, number>>();
  /** User → when their presence runs out (ms). */
  private readonly online = new Map<string, number>();

  connect(
    userId: string,
    stream: string,
    options: { max: number; now: number; until: number },
  ): Promise<{ connected: boolean; first: boolean }> {
    const streams = this.liveStreams(userId, options.now);
    const others = streams.size - (streams.has(stream) ? 1 : 0);
    if (!streams.has(stream) && others >= options.max) {
      return Promise.resolve({ connected: false, first: false });
    }
    streams.set(stream, options.until);
    this.streams.set(userId, streams);
    this.online.set(userId, options.until);
    return Promise.resolve({ connected: true, first: others === 0 });
  }

  heartbeat(streamsByUser: ReadonlyMap<string, readonly string[]>, until: number): Promise<void> {
    for (const [userId, keys] of streamsByUser) {
      let streams = this.streams.get(userId);
      if (!streams) {
        streams = new Map();
        this.streams.set(userId, streams);
      }
      for (const key of keys) streams.set(key, until);
      this.online.set(userId, until);
    }
    return Promise.resolve();
  }

  disconnect(userId: string, stream: string, now: number): Promise<boolean> {
    this.streams.get(userId)?.delete(stream);
    return this.leaveIfGone(userId, now);
  }

  leaveIfGone(userId: string, now: number): Promise<boolean> {
    if (this.liveStreams(userId, now).size > 0) return Promise.resolve(false);
    this.streams.delete(userId);
    return Promise.resolve(this.online.delete(userId));
  }

  expired(now: number, count: number): Promise<string[]> {
    const gone = [...this.online].filter(([, until]) => until <= now);
    gone.sort(([a, aUntil], [b, bUntil]) => aUntil - bUntil || (a < b ? -1 : a > b ? 1 : 0));
    return Promise.resolve(gone.slice(0, count).map(([userId]) => userId));
  }

  onlineUntil(userIds: readonly string[]): Promise<(number | null)[]> {
    return Promise.resolve(userIds.map((userId) => this.online.get(userId) ?? null));
  }

  connections(userId: string, now: number): Promise<number> {
    const streams = this.liveStreams(userId, now);
    if (streams.size === 0) this.streams.delete(userId);
    return Promise.resolve(streams.size);
  }

  /** The user's streams, those expired at `now` dropped (an empty map when none). */
  private liveStreams(userId: string, now: number): Map<string, number> {
    const streams = this.streams.get(userId) ?? new Map<string, number>();
    for (const [key, expiresAt] of streams) if (expiresAt <= now) streams.delete(key);
    return streams;
  }
}
