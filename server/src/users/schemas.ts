import { z } from 'zod';
import { Cursor, Limit } from '../contracts/schemas.js';
import { Text, nameText } from '../text.js';

export const Username = z
  .string()
  .min(3, 'must be at least 3 characters')
  .max(32, 'must be at most 32 characters')
  .regex(/^[a-zA-Z0-9_.]+$/, 'may contain only letters, digits, "_" and "."');
export const Email = z.email('must be an email address').max(254).trim();
export const Password = Text.min(8, 'must be at least 8 characters').max(
  128,
  'must be at most 128 characters',
);
export const DisplayName = nameText(64);

export const Register = z.object({
  email: Email,
  username: Username,
  password: Password,
  displayName: DisplayName.optional(),
});
export type Register = z.infer<typeof Register>;

export const PublicUser = z.object({
  id: z.string(),
  username: z.string(),
  displayName: z.string(),
  lastSeenAt: z.date().nullable(),
  online: z.boolean(),
});
export type PublicUser = z.infer<typeof PublicUser>;

export const Me = PublicUser.extend({ email: z.string(), createdAt: z.date() });
export type Me = z.infer<typeof Me>;

export const ListUsers = z.object({
  query: Text.trim().max(64).optional(),
  limit: Limit,
  cursor: Cursor,
});
export type ListUsers = z.infer<typeof ListUsers>;

export const UpdateUser = z
  .object({
    displayName: DisplayName.optional(),
    password: Password.optional(),
    currentPassword: Text.max(128).optional(),
  })
  .refine((input) => !input.password || input.currentPassword, {
    message: 'is required to set a new password',
    path: ['currentPassword'],
  });
export type UpdateUser = z.infer<typeof UpdateUser>;

export const DeleteUser = z.object({ password: Text.min(1).max(128) });
export type DeleteUser = z.infer<typeof DeleteUser>;
