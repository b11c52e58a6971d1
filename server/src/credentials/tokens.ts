import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  webcrypto,
} from 'node:crypto';
import { errors, jwtVerify, SignJWT } from 'jose';

export interface AuthUser {
  id: string;
  username: string;
  /** The refresh-token family this access token was issued under. */
  sessionId: string;
  /** When the token was issued, in milliseconds since the epoch (a number: a connection keeps it). */
  issuedAt: number;
  /** When it expires, in milliseconds since the epoch. */
  expiresAt: number;
}

export interface TokenSettings {
  secret: Uint8Array;
  issuer: string;
  audience: string;
  accessTtlSeconds: number;
}

const ACCESS_TYPE = 'access';

/**
 * The HMAC key of each secret, imported once: given the secret's bytes, jose imports a new
 * WebCrypto key on every sign and every verify, about a third of what a verification costs.
 */
const keys = new WeakMap<Uint8Array, Promise<webcrypto.CryptoKey>>();

function keyOf(secret: Uint8Array): Promise<webcrypto.CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = webcrypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, [
      'sign',
      'verify',
    ]);
    keys.set(secret, key);
  }
  return key;
}

export async function signAccessToken(
  settings: TokenSettings,
  user: { id: string; username: string },
  sessionId: string,
): Promise<string> {
  return new SignJWT({ typ: ACCESS_TYPE, sid: sessionId, name: user.username, ims: Date.now() })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user.id)
    .setIssuer(settings.issuer)
    .setAudience(settings.audience)
    .setIssuedAt()
    .setExpirationTime(`${settings.accessTtlSeconds}s`)
    .sign(await keyOf(settings.secret));
}

/** Verifies an access token; null for anything forged, expired, or not an access token. */
export async function verifyAccessToken(settings: TokenSettings, token: string): Promise<AuthUser | null> {
  try {
    const { payload } = await jwtVerify(token, await keyOf(settings.secret), {
      algorithms: ['HS256'],
      issuer: settings.issuer,
      audience: settings.audience,
      requiredClaims: ['sub', 'exp', 'iat'],
    });
    if (payload.typ !== ACCESS_TYPE || typeof payload.sid !== 'string' || typeof payload.name !== 'string') {
      return null;
    }
    return {
      id: payload.sub as string,
      username: payload.name,
      sessionId: payload.sid,
      // `iat` has whole seconds; `ims` orders a token against a revocation in the same second.
      issuedAt: typeof payload.ims === 'number' ? payload.ims : (payload.iat ?? 0) * 1000,
      expiresAt: (payload.exp ?? 0) * 1000,
    };
  } catch (error) {
    if (error instanceof errors.JOSEError || error instanceof TypeError) return null;
    throw error;
  }
}

/** Refresh tokens are opaque random strings; only their SHA-256 is stored. */
export function newRefreshToken(): string {
  return randomBytes(32).toString('base64url');
}

export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

/**
 * The key that seals what only the holder of `refreshToken` may read back: derived from the
 * token itself, which the server never stores, so a sealed value is worthless to whoever reads
 * the broker without the token.
 */
function sealingKey(refreshToken: string): Buffer {
  return createHmac('sha256', refreshToken).update('parley refresh successor').digest();
}

/** Encrypts `text` (AES-256-GCM) so that only `refreshToken` opens it. */
export function sealForRefreshToken(refreshToken: string, text: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealingKey(refreshToken), iv);
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

/** What `sealForRefreshToken` sealed, or null when `refreshToken` does not open it. */
export function openWithRefreshToken(refreshToken: string, sealed: string): string | null {
  const bytes = Buffer.from(sealed, 'base64url');
  if (bytes.length < 28) return null;
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealingKey(refreshToken), bytes.subarray(0, 12));
    decipher.setAuthTag(bytes.subarray(12, 28));
    return Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString('utf8');
  } catch {
    return null;
  }
}
