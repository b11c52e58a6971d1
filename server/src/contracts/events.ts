import { z } from 'zod';
import { Conversation, Message, Role } from './schemas.js';

/** Everything the `events` subscription carries. */
export const ParleyEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('message.created'), message: Message }),
  z.object({ type: z.literal('message.updated'), message: Message }),
  z.object({ type: z.literal('message.deleted'), conversationId: z.string(), messageId: z.string() }),
  z.object({ type: z.literal('conversation.upserted'), conversation: Conversation }),
  z.object({ type: z.literal('conversation.removed'), conversationId: z.string() }),
  // A change every member sees alike: the name, and how many members there are now.
  z.object({
    type: z.literal('conversation.updated'),
    conversationId: z.string(),
    name: z.string().nullable(),
    memberCount: z.number(),
    updatedAt: z.date(),
    by: z.string(),
  }),
  z.object({
    type: z.literal('member.updated'),
    conversationId: z.string(),
    userId: z.string(),
    role: Role,
    by: z.string(),
  }),
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
 * A change of one user's memberships, written to their inbox: `in` once they are in the
 * conversation, `out` once they are not. Their streams turn it into `conversation.upserted`
 * (the conversation as they see it then) or `conversation.removed`, and start or stop
 * following the conversation's log.
 */
export interface Mark {
  change: 'in' | 'out';
  conversationId: string;
}

/**
 * How services hand events to the realtime layer. Each durable event is written once, to the
 * log of the conversation it belongs to or the inbox of the one user it concerns; every
 * device following that log gets it once. The promises resolve once the event is written and
 * on its way to every instance that follows the log.
 */
export interface EventPublisher {
  /** An event of a conversation, for every member (typing: only published). */
  toConversation(conversationId: string, event: ParleyEvent): Promise<void>;
  /**
   * A durable event of a conversation as the announcement of the broker step that makes the
   * change it announces (its payload, for the message log), so the two are written together and
   * events keep the order of their changes.
   */
  announcement(event: ParleyEvent): string;
  /**
   * A new message's event as the announcement of the step that appends the message, so the
   * message and its event are written together or not at all. `seqSlot` stands in the event's
   * text for the seq, which that step assigns.
   */
  newMessageAnnouncement(event: NewMessageEvent, seqSlot: string): string;
  /** The same membership change of each of `userIds`, into their inboxes in one step. */
  mark(userIds: readonly string[], mark: Mark): Promise<void>;
  /** An event for one user's own devices. */
  toUser(userId: string, event: ParleyEvent): Promise<void>;
  /** An ephemeral event (presence) for each of `userIds`. */
  signalUsers(userIds: readonly string[], event: ParleyEvent): Promise<void>;
}

export type NewMessageEvent = Extract<ParleyEvent, { type: 'message.created' }>;
