import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Device tokens (OWASP's "device cookies"): a successful sign-in hands the client a token that
 * names its device and is bound to the account, `<device id>.<HMAC of the account and device
 * id>` under the JWT secret, so nothing needs storing. A later sign-in that presents it for the
 * same account is counted against that device alone, which is how failures by anyone else
 * never hold up the owner. A token for another account, or forged, counts as none.
 */
const DEVICE_ID_BYTES = 16;

export function issueDeviceToken(secret: Uint8Array, userId: string): string {
  const deviceId = randomBytes(DEVICE_ID_BYTES).toString('base64url');
  return `${deviceId}.${mac(secret, userId, deviceId).toString('base64url')}`;
}

/** The device id of `token` when it was issued for `userId`; null otherwise. */
export function deviceOf(secret: Uint8Array, userId: string, token: string): string | null {
  const [deviceId, signature, ...rest] = token.split('.');
  if (!deviceId || !signature || rest.length > 0 || !/^[\w-]{22}$/.test(deviceId)) return null;
  const expected = mac(secret, userId, deviceId);
  const actual = Buffer.from(signature, 'base64url');
  return actual.length === expected.length && timingSafeEqual(actual, expected) ? deviceId : null;
}

function mac(secret: Uint8Array, userId: string, deviceId: string): Buffer {
  // Domain-separated from the access tokens signed with the same secret.
  return createHmac('sha256', secret).update(`parley device\u0000${userId}\u0000${deviceId}`).digest();
}
