/**
 * What a phase gets from the runner (bench/run.ts): the run's options and identity, and the
 * runner's ways to start servers and generators and to measure a window of load.
 */
import type { Redis } from 'ioredis';
import type { ClientAdapter, ClientSpec } from '../clients/types.js';
import type { ConnectResult, ServerName } from '../generator/worker.js';
import type { Child } from '../lib/children.js';
import type { Options } from '../options.js';
import type { StepResult } from '../results-types.js';

export interface ServerProcess extends Child<{ port: number }> {
  url: string;
}

export interface StartOptions {
  /** Parley: run the persistence worker (default on). */
  worker?: boolean;
  /** Parley: serve HTTP and WebSocket (default on). */
  serve?: boolean;
  profile?: boolean;
  /** Redis key prefix (default: the run's, per server); several processes given one share state. */
  prefix?: string;
  /** Environment of the server process beside the runner's (another Redis, say). */
  env?: Record<string, string>;
}

export interface StepLoad {
  /** Clients that send. */
  senders: number;
  /** Members per conversation: each send is expected by every other member. */
  groupSize: number;
  ratePerClient: number;
  durationS: number;
  /** Parley: every n-th send is followed into PostgreSQL (0 = none). */
  persistSampleEvery: number;
  /** Only the clients at positions below this in their group send (default: all). */
  sendersPerGroup?: number;
  /** How long to wait for outstanding acks and deliveries after the last send (default 5 s). */
  drainMs?: number;
  /** The groups' members are spread over the generators (`startGenerators`' `spread`). */
  spread?: boolean;
}

export interface PhaseContext {
  options: Options;
  /** Secret the Socket.IO server verifies handshake tokens with. */
  jwtSecret: string;
  /** The runner's own Redis connection (the one every server uses), for figures and clean-up. */
  redis: Redis;
  log(line: string): void;
  /** A Redis key prefix of this run for `scope`; `deleteKeys(redis, prefix + '*')` removes it all. */
  keyPrefix(scope: string): string;
  loadAdapter(server: ServerName): Promise<ClientAdapter>;
  startServer(server: ServerName, start?: StartOptions): Promise<ServerProcess>;
  /**
   * Generator processes holding `specs` (whole groups each, or with `spread` each group's
   * members dealt over them), connected; client `index` connects to
   * `servers[index % servers.length]`.
   */
  startGenerators(
    servers: ServerProcess[],
    name: ServerName,
    specs: ClientSpec[],
    count: number,
    timeLimitMs: number,
    groupSize: number,
    spread?: boolean,
  ): Promise<{ generators: Child[]; connected: ConnectResult[] }>;
  stopGenerators(generators: Child[]): Promise<void>;
  runStep(servers: ServerProcess[], generators: Child[], load: StepLoad): Promise<StepResult>;
  /** Waits (bounded) until `server` is nearly idle. */
  settle(server: ServerProcess): Promise<void>;
  /** Waits (bounded) until the machine is nearly idle; returns its busy CPU (% of one core). */
  waitForQuiet(name: string): Promise<number>;
  /** One line on a step, as the runner logs W1. */
  describeStep(step: StepResult): string;
}
