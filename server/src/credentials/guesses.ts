import type { Allowance, LimitStore } from '../broker/ports/limits.js';
import type { Limits } from '../config/index.js';
import { addressBucket, tooManyRequests } from '../limits/spend.js';
import type { Passwords } from './passwords.js';
import { loginThrottleKey } from '../broker/keyspace.js';

type GuessLimits = Pick<
  Limits,
  | 'loginFailuresPerAccount'
  | 'loginFailuresPerAddress'
  | 'loginFailuresPerDevice'
  | 'loginWindowSeconds'
  | 'loginDelaySeconds'
  | 'loginMaxDelaySeconds'
>;

/**
 * The throttle on password guesses: at sign-in, and wherever a signed-in user must give their
 * password again (changing it, deleting the account), since a stolen access token must not be
 * a way to guess it.
 *
 * Each guess is reserved from its allowances in one atomic broker step before the password is
 * hashed, so concurrent guesses (one HTTP batch of 50) can never all be evaluated; a right
 * password, or a check that never ran, gives its reservation back. Past an allowance, guesses
 * are slowed (one after a wait that doubles each time, up to `loginMaxDelaySeconds`), never
 * refused for the whole window, so the owner of an account is at worst delayed.
 */
export class PasswordGuesses {
  constructor(
    private readonly limitStore: LimitStore,
    private readonly passwords: Passwords,
    private readonly limits: GuessLimits,
  ) {}

  /** Guesses at one account, however it was named (username or email). */
  account(userId: string): Allowance {
    return this.allowance(loginThrottleKey('account', userId), this.limits.loginFailuresPerAccount);
  }

  /**
   * Guesses at a name no account has, by that name as normalized: the same allowance an account
   * would have, so that the answers do not tell which names exist.
   */
  unknownAccount(identifier: string): Allowance {
    return this.allowance(loginThrottleKey('unknown', identifier), this.limits.loginFailuresPerAccount);
  }

  address(ip: string): Allowance {
    return this.allowance(
      loginThrottleKey('address', addressBucket(ip)),
      this.limits.loginFailuresPerAddress,
    );
  }

  /** Guesses from one device that signed in to the account before (see `devices.ts`). */
  device(deviceId: string): Allowance {
    return this.allowance(loginThrottleKey('device', deviceId), this.limits.loginFailuresPerDevice);
  }

  /**
   * Whether `password` matches `stored`, counted against `allowances`; throws `RateLimited`
   * (nothing hashed, nothing counted) while one of them makes the caller wait.
   */
  async check(password: string, stored: string, allowances: Allowance[]): Promise<boolean> {
    const spent = await this.limitStore.spend(allowances);
    if (!spent.spent) throw tooManyRequests('Too many failed password attempts', spent.retryAfterMs);
    let outcome: 'right' | 'wrong' | 'not checked' = 'not checked';
    try {
      const valid = await this.passwords.verify(password, stored);
      outcome = valid ? 'right' : 'wrong';
      return valid;
    } finally {
      // Only a wrong password keeps its reservation: a right one, or a check that did not run
      // (hashing refused as too busy, an error), was no guess. A refund lost to a broker
      // failure leaves one attempt too many counted, which is no reason to fail the call.
      if (outcome !== 'wrong') {
        await this.limitStore.refund(allowances.map((allowance) => allowance.key)).catch(() => undefined);
      }
    }
  }

  private allowance(key: string, max: number): Allowance {
    const { loginWindowSeconds, loginDelaySeconds, loginMaxDelaySeconds } = this.limits;
    return {
      key,
      max,
      windowMs: loginWindowSeconds * 1000,
      backoff: { firstMs: loginDelaySeconds * 1000, maxMs: loginMaxDelaySeconds * 1000 },
    };
  }
}
