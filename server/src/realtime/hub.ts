import { randomUUID } from 'node:crypto';
import type { Revocation, SessionHolder, Sessions } from '../credentials/sessions.js';
import { eventPartition } from '../broker/keyspace.js';
import { type Channel, type EventBus, readMark, type Unsubscribe } from '../broker/ports/events.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Mark, ParleyEvent } from '../contracts/events.js';
import { parseSharedEvent } from './transformer.js';

/** How often a catch-up tries to reach Redis before the subscriptions go on unchecked (about 9 s). */
const CATCH_UP_ATTEMPTS = 8;
/** A barrier not back after this long is published again; a publish that fails this often gives up. */
const BARRIER_RETRY_MS = 1_000;
const BARRIER_ATTEMPTS = 30;

/**
 * A delivery to one local subscription: an event (with the broker id of a durable one, null
 * for an ephemeral one), or a change of the user's memberships; `partition` is the event order
 * its id belongs to (`EventLog.partitions`).
 */
export type Delivery =
  | {
      readonly id: string | null;
      readonly partition: number;
      readonly event: ParleyEvent;
      readonly mark?: undefined;
    }
  | { readonly id: string; readonly partition: number; readonly mark: Mark; readonly event?: undefined };

export interface LocalSubscriber extends SessionHolder {
  /** Unique per subscription across instances (`<instance>:<subscription>`). */
  key: string;
  deliver(delivery: Delivery): void;
  /** The session behind this subscription was revoked (logout, password change, deletion). */
  revoke(): void;
  /** Live events may be missing from now on: keep what arrives until `catchUp`. */
  hold(): void;
  /** Live events flow again: fetch from the logs what was missed, then go on. */
  catchUp(): void;
}

/** One channel this instance receives, and the local subscriptions it is for. */
interface Followed {
  /** The event order of its events: a conversation's, or (a user's channel) the user's own. */
  partition: number;
  /**
   * Its local subscriptions: the one it has, as it is (a user's channel nearly always has one
   * stream here), or from a second on, a set.
   */
  subscribers: LocalSubscriber | Set<LocalSubscriber> | null;
  /** Resolves once the broker delivers the channel here. */
  ready: Promise<Unsubscribe | null>;
}

/**
 * This instance's end of the event bus. It receives the channels of the conversations and
 * users that its subscriptions follow, and only those: one channel per conversation with a
 * member's stream here, one per user with a stream here. Each message is decoded once and
 * handed to the subscriptions that follow its channel.
 */
export class Hub {
  private readonly conversations = new Map<string, Followed>();
  private readonly users = new Map<string, Followed>();
  private readonly unsubscribes: Unsubscribe[] = [];
  private readonly barriers = new Map<string, () => void>();
  private readonly instanceId = randomUUID();
  /** Between the loss of the broker's subscriber connection and its return. */
  private interrupted = false;
  /** Returns of the event channels so far, so that only the latest one catches up. */
  private restores = 0;
  private stopped = false;

  constructor(
    private readonly bus: EventBus,
    private readonly sessions: Pick<Sessions, 'revokedAmong'>,
    private readonly log: Logger,
    /** How many event orders there are (`EventLog.partitions`). */
    private readonly partitions: number,
    private readonly metrics?: Pick<Metrics, 'eventsFannedOut' | 'pubsubReceived'>,
  ) {}

