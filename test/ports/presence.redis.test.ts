import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisConnection } from '../../server/src/broker/redis/connection.js';
import { presenceShard } from '../../server/src/broker/keyspace.js';
import { RedisPresence } from '../../server/src/broker/redis/presence.js';
import { engines } from '../support/env.js';
import { hasRedisServer, type LocalRedis, startRedisServer } from '../support/redis-server.js';

/**
 * What presence costs Redis on the paths that run for every connection: a heartbeat is one ZADD
 * per user and one for the online set of each presence shard they are in, all sent together; connecting and disconnecting are one
 * script each.
 */
describe('presence commands on Redis', () => {
  const useLocal = !engines.redisUrl && hasRedisServer();
  describe.skipIf(!engines.redisUrl && !useLocal)('on Redis', () => {
    let local: LocalRedis | null = null;
    let client: Redis;
    let presence: RedisPresence;
    const sent: string[] = [];
    const prefix = `test:presence:${Date.now().toString(36)}:`;

    beforeAll(async () => {
      local = useLocal ? await startRedisServer() : null;
      client = new Redis(engines.redisUrl ?? local?.url ?? '', {
        lazyConnect: true,
        enableAutoPipelining: true,
      });
      await client.connect();
      // Every command this connection sends, by name.
      const send = client.sendCommand.bind(client);
      client.sendCommand = (command, stream) => {
        sent.push(command.name.toLowerCase());
        return send(command, stream);
      };
      presence = new RedisPresence(new RedisConnection(client, prefix));
    });
    afterAll(async () => {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length > 0) await client.del(...keys);
      await client.quit();
      await local?.stop();
    });

    it('a heartbeat sends one ZADD per user and one per online set it touches', async () => {
      const now = Date.now();
      const byUser = new Map(
        Array.from({ length: 40 }, (_, i) => [`user-${i}`, [`stream-${i}-a`, `stream-${i}-b`]] as const),
      );
      sent.length = 0;
      await presence.heartbeat(byUser, now + 60_000);
      const shards = new Set([...byUser.keys()].map(presenceShard)).size;
      expect(shards).toBeGreaterThan(1);
      expect(sent).toEqual(Array.from({ length: 40 + shards }, () => 'zadd'));
      expect(await presence.connections('user-7', now)).toBe(2);
      expect(await presence.onlineUntil(['user-39'])).toEqual([now + 60_000]);
    });

    it('connecting and disconnecting are one script call each', async () => {
      const now = Date.now();
      // Once loaded: the first call of a script on a server that lacks it sends its text too.
      await presence.connect('al', 'warm', { max: 5, now, until: now + 60_000 });
      await presence.disconnect('al', 'warm', now);
      sent.length = 0;
      expect(await presence.connect('al', 'a', { max: 5, now, until: now + 60_000 })).toEqual({
        connected: true,
        first: true,
      });
      expect(sent).toEqual(['evalsha']);
      sent.length = 0;
      expect(await presence.disconnect('al', 'a', now)).toBe(true);
      expect(sent).toEqual(['evalsha']);
    });
  });
});
