/**
 * `npm run bench`: Parley, Socket.IO and the raw limit through the same workload on this
 * machine, each server in its own process, the load generator in others. See `--help`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import type { ClientAdapter, ClientSpec } from './clients/types.js';
import type {
  ConnectParams,
  ConnectResult,
  GeneratorClient,
  RunParams,
  RunResult,
  ServerName,
} from './generator/worker.js';
import { type Child, startChild } from './lib/children.js';
import { Histogram, summarize } from './lib/histogram.js';
import { ProcMonitor, readProc, SystemMonitor } from './lib/proc.js';
import { deleteKeys } from './lib/redis.js';
import { DEFAULT_GROUPS, HELP, type Options, PHASES, parseOptions } from './options.js';
import { benchBigRoom } from './phases/big-room.js';
import type { PhaseContext, ServerProcess, StartOptions, StepLoad } from './phases/context.js';
import { benchGroups } from './phases/groups.js';
import { benchInstances } from './phases/instances.js';
import { benchPartitions } from './phases/partitions.js';
import { fixedCostStep, renderChart, renderMarkdown, renderTable, replaceDocsSection } from './report.js';
import type {
  BacklogResult,
  BenchResults,
  CapacityResult,
  ServerResult,
  StepResult,
} from './results-types.js';

const P99_LIMIT_MS = 50;
/** Busy CPU (% of one core) below which the machine counts as idle before a run. */
const QUIET_PERCENT = 40;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);

const parsed = parseOptions(process.argv.slice(2), process.env);
if (parsed === 'help') {
  console.log(HELP);
  process.exit(0);
}
const options: Options = parsed;
const runId = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
const jwtSecret = randomBytes(32).toString('hex');
const resultsDir = new URL('./results/', import.meta.url);
const tmpDir = new URL('./results/tmp/', import.meta.url);
mkdirSync(tmpDir, { recursive: true });

const databaseName = `parley_bench_${runId}`;
const parleyDatabaseUrl = (() => {
  const url = new URL(options.databaseUrl);
  url.pathname = `/${databaseName}`;
  return url.toString();
})();
let databaseCreated = false;

const prefixOf = (scope: string) => `bench:${runId}:${scope}:`;
/** The runner's own connection, for Redis's figures and for removing keys. */
const redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
/** Parley's group cap, high enough for every group of the run. */
const maxGroupMembers = Math.max(1000, options.groupSize, options.bigRoom, ...options.groups);

async function loadAdapter(server: ServerName): Promise<ClientAdapter> {
  switch (server) {
    case 'parley':
      return (await import('./clients/parley.js')).parleyClient;
    case 'socketio':
      return (await import('./clients/socketio.js')).socketIoClient;
    case 'raw':
      return (await import('./clients/raw.js')).rawClient;
  }
}

const serverEntries: Record<ServerName, URL> = {
  parley: new URL('./servers/parley.ts', import.meta.url),
  socketio: new URL('./servers/socketio.ts', import.meta.url),
  raw: new URL('./servers/raw.ts', import.meta.url),
};

async function ensureDatabase(): Promise<void> {
  if (databaseCreated) return;
  const admin = postgres(options.databaseUrl, { max: 1, onnotice: () => undefined });
  try {
    await admin.unsafe(`create database "${databaseName}"`);
    databaseCreated = true;
  } finally {
    await admin.end();
  }
}

async function startServer(server: ServerName, extra: StartOptions = {}): Promise<ServerProcess> {
  if (server === 'parley') await ensureDatabase();
  const env: Record<string, string> = {
    BENCH_REDIS_URL: options.redisUrl,
    BENCH_PREFIX: extra.prefix ?? prefixOf(server),
    BENCH_JWT_SECRET: jwtSecret,
    BENCH_DATABASE_URL: parleyDatabaseUrl,
    BENCH_WORKER: extra.worker === false ? 'off' : 'on',
    BENCH_SERVE: extra.serve === false ? 'off' : 'on',
    PARLEY_MAX_GROUP_MEMBERS: String(maxGroupMembers),
    ...extra.env,
  };
  const nodeFlags = [
    ...(extra.profile
      ? ['--cpu-prof', `--cpu-prof-dir=${new URL('./results/tmp/', import.meta.url).pathname}`]
      : []),
    ...(process.env.BENCH_SERVER_NODE_FLAGS ?? '').split(' ').filter(Boolean),
  ];
  const child = await startChild<{ port: number }>(`${server} server`, serverEntries[server], {
    env,
    nodeFlags,
  });
  return { ...child, url: `http://127.0.0.1:${child.ready.port}` };
}

