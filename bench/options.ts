import { parseArgs } from 'node:util';
import type { Transport } from './clients/types.js';
import type { ServerName } from './generator/worker.js';

export const HELP = `Usage: npm run bench -- [options]

Runs Parley, Socket.IO (+ redis adapter) and a bare ws + Redis Pub/Sub server through the same
workload, one after the other, each in its own process, and writes bench/results/.

Workload (flag, or environment variable):
  --clients N            BENCH_CLIENTS        connected clients (default 1000)
  --group-size N         BENCH_GROUP_SIZE     members per conversation (default 10)
  --rate R               BENCH_RATE           sends per client per second (default 2)
  --duration S           BENCH_DURATION       seconds of load for the standard run (default 20)
  --message-size B       BENCH_MESSAGE_SIZE   characters per message (default 100)
  --transport ws|http    BENCH_TRANSPORT      how sends travel (default ws)
  --servers a,b,c        BENCH_SERVERS        parley,socketio,raw (default all three)
  --generators N         BENCH_GENERATORS     load-generator processes (default 1)

Phases:
  --no-saturation        skip the search for the highest rate with p99 <= 50 ms and no loss
  --step-duration S      seconds per saturation step (default 8)
  --max-steps N          saturation steps at most (default 8)
  --fixed-rate R         with the saturation search: a step at R sends/client/s unless the search
                         ran one (default 0.5, 500 sends/s with 1,000 clients; 0 = none), for the
                         fixed cost of a send: server CPU per delivery at a low rate
  --backlog N            Parley: messages in the backlog the worker drains (default 200000, 0 = skip)
  --capacity N           idle authenticated subscribers per server (default 10000, 0 = skip)
  --quick                smoke run: 100 clients, 3 s, no saturation, backlog 2000, capacity 300,
                         groups 10, instances for 3 s
  --quiet-wait S         wait up to S seconds for the machine to be idle before each server (default 30)
  --cpu-prof             CPU profiles of the Parley server (W1 run, big room) and worker (backlog) in bench/results/tmp/
  --heap-prof            sampled live allocations of Parley's idle subscribers in bench/results/tmp/
  --groups G,G,...       Parley: for each G, a group of G members built with conversation.createGroup
                         and addMembers (500 per call), then 200 sequential message.send over HTTP:
                         build time, Redis growth, send p50/p99, Redis CPU and memory per message;
                         a size that fails is a row saying what failed
                         (default 10,100,1000,10000; quick 10; 0 = skip)
  --big-room N           one room of N connected subscribers per server, one sender at
                         --big-room-rate messages/s: delivery p50/p99, server CPU per delivery
                         (default 0 = skip: not part of the standard run, which it would take past
                         12 minutes on two cores; e.g. --big-room 5000)
  --big-room-rate R      messages per second into the big room (default 10)
  --big-room-duration S  seconds of sending into the big room (default 20; quick 3)
  --big-room-generators N  generator processes the big room's members are dealt over (default 2)
  --instances N          Parley: N server processes on one Redis and PostgreSQL, clients round-robin
                         over them: Pub/Sub events received over events fanned out, per instance
                         (default 3; 0 = skip)
  --instances-rate R     sends per client per second there (default 0.5: three instances share the
                         machine's two cores, and W1's rate is past one instance's saturation)
  --instances-duration S seconds of load there (default 15; quick 3)
  --partitions P         Parley on a three-master Redis Cluster the phase starts (needs redis-server):
                         64 pairs sending 30 messages each over HTTP, with one partition and then
                         with P; Redis CPU and script calls on each master (default 6; 0 = skip)
  --only a,b,...         run only these phases: load (W1 and saturation), backlog, capacity, groups,
                         big-room, instances, partitions

Engines: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres, used to create
and drop a fresh database per run), BENCH_REDIS_URL (default redis://127.0.0.1:6379).
REDIS_PARTITIONS (default 1) splits Parley's sends and events into that many partitions.
PARLEY_WORKER_BATCH_SIZE, PARLEY_WORKER_CONCURRENCY and PARLEY_WORKER_LINGER tune Parley's
persistence worker as they do a deployment's (its defaults otherwise).

Node flags for the child processes, e.g. to profile or trace them: BENCH_SERVER_NODE_FLAGS (every
server process) and BENCH_GENERATOR_NODE_FLAGS (every generator), space-separated, such as
"--cpu-prof --cpu-prof-dir=/tmp/prof" or "--trace-gc".`;

export const PHASES = [
  'load',
  'backlog',
  'capacity',
  'groups',
  'big-room',
  'instances',
  'partitions',
] as const;
export type Phase = (typeof PHASES)[number];

export interface Options {
  clients: number;
  groupSize: number;
  rate: number;
  durationS: number;
  messageSize: number;
  transport: Transport;
  servers: ServerName[];
  generators: number;
  saturation: boolean;
  stepDurationS: number;
  maxSteps: number;
  /** Sends per client per second of the fixed-cost step; 0: none. */
  fixedRate: number;
  backlog: number;
  capacity: number;
  quick: boolean;
  cpuProf: boolean;
  heapProf: boolean;
  /** Group sizes of the group-size phase; empty: skipped. */
  groups: number[];
  /** Subscribers in the big room; 0: skipped. */
  bigRoom: number;
  bigRoomRate: number;
  bigRoomDurationS: number;
  bigRoomGenerators: number;
  /** Parley instances of the several-instances phase; 0: skipped. */
  instances: number;
  instancesRate: number;
  instancesDurationS: number;
  /** Partitions compared with one on a Redis Cluster; 0: skipped. */
  partitions: number;
  /** Phases to run. */
  phases: ReadonlySet<Phase>;
  quietWaitS: number;
  databaseUrl: string;
  redisUrl: string;
}

