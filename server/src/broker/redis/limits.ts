import type { Allowance, LimitStore, Spent } from '../ports/limits.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

// An allowance is a hash: `n` attempts taken, `at` the time (ms, Redis's clock, shared by every
// instance) before which a backoff refuses; it expires when its window ends.

/**
 * Takes one attempt from every allowance or, when one of them has none left, none at all and
 * answers how long to wait (ms); 0 when taken. `firsts` is 0 for an allowance without backoff.
 */
const SPEND = defineScript({
  name: 'limitsSpend',
  keys: [],
  args: [],
  keyLists: ['allowances'],
  argLists: ['maxes', 'windows', 'firsts', 'caps'],
  body: `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local taken = {}
for i, allowance in ipairs(allowances) do
  local max, first = tonumber(maxes[i]), tonumber(firsts[i])
  local state = redis.call('HMGET', allowance, 'n', 'at')
  local n = tonumber(state[1]) or 0
  taken[i] = n
  if n >= max then
    local w
    if first > 0 then
      w = (tonumber(state[2]) or 0) - now
    else
      w = redis.call('PTTL', allowance)
      if w <= 0 then
        -- The window ends in this very millisecond (PTTL rounds it to 0): the attempt opens the
        -- next one, instead of being let through uncounted by the window that follows.
        redis.call('DEL', allowance)
        taken[i] = 0
      end
    end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i, allowance in ipairs(allowances) do
  local max, first, cap = tonumber(maxes[i]), tonumber(firsts[i]), tonumber(caps[i])
  local n = taken[i] + 1
  redis.call('HSET', allowance, 'n', n)
  if first > 0 then
    if n >= max then
      redis.call('HSET', allowance, 'at', string.format('%d', now + math.min(cap, first * 2 ^ (n - max))))
    end
    redis.call('PEXPIRE', allowance, windows[i])
  elseif n == 1 or redis.call('PTTL', allowance) < 0 then
    redis.call('PEXPIRE', allowance, windows[i])
  end
end
return 0`,
});

const REFUND = defineScript({
  name: 'limitsRefund',
  keys: [],
  args: [],
  keyLists: ['allowances'],
  body: `
for _, allowance in ipairs(allowances) do
  local n = tonumber(redis.call('HGET', allowance, 'n'))
  if n and n > 0 then redis.call('HINCRBY', allowance, 'n', -1) end
end
return 0`,
});

export class RedisLimits implements LimitStore {
  constructor(private readonly redis: RedisConnection) {}

  /**
   * One script for all the allowances on a single server. On a cluster, one per hash slot group,
   * run together; when any refuses, what the others took is given back.
   */
  async spend(allowances: readonly Allowance[]): Promise<Spent> {
    if (allowances.length === 0) return { spent: true };
    const groups = this.redis.together(allowances, (allowance) => allowance.key);
    const waits = await Promise.all(groups.map((group) => this.spendTogether(group)));
    const waitMs = Math.max(...waits);
    if (waitMs > 0 && groups.length > 1) {
      await this.refund(groups.flatMap((group, i) => (waits[i] === 0 ? group.map((a) => a.key) : [])));
    }
    return waitMs > 0 ? { spent: false, retryAfterMs: waitMs } : { spent: true };
  }

  async refund(keys: readonly string[]): Promise<void> {
    await Promise.all(
      this.redis
        .together(keys, (key) => key)
        .map((group) => this.redis.eval(REFUND, { keys: {}, args: {}, keyLists: { allowances: group } })),
    );
  }

  private async spendTogether(allowances: readonly Allowance[]): Promise<number> {
    return Number(
      await this.redis.eval(SPEND, {
        keys: {},
        args: {},
        keyLists: { allowances: allowances.map((allowance) => allowance.key) },
        argLists: {
          maxes: allowances.map((allowance) => allowance.max),
          windows: allowances.map((allowance) => allowance.windowMs),
          firsts: allowances.map((allowance) => allowance.backoff?.firstMs ?? 0),
          caps: allowances.map((allowance) => allowance.backoff?.maxMs ?? 0),
        },
      }),
    );
  }
}
