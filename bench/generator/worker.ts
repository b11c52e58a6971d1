/**
 * One load-generator process. It holds a partition of whole groups, so every message it sends
 * is received by clients in this same process: send time and receipt time come from one clock.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import postgres from 'postgres';
import type { BenchConnection, ClientAdapter, ClientSpec, Transport } from '../clients/types.js';
import { announceReady, serveCalls } from '../lib/children.js';
import { Histogram, type HistogramData } from '../lib/histogram.js';

export type ServerName = 'parley' | 'socketio' | 'raw';

export interface GeneratorClient extends ClientSpec {
  /** Position of the client in its group (0..groupSize-1). */
  position: number;
}

export interface ConnectParams {
  server: ServerName;
  /** Server instances; client `index` connects to `urls[index % urls.length]`. */
  urls: string[];
  transport: Transport;
  groupSize: number;
  clients: GeneratorClient[];
  /** Connections opened at once. */
  concurrency: number;
  timeLimitMs: number;
  /** Parley: where to look for persisted rows. */
  databaseUrl?: string;
  /** This generator's number among those of the run. */
  generator: number;
  /**
   * The groups are spread over the run's generators (a big room): a client also receives what
   * other generators' clients sent, timed by the send's wall-clock time in its content.
   */
  spread: boolean;
}

export interface ConnectResult {
  connected: number;
  failed: number;
  firstError: string | null;
  ms: number;
}

export interface RunParams {
  ratePerClient: number;
  durationMs: number;
  messageSize: number;
  /** How long to wait for outstanding acks and deliveries after the last send. */
  drainMs: number;
  /** Parley: every n-th send is followed into PostgreSQL (0 = none). */
  persistSampleEvery: number;
  /** Only the clients at positions below this in their group send (default: every client). */
  sendersPerGroup?: number;
}

export interface RunResult {
  windowMs: number;
  attempted: number;
  acked: number;
  errors: number;
  firstError: string | null;
  expected: number;
  received: number;
  loss: number;
  duplicates: number;
  /** Deliveries of messages sent in an earlier step (counted as lost there). */
  strays: number;
  latency: HistogramData;
  /** How late the generator issued sends against their schedule. */
  scheduleLagMaxMs: number;
  /** The generator's own event-loop delay: when high, its latency figures include its own stalls. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  generatorCpuPercent: number;
  persistLag: HistogramData | null;
  persistUnseen: number;
}

async function loadAdapter(server: ServerName): Promise<ClientAdapter> {
  switch (server) {
    case 'parley':
      return (await import('../clients/parley.js')).parleyClient;
    case 'socketio':
      return (await import('../clients/socketio.js')).socketIoClient;
    case 'raw':
      return (await import('../clients/raw.js')).rawClient;
  }
}

interface InFlight {
  sentAt: number;
  senderPosition: number;
  /** One flag per group position: received by that member. */
  seen: Uint8Array;
  got: number;
  acked: boolean;
}

let connections: { spec: GeneratorClient; connection: BenchConnection }[] = [];
let setup: ConnectParams | null = null;
let sql: postgres.Sql | null = null;
const inFlight = new Map<number, InFlight>();
let nextMessageId = 1;
let latency = new Histogram();
let duplicates = 0;
let strays = 0;
let received = 0;
/** Spread groups: what this generator's clients got of other generators' sends, by `<generator>:<id>`. */
const remoteSeen = new Map<string, Uint8Array>();
let lastDeliveryAt = 0;

/** Wall-clock milliseconds with a fraction, the same clock in every process of the machine. */
const wallClock = () => performance.timeOrigin + performance.now();

