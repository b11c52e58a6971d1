import { z } from 'zod';
import { Text } from '../text.js';

/**
 * Schemas more than one domain speaks: the ids, page sizes and cursors of every list, and the
 * messages and conversations the event union carries. Beside their domains they would make the
 * domains and realtime import each other.
 */

export const Id = z.uuid('must be a UUID');
export const Limit = z.number().int().min(1).max(100).default(50);
export const Cursor = Text.max(512).nullish();

export const page = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable() });

export const Message = z.object({
  id: z.string(),
  conversationId: z.string(),
  seq: z.number(),
  senderId: z.string(),
  senderUsername: z.string(),
  content: z.string(),
  type: z.enum(['text', 'system']),
  clientMessageId: z.string().nullable(),
  sentAt: z.date(),
  editedAt: z.date().nullable(),
  deletedAt: z.date().nullable(),
});
export type Message = z.infer<typeof Message>;

export const Role = z.enum(['owner', 'admin', 'member']);
export type Role = z.infer<typeof Role>;

export const Member = z.object({
  userId: z.string(),
  username: z.string(),
  displayName: z.string(),
  role: Role,
  joinedAt: z.date(),
  lastReadSeq: z.number(),
});
export type Member = z.infer<typeof Member>;

export const Conversation = z.object({
  id: z.string(),
  type: z.enum(['direct', 'group']),
  name: z.string().nullable(),
  createdBy: z.string(),
  createdAt: z.date(),
  updatedAt: z.date(),
  /** The first members (longest-standing first); `memberCount` says whether that is all of them. */
  members: z.array(Member),
  memberCount: z.number(),
  lastMessage: Message.nullable(),
  lastSeq: z.number(),
  unreadCount: z.number(),
});
export type Conversation = z.infer<typeof Conversation>;
