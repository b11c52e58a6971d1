import type { FanOut } from '../broker/types.js';
import type { EventBus, EventLog } from '../broker/ports/events.js';
import {
  EPHEMERAL_EVENTS,
  type EventPublisher,
  type Mark,
  type NewMessageEvent,
  type ParleyEvent,
} from '../contracts/events.js';
import { conversationChannel, conversationLog, EVENT_IDS_STREAM } from '../broker/keyspace.js';
import { stringify } from './serialize.js';

/**
 * Durable events are written once: a conversation's into its log, a user's into their inbox,
 * each under one id from the deployment's id stream and published on the log's channel in the
 * same atomic broker step. Ephemeral events (typing, presence) are only published.
 */
export class BrokerEventPublisher implements EventPublisher {
  constructor(
    private readonly log: EventLog,
    private readonly bus: EventBus,
    /** How many events each log keeps (at least) for resume; an older gap gets `resync`. */
    private readonly logLength: number,
  ) {}

  async toConversation(conversationId: string, event: ParleyEvent): Promise<void> {
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.bus.publish({ conversation: conversationId }, `-\n${payload}`);
      return;
    }
    await this.log.toConversation(conversationId, payload);
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
    if (userIds.length === 0) return;
    // Added users' marks share one step, however many there are.
    await this.log.mark(userIds, mark);
  }

  async toUser(userId: string, event: ParleyEvent): Promise<void> {
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.bus.publish({ user: userId }, `-\n${payload}`);
      return;
    }
    await this.log.toInbox(userId, payload);
  }

  async signalUsers(userIds: readonly string[], event: ParleyEvent): Promise<void> {
    if (!EPHEMERAL_EVENTS.has(event.type)) throw new Error(`${event.type} events are durable`);
    const text = `-\n${stringify(event)}`;
    await Promise.all([...new Set(userIds)].map((userId) => this.bus.publish({ user: userId }, text)));
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
