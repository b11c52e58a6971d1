import type { Broker } from './broker/types.js';
import type { DatabaseHandle } from './db/index.js';
import { MESSAGES_STREAM, PERSIST_GROUP } from './messages/store.js';

export interface HealthReport {
  status: 'ok' | 'degraded';
  db: boolean;
  redis: boolean;
  worker: { lag: number | null };
  connections: number;
  version: string;
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
    const [db, redis] = await Promise.all([this.database.ping(), this.broker.ping()]);
    return { db, redis };
  }

  async report(): Promise<HealthReport> {
    const { db, redis } = await this.ready();
    let lag: number | null = null;
    if (redis) {
      // Entries not yet written to PostgreSQL: undelivered plus delivered-but-unacknowledged.
      // Without a group no worker has read anything yet: the whole stream is unwritten.
      lag = await this.broker
        .groupInfo(MESSAGES_STREAM, PERSIST_GROUP)
        .then(async (info) =>
          info ? info.lag + info.pending : (await this.broker.streamInfo(MESSAGES_STREAM)).length,
        )
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