/** Whole groups per generator process, so senders and their recipients share one clock. */
/** Whole groups to each generator in turn; or, `spread`, each group's members dealt over them. */
function partition(specs: ClientSpec[], parts: number, spread: boolean): GeneratorClient[][] {
  const groups = new Map<string, GeneratorClient[]>();
  for (const spec of specs) {
    const group = groups.get(spec.conversationId) ?? [];
    group.push({ ...spec, position: group.length });
    groups.set(spec.conversationId, group);
  }
  const out: GeneratorClient[][] = Array.from({ length: parts }, () => []);
  let i = 0;
  for (const group of groups.values()) {
    if (spread) for (const client of group) (out[i++ % parts] as GeneratorClient[]).push(client);
    else (out[i++ % parts] as GeneratorClient[]).push(...group);
  }
  return out.filter((part) => part.length > 0);
}

async function startGenerators(
  servers: ServerProcess[],
  name: ServerName,
  specs: ClientSpec[],
  count: number,
  timeLimitMs: number,
  groupSize = options.groupSize,
  spread = false,
): Promise<{ generators: Child[]; connected: ConnectResult[] }> {
  const parts = partition(specs, count, spread);
  const generators: Child[] = [];
  try {
    for (let i = 0; i < parts.length; i++) {
      generators.push(
        await startChild(`generator ${i + 1}`, new URL('./generator/worker.ts', import.meta.url), {
          nodeFlags: (process.env.BENCH_GENERATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean),
        }),
      );
    }
    const connected = await Promise.all(
      generators.map((generator, i) =>
        generator.call<ConnectResult>(
          'connect',
          {
            server: name,
            urls: servers.map((server) => server.url),
            transport: options.transport,
            groupSize,
            clients: parts[i] ?? [],
            concurrency: 50,
            timeLimitMs,
            databaseUrl: name === 'parley' ? parleyDatabaseUrl : undefined,
            generator: i,
            spread,
          } satisfies ConnectParams,
          timeLimitMs + 30_000,
        ),
      ),
    );
    return { generators, connected };
  } catch (error) {
    await Promise.all(generators.map((generator) => generator.stop()));
    throw error;
  }
}

async function stopGenerators(generators: Child[]): Promise<void> {
  await Promise.all(
    generators.map((generator) => generator.call('close', undefined, 60_000).catch(() => undefined)),
  );
  await Promise.all(generators.map((generator) => generator.stop()));
}

