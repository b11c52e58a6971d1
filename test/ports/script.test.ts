import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisConnection } from '../../server/src/broker/redis/connection.js';
import { defineScript, definedScripts } from '../../server/src/broker/redis/script.js';
import { engines } from '../support/env.js';
import { hasRedisServer, type LocalRedis, startRedisServer } from '../support/redis-server.js';

const ECHO = defineScript({
  name: 'echo',
  keys: ['first', 'second'],
  args: ['alpha', 'beta'],
  keyLists: ['streams', 'hashes'],
  argLists: ['fields', 'values'],
  body: `return {first, second, alpha, beta, cjson.encode(streams), cjson.encode(hashes), cjson.encode(fields), cjson.encode(values)}`,
});

describe('named script arguments', () => {
  it('refuses a name Lua could not bind, or one used twice', () => {
    expect(() => defineScript({ name: 'bad', keys: ['end'], args: [], body: 'return 1' })).toThrow(
      /bad name/,
    );
    expect(() => defineScript({ name: 'bad', keys: ['a'], args: ['a'], body: 'return 1' })).toThrow(/twice/);
  });

  const useLocal = !engines.redisUrl && hasRedisServer();
  describe.skipIf(!engines.redisUrl && !useLocal)('on Redis', () => {
    let local: LocalRedis | null = null;
    let client: Redis;
    let connection: RedisConnection;

    beforeAll(async () => {
      local = useLocal ? await startRedisServer() : null;
      client = new Redis(engines.redisUrl ?? local?.url ?? '', { lazyConnect: true });
      await client.connect();
      connection = new RedisConnection(client, 'test:script:');
    });
    afterAll(async () => {
      await client?.quit();
      await local?.stop();
    });

    it('loads every script defined, so that calls go by SHA from the first', async () => {
      await client.script('FLUSH');
      await connection.loadScripts();
      const shas = definedScripts().map((script) => script.sha);
      expect(shas).toContain(ECHO.sha);
      expect(await client.script('EXISTS', ...shas)).toEqual(shas.map(() => 1));
    });

    it('binds every key, argument and list to its name, keys prefixed, lists of any length', async () => {
      const run = () =>
        connection.eval(ECHO, {
          keys: { first: 'a', second: 'b' },
          args: { alpha: 'x', beta: 7 },
          keyLists: { streams: ['s1', 's2'], hashes: [] },
          argLists: { fields: ['f1'], values: ['v1', 'v2', 'v3'] },
        });
      // The first call loads the script (NOSCRIPT, then EVAL); the second runs it by SHA.
      await client.script('FLUSH');
      for (const answer of [await run(), await run()]) {
        expect(answer).toEqual([
          'test:script:a',
          'test:script:b',
          'x',
          '7',
          '["test:script:s1","test:script:s2"]',
          '{}',
          '["f1"]',
          '["v1","v2","v3"]',
        ]);
      }
    });
  });
});