function positiveInt(
  name: string,
  value: string | undefined,
  fallback: number,
  min = 1,
  max = 1_000_000,
): number {
  if (value === undefined || value === '') return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new Error(`${name} must be a number from ${min} to ${max} (got ${value})`);
  }
  return parsed;
}

export const DEFAULT_GROUPS = '10,100,1000,10000';

/** `10,100,1000`: sizes from 2 to 100,000, in the order given; `0` alone: none. */
function groupSizes(list: string): number[] {
  if (list.trim() === '0') return [];
  return list.split(',').map((item) => {
    const size = positiveInt('--groups', item.trim() || 'none', 0, 2, 100_000);
    if (!Number.isInteger(size)) throw new Error(`--groups: ${item} is not a whole number`);
    return size;
  });
}

function phaseList(only: string | undefined): ReadonlySet<Phase> {
  if (only === undefined) return new Set(PHASES);
  const chosen = only
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  for (const phase of chosen) {
    if (!(PHASES as readonly string[]).includes(phase)) {
      throw new Error(`--only: unknown phase ${phase} (phases: ${PHASES.join(', ')})`);
    }
  }
  return new Set(chosen as Phase[]);
}

export function parseOptions(argv: string[], env: Record<string, string | undefined>): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      clients: { type: 'string' },
      'group-size': { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      'message-size': { type: 'string' },
      transport: { type: 'string' },
      servers: { type: 'string' },
      generators: { type: 'string' },
      'no-saturation': { type: 'boolean' },
      'step-duration': { type: 'string' },
      'max-steps': { type: 'string' },
      'fixed-rate': { type: 'string' },
      backlog: { type: 'string' },
      capacity: { type: 'string' },
      quick: { type: 'boolean' },
      'cpu-prof': { type: 'boolean' },
      'heap-prof': { type: 'boolean' },
      'quiet-wait': { type: 'string' },
      groups: { type: 'string' },
      'big-room': { type: 'string' },
      'big-room-rate': { type: 'string' },
      'big-room-duration': { type: 'string' },
      'big-room-generators': { type: 'string' },
      instances: { type: 'string' },
      partitions: { type: 'string' },
      'instances-rate': { type: 'string' },
      'instances-duration': { type: 'string' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick ?? env.BENCH_QUICK === '1';
  const servers = (values.servers ?? env.BENCH_SERVERS ?? 'parley,socketio,raw')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const server of servers) {
    if (!['parley', 'socketio', 'raw'].includes(server)) throw new Error(`unknown server ${server}`);
  }
  const transport = values.transport ?? env.BENCH_TRANSPORT ?? 'ws';
  if (transport !== 'ws' && transport !== 'http') throw new Error('--transport must be ws or http');
  const groupSize = positiveInt('--group-size', values['group-size'] ?? env.BENCH_GROUP_SIZE, 10, 2, 1000);
  const clients = positiveInt(
    '--clients',
    values.clients ?? env.BENCH_CLIENTS,
    quick ? 100 : 1000,
    groupSize,
    10_000,
  );
  return {
    clients: Math.floor(clients / groupSize) * groupSize,
    groupSize,
    rate: positiveInt('--rate', values.rate ?? env.BENCH_RATE, 2, 0.01, 1000),
    durationS: positiveInt('--duration', values.duration ?? env.BENCH_DURATION, quick ? 3 : 20, 1, 600),
    messageSize: positiveInt(
      '--message-size',
      values['message-size'] ?? env.BENCH_MESSAGE_SIZE,
      100,
      8,
      4000,
    ),
    transport,
    servers: servers as ServerName[],
    generators: positiveInt('--generators', values.generators ?? env.BENCH_GENERATORS, 1, 1, 16),
    saturation: !quick && !values['no-saturation'],
    stepDurationS: positiveInt('--step-duration', values['step-duration'], 8, 1, 120),
    maxSteps: positiveInt('--max-steps', values['max-steps'], 8, 1, 20),
    fixedRate: positiveInt('--fixed-rate', values['fixed-rate'], 0.5, 0, 1000),
    backlog: positiveInt('--backlog', values.backlog, quick ? 2000 : 200_000, 0, 1_000_000),
    capacity: positiveInt('--capacity', values.capacity, quick ? 300 : 10_000, 0, 10_000),
    quick,
    cpuProf: values['cpu-prof'] ?? false,
    heapProf: values['heap-prof'] ?? false,
    groups: groupSizes(values.groups ?? (quick ? '10' : DEFAULT_GROUPS)),
    bigRoom: positiveInt('--big-room', values['big-room'], 0, 0, 20_000),
    bigRoomRate: positiveInt('--big-room-rate', values['big-room-rate'], 10, 0.1, 1000),
    bigRoomDurationS: positiveInt('--big-room-duration', values['big-room-duration'], quick ? 3 : 20, 1, 600),
    bigRoomGenerators: positiveInt('--big-room-generators', values['big-room-generators'], 2, 1, 16),
    instances: positiveInt('--instances', values.instances, 3, 0, 8),
    partitions: positiveInt('--partitions', values.partitions, 6, 0, 32),
    instancesRate: positiveInt('--instances-rate', values['instances-rate'], 0.5, 0.01, 1000),
    instancesDurationS: positiveInt(
      '--instances-duration',
      values['instances-duration'],
      quick ? 3 : 15,
      1,
      600,
    ),
    phases: phaseList(values.only),
    quietWaitS: positiveInt('--quiet-wait', values['quiet-wait'], quick ? 0 : 30, 0, 600),
    databaseUrl: env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    redisUrl: env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
  };
}
