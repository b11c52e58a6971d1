import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { queueTotals } from './broker/ports/queue.js';
import type { Broker } from './broker/types.js';

/** Seconds; from a cache hit (~1 ms) to a slow PostgreSQL round trip under load. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds a worker batch takes to commit: normally well under a second. */
const PERSIST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const BATCH_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000];

type HttpLabels = 'method' | 'route' | 'status';
type CallLabels = 'procedure' | 'type' | 'code';

/**
 * Every Parley series, on one registry per app (two apps in one process never share a counter).
 * Services increment the fields; `GET /metrics` serves `registry.metrics()`.
 */
export interface Metrics {
  readonly registry: Registry;
  /** HTTP requests by method, route (`/trpc`, `/ws`, `/healthz`, …) and status. */
  readonly httpRequests: Counter<HttpLabels>;
  readonly httpDuration: Histogram<HttpLabels>;
  /** tRPC calls by procedure path, type and outcome code (`OK` or the tRPC error code). */
  readonly trpcCalls: Counter<CallLabels>;
  readonly trpcDuration: Histogram<CallLabels>;
  /** Open WebSocket connections on this instance. */
  readonly wsConnections: Gauge;
  /** Active `events` subscriptions on this instance (read from the realtime hub on scrape). */
  readonly subscriptions: Gauge;
  /**
   * 1 while the instance's Pub/Sub connection is down and its streams hold live events (they
   * catch up from the logs once it is back); 0 otherwise.
   */
  readonly held: Gauge;
  /** Events handed to local subscribers (one per receiving connection), by event type. */
  readonly eventsFannedOut: Counter<'type'>;
  /** Messages this instance received on the event channels it follows. */
  readonly pubsubReceived: Counter;
  /** Messages appended to the stream, by type (`text` sends, `system` notices); duplicates excluded. */
  readonly messagesSent: Counter<'type'>;
  /** Entries the persistence worker wrote per batch. */
  readonly persistBatchSize: Histogram;
  /** Seconds a worker batch took to be written to PostgreSQL and acknowledged. */
  readonly persistLatency: Histogram;
  /** Stream entries the worker gave up on after repeated failures. */
  readonly deadLetters: Counter;
}

export function createMetrics(deps: {
  broker: Broker;
  /** Active `events` subscriptions on this instance. */
  subscriptions?: () => number;
  /** Whether this instance holds live events because its event channels are down. */
  held?: () => boolean;
}): Metrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const { broker } = deps;
  // Read from the broker on each scrape: the stream is shared, so every instance reports the
  // same value and nothing has to keep it up to date between scrapes.
  new Gauge({
    name: 'parley_stream_length',
    help: 'Entries in the parley:messages streams (written and not yet written to PostgreSQL)',
    registers,
    async collect() {
      const totals = await queueTotals(broker.queues).catch(() => null);
      this.set(totals ? totals.length : Number.NaN);
    },
  });
  new Gauge({
    name: 'parley_worker_lag_entries',
    help: 'Messages accepted but not yet written to PostgreSQL (undelivered plus unacknowledged)',
    registers,
    async collect() {
      try {
        // No group yet means no worker ever ran: everything in that stream is still unwritten.
        this.set((await queueTotals(broker.queues)).unwritten);
      } catch {
        this.set(Number.NaN);
      }
    },
  });

  return {
    registry,
    httpRequests: new Counter({
      name: 'parley_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
    httpDuration: new Histogram({
      name: 'parley_http_request_duration_seconds',
      help: 'HTTP request duration by method, route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    trpcCalls: new Counter({
      name: 'parley_trpc_calls_total',
      help: 'tRPC calls by procedure, type and outcome code',
      labelNames: ['procedure', 'type', 'code'],
      registers,
    }),
    trpcDuration: new Histogram({
      name: 'parley_trpc_call_duration_seconds',
      help: 'tRPC call duration by procedure, type and outcome code (subscriptions: until started)',
      labelNames: ['procedure', 'type', 'code'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    wsConnections: new Gauge({
      name: 'parley_ws_connections',
      help: 'Open WebSocket connections on this instance',
      registers,
    }),
    subscriptions: new Gauge({
      name: 'parley_subscriptions',
      help: 'Active events subscriptions on this instance',
      registers,
      collect() {
        if (deps.subscriptions) this.set(deps.subscriptions());
      },
    }),
    held: new Gauge({
      name: 'parley_live_events_held',
      help: '1 while this instance holds live events because its Pub/Sub connection is down',
      registers,
      collect() {
        this.set(deps.held?.() ? 1 : 0);
      },
    }),
    pubsubReceived: new Counter({
      name: 'parley_pubsub_received_total',
      help: 'Messages this instance received on the conversation and user channels it follows',
      registers,
    }),
    eventsFannedOut: new Counter({
      name: 'parley_events_fanned_out_total',
      help: 'Events delivered to local subscribers, by event type',
      labelNames: ['type'],
      registers,
    }),
    messagesSent: new Counter({
      name: 'parley_messages_sent_total',
      help: 'Messages appended to the stream, by type (text: message.send; system: notices)',
      labelNames: ['type'],
      registers,
    }),
    persistBatchSize: new Histogram({
      name: 'parley_persist_batch_size',
      help: 'Messages written to PostgreSQL per worker batch',
      buckets: BATCH_BUCKETS,
      registers,
    }),
    persistLatency: new Histogram({
      name: 'parley_persist_latency_seconds',
      help: 'Seconds a worker batch took to be written to PostgreSQL and acknowledged',
      buckets: PERSIST_BUCKETS,
      registers,
    }),
    deadLetters: new Counter({
      name: 'parley_dead_letters_total',
      help: 'Stream entries moved to the dead-letter list after repeated failures',
      registers,
    }),
  };
}

/** Collapses request paths to a few routes, so a scanner cannot create unbounded series. */
export function routeOf(url: string): string {
  const path = url.split('?')[0] ?? '/';
  if (path === '/trpc' || path.startsWith('/trpc/')) return '/trpc';
  if (path === '/api' || path.startsWith('/api/')) return '/api';
  if (path === '/openapi.json') return path;
  if (path === '/ws' || path === '/healthz' || path === '/readyz' || path === '/metrics') return path;
  return 'other';
}
