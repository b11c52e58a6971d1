import type { Allowance, LimitStore, Spent } from '../ports/limits.js';
import { ExpiringMap } from './expiring.js';

/** What is taken from one allowance until its window ends. */
interface Taken {
  count: number;
  /** With a backoff: no attempt before this time (ms). */
  notBefore: number;
  windowEnds: number;
}

/** Allowances of the in-process engine: what is taken from each, by its key, until its window ends. */
export class MemoryLimits implements LimitStore {
  private readonly allowances = new ExpiringMap<Taken>();

  spend(allowances: readonly Allowance[]): Promise<Spent> {
    const now = Date.now();
    const taken = allowances.map((allowance) => this.allowances.get(allowance.key, now));
    let waitMs = 0;
    allowances.forEach((allowance, i) => {
      const state = taken[i];
      if (!state || state.count < allowance.max) return;
      waitMs = Math.max(waitMs, (allowance.backoff ? state.notBefore : state.windowEnds) - now);
    });
    if (waitMs > 0) return Promise.resolve({ spent: false, retryAfterMs: waitMs });
    allowances.forEach((allowance, i) => {
      const state = taken[i];
      const count = (state?.count ?? 0) + 1;
      const { backoff } = allowance;
      const notBefore =
        backoff && count >= allowance.max
          ? now + Math.min(backoff.maxMs, backoff.firstMs * 2 ** (count - allowance.max))
          : (state?.notBefore ?? 0);
      // A fixed window keeps the end its first attempt gave it; a backoff window restarts.
      const windowEnds = backoff || !state ? now + allowance.windowMs : state.windowEnds;
      this.allowances.set(allowance.key, { count, notBefore, windowEnds }, windowEnds);
    });
    return Promise.resolve({ spent: true });
  }

  refund(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      const state = this.allowances.get(key);
      if (state && state.count > 0) state.count -= 1;
    }
    return Promise.resolve();
  }
}
