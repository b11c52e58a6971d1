import { z } from 'zod';
import { Message } from '../messages/schemas.js';
import { nameText } from '../text.js';
import { Cursor, Id, Limit } from '../users/schemas.js';

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
  members: z.array(Member),
  lastMessage: Message.nullable(),
  lastSeq: z.number(),
  unreadCount: z.number(),
});
export type Conversation = z.infer<typeof Conversation>;

const GroupName = nameText(100);

export const OpenDirect = z.object({ userId: Id });
export const CreateGroup = z.object({
  name: GroupName,
  memberIds: z.array(Id).max(500, 'at most 500 members at once'),
});
export type CreateGroup = z.infer<typeof CreateGroup>;
export const ListConversations = z.object({ limit: Limit, cursor: Cursor });
export type ListConversations = z.infer<typeof ListConversations>;
export const ConversationId = z.object({ id: Id });
export const Rename = z.object({ id: Id, name: GroupName });
export const AddMembers = z.object({
  id: Id,
  userIds: z.array(Id).min(1, 'must name at least one user').max(500, 'at most 500 members at once'),
});
export const MemberRef = z.object({ id: Id, userId: Id });
export const SetRole = z.object({ id: Id, userId: Id, role: z.enum(['admin', 'member']) });
export const MarkRead = z.object({ id: Id, seq: z.number().int().min(0) });
