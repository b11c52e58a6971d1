import superjson from 'superjson';
import type { Broker } from '../broker/types.js';
import { EPHEMERAL_EVENTS, type EventPublisher, type ParleyEvent } from './events.js';

/** One channel for every instance: each instance decodes an event once and fans out locally. */
export const EVENTS_CHANNEL = 'events';
/** One-entry stream whose ids order every durable event. */
export const EVENT_IDS_STREAM = 'events:ids';

export const userLog = (userId: string) => `events:user:${userId}`;

/** What travels on the channel: `<event id or ->\n<JSON of this>`. */
export interface Envelope {
  /** Recipients (user ids). */
  r: readonly string[];
  /** The event, as superjson. */
  e: string;
}

/**
 * Durable events go into each recipient's capped log and onto the channel in one atomic broker
 * step, under one id; ephemeral events (typing, presence) are only published.
 */
export class BrokerEventPublisher implements EventPublisher {
  constructor(
    private readonly broker: Broker,
    /** How many events each user's log keeps for resume; an older gap gets `resync`. */
    private readonly logLength: number,
  ) {}

  async publish(recipients: readonly string[], event: ParleyEvent): Promise<void> {
    const unique = [...new Set(recipients)];
    if (unique.length === 0) return;
    const payload = superjson.stringify(event);
    const message = JSON.stringify({ r: unique, e: payload } satisfies Envelope);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.broker.publish(EVENTS_CHANNEL, `-\n${message}`);
      return;
    }
    await this.broker.appendToMany(
      EVENT_IDS_STREAM,
      unique.map(userLog),
      { e: payload },
      { maxLen: this.logLength, publish: { channel: EVENTS_CHANNEL, message } },
    );
  }
}