  async start(): Promise<void> {
    this.unsubscribes.push(await this.bus.subscribe({ revocations: true }, (raw) => this.onRevocation(raw)));
    // Its own channel in each partition: events of different partitions may travel different
    // connections (one per master of a cluster), and a barrier passes each.
    for (let partition = 0; partition < this.partitions; partition++) {
      this.unsubscribes.push(
        await this.bus.subscribe({ instance: this.instanceId, partition }, (raw) =>
          this.barriers.get(raw)?.(),
        ),
      );
    }
    // Pub/Sub drops what is published while this instance's subscriber connection is down;
    // every durable event is also in its log, which fills the gap.
    const unwatch = this.bus.watchSubscriptions({
      interrupted: () => {
        this.interrupted = true;
        this.log.warn('event channels lost; live events held until they are back');
        for (const subscriber of this.subscribers()) subscriber.hold();
      },
      restored: () => {
        this.interrupted = false;
        this.log.info('event channels back; subscriptions catch up from their logs');
        void this.catchUp(this.subscribers());
      },
    });
    this.unsubscribes.push(() => {
      unwatch();
      return Promise.resolve();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.unsubscribes.splice(0).map((unsubscribe) => unsubscribe()));
    const followed = [...this.conversations.values(), ...this.users.values()];
    this.conversations.clear();
    this.users.clear();
    await Promise.all(followed.map(async ({ ready }) => (await ready.catch(() => null))?.()));
  }

  /** Starts delivering the user's own channel to `subscriber`. */
  async add(subscriber: LocalSubscriber): Promise<void> {
    if (this.interrupted) subscriber.hold();
    await this.join(this.users, subscriber.userId, subscriber, (user) => ({ user }));
  }

  remove(subscriber: LocalSubscriber, conversationIds: Iterable<string>): void {
    this.leave(this.users, subscriber.userId, subscriber);
    for (const id of conversationIds) this.leave(this.conversations, id, subscriber);
  }

  /** Starts delivering these conversations' channels to `subscriber`; resolves once they flow. */
  async follow(subscriber: LocalSubscriber, conversationIds: readonly string[]): Promise<void> {
    await Promise.all(
      conversationIds.map((id) =>
        this.join(this.conversations, id, subscriber, (conversation) => ({ conversation })),
      ),
    );
  }

  unfollow(subscriber: LocalSubscriber, conversationId: string): void {
    this.leave(this.conversations, conversationId, subscriber);
  }

  /**
   * Resolves once everything published before the call has reached this instance (and been
   * handed to its subscriptions): in each partition, a message this instance publishes to
   * itself arrives after all of it, on the same connection. Published again while it does not
   * arrive (the subscriber connection may be down, losing it), for as long as the hub runs.
   */
  async barrier(): Promise<void> {
    if (this.partitions === 1) return this.barrierIn(0);
    await Promise.all(Array.from({ length: this.partitions }, (_, partition) => this.barrierIn(partition)));
  }

  private async barrierIn(partition: number): Promise<void> {
    const token = randomUUID();
    let arrived = false;
    const arrival = new Promise<void>((resolve) =>
      this.barriers.set(token, () => {
        arrived = true;
        resolve();
      }),
    );
    try {
      for (let attempt = 0; !arrived; attempt++) {
        if (this.stopped) throw new Error('the hub stopped');
        try {
          await this.bus.publish({ instance: this.instanceId, partition }, token);
        } catch (error) {
          if (attempt >= BARRIER_ATTEMPTS) throw error;
        }
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          arrival,
          new Promise((resolve) => (timer = setTimeout(resolve, BARRIER_RETRY_MS))),
        ]);
        clearTimeout(timer);
      }
    } finally {
      this.barriers.delete(token);
    }
  }

  subscribers(): LocalSubscriber[] {
    return [...this.users.values()].flatMap((followed) => [...subscribersOf(followed)]);
  }

  /** Whether live events are held: the event channels are down, or not yet back. */
  get holding(): boolean {
    return this.interrupted;
  }

  count(): number {
    let total = 0;
    for (const followed of this.users.values()) total += sizeOf(followed);
    return total;
  }

  /** How many conversation channels this instance receives. */
  followedConversations(): number {
    return this.conversations.size;
  }

  private async join(
    map: Map<string, Followed>,
    id: string,
    subscriber: LocalSubscriber,
    channel: (id: string) => Channel,
  ): Promise<void> {
    let followed = map.get(id);
    if (!followed) {
      // Each subscription delivers to its own entry: one still being unsubscribed after the
      // channel was followed again delivers to nobody.
      const entry: Followed = {
        partition: eventPartition(id, this.partitions),
        subscribers: null,
        ready: Promise.resolve(null),
      };
      entry.ready = this.bus.subscribe(channel(id), (raw) => this.onMessage(entry, raw));
      entry.ready.catch(() => {
        if (map.get(id) === entry) map.delete(id);
      });
      map.set(id, entry);
      followed = entry;
    }
    addTo(followed, subscriber);
    await followed.ready;
  }

  private leave(map: Map<string, Followed>, id: string, subscriber: LocalSubscriber): void {
    const followed = map.get(id);
    if (!followed || !removeFrom(followed, subscriber) || sizeOf(followed) > 0) return;
    map.delete(id);
    void followed.ready.then(
      (unsubscribe) => unsubscribe?.(),
      () => undefined,
    );
  }

  /**
   * After the event channels came back. Revocations announced meanwhile reached no one here,
   * so each held subscription's session is checked first: a revoked one ends, the others
   * catch up (until then, what arrives live is held, so a revoked session gets nothing more).
   * Redis's other connection may come back a little later than the channels': the check is
   * retried for a while, which also lets the catch-up read the logs.
   */
  private async catchUp(held: LocalSubscriber[]): Promise<void> {
    const restore = (this.restores += 1);
    let revoked: boolean[] = [];
    for (let attempt = 1; ; attempt++) {
      try {
        revoked = await this.sessions.revokedAmong(held);
        break;
      } catch (error) {
        if (attempt >= CATCH_UP_ATTEMPTS) {
          // Fails open, as every revocation check does while the broker is down: access tokens
          // are short-lived, and a stream still ends when its token expires.
          this.log.warn({ err: error }, 'sessions of held subscriptions could not be checked');
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** attempt, 2_000)));
      }
    }
    // Lost again meanwhile: the subscriptions stay held, and the next return takes over.
    if (this.interrupted || restore !== this.restores) return;
    held.forEach((subscriber, i) => {
      if (revoked[i]) subscriber.revoke();
      else subscriber.catchUp();
    });
  }

  private onMessage(followed: Followed, raw: string): void {
    this.metrics?.pubsubReceived.inc();
    if (followed.subscribers === null) return;
    const newline = raw.indexOf('\n');
    if (newline <= 0) {
      this.log.error('unreadable message on an event channel');
      return;
    }
    const id = raw.slice(0, newline);
    const payload = raw.slice(newline + 1);
    let delivery: Delivery;
    const mark = readMark(payload);
    if (mark) {
      // A mark on a user's channel is in its conversation's order.
      delivery = { id, partition: eventPartition(mark.conversationId, this.partitions), mark };
    } else {
      let event: ParleyEvent;
      try {
        // Decoded once per instance, whatever the number of subscriptions here.
        event = parseSharedEvent<ParleyEvent>(payload);
      } catch {
        this.log.error('unreadable event on an event channel');
        return;
      }
      delivery = { id: id === '-' ? null : id, partition: followed.partition, event };
    }
    const { subscribers } = followed;
    let fannedOut = 1;
    if (subscribers instanceof Set) {
      fannedOut = subscribers.size;
      for (const subscriber of subscribers) subscriber.deliver(delivery);
    } else subscribers?.deliver(delivery);
    this.metrics?.eventsFannedOut.inc({ type: delivery.event?.type ?? 'mark' }, fannedOut);
  }

  private onRevocation(raw: string): void {
    let revocation: Revocation;
    try {
      revocation = JSON.parse(raw) as Revocation;
    } catch {
      return;
    }
    const followed = this.users.get(revocation.userId);
    for (const subscriber of followed ? [...subscribersOf(followed)] : []) {
      if (revocation.sessionId === null || revocation.sessionId === subscriber.sessionId) subscriber.revoke();
    }
  }
}

function subscribersOf({ subscribers }: Followed): Iterable<LocalSubscriber> {
  if (subscribers instanceof Set) return subscribers;
  return subscribers === null ? [] : [subscribers];
}

function sizeOf({ subscribers }: Followed): number {
  if (subscribers instanceof Set) return subscribers.size;
  return subscribers === null ? 0 : 1;
}

function addTo(followed: Followed, subscriber: LocalSubscriber): void {
  const { subscribers } = followed;
  if (subscribers instanceof Set) subscribers.add(subscriber);
  else if (subscribers === null) followed.subscribers = subscriber;
  else if (subscribers !== subscriber) followed.subscribers = new Set([subscribers, subscriber]);
}

/** Whether `subscriber` was there. A set stays a set, even with one left. */
function removeFrom(followed: Followed, subscriber: LocalSubscriber): boolean {
  const { subscribers } = followed;
  if (subscribers instanceof Set) {
    if (!subscribers.delete(subscriber)) return false;
    if (subscribers.size === 0) followed.subscribers = null;
    return true;
  }
  if (subscribers !== subscriber) return false;
  followed.subscribers = null;
  return true;
}
