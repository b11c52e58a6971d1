import { type Cluster, Redis, type RedisOptions } from 'ioredis';
import { eventPartition, type Partition, partitionsOf } from '../keyspace.js';
import { BrokerUnavailableError } from '../types.js';
import { definedScripts, type Script, type ScriptInput } from './script.js';

/**
 * The command connection every port of the Redis engine shares: the key prefix, the mapping of
 * connection failures to `BrokerUnavailableError`, and named scripts run by SHA.
 */
export class RedisConnection {
  /** Where the event logs, message log, rosters and queues keep their keys (`Partition`), by index. */
  readonly partitions: readonly Partition[];
  /**
   * How a script publishes: sharded Pub/Sub on a cluster (a message goes only to the node that
   * holds its channel's slot, not to every node), classic Pub/Sub on a single server.
   */
  readonly publishCommand: 'PUBLISH' | 'SPUBLISH';

  constructor(
    /** One server, or a Redis Cluster (every script's keys then share one hash slot). */
    readonly client: Redis | Cluster,
    readonly prefix: string,
    /** How many partitions (`REDIS_PARTITIONS`). */
    partitions = 1,
  ) {
    this.partitions = partitionsOf(client.isCluster, partitions);
    this.publishCommand = client.isCluster ? 'SPUBLISH' : 'PUBLISH';
  }

  /** The partition of a conversation, or of a user's own events (`eventPartition`). */
  partitionFor(id: string): Partition {
    return this.partitions[eventPartition(id, this.partitions.length)] as Partition;
  }

  /** The partition at `index`. */
  partition(index: number): Partition {
    const partition = this.partitions[index];
    if (partition === undefined) throw new Error(`no partition ${index}`);
    return partition;
  }

  /** A logical key, stream or channel name as Redis knows it. */
  key = (name: string): string => this.prefix + name;

  /**
   * `items` in groups whose keys one script or multi-key command may touch together: one group
   * on a single server; on a cluster, one per hash tag (a key without one is a group of its own).
   */
  together<T>(items: readonly T[], keyOf: (item: T) => string): T[][] {
    if (!this.client.isCluster) return items.length > 0 ? [[...items]] : [];
    const groups = new Map<string, T[]>();
    for (const item of items) {
      const key = keyOf(item);
      const tag = hashTag(key) ?? key;
      const group = groups.get(tag);
      if (group) group.push(item);
      else groups.set(tag, [item]);
    }
    return [...groups.values()];
  }

  /**
   * Another connection to the same server or cluster, for commands that hold it (blocking
   * reads); `options` are those of each server connection.
   */
  duplicate(options: Partial<RedisOptions>): Redis | Cluster {
    if (this.client instanceof Redis) return this.client.duplicate(options);
    return this.client.duplicate(undefined, {
      redisOptions: { ...this.client.options.redisOptions, ...options },
    });
  }

  async run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.client.status !== 'ready') {
      throw new BrokerUnavailableError(`Redis is not reachable (${this.client.status})`);
    }
    try {
      return await operation();
    } catch (error) {
      if (isConnectionError(error)) {
        throw new BrokerUnavailableError('Redis is not reachable', {
          cause: error,
          outcomeUnknown: !neverSent(error),
        });
      }
      throw error;
    }
  }

  /**
   * Loads every script on every server (each master of a cluster), so calls go by SHA from the
   * first one: a script a server lacks is sent again in full, after the calls queued behind it,
   * which would run concurrent calls out of the order they were issued in.
   */
  async loadScripts(): Promise<void> {
    const servers = this.client instanceof Redis ? [this.client] : this.client.nodes('master');
    await this.run(() =>
      Promise.all(
        servers.flatMap((server) => definedScripts().map((script) => server.script('LOAD', script.lua))),
      ),
    );
  }

  /**
   * Runs `script` by SHA (`EVALSHA`), sending its text (`EVAL`) only when Redis does not know it
   * yet: after a restart, or on a node that never ran it.
   */
  async eval<K extends string, A extends string, KL extends string, AL extends string>(
    script: Script<K, A, KL, AL>,
    input: ScriptInput<K, A, KL, AL>,
  ): Promise<unknown> {
    const { keys, args } = script.call(input, this.key);
    return this.run(async () => {
      try {
        return await this.client.evalsha(script.sha, keys.length, ...keys, ...args);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return this.client.eval(script.lua, keys.length, ...keys, ...args);
      }
    });
  }
}

/** The part of a key Redis Cluster hashes: between its first `{` and the next `}`, when not empty. */
export function hashTag(key: string): string | null {
  const open = key.indexOf('{');
  if (open < 0) return null;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : null;
}

/** The command was refused before it went out, so it did not run. */
export function neverSent(error: unknown): boolean {
  return (
    error instanceof Error && /ECONNREFUSED|isn't writeable|Reached the max retries/i.test(error.message)
  );
}

export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Command timed out|isn't writeable|Reached the max retries/i.test(
    error.message,
  );
}
