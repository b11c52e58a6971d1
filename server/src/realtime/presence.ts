import type { Broker } from '../broker/types.js';
import type { Memberships } from '../membership/index.js';
import type { Logger } from '../logger.js';
import type { LastSeen, OnlineLookup } from '../users/service.js';
import type { EventPublisher } from '../contracts/events.js';
import { connectionsKey, ONLINE_KEY } from '../broker/keyspace.js';

/** Connections refreshed per batch of concurrent commands. */
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

  constructor(
    private readonly broker: Broker,
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
    const scores = await this.broker.zscores(ONLINE_KEY, userIds);
    const now = Date.now();
    return new Set(userIds.filter((_, i) => (scores[i] ?? 0) > now));
  }

  /**
   * Counts a new connection of the user, unless they already hold `max` live ones on all
   * instances together: checked and counted in one broker step, so a burst of subscriptions
   * (on one instance or several) never gets past the cap. Returns whether it was counted.
   */
  async connect(userId: string, key: string, max: number): Promise<boolean> {
    const now = Date.now();
    const expiry = now + this.settings.ttlMs;
    const { added, others } = await this.broker.zaddCapped(connectionsKey(userId), key, expiry, {
      max,
      expireUpTo: now,
    });
    if (!added) return false;
    await this.broker.zadd(ONLINE_KEY, expiry, userId);
    if (others === 0) await this.announce(userId, true, new Date());
    return true;
  }

  async disconnected(userId: string, key: string): Promise<void> {
    await this.broker.zrem(connectionsKey(userId), key);
    await this.wentAwayIfLast(userId);
  }

  /** How many live connections the user has across instances. */
  async connectionCount(userId: string): Promise<number> {
    await this.broker.zremRangeByScore(connectionsKey(userId), Date.now());
    return this.broker.zcard(connectionsKey(userId));
  }

  private async heartbeat(local: { userId: string; key: string }[]): Promise<void> {
    const expiry = Date.now() + this.settings.ttlMs;
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
      await Promise.all([
        ...[...byUser].map(([userId, keys]) => this.broker.zadd(connectionsKey(userId), expiry, ...keys)),
        this.broker.zadd(ONLINE_KEY, expiry, ...byUser.keys()),
      ]);
    }
    // Users whose every connection stopped being refreshed: their instance is gone.
    const stale = await this.broker.zrangeByScore(ONLINE_KEY, Date.now(), 100);
    for (const userId of stale) await this.wentAwayIfLast(userId);
  }

  private async wentAwayIfLast(userId: string): Promise<void> {
    await this.broker.zremRangeByScore(connectionsKey(userId), Date.now());
    if ((await this.broker.zcard(connectionsKey(userId))) > 0) return;
    // Only the instance that removes the user from the online set announces it.
    if ((await this.broker.zrem(ONLINE_KEY, userId)) === 0) return;
    const { lastSeenAt } = await this.lastSeen.touch(userId).catch(() => ({ lastSeenAt: new Date() }));
    await this.announce(userId, false, lastSeenAt);
  }

  private async announce(userId: string, online: boolean, lastSeenAt: Date): Promise<void> {
    const contacts = await this.memberships.contactsOf(userId, this.largeGroup);
    await this.events.signalUsers(contacts, { type: 'presence', userId, online, lastSeenAt });
  }
}
