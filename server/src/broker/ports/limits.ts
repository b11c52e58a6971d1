/**
 * Allowances of attempts shared by every instance: the procedures' budgets and the throttle on
 * password guesses (`limits/`, `credentials/guesses.ts`).
 */
export interface LimitStore {
  /**
   * Takes one attempt from each allowance, all or none, in one atomic step shared by every
   * instance: when any of them has none left, nothing is taken and the answer says how long until
   * all of them would allow one. A refused call takes nothing, so asking again costs nothing.
   */
  spend(allowances: readonly Allowance[]): Promise<Spent>;
  /** Gives back one attempt taken by `spend` from each allowance (never below none taken). */
  refund(keys: readonly string[]): Promise<void>;
}

/**
 * An allowance of attempts under one key (`budgetKey`, `loginThrottleKey`): `max` attempts per
 * window of `windowMs`, the window starting with the first attempt.
 */
export interface Allowance {
  key: string;
  max: number;
  windowMs: number;
  /**
   * Past `max`, slow down instead of refusing until the window ends: the next attempt is allowed
   * `firstMs` after the last one, each further one after twice as long as the one before, at
   * most `maxMs`; and every attempt starts the window afresh, so it ends only once the attempts
   * stop.
   */
  backoff?: { firstMs: number; maxMs: number };
}

/** What `spend` answers: taken, or refused with how long to wait before trying again. */
export type Spent = { spent: true } | { spent: false; retryAfterMs: number };
