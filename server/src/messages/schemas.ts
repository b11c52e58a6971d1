import { z } from 'zod';
import { Cursor, Id, Limit } from '../contracts/schemas.js';
import { messageText } from '../text.js';

export const Content = z
  .string()
  .max(20_000, 'must be at most 4000 characters')
  .transform((value) => value.trim())
  .pipe(messageText(4000));

export const SendMessage = z.object({
  conversationId: Id,
  content: Content,
  clientMessageId: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_\-:.]+$/, 'may contain only letters, digits and - _ : .')
    .optional(),
  /**
   * `true` on the first attempt of a send whose `clientMessageId` the client has just made: no
   * earlier message can have it, so the server does not look in PostgreSQL for one. Left out
   * (or `false`) on every retry. A repeat within the broker's claim (an hour) is caught either
   * way; ignored without a `clientMessageId`.
   */
  firstAttempt: z.boolean().optional(),
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
