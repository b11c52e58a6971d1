import type { Broker, FanOut } from '../broker/types.js';
import {
  EPHEMERAL_EVENTS,
  type EventPublisher,
  type Mark,
  type NewMessageEvent,
  type ParleyEvent,
} from '../contracts/events.js';
import {
  conversationChannel,
  conversationLog,
  EVENT_IDS_STREAM,
  inbox,
  userChannel,
} from '../broker/keyspace.js';
import { stringify } from './serialize.js';

/**
 * What travels on a channel: `<event id or ->\n<payload>`. The payload is the event as
 * superjson, or a mark (`!in <conversation>`, `!out <conversation>`) that the user's own
 * streams turn into `conversation.upserted` / `conversation.removed`. No recipient list travels:
 * an instance receives a channel only while it holds a stream that follows it.
 */
export function markText(mark: Mark): string {
  return `!${mark.change} ${mark.conversationId}`;
}

/** The mark a payload holds, or null when it is an event. */
export function readMark(payload: string): Mark | null {
  if (!payload.startsWith('!')) return null;
  const space = payload.indexOf(' ');
  const change = payload.slice(1, space);
  if (space < 0 || (change !== 'in' && change !== 'out')) return null;
  return { change, conversationId: payload.slice(space + 1) };
}

/**
 * Durable events are written once: a conversation's into its log, a user's into their inbox,
 * each under one id from the deployment's id stream and published on the log's channel in the
 * same atomic broker step. Ephemeral events (typing, presence) are only published.
 */
export class BrokerEventPublisher implements EventPublisher {
  constructor(
    private readonly broker: Broker,
    /** How many events each log keeps (at least) for resume; an older gap gets `resync`. */
    private readonly logLength: number,
  ) {}

  async toConversation(conversationId: string, event: ParleyEvent): Promise<void> {
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.broker.publish(conversationChannel(conversationId), `-\n${payload}`);
      return;
    }
    const fan = this.conversationFan(conversationId, payload);
    await this.broker.appendToMany(fan.idStream, fan.streams, fan.fields, fan);
  }

  fanOut(conversationId: string, event: ParleyEvent): FanOut {
    if (EPHEMERAL_EVENTS.has(event.type)) throw new Error(`${event.type} events are not durable`);
    return this.conversationFan(conversationId, stringify(event));
  }

  fanOutNewMessage(event: NewMessageEvent, seqSlot: string): FanOut {
    // The seq goes first, so the first `"seq":` of the text is the message's own.
    const { seq: _unknown, ...rest } = event.message;
    const text = stringify({ type: event.type, message: { seq: 0, ...rest } });
    const marker = '"message":{"seq":0,';
    const at = text.indexOf(marker);
    if (at < 0) throw new Error('a new message event did not serialize as expected');
    const payload = `${text.slice(0, at)}"message":{"seq":${seqSlot},${text.slice(at + marker.length)}`;
    return this.conversationFan(event.message.conversationId, payload);
  }

  async mark(userIds: readonly string[], mark: Mark): Promise<void> {
    const unique = [...new Set(userIds)];
    if (unique.length === 0) return;
    // Added users' marks share one step, however many there are.
    await this.broker.appendToMany(
      EVENT_IDS_STREAM,
      unique.map(inbox),
      { m: mark.change, c: mark.conversationId },
      {
        maxLen: this.logLength,
        publish: { channels: unique.map(userChannel), message: markText(mark) },
      },
    );
  }

  async toUser(userId: string, event: ParleyEvent): Promise<void> {
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.broker.publish(userChannel(userId), `-\n${payload}`);
      return;
    }
    await this.broker.appendToMany(
      EVENT_IDS_STREAM,
      [inbox(userId)],
      { e: payload },
      { maxLen: this.logLength, publish: { channels: [userChannel(userId)], message: payload } },
    );
  }

  async signalUsers(userIds: readonly string[], event: ParleyEvent): Promise<void> {
    if (!EPHEMERAL_EVENTS.has(event.type)) throw new Error(`${event.type} events are durable`);
    const text = `-\n${stringify(event)}`;
    await Promise.all([...new Set(userIds)].map((userId) => this.broker.publish(userChannel(userId), text)));
  }

  private conversationFan(conversationId: string, payload: string): FanOut {
    return {
      idStream: EVENT_IDS_STREAM,
      streams: [conversationLog(conversationId)],
      fields: { e: payload },
      maxLen: this.logLength,
      publish: { channels: [conversationChannel(conversationId)], message: payload },
    };
  }
}
