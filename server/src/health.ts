import { queueTotals } from './broker/ports/queue.js';
import type { Broker } from './broker/types.js';
import type { DatabaseHandle } from './db/index.js';

export interface HealthReport {
  status: 'ok' | 'degraded';
  db: boolean;
  redis: boolean;
  worker: { lag: number | null };
  connections: number;
  version: string;
}

/**
 * A dependency that does not answer in time counts as down. While PostgreSQL is unreachable the
 * driver waits between reconnect attempts, and a probe must not hang for that long.
 */
const PING_TIMEOUT_MS = 1_500;

async function answersWithin(ping: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([ping.catch(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

export class HealthService {
  /** Counts open WebSocket connections on this instance; set by the server. */
  connections: () => number = () => 0;

  constructor(
    private readonly database: DatabaseHandle,
    private readonly broker: Broker,
    private readonly version: string,
  ) {}

  async ready(): Promise<{ db: boolean; redis: boolean }> {
    const [db, redis] = await Promise.all([
      answersWithin(this.database.ping(), PING_TIMEOUT_MS),
      answersWithin(this.broker.ping(), PING_TIMEOUT_MS),
    ]);
    return { db, redis };
  }

  async report(): Promise<HealthReport> {
    const { db, redis } = await this.ready();
    let lag: number | null = null;
    if (redis) {
      // Entries not yet written to PostgreSQL: undelivered plus delivered-but-unacknowledged.
      // Without a group no worker has read anything yet: the whole stream is unwritten.
      lag = await queueTotals(this.broker.queues)
        .then(({ unwritten }) => unwritten)
        .catch(() => null);
    }
    return {
      status: db && redis ? 'ok' : 'degraded',
      db,
      redis,
      worker: { lag },
      connections: this.connections(),
      version: this.version,
    };
  }
}
