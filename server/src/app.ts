import { openBroker } from './broker/index.js';
import type { Config } from './config/index.js';
import { openDatabase } from './db/index.js';
import { startHttp } from './http/server.js';
import { createLogger, type Logger } from './logger.js';
import { buildServices, type Services } from './services.js';
import { PersistenceWorker } from './worker/persist.js';
import { WrittenEntries } from './worker/written.js';

/**
 * How long a change waits for the in-process worker to write it before the call answers that
 * it may or may not be stored (a write normally takes a few milliseconds).
 */
const WRITE_WAIT_MS = 10_000;
/**
 * The worker's linger while calls wait for its writes: it then adds to every call's latency, so
 * it only gathers the sends that arrive together (`PARLEY_WORKER_LINGER` would make a lone
 * send take that long).
 */
const WAITED_LINGER_MS = 5;

export interface App {
  services: Services;
  /** The persistence workers running in this process, one per queue (`Broker.queues`); none without one. */
  workers: PersistenceWorker[];
  port: number;
  /** `http://host:port` as seen from this machine. */
  url: string;
  close(): Promise<void>;
}

export interface AppOptions {
  log?: Logger;
  /** Serve HTTP and WebSocket (default); off for a worker-only process. */
  serve?: boolean;
}

/**
 * The composition root: config → database → broker → services → HTTP/WS server (+ worker).
 * Nothing else opens connections; tests build the same app with other settings.
 */
export async function createApp(config: Config, options: AppOptions = {}): Promise<App> {
  const log = options.log ?? createLogger({ level: config.logLevel, pretty: config.logFormat === 'pretty' });
  if (config.jwt.generated) {
    log.warn('JWT_SECRET is not set: using a random secret, so tokens will not survive a restart');
  }
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      await close().catch((error: unknown) => log.error({ err: error }, 'error while closing'));
    }
  };
  try {
    const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
    closers.push(() => database.close());
    await database.migrate();
    const broker = await openBroker({
      url: config.redisUrl,
      cluster: config.redisCluster,
      prefix: config.redisPrefix,
      commandTimeoutMs: config.redisCommandTimeoutMs,
      eventLogLength: config.limits.eventLogLength,
      eventPartitions: config.eventPartitions,
    });
    closers.push(() => broker.close());
    log.info(
      { database: database.engine, broker: broker.engine },
      `using ${database.engine === 'pglite' ? `embedded PostgreSQL in ${config.dataDir}` : 'PostgreSQL'} and ${broker.engine === 'memory' ? 'the in-process broker' : 'Redis'}`,
    );
    // The in-process broker's stream lives and dies with this process, and only this process's
    // worker can write it to the database: a change is acknowledged once that worker wrote it,
    // and revocations, which the broker would otherwise forget, are set again from PostgreSQL.
    // (The configuration and the CLI refuse the in-process broker without this worker; an app
    // built without it, beside a worker of its caller's own, gets no wait.)
    const inProcessBroker = broker.engine === 'memory';
    const written = inProcessBroker && config.runWorker ? new WrittenEntries(WRITE_WAIT_MS) : null;
    const services = buildServices({ config, log, database, broker, durability: written });
    if (inProcessBroker) await services.sessions.restoreRevocations();
    await services.realtime.start();
    closers.push(() => services.realtime.stop());

    const workers: PersistenceWorker[] = [];
    if (config.runWorker) {
      const { metrics } = services;
      const settings = written ? { ...config.worker, lingerMs: WAITED_LINGER_MS } : config.worker;
      const hooks = {
        onBatch: (size: number, durationMs: number) => {
          metrics.persistBatchSize.observe(size);
          metrics.persistLatency.observe(durationMs / 1000);
        },
        onDeadLetter: (entryId: string, reason: string) => {
          metrics.deadLetters.inc();
          written?.markDeadLettered(entryId, reason);
        },
        onWritten: (entryIds: readonly string[]) => written?.markWritten(entryIds),
      };
      broker.queues.forEach((queue, partition) => {
        const component =
          broker.queues.length > 1 ? { component: 'worker', partition } : { component: 'worker' };
        workers.push(new PersistenceWorker(database.db, queue, settings, log.child(component), hooks));
      });
      for (const worker of workers) worker.start();
      // Stop before the broker and database close (closers run in reverse).
      closers.push(async () => {
        await Promise.all(workers.map((worker) => worker.stop()));
      });
    }

    let port = 0;
    let url = '';
    if (options.serve !== false) {
      const http = await startHttp(services, { port: config.port, host: config.host });
      closers.push(() => http.close());
      port = http.port;
      const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
      url = `http://${host}:${port}`;
    }

    let closing: Promise<void> | null = null;
    return {
      services,
      workers,
      port,
      url,
      close: () => (closing ??= closeAll()),
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}