/** One measured window of load; with several server processes, their CPU and RSS are summed. */
async function runStep(servers: ServerProcess[], generators: Child[], load: StepLoad): Promise<StepResult> {
  const { ratePerClient, durationS, groupSize } = load;
  const params: RunParams = {
    ratePerClient,
    durationMs: durationS * 1000,
    messageSize: options.messageSize,
    drainMs: load.drainMs ?? 5000,
    persistSampleEvery: load.persistSampleEvery,
    sendersPerGroup: load.sendersPerGroup,
  };
  type Loop = { idle: number; active: number };
  const loopBefore = await Promise.all(servers.map((server) => server.call<Loop>('loop')));
  const monitors = servers.map((server) => new ProcMonitor(server.pid));
  const system = new SystemMonitor();
  const parts = await Promise.all(
    generators.map((generator) =>
      generator.call<RunResult>('run', params, durationS * 1000 + params.drainMs + 60_000),
    ),
  );
  const usages = monitors.map((monitor) => monitor.stop());
  const usage = {
    cpuPercent: usages.reduce((total, one) => total + one.cpuPercent, 0),
    cpuSeconds: usages.reduce((total, one) => total + one.cpuSeconds, 0),
    rssPeakMB: usages.reduce((total, one) => total + one.rssPeakMB, 0),
  };
  const machine = system.stop();
  const loopAfter = await Promise.all(servers.map((server) => server.call<Loop>('loop')));
  // The busiest process's share: the one that limits the rest.
  const loopBusy = Math.max(
    ...servers.map((_, i) => {
      const before = loopBefore[i] as Loop;
      const after = loopAfter[i] as Loop;
      const active = after.active - before.active;
      const total = active + after.idle - before.idle;
      return total > 0 ? (active / total) * 100 : 0;
    }),
  );
  const latency = new Histogram();
  const persist = new Histogram();
  let hasPersist = false;
  const sum = (pick: (part: RunResult) => number) => parts.reduce((total, part) => total + pick(part), 0);
  for (const part of parts) {
    latency.merge(part.latency);
    if (part.persistLag) {
      persist.merge(part.persistLag);
      hasPersist = true;
    }
  }
  const windowS = Math.max(...parts.map((part) => part.windowMs)) / 1000;
  const latencyMs = summarize(latency);
  const errors = sum((part) => part.errors);
  const received = sum((part) => part.received);
  // Spread groups: each generator knows what its own sends expect, and what its clients got.
  const loss = load.spread ? Math.max(0, sum((part) => part.expected) - received) : sum((part) => part.loss);
  const duplicates = sum((part) => part.duplicates);
  return {
    ratePerClient,
    offeredSendsPerS: load.senders * ratePerClient,
    offeredDeliveriesPerS: load.senders * ratePerClient * (groupSize - 1),
    sendsPerS: sum((part) => part.acked) / windowS,
    deliveriesPerS: received / windowS,
    attempted: sum((part) => part.attempted),
    acked: sum((part) => part.acked),
    errors,
    firstError: parts.find((part) => part.firstError)?.firstError ?? null,
    expected: sum((part) => part.expected),
    received,
    loss,
    duplicates,
    strays: sum((part) => part.strays),
    latencyMs,
    serverCpuPercent: usage.cpuPercent,
    serverCpuUsPerDelivery: received > 0 ? (usage.cpuSeconds / received) * 1e6 : null,
    serverRssPeakMB: usage.rssPeakMB,
    serverLoopBusyPercent: loopBusy,
    generatorCpuPercent: sum((part) => part.generatorCpuPercent),
    machineCpuPercent: machine.busyPercent,
    loadAverage: machine.loadAverage,
    scheduleLagMaxMs: Math.max(...parts.map((part) => part.scheduleLagMaxMs)),
    generatorLoopDelayP99Ms: Math.max(...parts.map((part) => part.loopDelayP99Ms)),
    generatorLoopDelayMaxMs: Math.max(...parts.map((part) => part.loopDelayMaxMs)),
    persistLagMs: hasPersist ? summarize(persist) : null,
    persistUnseen: sum((part) => part.persistUnseen),
    passed: latencyMs.p99 <= P99_LIMIT_MS && loss === 0 && duplicates === 0 && errors === 0,
  };
}

/**
 * Waits (at most 30 s) until the server is nearly idle, so one step's backlog does not spill into
 * the next step's figures.
 */
async function settle(server: ServerProcess): Promise<void> {
  await sleep(1000);
  const deadline = performance.now() + 30_000;
  while (performance.now() < deadline) {
    const monitor = new ProcMonitor(server.pid);
    await sleep(500);
    if (monitor.stop().cpuPercent < 15) return;
  }
  log(`${server.name}: still busy 30 s after the step`);
}

/**
 * Other programs share this machine; waits (bounded) until it is nearly idle before a server's
 * measured runs, and returns the busy CPU seen last (in % of one core) for the record.
 */
async function waitForQuiet(name: string): Promise<number> {
  const deadline = performance.now() + options.quietWaitS * 1000;
  let busy = 0;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const monitor = new SystemMonitor();
    await sleep(1000);
    busy = monitor.stop().busyPercent;
    if (busy <= QUIET_PERCENT || performance.now() >= deadline) break;
    if (attempt === 0)
      log(
        `${name}: machine busy (${Math.round(busy)}% CPU) before the run; waiting up to ${options.quietWaitS} s`,
      );
  }
  return busy;
}

