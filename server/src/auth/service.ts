import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/index.js';
import { Unauthorized } from '../errors.js';
import type { Register } from '../users/schemas.js';
import type { UserService } from '../users/service.js';
import { deviceOf, issueDeviceToken } from './devices.js';
import type { PasswordGuesses } from '../credentials/guesses.js';
import { hashPassword } from '../credentials/passwords.js';
import type { Tokens } from '../credentials/schemas.js';
import type { Login, Logout } from './schemas.js';
import type { Sessions } from '../credentials/sessions.js';
import { type AuthUser, verifyAccessToken } from '../credentials/tokens.js';

const INVALID_LOGIN = 'Invalid username, email or password';

/** Verified access tokens kept for `authenticate(…, { reuse: true })`, least recently used out first. */
const VERIFIED_TOKENS_KEPT = 10_000;

export class AuthService {
  /** Checked against when the user does not exist, so both failures cost one hash. */
  private readonly dummyHash: Promise<string>;
  /** Access tokens that verified, by their whole text (signature included), until they expire. */
  private readonly verified = new LRUCache<string, Readonly<AuthUser>>({ max: VERIFIED_TOKENS_KEPT });

  constructor(
    private readonly config: Config,
    private readonly users: UserService,
    private readonly sessions: Sessions,
    private readonly guesses: PasswordGuesses,
  ) {
    this.dummyHash = hashPassword(randomUUID(), config.passwordHashCost);
  }

  async register(input: Register) {
    const user = await this.users.create(input);
    const tokens = await this.sessions.start(user);
    return { user, tokens, deviceToken: issueDeviceToken(this.config.jwt.secret, user.id) };
  }

  /**
   * The guess is counted before the password is hashed (see `PasswordGuesses`): against the
   * device alone when the client presents a device token of this account, otherwise against the
   * account (whichever name it was given by) and the address.
   */
  async login(input: Login, ip: string) {
    const by = 'email' in input ? { email: input.email } : { username: input.username };
    const record = await this.users.findCredentials(by);
    const name = by.email !== undefined ? `email:${by.email}` : `username:${by.username}`;
    const secret = this.config.jwt.secret;
    const deviceId = record && input.deviceToken ? deviceOf(secret, record.id, input.deviceToken) : null;
    const allowances = deviceId
      ? [this.guesses.device(deviceId)]
      : [
          record ? this.guesses.account(record.id) : this.guesses.unknownAccount(name.toLowerCase()),
          this.guesses.address(ip),
        ];
    const stored = record?.passwordHash ?? (await this.dummyHash);
    const valid = await this.guesses.check(input.password, stored, allowances);
    if (!record || !valid) throw new Unauthorized(INVALID_LOGIN);
    const tokens = await this.sessions.start(record);
    return {
      user: await this.users.me(record.id),
      tokens,
      deviceToken: deviceId && input.deviceToken ? input.deviceToken : issueDeviceToken(secret, record.id),
    };
  }

  async refresh(refreshToken: string): Promise<{ tokens: Tokens }> {
    const rotated = await this.sessions.rotate(refreshToken);
    const user = rotated ? await this.users.findActive(rotated.userId) : null;
    if (!rotated || !user) throw new Unauthorized('Invalid refresh token');
    const tokens =
      rotated.again === null
        ? await this.sessions.issue(user, rotated.familyId, refreshToken)
        : await this.sessions.reissue(user, rotated.familyId, rotated.again);
    return { tokens };
  }

  async logout(user: AuthUser, input: Logout): Promise<{ ok: true }> {
    if (input.everywhere) {
      await this.sessions.revokeAll(user.id);
      return { ok: true };
    }
    const familyId = input.refreshToken
      ? ((await this.sessions.familyOf(user.id, input.refreshToken)) ?? user.sessionId)
      : user.sessionId;
    await this.sessions.revokeFamily(user.id, familyId);
    return { ok: true };
  }

  /**
   * Verifies an access token and that its session has not been revoked since. With `reuse`, a
   * token that verified before is not verified again until it expires: an HTTP client sends the
   * same token with every request for its whole lifetime. Its revocation is checked every time.
   */
  async authenticate(token: string, options: { reuse?: boolean } = {}): Promise<AuthUser | null> {
    const user = options.reuse
      ? await this.verifyOnce(token)
      : await verifyAccessToken(this.config.jwt, token);
    if (!user || (await this.sessions.isRevoked(user))) return null;
    return user;
  }

  private async verifyOnce(token: string): Promise<Readonly<AuthUser> | null> {
    const known = this.verified.get(token);
    if (known) return known;
    const user = await verifyAccessToken(this.config.jwt, token);
    if (!user) return null;
    // Shared by every request with this token, until the token expires.
    const shared = Object.freeze(user);
    const ttl = shared.expiresAt - Date.now();
    // (A TTL of 0 would mean "forever".)
    if (ttl > 0) this.verified.set(token, shared, { ttl });
    return shared;
  }
}
