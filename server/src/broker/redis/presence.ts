import { connectionsKey, onlineKey, PRESENCE_SHARDS, presenceShard } from '../keyspace.js';
import type { PresenceStore } from '../ports/presence.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

// A user's streams are a sorted set scored by expiry; so is the online set of their shard, by
// user. Both carry the shard's hash tag, so each script touches one hash slot.

/** 0: refused at the cap; 1: counted; 2: counted, and the user had no other live stream. */
const CONNECT = defineScript({
  name: 'presenceConnect',
  keys: ['streams', 'online'],
  args: ['stream', 'userId', 'max', 'now', 'expiresAt'],
  body: `
redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
local present = redis.call('ZSCORE', streams, stream)
local others = redis.call('ZCARD', streams)
if present then others = others - 1 end
if not present and others >= tonumber(max) then return 0 end
redis.call('ZADD', streams, expiresAt, stream)
redis.call('ZADD', online, expiresAt, userId)
if others == 0 then return 2 end
return 1`,
});

const DISCONNECT = defineScript({
  name: 'presenceDisconnect',
  keys: ['streams', 'online'],
  args: ['stream', 'userId', 'now'],
  body: `
redis.call('ZREM', streams, stream)
redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
if redis.call('ZCARD', streams) > 0 then return 0 end
return redis.call('ZREM', online, userId)`,
});

const LEAVE_IF_GONE = defineScript({
  name: 'presenceLeaveIfGone',
  keys: ['streams', 'online'],
  args: ['userId', 'now'],
  body: `
redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
if redis.call('ZCARD', streams) > 0 then return 0 end
return redis.call('ZREM', online, userId)`,
});

const CONNECTIONS = defineScript({
  name: 'presenceConnections',
  keys: ['streams'],
  args: ['now'],
  body: `
redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
return redis.call('ZCARD', streams)`,
});

export class RedisPresence implements PresenceStore {
  constructor(private readonly redis: RedisConnection) {}

  async connect(
    userId: string,
    stream: string,
    options: { max: number; now: number; until: number },
  ): Promise<{ connected: boolean; first: boolean }> {
    const answer = await this.redis.eval(CONNECT, {
      keys: { streams: connectionsKey(userId), online: onlineKey(presenceShard(userId)) },
      args: { stream, userId, max: options.max, now: options.now, expiresAt: options.until },
    });
    return { connected: answer !== 0, first: answer === 2 };
  }

  async heartbeat(streamsByUser: ReadonlyMap<string, readonly string[]>, until: number): Promise<void> {
    if (streamsByUser.size === 0) return;
    const { client, key } = this.redis;
    const byShard = new Map<number, string[]>();
    for (const userId of streamsByUser.keys()) {
      const shard = presenceShard(userId);
      const users = byShard.get(shard);
      if (users) users.push(userId);
      else byShard.set(shard, [userId]);
    }
    // Sent together: the client pipelines commands issued in the same tick into one round trip.
    await this.redis.run(() =>
      Promise.all([
        ...[...streamsByUser].map(([userId, streams]) =>
          client.zadd(key(connectionsKey(userId)), ...streams.flatMap((stream) => [until, stream])),
        ),
        ...[...byShard].map(([shard, userIds]) =>
          client.zadd(key(onlineKey(shard)), ...userIds.flatMap((userId) => [until, userId])),
        ),
      ]),
    );
  }

  async disconnect(userId: string, stream: string, now: number): Promise<boolean> {
    const answer = await this.redis.eval(DISCONNECT, {
      keys: { streams: connectionsKey(userId), online: onlineKey(presenceShard(userId)) },
      args: { stream, userId, now },
    });
    return answer === 1;
  }

  async leaveIfGone(userId: string, now: number): Promise<boolean> {
    const answer = await this.redis.eval(LEAVE_IF_GONE, {
      keys: { streams: connectionsKey(userId), online: onlineKey(presenceShard(userId)) },
      args: { userId, now },
    });
    return answer === 1;
  }

  async expired(now: number, count: number): Promise<string[]> {
    const { client, key } = this.redis;
    const shards = Array.from({ length: PRESENCE_SHARDS }, (_, shard) => shard);
    const found = await this.redis.run(() =>
      Promise.all(
        shards.map((shard) =>
          client.zrangebyscore(key(onlineKey(shard)), '-inf', now, 'WITHSCORES', 'LIMIT', 0, count),
        ),
      ),
    );
    const gone: { userId: string; until: number }[] = [];
    for (const pairs of found) {
      for (let i = 0; i < pairs.length; i += 2) {
        gone.push({ userId: pairs[i] as string, until: Number(pairs[i + 1]) });
      }
    }
    gone.sort((a, b) => a.until - b.until || (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
    return gone.slice(0, count).map((entry) => entry.userId);
  }

  async onlineUntil(userIds: readonly string[]): Promise<(number | null)[]> {
    if (userIds.length === 0) return [];
    const byShard = new Map<number, number[]>();
    userIds.forEach((userId, index) => {
      const shard = presenceShard(userId);
      const indexes = byShard.get(shard);
      if (indexes) indexes.push(index);
      else byShard.set(shard, [index]);
    });
    const until: (number | null)[] = userIds.map(() => null);
    await this.redis.run(() =>
      Promise.all(
        [...byShard].map(async ([shard, indexes]) => {
          const scores = (await this.redis.client.call(
            'ZMSCORE',
            this.redis.key(onlineKey(shard)),
            ...indexes.map((index) => userIds[index] as string),
          )) as (string | null)[];
          indexes.forEach((index, i) => {
            const score = scores[i];
            until[index] = score == null ? null : Number(score);
          });
        }),
      ),
    );
    return until;
  }

  async connections(userId: string, now: number): Promise<number> {
    return (await this.redis.eval(CONNECTIONS, {
      keys: { streams: connectionsKey(userId) },
      args: { now },
    })) as number;
  }
}
