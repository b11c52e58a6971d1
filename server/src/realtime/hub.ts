import superjson from 'superjson';
import {
  REVOCATIONS_CHANNEL,
  type Revocation,
  type SessionHolder,
  type Sessions,
} from '../credentials/sessions.js';
import type { Broker, Unsubscribe } from '../broker/types.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { ParleyEvent } from '../contracts/events.js';
import { EVENTS_CHANNEL, openEnvelope } from './publisher.js';
import { shareEvent } from './transformer.js';

/** How often a catch-up tries to reach Redis before the subscriptions go on unchecked (about 9 s). */
const CATCH_UP_ATTEMPTS = 8;

/** A delivery to one local subscription: the broker id of a durable event, or null. */
export interface Delivery {
  readonly id: string | null;
  readonly event: ParleyEvent;
}

export interface LocalSubscriber extends SessionHolder {
  /** Unique per subscription across instances (`<instance>:<subscription>`). */
  key: string;
  deliver(delivery: Delivery): void;
  /** The session behind this subscription was revoked (logout, password change, deletion). */
  revoke(): void;
  /** Live events may be missing from now on: keep what arrives until `catchUp`. */
  hold(): void;
  /** Live events flow again: fetch from the user's log what was missed, then go on. */
  catchUp(): void;
}

/**
 * This instance's end of the fan-out. It listens on the one events channel, decodes each
 * event once, and hands it to the local subscriptions of its recipients: a user's devices on
 * this instance each get it, those on other instances get it from their own hub.
 */
export class Hub {
  private readonly byUser = new Map<string, Set<LocalSubscriber>>();
  private readonly unsubscribes: Unsubscribe[] = [];
  /** Between the loss of the broker's subscriber connection and its return. */
  private interrupted = false;
  /** Returns of the events channel so far, so that only the latest one catches up. */
  private restores = 0;

  constructor(
    private readonly broker: Broker,
    private readonly sessions: Pick<Sessions, 'revokedAmong'>,
    private readonly log: Logger,
    private readonly metrics?: Pick<Metrics, 'eventsFannedOut'>,
  ) {}

  async start(): Promise<void> {
    this.unsubscribes.push(await this.broker.subscribe(EVENTS_CHANNEL, (raw) => this.onEvent(raw)));
    this.unsubscribes.push(await this.broker.subscribe(REVOCATIONS_CHANNEL, (raw) => this.onRevocation(raw)));
    // Pub/Sub drops what is published while this instance's subscriber connection is down;
    // every durable event is also in its recipients' logs, which fill the gap.
    const unwatch = this.broker.watchSubscriptions({
      interrupted: () => {
        this.interrupted = true;
        this.log.warn('events channel lost; live events held until it is back');
        for (const subscriber of this.subscribers()) subscriber.hold();
      },
      restored: () => {
        this.interrupted = false;
        this.log.info('events channel back; subscriptions catch up from their logs');
        void this.catchUp(this.subscribers());
      },
    });
    this.unsubscribes.push(() => {
      unwatch();
      return Promise.resolve();
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.unsubscribes.splice(0).map((unsubscribe) => unsubscribe()));
  }

  add(subscriber: LocalSubscriber): void {
    if (this.interrupted) subscriber.hold();
    let set = this.byUser.get(subscriber.userId);
    if (!set) this.byUser.set(subscriber.userId, (set = new Set()));
    set.add(subscriber);
  }

  remove(subscriber: LocalSubscriber): void {
    const set = this.byUser.get(subscriber.userId);
    if (!set?.delete(subscriber)) return;
    if (set.size === 0) this.byUser.delete(subscriber.userId);
  }

  subscribers(): LocalSubscriber[] {
    return [...this.byUser.values()].flatMap((set) => [...set]);
  }

  count(): number {
    let total = 0;
    for (const set of this.byUser.values()) total += set.size;
    return total;
  }

  /**
   * After the events channel came back. Revocations announced meanwhile reached no one here,
   * so each held subscription's session is checked first: a revoked one ends, the others
   * catch up (until then, what arrives live is held, so a revoked session gets nothing more).
   * Redis's other connection may come back a little later than the channel's: the check is
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

  private onEvent(raw: string): void {
    let opened: ReturnType<typeof openEnvelope>;
    try {
      opened = openEnvelope(raw);
    } catch {
      opened = null;
    }
    if (!opened) {
      this.log.error('unreadable event on the events channel');
      return;
    }
    const { id, recipients, payload } = opened;
    let event: ParleyEvent | null = null;
    let delivery: Delivery | null = null;
    let subscriptions = 0;
    for (const userId of recipients) {
      const set = this.byUser.get(userId);
      if (!set) continue;
      // Decoded once per instance, and only when someone here needs it.
      event ??= shareEvent(superjson.parse<ParleyEvent>(payload));
      delivery ??= { id: id === '-' ? null : id, event };
      for (const subscriber of set) subscriber.deliver(delivery);
      subscriptions += set.size;
    }
    if (!event) return;
    this.metrics?.eventsFannedOut.inc({ type: event.type }, subscriptions);
  }

  private onRevocation(raw: string): void {
    let revocation: Revocation;
    try {
      revocation = JSON.parse(raw) as Revocation;
    } catch {
      return;
    }
    for (const subscriber of this.byUser.get(revocation.userId) ?? []) {
      if (revocation.sessionId === null || revocation.sessionId === subscriber.sessionId) subscriber.revoke();
    }
  }
}