function onDelivery(recipientPosition: number, content: string): void {
  const now = performance.now();
  lastDeliveryAt = now;
  // `<generator>:<id>:<wall-clock ms>|<padding>`
  const [from, idText, at] = content.slice(0, content.indexOf('|')).split(':');
  const id = Number.parseInt(idText ?? '', 10);
  if (setup?.spread && Number(from) !== setup.generator) {
    const key = `${from}:${id}`;
    let seen = remoteSeen.get(key);
    if (!seen) {
      seen = new Uint8Array(setup.groupSize);
      remoteSeen.set(key, seen);
    }
    if (seen[recipientPosition] === 1) {
      duplicates += 1;
      return;
    }
    seen[recipientPosition] = 1;
    received += 1;
    latency.record(wallClock() - Number(at));
    return;
  }
  const message = inFlight.get(id);
  if (!message) {
    // Sent in an earlier step and arriving only now: late, not repeated.
    strays += 1;
    return;
  }
  if (recipientPosition === message.senderPosition) return; // the sender's own copy (Parley syncs devices)
  if (message.seen[recipientPosition] === 1) {
    duplicates += 1;
    return;
  }
  message.seen[recipientPosition] = 1;
  message.got += 1;
  received += 1;
  latency.record(now - message.sentAt);
}

