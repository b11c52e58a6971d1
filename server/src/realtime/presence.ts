import type { PresenceStore } from '../broker/ports/presence.js';
import type { Memberships } from '../membership/index.js';
import type { Logger } from '../logger.js';
import type { LastSeen, OnlineLookup } from '../users/service.js';
import type { EventPublisher } from '../contracts/events.js';

/** Connections refreshed per batch of commands sent together. */
const HEARTBEAT_SLICE = 500;

export interface PresenceSettings {
  /** A connection not refreshed within this long counts as gone (its instance died). */
  ttlMs: number;
  /** How often each instance refreshes its connections and sweeps for dead ones. */
  heartbeatMs: number;
}

/**
 * Online while any of the user's connections lives on any instance. Each instance refreshes
 * its own connections; when an instance dies, its entries expire and whichever instance
 * sweeps first announces the user offline.
 */
export class Presence implements OnlineLookup {
  private timer: NodeJS.Timeout | null = null;
  /** Each user's announcements not yet made, in order: a later one waits for those before it. */
  private readonly announcing = new Map<string, Promise<void>>();

  constructor(
    private readonly store: PresenceStore,
    private readonly memberships: Memberships,
    private readonly lastSeen: LastSeen,
    private readonly events: EventPublisher,
    private readonly settings: PresenceSettings,
    private readonly log: Logger,
    /** Sharing a group past this size makes nobody a contact (see `Limits.largeGroup`). */
    private readonly largeGroup: number,
  ) {}

  start(localConnections: () => { userId: string; key: string }[]): void {
    this.timer = setInterval(() => {
      void this.heartbeat(localConnections()).catch((error: unknown) =>
        this.log.warn({ err: error }, 'presence heartbeat failed'),
      );
    }, this.settings.heartbeatMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async onlineAmong(userIds: string[]): Promise<Set<string>> {
    const until = await this.store.onlineUntil(userIds);
    const now = Date.now();
    return new Set(userIds.filter((_, i) => (until[i] ?? 0) > now));
  }

  /**
   * Counts a new connection of the user, unless they already hold `max` live ones on all
   * instances together: checked and counted in one broker step, so a burst of subscriptions
   * (on one instance or several) never gets past the cap. Returns whether it was counted.
   *
   * The user's contacts hear that they came online after this resolves: the connection does not
   * wait for the contacts to be looked up and told. An offline announcement made meanwhile on
   * this instance waits for it, so contacts never see the two in the wrong order.
   */
  async connect(userId: string, key: string, max: number): Promise<boolean> {
    const now = Date.now();
    const { connected, first } = await this.store.connect(userId, key, {
      max,
      now,
      until: now + this.settings.ttlMs,
    });
    if (!connected) return false;
    if (first) {
      const at = new Date(now);
      this.inTurn(userId, () => this.announce(userId, true, at)).catch((error: unknown) =>
        this.log.warn({ err: error }, 'presence not announced on connect'),
      );
    }
    return true;
  }

  async disconnected(userId: string, key: string): Promise<void> {
    if (await this.store.disconnect(userId, key, Date.now())) await this.wentAway(userId);
  }

  private async heartbeat(local: { userId: string; key: string }[]): Promise<void> {
    const until = Date.now() + this.settings.ttlMs;
    // In slices sent together (pipelined by the Redis client), not one round trip after another:
    // an instance with thousands of connections refreshes them in a few round trips, with one
    // command per user (for all of their connections here) and one for the online set.
    for (let i = 0; i < local.length; i += HEARTBEAT_SLICE) {
      const byUser = new Map<string, string[]>();
      for (const { userId, key } of local.slice(i, i + HEARTBEAT_SLICE)) {
        const keys = byUser.get(userId);
        if (keys) keys.push(key);
        else byUser.set(userId, [key]);
      }
      await this.store.heartbeat(byUser, until);
    }
    // Users whose every connection stopped being refreshed: their instance is gone.
    const stale = await this.store.expired(Date.now(), 100);
    for (const userId of stale) {
      // Only the instance that takes the user offline announces it.
      if (await this.store.leaveIfGone(userId, Date.now())) await this.wentAway(userId);
    }
  }

  private async wentAway(userId: string): Promise<void> {
    const { lastSeenAt } = await this.lastSeen.touch(userId).catch(() => ({ lastSeenAt: new Date() }));
    await this.inTurn(userId, () => this.announce(userId, false, lastSeenAt));
  }

  /** Runs `announcement` once the user's earlier ones on this instance are made (or failed). */
  private inTurn(userId: string, announcement: () => Promise<void>): Promise<void> {
    const made = (this.announcing.get(userId) ?? Promise.resolve()).then(announcement);
    const settled = made.catch(() => undefined);
    this.announcing.set(userId, settled);
    void settled.then(() => {
      if (this.announcing.get(userId) === settled) this.announcing.delete(userId);
    });
    return made;
  }

  private async announce(userId: string, online: boolean, lastSeenAt: Date): Promise<void> {
    const contacts = await this.memberships.contactsOf(userId, this.largeGroup);
    await this.events.signalUsers(contacts, { type: 'presence', userId, online, lastSeenAt });
  }
}
