import { randomUUID } from 'node:crypto';
import { ROSTER_TTL_MS, ROSTER_VERSION_TTL_MS, type RosterStore } from '../ports/rosters.js';

interface Expiring<T> {
  value: T;
  expiresAt: number;
}

/** Rosters of the in-process engine: a set and a version per conversation, each expiring. */
export class MemoryRosters implements RosterStore {
  private readonly rosters = new Map<string, Expiring<Set<string>>>();
  private readonly versions = new Map<string, Expiring<string>>();

  version(conversationId: string): Promise<string | null> {
    return Promise.resolve(live(this.versions, conversationId));
  }

  fill(conversationId: string, members: readonly string[], version: string | null): Promise<boolean> {
    if (live(this.versions, conversationId) !== version || live(this.rosters, conversationId) !== null) {
      return Promise.resolve(false);
    }
    this.rosters.set(conversationId, { value: new Set(members), expiresAt: Date.now() + ROSTER_TTL_MS });
    return Promise.resolve(true);
  }

  invalidate(conversationId: string): Promise<void> {
    this.versions.set(conversationId, { value: randomUUID(), expiresAt: Date.now() + ROSTER_VERSION_TTL_MS });
    this.rosters.delete(conversationId);
    return Promise.resolve();
  }

  has(conversationId: string, userId: string): Promise<boolean | null> {
    return Promise.resolve(this.holds(conversationId, userId));
  }

  size(conversationId: string): Promise<number | null> {
    return Promise.resolve(live(this.rosters, conversationId)?.size ?? null);
  }

  /** `has`, at once: for the message log's guard, checked in the same step as its append. */
  holds(conversationId: string, userId: string): boolean | null {
    const roster = live(this.rosters, conversationId);
    return roster === null ? null : roster.has(userId);
  }
}

function live<T>(map: Map<string, Expiring<T>>, key: string): T | null {
  const entry = map.get(key);
  if (!entry) return null;
  if (entry.expiresAt <= Date.now()) {
    map.delete(key);
    return null;
  }
  return entry.value;
}