function describeStep(step: StepResult): string {
  const l = step.latencyMs;
  return (
    `${step.ratePerClient.toFixed(2)}/client/s: ${Math.round(step.sendsPerS)} sends/s, ` +
    `${Math.round(step.deliveriesPerS)} deliveries/s, loss ${step.loss}, dup ${step.duplicates}, late ${step.strays}, errors ${step.errors}, ` +
    `p50 ${l.p50.toFixed(1)} p99 ${l.p99.toFixed(1)} max ${l.max.toFixed(1)} ms, server CPU ${Math.round(step.serverCpuPercent)}% ` +
    `(${step.serverCpuUsPerDelivery?.toFixed(0) ?? '–'} µs per delivery, event loop busy ${Math.round(step.serverLoopBusyPercent)}%), ` +
    `generator CPU ${Math.round(step.generatorCpuPercent)}%, machine CPU ${Math.round(step.machineCpuPercent)}%, loop delay p99 ${step.generatorLoopDelayP99Ms.toFixed(1)} ` +
    `max ${step.generatorLoopDelayMaxMs.toFixed(1)} ms, schedule lag max ${step.scheduleLagMaxMs.toFixed(1)} ms` +
    (step.persistLagMs
      ? `, persist p50 ${step.persistLagMs.p50.toFixed(1)} p99 ${step.persistLagMs.p99.toFixed(1)} ms`
      : '') +
    (step.firstError ? ` (first error: ${step.firstError.split('\n')[0]})` : '')
  );
}

/** W1's clients and groups: every client sends. */
const w1Shape = { senders: options.clients, groupSize: options.groupSize };

async function benchLoad(name: ServerName, result: ServerResult): Promise<void> {
  const adapter = await loadAdapter(name);
  const server = await startServer(name);
  const profiling = name === 'parley' && options.cpuProf;
  let generators: Child[] = [];
  try {
    log(`${name}: preparing ${options.clients} clients`);
    const specs = await adapter.prepare({
      url: server.url,
      count: options.clients,
      groupSize: options.groupSize,
      jwtSecret,
      server,
    });
    const started = await startGenerators([server], name, specs, options.generators, 120_000);
    generators = started.generators;
    const failed = started.connected.reduce((total, part) => total + part.failed, 0);
    if (failed > 0) {
      throw new Error(
        `${failed} clients failed to connect: ${started.connected.find((c) => c.firstError)?.firstError}`,
      );
    }
    result.machineBusyBeforePercent = await waitForQuiet(name);
    log(`${name}: ${options.clients} clients connected; warming up`);
    await runStep([server], generators, {
      ...w1Shape,
      ratePerClient: options.rate,
      durationS: options.quick ? 1 : Math.min(3, options.durationS),
      persistSampleEvery: 0,
    });
    await sleep(1000);

    await settle(server);
    if (profiling) await server.call('startProfile');
    const w1 = await runStep([server], generators, {
      ...w1Shape,
      ratePerClient: options.rate,
      durationS: options.durationS,
      persistSampleEvery: 10,
    });
    if (profiling) {
      const file = new URL(`parley-w1-${runId}.cpuprofile`, tmpDir).pathname;
      await server.call('stopProfile', { file });
      log(`parley: CPU profile of the W1 run written to ${file} (summary: npx tsx bench/profile.ts ${file})`);
    }
    log(`${name}: W1 ${describeStep(w1)}`);
    result.w1 = w1;
    result.curve.push(w1);

    if (options.saturation) {
      // Bracket the highest passing rate: up by half while steps pass, halve while they fail,
      // then split the bracket (geometric mean) until it is within 20%; at most --max-steps steps.
      let lo = w1.passed ? options.rate : null;
      let hi = w1.passed ? null : options.rate;
      for (let step = 0; step < options.maxSteps; step++) {
        let rate: number;
        if (lo === null && hi !== null) rate = hi / 2;
        else if (hi === null && lo !== null) rate = lo * 1.5;
        else if (lo !== null && hi !== null && hi / lo > 1.2) rate = Math.sqrt(lo * hi);
        else break;
        await settle(server);
        const point = await runStep([server], generators, {
          ...w1Shape,
          ratePerClient: rate,
          durationS: options.stepDurationS,
          persistSampleEvery: 0,
        });
        log(`${name}: step ${step + 1} ${describeStep(point)}`);
        result.curve.push(point);
        if (point.passed) lo = rate;
        else hi = rate;
      }
      // The fixed cost of a send: CPU per delivery at a low rate, where little is shared between
      // sends (batches, wakeups), measured at the same rate for every server.
      if (options.fixedRate > 0 && fixedCostStep(result.curve, options.fixedRate) === null) {
        await settle(server);
        const point = await runStep([server], generators, {
          ...w1Shape,
          ratePerClient: options.fixedRate,
          durationS: options.stepDurationS,
          persistSampleEvery: 0,
        });
        log(`${name}: fixed-cost step ${describeStep(point)}`);
        result.curve.push(point);
      }
      result.curve.sort((a, b) => a.offeredDeliveriesPerS - b.offeredDeliveriesPerS);
    }
    const passing = result.curve.filter((point) => point.passed);
    result.saturationDeliveriesPerS =
      passing.length > 0 ? Math.max(...passing.map((point) => point.deliveriesPerS)) : null;
  } finally {
    await stopGenerators(generators);
    await server.stop(15_000);
  }
}

