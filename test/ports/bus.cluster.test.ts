import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../../server/src/broker/redis/engine.js';
import { type LocalCluster, startRedisCluster } from '../support/redis-cluster.js';
import { hasRedisServer } from '../support/redis-server.js';

/**
 * On a Redis Cluster, live events go over sharded Pub/Sub: a channel is subscribed on the node
 * that holds its hash slot alone, and an event reaches no classic Pub/Sub subscriber.
 */
describe.skipIf(!hasRedisServer())(
  'the event bus on a Redis Cluster (needs redis-server to start one)',
  () => {
    let cluster: LocalCluster;
    let broker: RedisBroker;
    let nodes: Redis[];
    const prefix = `test:bus:${Date.now().toString(36)}:`;

    beforeAll(async () => {
      cluster = await startRedisCluster();
      const [first] = cluster.nodes;
      broker = await RedisBroker.connect({
        url: `redis://${first?.host}:${first?.port}`,
        cluster: true,
        prefix,
      });
      nodes = cluster.nodes.map((node) => new Redis(node.port, node.host));
    });
    afterAll(async () => {
      await broker.close();
      for (const node of nodes) node.disconnect();
      await cluster.stop();
    });

    it('subscribes to a conversation’s channel on its slot’s node alone, with SSUBSCRIBE', async () => {
      const received: string[] = [];
      const unsubscribe = await broker.bus.subscribe({ conversation: 'c-1' }, (message) =>
        received.push(message),
      );
      const shardChannels = await Promise.all(
        nodes.map(async (node) => (await node.call('PUBSUB', 'SHARDCHANNELS', `${prefix}*`)) as string[]),
      );
      const classic = await Promise.all(
        nodes.map(async (node) => (await node.call('PUBSUB', 'CHANNELS', `${prefix}*`)) as string[]),
      );
      expect(shardChannels.flat()).toHaveLength(1);
      expect(shardChannels.filter((channels) => channels.length > 0)).toHaveLength(1);
      expect(classic.flat()).toEqual([]);

      // An event written to the log reaches the subscriber through the sharded channel.
      const id = await broker.events.toConversation('c-1', 'payload');
      await expect.poll(() => received).toEqual([`${id}\npayload`]);
      await unsubscribe();
      await expect
        .poll(async () =>
          (await Promise.all(nodes.map((node) => node.call('PUBSUB', 'SHARDCHANNELS', `${prefix}*`)))).flat(),
        )
        .toEqual([]);
    });
  },
);
