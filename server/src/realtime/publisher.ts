import type { Broker, FanOut } from '../broker/types.js';
import { stringify } from './serialize.js';
import {
  EPHEMERAL_EVENTS,
  type EventPublisher,
  type NewMessageEvent,
  type ParleyEvent,
} from '../contracts/events.js';

/** One channel for every instance: each instance decodes an event once and fans out locally. */
export const EVENTS_CHANNEL = 'events';
/** One-entry stream whose ids order every durable event. */
export const EVENT_IDS_STREAM = 'events:ids';

export const userLog = (userId: string) => `events:user:${userId}`;

/**
 * What travels on the channel: `<event id or ->\n<recipients>\n<event>`, the recipients (user
 * ids) as a JSON array and the event as superjson. Neither JSON text holds a raw newline, and
 * the event's text is carried as it is, not escaped inside another JSON document.
 */
export function envelope(recipients: readonly string[], payload: string): string {
  return `${JSON.stringify(recipients)}\n${payload}`;
}

/** The parts of a channel message; null when it is not one. */
export function openEnvelope(raw: string): { id: string; recipients: string[]; payload: string } | null {
  const first = raw.indexOf('\n');
  const second = first < 0 ? -1 : raw.indexOf('\n', first + 1);
  if (second < 0) return null;
  const recipients: unknown = JSON.parse(raw.slice(first + 1, second));
  if (!Array.isArray(recipients) || !recipients.every((r) => typeof r === 'string')) return null;
  return { id: raw.slice(0, first), recipients, payload: raw.slice(second + 1) };
}

/**
 * Durable events go into each recipient's capped log and onto the channel in one atomic broker
 * step, under one id; ephemeral events (typing, presence) are only published.
 */
export class BrokerEventPublisher implements EventPublisher {
  constructor(
    private readonly broker: Broker,
    /** How many events each user's log keeps (at least) for resume; an older gap gets `resync`. */
    private readonly logLength: number,
  ) {}

  async publish(recipients: readonly string[], event: ParleyEvent): Promise<void> {
    const unique = [...new Set(recipients)];
    if (unique.length === 0) return;
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.broker.publish(EVENTS_CHANNEL, `-\n${envelope(unique, payload)}`);
      return;
    }
    const fan = this.durable(unique, payload);
    await this.broker.appendToMany(fan.idStream, fan.streams, fan.fields, fan);
  }

  fanOutNewMessage(recipients: readonly string[], event: NewMessageEvent, seqSlot: string): FanOut | null {
    const unique = [...new Set(recipients)];
    if (unique.length === 0) return null;
    // The seq goes first, so the first `"seq":` of the text is the message's own.
    const { seq: _unknown, ...rest } = event.message;
    const text = stringify({ type: event.type, message: { seq: 0, ...rest } });
    const marker = '"message":{"seq":0,';
    const at = text.indexOf(marker);
    if (at < 0) throw new Error('a new message event did not serialize as expected');
    const payload = `${text.slice(0, at)}"message":{"seq":${seqSlot},${text.slice(at + marker.length)}`;
    return this.durable(unique, payload);
  }

  fanOut(recipients: readonly string[], event: ParleyEvent): FanOut | null {
    const unique = [...new Set(recipients)];
    if (unique.length === 0) return null;
    if (EPHEMERAL_EVENTS.has(event.type)) throw new Error(`${event.type} events are not durable`);
    return this.durable(unique, stringify(event));
  }

  private durable(recipients: readonly string[], payload: string): FanOut {
    return {
      idStream: EVENT_IDS_STREAM,
      streams: recipients.map(userLog),
      fields: { e: payload },
      maxLen: this.logLength,
      publish: { channel: EVENTS_CHANNEL, message: envelope(recipients, payload) },
    };
  }
}
