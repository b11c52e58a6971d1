import { randomUUID } from 'node:crypto';
import { rosterKey, rosterVersionKey } from '../keyspace.js';
import { ROSTER_TTL_MS, ROSTER_VERSION_TTL_MS, type RosterStore } from '../ports/rosters.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

/** Fills the set unless it exists or the version moved on ('' stands for none). */
const FILL = defineScript({
  name: 'rosterFill',
  keys: ['roster', 'version'],
  args: ['expected', 'ttlMs'],
  argLists: ['members'],
  body: `
if (redis.call('GET', version) or '') ~= expected or redis.call('EXISTS', roster) == 1 then return 0 end
for i = 1, #members, 5000 do
  redis.call('SADD', roster, unpack(members, i, math.min(i + 4999, #members)))
end
redis.call('PEXPIRE', roster, ttlMs)
return 1`,
});

const INVALIDATE = defineScript({
  name: 'rosterInvalidate',
  keys: ['roster', 'version'],
  args: ['next', 'ttlMs'],
  body: `
redis.call('SET', version, next, 'PX', ttlMs)
redis.call('DEL', roster)
return 1`,
});

const HAS = defineScript({
  name: 'rosterHas',
  keys: ['roster'],
  args: ['member'],
  body: `
if redis.call('EXISTS', roster) == 0 then return -1 end
if member == '' then return 0 end
return redis.call('SISMEMBER', roster, member)`,
});

const SIZE = defineScript({
  name: 'rosterSize',
  keys: ['roster'],
  args: [],
  body: `
if redis.call('EXISTS', roster) == 0 then return -1 end
return redis.call('SCARD', roster) - redis.call('SISMEMBER', roster, '')`,
});

export class RedisRosters implements RosterStore {
  constructor(private readonly redis: RedisConnection) {}

  version(conversationId: string): Promise<string | null> {
    return this.redis.run(() =>
      this.redis.client.get(
        this.redis.key(rosterVersionKey(this.redis.partitionFor(conversationId), conversationId)),
      ),
    );
  }

  async fill(conversationId: string, members: readonly string[], version: string | null): Promise<boolean> {
    const filled = await this.redis.eval(FILL, {
      keys: {
        roster: rosterKey(this.redis.partitionFor(conversationId), conversationId),
        version: rosterVersionKey(this.redis.partitionFor(conversationId), conversationId),
      },
      args: { expected: version ?? '', ttlMs: ROSTER_TTL_MS },
      // An empty set cannot exist in Redis: a roster without members holds one blank.
      argLists: { members: members.length > 0 ? members : [''] },
    });
    return filled === 1;
  }

  async invalidate(conversationId: string): Promise<void> {
    await this.redis.eval(INVALIDATE, {
      keys: {
        roster: rosterKey(this.redis.partitionFor(conversationId), conversationId),
        version: rosterVersionKey(this.redis.partitionFor(conversationId), conversationId),
      },
      args: { next: randomUUID(), ttlMs: ROSTER_VERSION_TTL_MS },
    });
  }

  async has(conversationId: string, userId: string): Promise<boolean | null> {
    const answer = await this.redis.eval(HAS, {
      keys: { roster: rosterKey(this.redis.partitionFor(conversationId), conversationId) },
      args: { member: userId },
    });
    return answer === -1 ? null : answer === 1;
  }

  async size(conversationId: string): Promise<number | null> {
    const answer = (await this.redis.eval(SIZE, {
      keys: { roster: rosterKey(this.redis.partitionFor(conversationId), conversationId) },
      args: {},
    })) as number;
    return answer === -1 ? null : answer;
  }
}
