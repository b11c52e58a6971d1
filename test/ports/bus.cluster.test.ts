import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  conversationChannel,
  eventPartition,
  partitionOf,
  partitionsOf,
} from '../../server/src/broker/keyspace.js';
import { SEQ_SLOT } from '../../server/src/broker/ports/message-log.js';
import { RedisBroker, subscriberName } from '../../server/src/broker/redis/engine.js';
import { type LocalCluster, startRedisCluster } from '../support/redis-cluster.js';
import { hasRedisServer } from '../support/redis-server.js';

/**
 * On a Redis Cluster, live events go over sharded Pub/Sub: a channel is subscribed on the node
 * that holds its hash slot alone, and an event reaches no classic Pub/Sub subscriber. Sends
 * spread over the masters by partition.
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

    it('names each channel once when it subscribes again after losing a connection', async () => {
      const channel = { conversation: 'c-again' };
      const unsubscribe = await broker.bus.subscribe(channel, () => undefined);
      const name = `${prefix}${conversationChannel(partitionOf(true), 'c-again')}`;
      const [node] = await Promise.all(
        nodes.map(async (node) =>
          ((await node.call('PUBSUB', 'SHARDCHANNELS', name)) as string[]).length > 0 ? node : null,
        ),
      ).then((found) => found.filter((node) => node !== null));
      if (!node) throw new Error(`no node has ${name}`);
      // The instance's sharded subscriber connection to that node, as `CLIENT LIST` names it.
      const ours = `):${subscriberName(prefix)}`;
      const loseConnection = async () => {
        const restored = new Promise<void>((resolve) => {
          const stop = broker.bus.watchSubscriptions({
            interrupted: () => undefined,
            restored: () => {
              stop();
              resolve();
            },
          });
        });
        const clients = String(await node.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
        const ids = [...clients.matchAll(/id=(\d+) .*name=(\S+)/g)].filter((m) => m[2]?.endsWith(ours));
        expect(ids).toHaveLength(1);
        await node.call('CLIENT', 'KILL', 'ID', ids[0]?.[1] ?? '');
        await restored;
      };
      for (let i = 0; i < 3; i++) await loseConnection();
      // What the new connection subscribes to once more, as the node sees it.
      const monitor = await node.monitor();
      const subscribed: string[][] = [];
      monitor.on('monitor', (_time: string, args: string[]) => {
        if (args[0]?.toLowerCase() === 'ssubscribe') subscribed.push(args.slice(1));
      });
      try {
        await loseConnection();
        // The bus's own subscription, then ioredis's of every channel the group has.
        await expect.poll(() => subscribed.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
      } finally {
        monitor.disconnect();
      }
      for (const channels of subscribed) expect(channels).toEqual([name]);
      await unsubscribe();
    });

    it('spreads sends over the masters by partition: six partitions, two on each master', async () => {
      const [first] = cluster.nodes;
      const spread = `${prefix}spread:`;
      const partitioned = await RedisBroker.connect({
        url: `redis://${first?.host}:${first?.port}`,
        cluster: true,
        prefix: spread,
        partitions: 6,
      });
      try {
        // One conversation in each partition, one message each.
        const conversations = new Map<number, string>();
        for (let i = 0; conversations.size < 6; i++) {
          conversations.set(eventPartition(`c-${i}`, 6), `c-${i}`);
        }
        for (const conversation of conversations.values()) {
          await partitioned.messages.restoreSeq(conversation, 0);
          const id = `m-${conversation}`;
          const body = `{"seq":${SEQ_SLOT},"id":"${id}"}`;
          const result = await partitioned.messages.appendNew(
            { id, conversationId: conversation, senderId: 'al', clientMessageId: null, body },
            {},
            null,
          );
          expect(result).toMatchObject({ appended: true, seq: 1 });
        }
        const held = await Promise.all(
          nodes.map(async (node) => (await node.keys(`${spread}parley:*:messages`)).sort()),
        );
        // The masters hold equal ranges of slots, as `redis-cli --cluster create` deals them.
        const names = partitionsOf(true, 6).map((p) => `${spread}parley:${p}messages`);
        expect(held.flat().sort()).toEqual([...names].sort());
        expect(held.map((keys) => keys.length)).toEqual([2, 2, 2]);
        for (const queue of partitioned.queues) expect((await queue.info()).length).toBe(1);
      } finally {
        await partitioned.close();
        for (const node of nodes) {
          const keys = await node.keys(`${spread}*`);
          for (const key of keys) await node.del(key);
        }
      }
    });
  },
);
