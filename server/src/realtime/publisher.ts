import type { EventBus, EventLog } from '../broker/ports/events.js';
import {
  EPHEMERAL_EVENTS,
  type EventPublisher,
  type Mark,
  type NewMessageEvent,
  type ParleyEvent,
} from '../contracts/events.js';
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
  ) {}

  async toConversation(conversationId: string, event: ParleyEvent): Promise<void> {
    const payload = stringify(event);
    if (EPHEMERAL_EVENTS.has(event.type)) {
      await this.bus.publish({ conversation: conversationId }, `-\n${payload}`);
      return;
    }
    await this.log.toConversation(conversationId, payload);
  }

  announcement(event: ParleyEvent): string {
    if (EPHEMERAL_EVENTS.has(event.type)) throw new Error(`${event.type} events are not durable`);
    return stringify(event);
  }

  newMessageAnnouncement(event: NewMessageEvent, seqSlot: string): string {
    // The seq goes first, so the first `"seq":` of the text is the message's own.
    const { seq: _unknown, ...rest } = event.message;
    const text = stringify({ type: event.type, message: { seq: 0, ...rest } });
    const marker = '"message":{"seq":0,';
    const at = text.indexOf(marker);
    if (at < 0) throw new Error('a new message event did not serialize as expected');
    return `${text.slice(0, at)}"message":{"seq":${seqSlot},${text.slice(at + marker.length)}`;
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
    await this.bus.publishEach(
      [...new Set(userIds)].map((userId) => ({ user: userId })),
      text,
    );
  }
}
