import type { LatencySummary } from './lib/histogram.js';
import type { ServerName } from './generator/worker.js';

export interface StepResult {
  ratePerClient: number;
  offeredSendsPerS: number;
  offeredDeliveriesPerS: number;
  sendsPerS: number;
  deliveriesPerS: number;
  attempted: number;
  acked: number;
  errors: number;
  firstError: string | null;
  expected: number;
  received: number;
  loss: number;
  duplicates: number;
  /** Deliveries of messages from an earlier step that arrived during this one. */
  strays: number;
  latencyMs: LatencySummary;
  serverCpuPercent: number;
  serverRssPeakMB: number;
  /** Share of the window the server's event loop was busy; near 100% means it was the bottleneck. */
  serverLoopBusyPercent: number;
  /**
   * Server CPU time per delivery, in microseconds: what a delivery costs, much less sensitive to
   * other load on the machine than latency is.
   */
  serverCpuUsPerDelivery: number | null;
  generatorCpuPercent: number;
  /** Whole machine (both cores = 200%): server, generator, Redis, PostgreSQL and anything else. */
  machineCpuPercent: number;
  /** One-minute load average at the end of the step. */
  loadAverage: number;
  scheduleLagMaxMs: number;
  generatorLoopDelayP99Ms: number;
  generatorLoopDelayMaxMs: number;
  persistLagMs: LatencySummary | null;
  persistUnseen: number;
  /** p99 <= 50 ms, nothing lost, repeated or refused. */
  passed: boolean;
}

export interface CapacityResult {
  target: number;
  connected: number;
  failed: number;
  firstError: string | null;
  connectSeconds: number;
  rssBeforeMB: number;
  rssAfterMB: number;
  bytesPerConnection: number;
  /**
   * Growth of the server's JavaScript heap in use, after full collections, per connection: what
   * the connections keep alive, without the heap's free space or native memory. Absent from
   * results written before it was measured.
   */
  heapBytesPerConnection?: number;
}

export interface BacklogResult {
  messages: number;
  fillSeconds: number;
  drainSeconds: number;
  /** Rows per second from the first rows seen to the last. */
  rowsPerS: number;
  /** Rows per second from the worker process start (connecting included) to the last row. */
  rowsPerSFromStart: number;
  rowsWritten: number;
  groupLagAfter: number | null;
  pendingAfter: number | null;
}

/** One group size of the group-size phase (Parley only). */
export interface GroupRow {
  members: number;
  /** Members the group reached, as the server has it after a failed call. */
  built: number;
  /** Seconds for `conversation.createGroup` and every `conversation.addMembers` call (until one failed). */
  buildSeconds: number | null;
  /**
   * The call that failed, or why building stopped. A failed call may have added its members
   * all the same; the sends are measured whenever the group reached its size.
   */
  buildError: string | null;
  /** Growth of Redis's `used_memory` from before `createGroup` to after the last call, in bytes. */
  buildRedisBytes: number | null;
  sends: number;
  sendErrors: number;
  /** Duration of each `message.send` over HTTP, from the owner, one after the other. */
  sendMs: LatencySummary | null;
  /**
   * Redis CPU per send in µs: the growth of the `usec` of every command in `INFO commandstats`
   * over the sends, less what Redis spent at its idle rate measured just before, per send.
   */
  redisUsPerSend: number | null;
  /** The same without subtracting the idle rate. */
  redisUsPerSendRaw: number | null;
  /** Redis's CPU just before the sends (other clients of this Redis, Parley's idle polling), µs per second. */
  redisIdleUsPerS: number | null;
  /** Growth of `used_memory` per message right after the last send, the worker still writing. */
  redisBytesPerMessageAtOnce: number | null;
  /** Growth of `used_memory` per message once the worker wrote every message and trimmed the stream. */
  redisBytesPerMessage: number | null;
  /** Growth of this G's own keys (`MEMORY USAGE`) per message at the same moment: what other clients of Redis do not move. */
  keyBytesPerMessage: number | null;
  /** What else failed (sends, the worker, setup); the figures measured before it are kept. */
  error: string | null;
}

export interface GroupScalingResult {
  /** Messages sent at each size. */
  sends: number;
  rows: GroupRow[];
}

/** One room of `subscribers`, one client sending `ratePerS` messages a second into it. */
export interface BigRoomResult {
  subscribers: number;
  /** Generator processes the room's members were dealt over (absent: one, before there was a choice). */
  generators?: number;
  connected: number;
  /** Seconds from the generator's start to the last subscriber connected. */
  connectSeconds: number;
  ratePerS: number;
  durationS: number;
  step: StepResult;
}

export interface InstanceFigures {
  /** 1-based. */
  instance: number;
  /** Clients connected to this instance. */
  clients: number;
  /** `parley_pubsub_received_total` growth over the run; null when the instance does not export it. */
  pubsubReceived: number | null;
  /** `parley_events_fanned_out_total` growth over the run (one per receiving subscription). */
  fannedOut: number;
  serverCpuPercent: number;
}

/** Several Parley processes on one Redis and one PostgreSQL, clients round-robin over them. */
export interface InstancesResult {
  instances: number;
  clients: number;
  groupSize: number;
  ratePerClient: number;
  durationS: number;
  /** Totals over every instance: CPU and RSS summed, event-loop busy the highest. */
  step: StepResult;
  perInstance: InstanceFigures[];
}

export interface ServerResult {
  server: ServerName;
  error: string | null;
  w1: StepResult | null;
  /** Busy CPU of the machine (% of one core) just before the measured runs, clients connected and idle. */
  machineBusyBeforePercent: number | null;
  /** W1 and every saturation step, in order of offered load. */
  curve: StepResult[];
  /** Highest deliveries/s of a passing step. */
  saturationDeliveriesPerS: number | null;
  capacity: CapacityResult | null;
  backlog: BacklogResult | null;
  /** Absent from results written before the big-room phase existed. */
  bigRoom?: BigRoomResult | null;
}

export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: { cpus: number; cpuModel: string; memoryGB: number; node: string; kernel: string };
  workload: {
    clients: number;
    groupSize: number;
    ratePerClient: number;
    durationS: number;
    messageSize: number;
    transport: string;
    generators: number;
    /** Sends per client per second of the fixed-cost step (0: none); absent from earlier results. */
    fixedRatePerClient?: number;
  };
  servers: ServerResult[];
  /** Parley's group-size phase; absent from results written before it existed. */
  groups?: GroupScalingResult | null;
  /** Parley's several-instances phase; absent from results written before it existed. */
  instances?: InstancesResult | null;
  /** Parley's partitions phase; absent from results written before it existed. */
  partitions?: PartitionsResult | null;
}

/** One server process on a Redis Cluster with `partitions` partitions, pairs sending at once. */
export interface PartitionRun {
  partitions: number;
  sends: number;
  errors: number;
  sendsPerS: number;
  /** Redis CPU (`INFO commandstats`) over every master, per send. */
  redisUsPerSend: number | null;
  perMaster: { master: number; redisUs: number; share: number; scriptCalls: number }[];
  /** The busiest master's share of the Redis CPU. */
  busiestShare: number | null;
}

export interface PartitionsResult {
  masters: number;
  pairs: number;
  sendsPerPair: number;
  runs: PartitionRun[];
}