async function benchCapacity(name: ServerName): Promise<CapacityResult> {
  const adapter = await loadAdapter(name);
  const server = await startServer(name);
  let generators: Child[] = [];
  try {
    log(`${name}: preparing ${options.capacity} idle subscribers`);
    const specs = await adapter.prepare({
      url: server.url,
      count: options.capacity,
      groupSize: options.groupSize,
      jwtSecret,
      server,
    });
    await server.call('gc');
    await sleep(options.quick ? 200 : 1000);
    const heapBefore = (await server.call<{ heapUsed: number }>('gc')).heapUsed;
    const before = readProc(server.pid).rssBytes;
    const heapProfiling = name === 'parley' && options.heapProf;
    if (heapProfiling) await server.call('startHeapSampling');
    const started = performance.now();
    const gen = await startGenerators([server], name, specs, 1, 180_000);
    generators = gen.generators;
    const connectSeconds = (performance.now() - started) / 1000;
    const connected = gen.connected.reduce((total, part) => total + part.connected, 0);
    const failed = gen.connected.reduce((total, part) => total + part.failed, 0);
    await sleep(options.quick ? 500 : 3000);
    await server.call('gc');
    await sleep(500);
    const heapAfter = (await server.call<{ heapUsed: number }>('gc')).heapUsed;
    const after = readProc(server.pid).rssBytes;
    if (heapProfiling) {
      const file = new URL(`parley-subscribers-${runId}.heapprofile`, tmpDir).pathname;
      await server.call('stopHeapSampling', { file });
      log(
        `parley: live allocations of the idle subscribers written to ${file} (npx tsx bench/profile.ts ${file})`,
      );
    }
    const capacity: CapacityResult = {
      target: options.capacity,
      connected,
      failed,
      firstError: gen.connected.find((part) => part.firstError)?.firstError ?? null,
      connectSeconds,
      rssBeforeMB: before / 2 ** 20,
      rssAfterMB: after / 2 ** 20,
      bytesPerConnection: connected > 0 ? (after - before) / connected : 0,
      heapBytesPerConnection: connected > 0 ? (heapAfter - heapBefore) / connected : 0,
    };
    log(
      `${name}: ${connected} idle subscribers (${failed} failed) in ${connectSeconds.toFixed(1)} s, ` +
        `RSS ${capacity.rssBeforeMB.toFixed(0)} → ${capacity.rssAfterMB.toFixed(0)} MB, ` +
        `${(capacity.bytesPerConnection / 1024).toFixed(1)} KB per connection ` +
        `(live JavaScript heap ${((capacity.heapBytesPerConnection ?? 0) / 1024).toFixed(1)} KB)`,
    );
    return capacity;
  } finally {
    await stopGenerators(generators);
    await server.stop(15_000);
  }
}

