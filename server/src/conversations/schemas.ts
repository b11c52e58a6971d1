import { z } from 'zod';
import { Cursor, Id, Limit } from '../contracts/schemas.js';
import { nameText } from '../text.js';

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
export const ListMembers = z.object({ id: Id, limit: Limit, cursor: Cursor });
export type ListMembers = z.infer<typeof ListMembers>;
export const Rename = z.object({ id: Id, name: GroupName });
export const AddMembers = z.object({
  id: Id,
  userIds: z.array(Id).min(1, 'must name at least one user').max(500, 'at most 500 members at once'),
});
export const MemberRef = z.object({ id: Id, userId: Id });
export const SetRole = z.object({ id: Id, userId: Id, role: z.enum(['admin', 'member']) });
export const MarkRead = z.object({ id: Id, seq: z.number().int().min(0) });
