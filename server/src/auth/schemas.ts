import { z } from 'zod';
import { LineText, Text } from '../text.js';
import { Tokens } from '../credentials/schemas.js';
import { Email, Me } from '../users/schemas.js';

/** The `deviceToken` a sign-in on this device answered with; see `server/src/auth/devices.ts`. */
const DeviceToken = z.string().max(128).optional();

export const Login = z.union([
  z.object({ email: Email, password: Text.min(1).max(128), deviceToken: DeviceToken }),
  z.object({
    // Not `Username`, so an old or mistyped name gets the usual answer; but never a control
    // character, which no username has and PostgreSQL refuses in text.
    username: LineText.min(1).max(64),
    password: Text.min(1).max(128),
    deviceToken: DeviceToken,
  }),
]);
export type Login = z.infer<typeof Login>;

export const Session = z.object({
  user: Me,
  tokens: Tokens,
  /**
   * Names this device to later sign-ins on this account (`auth.login`'s `deviceToken`), whose
   * failed attempts then count against this device alone. Keep it across sign-outs.
   */
  deviceToken: z.string(),
});

export const Refresh = z.object({ refreshToken: Text.min(1).max(512) });
export const Logout = z.object({
  refreshToken: Text.min(1).max(512).optional(),
  everywhere: z.boolean().optional(),
});
export type Logout = z.infer<typeof Logout>;
