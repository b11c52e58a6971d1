import { z } from 'zod';
import { Cursor, Id, Limit } from '../users/schemas.js';

/** Control characters other than newline and tab are refused in message text. */
const forbiddenControl = /[\u0000-\u0008\u000b-\u001f\u007f]/;

export const Content = z
  .string()
  .max(20_000, 'must be at most 4000 characters')
  .transform((value) => value.trim())
  .pipe(
    z
      .string()
      .min(1, 'must not be empty')
      .max(4000, 'must be at most 4000 characters')
      .refine((value) => !forbiddenControl.test(value), 'must not contain control characters'),
  );

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

export const SendMessage = z.object({
  conversationId: Id,
  content: Content,
  clientMessageId: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_\-:.]+$/, 'may contain only letters, digits and - _ : .')
    .optional(),
});
export type SendMessage = z.infer<typeof SendMessage>;

export const ListMessages = z.object({
  conversationId: Id,
  limit: Limit,
  cursor: Cursor,
  afterSeq: z.number().int().min(0).optional(),
});
export type ListMessages = z.infer<typeof ListMessages>;

export const EditMessage = z.object({ id: Id, content: Content });
export type EditMessage = z.infer<typeof EditMessage>;
