import { z } from 'zod';
import type { FanOut } from '../broker/types.js';
import { Conversation } from './schemas.js';
import { Message } from './schemas.js';

/** Everything the `events` subscription carries. */
export const ParleyEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('message.created'), message: Message }),
  z.object({ type: z.literal('message.updated'), message: Message }),
  z.object({ type: z.literal('message.deleted'), conversationId: z.string(), messageId: z.string() }),
  z.object({ type: z.literal('conversation.upserted'), conversation: Conversation }),
  z.object({ type: z.literal('conversation.removed'), conversationId: z.string() }),
  // One event per change, naming everyone it added or removed; `by` is null when they left.
  z.object({
    type: z.enum(['member.joined', 'member.left']),
    conversationId: z.string(),
    userIds: z.array(z.string()),
    by: z.string().nullable(),
  }),
  z.object({ type: z.literal('typing'), conversationId: z.string(), userId: z.string(), until: z.date() }),
  z.object({ type: z.literal('read'), conversationId: z.string(), userId: z.string(), seq: z.number() }),
  z.object({
    type: z.literal('presence'),
    userId: z.string(),
    online: z.boolean(),
    lastSeenAt: z.date().nullable(),
  }),
  z.object({ type: z.literal('resync') }),
]);
export type ParleyEvent = z.infer<typeof ParleyEvent>;

/** Events that are not replayed on resume. */
export const EPHEMERAL_EVENTS = new Set<ParleyEvent['type']>(['typing', 'presence']);

/**
 * How services hand events to the realtime layer. `publish` resolves once the event is in
 * every recipient's durable log (ephemeral ones: once published) and on its way to every
 * instance; a recipient's devices each get it once.
 */
export interface EventPublisher {
  publish(recipients: readonly string[], event: ParleyEvent): Promise<void>;
  /**
   * A new message's event as a fan-out for the broker step that appends the message (see
   * `AppendOptions.fanOut`), so the message and its event are written together or not at all.
   * `seqSlot` stands in the event's text for the seq, which that step assigns; null without
   * recipients.
   */
  fanOutNewMessage(recipients: readonly string[], event: NewMessageEvent, seqSlot: string): FanOut | null;
  /**
   * A durable event as a fan-out for the broker step that makes the change it announces, so
   * the two are written together and events keep the order of their changes; null without
   * recipients.
   */
  fanOut(recipients: readonly string[], event: ParleyEvent): FanOut | null;
}

export type NewMessageEvent = Extract<ParleyEvent, { type: 'message.created' }>;
