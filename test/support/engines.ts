import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect } from 'vitest';
import { MemoryBroker } from '../../server/src/broker/memory/engine.js';
import { RedisBroker } from '../../server/src/broker/redis/engine.js';
import type { Broker } from '../../server/src/broker/types.js';
import { engines } from './env.js';
import { startRedisCluster } from './redis-cluster.js';
import { hasRedisServer, startRedisServer } from './redis-server.js';

/** What a suite may set on the broker it opens. */
export interface BrokerOptions {
  eventLogLength?: number;
  /** How many partitions sends and events are split into (`EventLog.partitions`). */
  partitions?: number;
  /** A keyspace of its own within the engine's, so a suite can start from an empty broker. */
  space?: string;
}

/** One broker engine under a contract suite. */
export interface Engine {
  /** The broker under test. */
  open(options?: BrokerOptions): Promise<Broker>;
  /**
   * Another handle on the same deployment, as a second instance would hold: for Redis a
   * separate connection on the same prefix; the in-process engine has only itself.
   */
  peer(broker: Broker): Promise<Broker>;
  cleanup(): Promise<void>;
}

export const memoryEngine: Engine = {
  open: (options = {}) =>
    Promise.resolve(
      new MemoryBroker({ eventLogLength: options.eventLogLength, eventPartitions: options.partitions }),
    ),
  peer: (broker) => Promise.resolve(broker),
  cleanup: () => Promise.resolve(),
};

/**
 * Redis at `url` (with `cluster`, a node of a Redis Cluster), under a prefix of its own, every
 * key of which is gone after `cleanup`.
 */
export function redisEngine(url: string, cluster = false): Engine {
  // A prefix of its own per run, so parallel runs never see each other's keys.
  const prefix = `test:broker:${Date.now().toString(36)}${randomBytes(4).toString('hex')}:`;
  const opened: Broker[] = [];
  /** The prefix each broker was opened with, for its peers. */
  const prefixes = new Map<Broker, string>();
  return {
    async open(options = {}) {
      const { space, ...rest } = options;
      const own = space ? `${prefix}${space}:` : prefix;
      const broker = await RedisBroker.connect({ url, cluster, prefix: own, ...rest });
      opened.push(broker);
      prefixes.set(broker, own);
      return broker;
    },
    async peer(of) {
      const own = prefixes.get(of) ?? prefix;
      const broker = await RedisBroker.connect({ url, cluster, prefix: own });
      opened.push(broker);
      prefixes.set(broker, own);
      return broker;
    },
    async cleanup() {
      await Promise.all(opened.map((broker) => broker.close()));
      const first = new Redis(url, { lazyConnect: true });
      await first.connect();
      // On a cluster, every master holds some of the keys.
      const urls = cluster
        ? ((await first.cluster('SHARDS')) as unknown[][]).flatMap((shard) =>
            shardNodes(shard).map((node) => `redis://127.0.0.1:${node}`),
          )
        : [url];
      await first.quit();
      for (const nodeUrl of urls) {
        const redis = new Redis(nodeUrl, { lazyConnect: true });
        await redis.connect();
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
          cursor = next;
          for (const key of keys) await redis.del(key);
        } while (cursor !== '0');
        const left = await redis.keys(`${prefix}*`);
        await redis.quit();
        expect(left).toEqual([]);
      }
    },
  };
}

/** The ports of the nodes of one shard, from `CLUSTER SHARDS`. */
function shardNodes(shard: unknown[]): number[] {
  const nodes = shard[shard.indexOf('nodes') + 1] as unknown[][];
  return nodes.map((node) => Number(node[node.indexOf('port') + 1]));
}

/**
 * Runs a contract suite on both engines: the in-process one, and Redis at `TEST_REDIS_URL` or,
 * without it, a `redis-server` of the file's own (when the binary is installed), so that the
 * embedded run exercises the Redis engine's scripts as well; then on a Redis Cluster of three
 * masters of the file's own (when `redis-server` is installed).
 */
export async function onBothEngines(title: string, suite: (engine: Engine) => void): Promise<void> {
  describe(`${title}: in-process engine`, () => {
    suite(memoryEngine);
  });
  const local = engines.redisUrl || !hasRedisServer() ? null : await startRedisServer();
  const redisUrl = engines.redisUrl ?? local?.url;
  describe.skipIf(!redisUrl)(
    redisUrl
      ? `${title}: Redis engine${local ? ' (a redis-server of its own)' : ''}`
      : `${title}: Redis engine (skipped: TEST_REDIS_URL is not set and no redis-server is installed)`,
    () => {
      afterAll(async () => {
        await local?.stop();
      });
      suite(redisEngine(redisUrl ?? ''));
    },
  );
  const cluster = hasRedisServer() ? await startRedisCluster() : null;
  const node = cluster?.nodes[0];
  describe.skipIf(!node)(
    node
      ? `${title}: Redis engine on a Redis Cluster of three masters`
      : `${title}: Redis engine on a Redis Cluster (skipped: no redis-server is installed to start one)`,
    () => {
      afterAll(async () => {
        await cluster?.stop();
      });
      suite(redisEngine(node ? `redis://${node.host}:${node.port}` : '', true));
    },
  );
}