async function connect(params: ConnectParams): Promise<ConnectResult> {
  setup = params;
  const adapter = await loadAdapter(params.server);
  if (params.databaseUrl) sql = postgres(params.databaseUrl, { max: 1, onnotice: () => undefined });
  const started = performance.now();
  const deadline = started + params.timeLimitMs;
  let failed = 0;
  let firstError: string | null = null;
  let cursor = 0;
  const lane = async () => {
    while (cursor < params.clients.length && performance.now() < deadline) {
      const spec = params.clients[cursor++];
      if (!spec) break;
      try {
        const url = params.urls[spec.index % params.urls.length];
        if (!url) throw new Error('no server to connect to');
        const connection = await adapter.connect(url, spec, params.transport, (content) =>
          onDelivery(spec.position, content),
        );
        connections.push({ spec, connection });
      } catch (error) {
        failed += 1;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, params.concurrency) }, lane));
  return { connected: connections.length, failed, firstError, ms: performance.now() - started };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(params: RunParams): Promise<RunResult> {
  if (!setup) throw new Error('connect first');
  const groupSize = setup.groupSize;
  latency = new Histogram();
  duplicates = 0;
  strays = 0;
  received = 0;
  inFlight.clear();
  remoteSeen.clear();
  const persistLag = new Histogram();
  const persistWaiting = new Map<string, number>();
  let attempted = 0;
  let acked = 0;
  let errors = 0;
  let firstError: string | null = null;
  let outstandingAcks = 0;
  let scheduleLagMaxMs = 0;
  const padding = 'x'.repeat(params.messageSize);

  // Open loop: client k sends at start + n·T + k·T/C, in a shuffled order so that members of one
  // group do not send back to back. A slow server never slows the schedule down.
  const sendersPerGroup = params.sendersPerGroup ?? groupSize;
  const order = connections.flatMap((entry, index) => (entry.spec.position < sendersPerGroup ? [index] : []));
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const count = order.length;
  // Spread groups: a generator may hold receivers only.
  if (count === 0 && !setup.spread) throw new Error('no connected client is a sender');
  const period = 1000 / params.ratePerClient;
  const cpuBefore = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 2 });
  loopDelay.enable();
  const start = performance.now() + 20;
  const end = start + params.durationMs;
  const timeOf = (n: number) => start + Math.floor(n / count) * period + ((n % count) * period) / count;

  let persistPolling = true;
  const persistPoller = (async () => {
    if (!sql || params.persistSampleEvery <= 0) return;
    const db = sql;
    while (persistPolling || (persistWaiting.size > 0 && performance.now() < end + params.drainMs + 10_000)) {
      const began = performance.now();
      const ids = [...persistWaiting.keys()].slice(0, 1000);
      if (ids.length > 0) {
        const rows = await db<{ id: string }[]>`select id from messages where id = any(${ids}::uuid[])`;
        const now = performance.now();
        for (const row of rows) {
          const sentAt = persistWaiting.get(row.id);
          if (sentAt === undefined) continue;
          persistLag.record(now - sentAt);
          persistWaiting.delete(row.id);
        }
      }
      await sleep(Math.max(0, 5 - (performance.now() - began)));
    }
  })();

  let n = 0;
  while (true) {
    const now = performance.now();
    if (now >= end) break;
    while (count > 0 && timeOf(n) <= now && timeOf(n) < end) {
      const entry = connections[order[n % count] as number];
      n += 1;
      if (!entry) continue;
      const lag = now - timeOf(n - 1);
      if (lag > scheduleLagMaxMs) scheduleLagMaxMs = lag;
      const id = nextMessageId++;
      const head = `${setup.generator}:${id}:${wallClock().toFixed(3)}`;
      const message: InFlight = {
        sentAt: performance.now(),
        senderPosition: entry.spec.position,
        seen: new Uint8Array(groupSize),
        got: 0,
        acked: false,
      };
      inFlight.set(id, message);
      attempted += 1;
      outstandingAcks += 1;
      const sample = params.persistSampleEvery > 0 && attempted % params.persistSampleEvery === 0;
      entry.connection
        .send(
          entry.spec.conversationId,
          `${head}|${padding}`.slice(0, Math.max(params.messageSize, head.length + 1)),
        )
        .then(
          (storedId) => {
            message.acked = true;
            acked += 1;
            if (sample && storedId) persistWaiting.set(storedId, message.sentAt);
          },
          (error: unknown) => {
            errors += 1;
            firstError ??= error instanceof Error ? error.message : String(error);
          },
        )
        .finally(() => {
          outstandingAcks -= 1;
        });
    }
    await sleep(1);
  }
  const windowMs = performance.now() - start;

  // Drain: wait until every acked message reached every recipient, or the drain time is up.
  const drainEnd = performance.now() + params.drainMs;
  const complete = () => {
    if (outstandingAcks > 0) return false;
    // Spread groups: other generators' sends are not known here; done once deliveries stop.
    if (setup?.spread) return performance.now() - lastDeliveryAt > 1000;
    for (const message of inFlight.values()) if (message.acked && message.got < groupSize - 1) return false;
    return true;
  };
  while (performance.now() < drainEnd && !complete()) await sleep(20);
  // A late repeat would land within a few ms; give it the chance to be counted.
  await sleep(200);
  persistPolling = false;
  await persistPoller;

  let expected = 0;
  let gotForAcked = 0;
  for (const message of inFlight.values()) {
    if (!message.acked) continue;
    expected += groupSize - 1;
    gotForAcked += message.got;
  }
  const cpu = process.cpuUsage(cpuBefore);
  loopDelay.disable();
  const elapsed = performance.now() - start;
  const result: RunResult = {
    windowMs,
    attempted,
    acked,
    errors: errors + outstandingAcks,
    firstError: firstError ?? (outstandingAcks > 0 ? `${outstandingAcks} sends never acknowledged` : null),
    expected,
    received,
    // Spread groups: the run sums what all generators expected and received instead.
    loss: setup.spread ? 0 : expected - gotForAcked,
    duplicates,
    strays,
    latency: latency.toJSON(),
    scheduleLagMaxMs,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loopDelayMaxMs: loopDelay.max / 1e6,
    generatorCpuPercent: ((cpu.user + cpu.system) / 1000 / elapsed) * 100,
    persistLag: sql && params.persistSampleEvery > 0 ? persistLag.toJSON() : null,
    persistUnseen: persistWaiting.size,
  };
  inFlight.clear();
  return result;
}

async function close(): Promise<void> {
  await Promise.all(connections.map(({ connection }) => connection.close().catch(() => undefined)));
  connections = [];
  await sql?.end({ timeout: 1 });
  sql = null;
}

serveCalls({ connect, run, close });
announceReady({});
