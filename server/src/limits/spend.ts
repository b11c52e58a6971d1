import { isIPv6 } from 'node:net';
import type { Allowance, LimitStore } from '../broker/ports/limits.js';
import { RateLimited } from '../errors.js';
import { type Budgets, procedureBudgets } from './budgets.js';
import { budgetKey } from '../broker/keyspace.js';

/** Who a call is counted against. */
export interface Caller {
  userId: string | null;
  ip: string;
}

/**
 * Counts one call of `path` against its budget, in one atomic broker step shared by every
 * instance; throws `RateLimited` with the seconds left in the window when none is left. The
 * refused call is not counted.
 */
export async function spendBudget(limits: LimitStore, budgets: Budgets, path: string, caller: Caller) {
  const entry = procedureBudgets[path];
  if (entry === undefined) throw new Error(`procedure ${path} has no budget in server/src/limits/budgets.ts`);
  if (typeof entry !== 'string') return;
  const budget = budgets[entry];
  const subject =
    budget.per === 'user' && caller.userId ? `user:${caller.userId}` : `address:${addressBucket(caller.ip)}`;
  const allowance: Allowance = {
    key: budgetKey(entry, subject),
    max: budget.max,
    windowMs: budget.windowSeconds * 1000,
  };
  const spent = await limits.spend([allowance]);
  if (!spent.spent) throw tooManyRequests('Too many requests', spent.retryAfterMs);
}

/** `RateLimited` with the wait in whole seconds (at least one), also said in the message. */
export function tooManyRequests(what: string, retryAfterMs: number): RateLimited {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new RateLimited(`${what}; try again in ${seconds} s`, seconds);
}

/**
 * The address a per-address count is kept under: an IPv4 address as it is; an IPv6 address by
 * its /64 network, since one client is usually given a whole /64 and could otherwise count
 * under 2^64 addresses.
 */
export function addressBucket(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1]) return mapped[1];
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::')
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((group) => (Number.parseInt(group, 16) || 0).toString(16))
    .join(':')}::/64`;
}
