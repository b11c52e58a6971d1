import { MemoryBroker } from './memory/engine.js';
import { RedisBroker } from './redis/engine.js';
import type { Broker } from './types.js';

export type { Broker } from './types.js';

export async function openBroker(options: {
  url: string | undefined;
  /** `url` is a node of a Redis Cluster. */
  cluster?: boolean;
  prefix: string;
  /** How many events each event log keeps (at least) for resume. */
  eventLogLength?: number;
  /** How many independent event orders (`EventLog.partitions`); the Redis engine keeps one. */
  eventPartitions?: number;
}): Promise<Broker> {
  const { url, cluster, prefix, eventLogLength, eventPartitions = 1 } = options;
  if (url && eventPartitions !== 1) throw new Error('the Redis engine keeps one event order');
  return url
    ? RedisBroker.connect({ url, cluster, prefix, eventLogLength })
    : new MemoryBroker({ eventLogLength, eventPartitions });
}