async function benchBacklog(): Promise<BacklogResult> {
  const { fillBacklog } = await import('./clients/parley.js');
  const sql = postgres(parleyDatabaseUrl, { max: 1, onnotice: () => undefined });
  const count = async () =>
    Number((await sql<{ n: string }[]>`select count(*)::text as n from messages`)[0]?.n ?? 0);
  let worker: ServerProcess | null = null;
  try {
    // Sends go through the normal path with no worker running, so the stream holds the backlog.
    const server = await startServer('parley', { worker: false });
    let fillSeconds = 0;
    try {
      const filled = performance.now();
      log(`parley: appending a backlog of ${options.backlog} messages with the worker stopped`);
      await fillBacklog(server, options.backlog);
      fillSeconds = (performance.now() - filled) / 1000;
    } finally {
      await server.stop(15_000);
    }
    const before = await count();
    const started = performance.now();
    worker = await startServer('parley', { worker: true, serve: false, profile: options.cpuProf });
    let firstSeen: { at: number; rows: number } | null = null;
    let persisted = 0;
    let lag: { lag: number; pending: number } | null = null;
    const deadline = started + 300_000;
    // Progress comes from the worker's own count: polling count(*) on a growing table would
    // take PostgreSQL time from the drain it measures. The table is counted once, at the end.
    // Done when the rows are in and the group has nothing undelivered or unacknowledged.
    while (performance.now() < deadline) {
      await sleep(50);
      persisted = await worker.call<number>('persisted');
      if (!firstSeen && persisted > 0) firstSeen = { at: performance.now(), rows: persisted };
      if (persisted < options.backlog) continue;
      lag = await worker.call<{ lag: number; pending: number } | null>('groupLag');
      if (lag && lag.lag === 0 && lag.pending === 0) break;
    }
    const finished = performance.now();
    const written = (await count()) - before;
    const steady = firstSeen ? (persisted - firstSeen.rows) / ((finished - firstSeen.at) / 1000) : 0;
    const result: BacklogResult = {
      messages: options.backlog,
      fillSeconds,
      drainSeconds: (finished - started) / 1000,
      rowsPerS: Number.isFinite(steady) ? steady : 0,
      rowsPerSFromStart: written / ((finished - started) / 1000),
      rowsWritten: written,
      groupLagAfter: lag?.lag ?? null,
      pendingAfter: lag?.pending ?? null,
    };
    log(
      `parley: backlog of ${options.backlog} drained in ${result.drainSeconds.toFixed(1)} s ` +
        `(${Math.round(result.rowsPerS)} rows/s steady, ${Math.round(result.rowsPerSFromStart)} from worker start), ` +
        `${written} rows, group lag ${result.groupLagAfter}, pending ${result.pendingAfter}`,
    );
    return result;
  } finally {
    await worker?.stop(15_000);
    await sql.end({ timeout: 1 });
  }
}

async function cleanup(): Promise<void> {
  try {
    if (redis.status === 'wait') await redis.connect();
    await deleteKeys(redis, `bench:${runId}:*`);
  } finally {
    redis.disconnect();
  }
  if (databaseCreated) {
    const admin = postgres(options.databaseUrl, { max: 1, onnotice: () => undefined });
    try {
      await admin.unsafe(`drop database if exists "${databaseName}" with (force)`);
    } finally {
      await admin.end();
    }
  }
}

const startedAt = new Date();
const results: BenchResults = {
  startedAt: startedAt.toISOString(),
  finishedAt: '',
  command: ['npm run bench', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' '),
  machine: {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: os.release(),
  },
  workload: {
    clients: options.clients,
    groupSize: options.groupSize,
    ratePerClient: options.rate,
    durationS: options.durationS,
    messageSize: options.messageSize,
    transport: options.transport,
    generators: options.generators,
    fixedRatePerClient: options.saturation ? options.fixedRate : 0,
  },
  servers: options.servers.map((server) => ({
    server,
    error: null,
    w1: null,
    machineBusyBeforePercent: null,
    curve: [],
    saturationDeliveriesPerS: null,
    capacity: null,
    backlog: null,
    bigRoom: null,
  })),
  groups: null,
  instances: null,
  partitions: null,
};

const phaseContext: PhaseContext = {
  options,
  jwtSecret,
  redis,
  log,
  keyPrefix: prefixOf,
  loadAdapter,
  startServer,
  startGenerators,
  stopGenerators,
  runStep,
  settle,
  waitForQuiet,
  describeStep,
};
const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

