import { z } from 'zod';
import { LineText, Text } from '../text.js';
import { DisplayName, Email, Me, Password, Username } from '../users/schemas.js';

export const Register = z.object({
  email: Email,
  username: Username,
  password: Password,
  displayName: DisplayName.optional(),
});
export type Register = z.infer<typeof Register>;

export const Login = z.union([
  z.object({ email: Email, password: Text.min(1).max(128) }),
  z.object({
    // Not `Username`, so an old or mistyped name gets the usual answer; but never a control
    // character, which no username has and PostgreSQL refuses in text.
    username: LineText.min(1).max(64),
    password: Text.min(1).max(128),
  }),
]);
export type Login = z.infer<typeof Login>;

export const Tokens = z.object({
  accessToken: z.string(),
  refreshToken: z.string(),
  expiresIn: z.number(),
});
export type Tokens = z.infer<typeof Tokens>;

export const Session = z.object({ user: Me, tokens: Tokens });

export const Refresh = z.object({ refreshToken: Text.min(1).max(512) });
export const Logout = z.object({
  refreshToken: Text.min(1).max(512).optional(),
  everywhere: z.boolean().optional(),
});
export type Logout = z.infer<typeof Logout>;
