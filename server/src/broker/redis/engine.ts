import { type BrokerInspection, inspectionOf } from '../ports/inspect.js';
import { Cluster, Redis } from 'ioredis';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import { RedisBus } from './bus.js';
import { RedisConnection } from './connection.js';
import { RedisEvents } from './events.js';
import { RedisLimits } from './limits.js';
import { RedisMessageLog } from './message-log.js';
import { RedisPresence } from './presence.js';
import { RedisQueue } from './queue.js';
import { RedisRosters } from './rosters.js';
import { RedisSessions } from './sessions.js';
import { RedisTyping } from './typing.js';
import type { Broker } from '../types.js';

export interface RedisBrokerOptions {
  /** The server; with `cluster`, one node of the cluster, from which the others are found. */
  url: string;
  /**
   * A Redis Cluster: every script touches the keys of one hash slot (`Partition` in
   * `keyspace.ts`), and live events go over sharded Pub/Sub.
   */
  cluster?: boolean;
  prefix?: string;
  /** How long a command may wait for Redis before failing; sends must fail fast. */
  commandTimeoutMs?: number;
  /** How many events each event log keeps (at least) for resume. */
  eventLogLength?: number;
  /** How many partitions sends and events are split into (`Partition` in `keyspace.ts`). */
  partitions?: number;
}

export class RedisBroker implements Broker {
  readonly engine = 'redis' as const;
  private readonly prefix: string;
  private readonly client: Redis | Cluster;
  private readonly subscriber: Redis | Cluster;
  private readonly commandTimeoutMs: number;
  private readonly connection: RedisConnection;
  readonly rosters: RedisRosters;
  readonly events: RedisEvents;
  readonly bus: RedisBus;
  readonly messages: RedisMessageLog;
  readonly queues: readonly [RedisQueue, ...RedisQueue[]];
  readonly presence: RedisPresence;
  readonly limits: RedisLimits;
  readonly typing: RedisTyping;
  readonly sessions: RedisSessions;
  readonly inspect: BrokerInspection;

  private constructor(options: RedisBrokerOptions) {
    this.prefix = options.prefix ?? '';
    this.commandTimeoutMs = options.commandTimeoutMs ?? 2000;
    const common = {
      lazyConnect: true,
      // ioredis 6 speaks RESP3 by default, which reshapes stream and XINFO replies; the
      // parsing here follows the RESP2 shapes that Redis documents for these commands.
      protocol: 2 as const,
      // Without Redis a send must fail now, not wait in an unbounded queue.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 2000),
    };
    // Commands issued in the same tick share one round trip (per node, on a cluster). Scripts go
    // as EVALSHA, a plain command (`RedisConnection.eval`), so no pipeline can lack one
    // (redis/ioredis#1931).
    this.client = options.cluster
      ? new Cluster([options.url], {
          lazyConnect: true,
          enableOfflineQueue: false,
          enableAutoPipelining: true,
          redisOptions: { ...common, commandTimeout: this.commandTimeoutMs },
        })
      : new Redis(options.url, {
          ...common,
          commandTimeout: this.commandTimeoutMs,
          enableAutoPipelining: true,
        });
    // The subscriber keeps its subscriptions across reconnects (ioredis re-subscribes). On a
    // cluster it holds one sharded subscriber connection per master.
    // Named, so that `CLIENT LIST` tells an instance's subscriber connection from the others.
    const subscriberOptions = {
      ...common,
      enableOfflineQueue: true,
      connectionName: subscriberName(this.prefix),
    };
    this.subscriber = options.cluster
      ? new Cluster([options.url], {
          lazyConnect: true,
          shardedSubscribers: true,
          redisOptions: subscriberOptions,
        })
      : new Redis(options.url, subscriberOptions);
    this.connection = new RedisConnection(this.client, this.prefix, options.partitions ?? 1);
    const eventLogLength = options.eventLogLength ?? EVENT_LOG_LENGTH;
    this.rosters = new RedisRosters(this.connection);
    this.events = new RedisEvents(this.connection, eventLogLength);
    this.bus = new RedisBus(this.connection, this.subscriber);
    this.messages = new RedisMessageLog(this.connection, eventLogLength);
    const [first, ...rest] = this.connection.partitions.map(
      (p) => new RedisQueue(this.connection, this.commandTimeoutMs, p),
    );
    this.queues = [first as RedisQueue, ...rest];
    this.presence = new RedisPresence(this.connection);
    this.limits = new RedisLimits(this.connection);
    this.typing = new RedisTyping(this.connection);
    this.sessions = new RedisSessions(this.connection);
    this.inspect = inspectionOf({ presence: this.presence, messages: this.messages, queue: this.queues[0] });
    this.client.on('error', () => undefined);
    this.subscriber.on('error', () => undefined);
  }

  static async connect(options: RedisBrokerOptions): Promise<RedisBroker> {
    const broker = new RedisBroker(options);
    await broker.client.connect();
    await broker.connection.loadScripts();
    await broker.subscriber.connect();
    broker.bus.watchConnection();
    return broker;
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.connection.run(() => this.client.ping())) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.bus.close();
    const connections = [
      this.client,
      this.subscriber,
      ...this.queues.map((queue) => queue.blockingConnection()),
    ].filter((c): c is Redis | Cluster => c !== null);
    await Promise.all(
      connections.map(async (c) => {
        try {
          if (c.status === 'ready') await c.quit();
          else c.disconnect();
        } catch {
          c.disconnect();
        }
      }),
    );
  }
}

/** The client name of the Pub/Sub connection (`CLIENT LIST` shows it). */
export function subscriberName(prefix: string): string {
  return `${prefix.replace(/[^\w:.-]/g, '_')}subscriber`;
}