let exitCode = 0;
try {
  for (const result of options.phases.has('load') ? results.servers : []) {
    try {
      await benchLoad(result.server, result);
    } catch (error) {
      result.error = error instanceof Error ? error.message : String(error);
      log(`${result.server}: load run failed: ${result.error}`);
      exitCode = 1;
    }
  }
  const parley = results.servers.find((result) => result.server === 'parley');
  if (parley && options.phases.has('backlog') && options.backlog > 0) {
    try {
      parley.backlog = await benchBacklog();
    } catch (error) {
      parley.error ??= `backlog: ${error instanceof Error ? error.message : String(error)}`;
      log(`parley: backlog run failed: ${String(error)}`);
      exitCode = 1;
    }
  }
  if (options.phases.has('capacity') && options.capacity > 0) {
    for (const result of results.servers) {
      try {
        result.capacity = await benchCapacity(result.server);
      } catch (error) {
        result.error ??= `capacity: ${error instanceof Error ? error.message : String(error)}`;
        log(`${result.server}: capacity run failed: ${String(error)}`);
        exitCode = 1;
      }
    }
  }
  // A size that fails is a row of the results, not a failed phase.
  if (parley && options.phases.has('groups') && options.groups.length > 0) {
    try {
      results.groups = await benchGroups(phaseContext);
    } catch (error) {
      parley.error ??= `groups: ${message(error)}`;
      log(`parley: group-size run failed: ${message(error)}`);
      exitCode = 1;
    }
  }
  if (options.phases.has('big-room') && options.bigRoom > 0) {
    for (const result of results.servers) {
      try {
        result.bigRoom = await benchBigRoom(phaseContext, result.server);
      } catch (error) {
        result.error ??= `big room: ${message(error)}`;
        log(`${result.server}: big-room run failed: ${message(error)}`);
        exitCode = 1;
      }
    }
  }
  if (parley && options.phases.has('partitions') && options.partitions > 0) {
    try {
      results.partitions = await benchPartitions(phaseContext);
    } catch (error) {
      parley.error ??= `partitions: ${message(error)}`;
      log(`parley: partitions run failed: ${message(error)}`);
      exitCode = 1;
    }
  }
  if (parley && options.phases.has('instances') && options.instances > 0) {
    try {
      results.instances = await benchInstances(phaseContext);
    } catch (error) {
      parley.error ??= `instances: ${message(error)}`;
      log(`parley: several-instances run failed: ${message(error)}`);
      exitCode = 1;
    }
  }
} finally {
  await cleanup().catch((error: unknown) => log(`cleanup failed: ${String(error)}`));
}

results.finishedAt = new Date().toISOString();
const json = `${JSON.stringify(results, null, 2)}\n`;
writeFileSync(new URL(`run-${runId}.json`, tmpDir), json);
// docs/PERFORMANCE.md reports the standard run (all defaults); its figures are written there by
// this code only. The big room is not part of it, and adding it (--big-room N) keeps a run standard.
const standard =
  !options.quick &&
  options.servers.length === 3 &&
  options.clients === 1000 &&
  options.groupSize === 10 &&
  options.rate === 2 &&
  options.durationS === 20 &&
  options.transport === 'ws' &&
  options.saturation &&
  options.backlog === 200_000 &&
  options.capacity === 10_000 &&
  options.phases.size === PHASES.length &&
  options.groups.join(',') === DEFAULT_GROUPS &&
  options.instances === 3 &&
  options.instancesRate === 0.5 &&
  options.instancesDurationS === 15 &&
  options.partitions === 6;
// Only the standard run replaces the figures the documentation points at.
const outName = options.quick ? 'quick' : standard ? 'latest' : 'custom';
writeFileSync(new URL(`${outName}.json`, resultsDir), json);
writeFileSync(new URL(`${outName}.md`, resultsDir), renderMarkdown(results, `${outName}.svg`));
writeFileSync(new URL(`${outName}.svg`, resultsDir), renderChart(results));
const docs = new URL('../docs/PERFORMANCE.md', import.meta.url);
if (standard && existsSync(docs)) {
  writeFileSync(docs, replaceDocsSection(readFileSync(docs, 'utf8'), results));
  console.log('updated: docs/PERFORMANCE.md');
}
console.log(`\n${renderTable(results)}`);
console.log(`\nwritten: bench/results/${outName}.json, ${outName}.md, ${outName}.svg`);
process.exit(exitCode);
