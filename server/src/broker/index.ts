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
  /** How many partitions sends and events are split into (`EventLog.partitions`). */
  eventPartitions?: number;
  /** How long a Redis command may take before it fails. */
  commandTimeoutMs?: number;
}): Promise<Broker> {
  const { url, cluster, prefix, eventLogLength, eventPartitions, commandTimeoutMs } = options;
  return url
    ? RedisBroker.connect({
        url,
        cluster,
        prefix,
        eventLogLength,
        partitions: eventPartitions,
        commandTimeoutMs,
      })
    : new MemoryBroker({ eventLogLength, eventPartitions });
}
