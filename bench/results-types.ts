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
  };
  servers: ServerResult[];
}
