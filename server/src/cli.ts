import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  type Config,
  ConfigError,
  EnvSchema,
  IN_PROCESS_WORKER_ONLY,
  loadConfig,
  readEnvFile,
} from './config/index.js';
import { DataDirLocked } from './db/lock.js';
import { createLogger } from './logger.js';

// The server's modules (database engines, tRPC, ws) load only for the commands that use them,
// so `--help` and configuration errors answer at once.

const HELP = `Usage: parley <command> [options]

Commands:
  start [--no-worker]   Serve the API (HTTP /trpc, WebSocket /ws, /metrics, /healthz, /readyz)
                        and run the persistence worker
  worker                Run only the persistence worker
  migrate               Apply pending database migrations and exit
  dead-letters [--count N] [--partition P] [--requeue [--id ID]...]
                        Print the entries the worker set aside (oldest first, at most N of
                        each partition, 100 by default), one JSON object a line; with
                        --requeue, move them back into the queue to be written again (once
                        what refused them is fixed); needs REDIS_URL

Options:
  --no-worker           With start: do not run the persistence worker in this process
  --count N             With dead-letters: how many entries to print (or move) at most
  --requeue             With dead-letters: move the entries back into the queue
  --id ID               With dead-letters --requeue: move only the dead letter with this id
                        (as printed; repeat for several) instead of the oldest N
  --partition P         With dead-letters: only partition P (as printed; 0 to
                        REDIS_PARTITIONS - 1), which --id needs when there are several
  -c, --config PATH     Read settings from a JSON file whose keys are the environment
                        variable names (PORT, DATABASE_URL, ...); set variables and
                        .env win over it
  -h, --help            Show this help

Configuration comes from environment variables (see .env.example and docs/OPERATIONS.md) and
from a .env file in the working directory, if there is one; set variables win over .env.
SIGTERM or SIGINT drains connections and stops the worker after its current batch.`;

/** Read from the working directory when present, as `.env.example` suggests. */
const ENV_FILE = '.env';
const EX_USAGE = 64;
/** Another process holds DATA_DIR: starting again once it has stopped may work. */
const EX_TEMPFAIL = 75;
const EX_CONFIG = 78;
const DEAD_LETTERS_SHOWN = 100;
const MAX_DEAD_LETTERS_SHOWN = 100_000;
/** A dead letter's id: a Redis stream id, two unsigned 64-bit numbers. */
function isDeadLetterId(id: string): boolean {
  const parts = /^(\d{1,20})-(\d{1,20})$/.exec(id);
  return parts !== null && parts.slice(1).every((part) => BigInt(part) < 2n ** 64n);
}
const COMMANDS = ['start', 'worker', 'migrate', 'dead-letters'] as const;
type Command = (typeof COMMANDS)[number];

function isCommand(name: string): name is Command {
  return (COMMANDS as readonly string[]).includes(name);
}
/** How long a graceful stop may take before the process exits anyway. */
const SHUTDOWN_DEADLINE_MS = 30_000;
/**
 * A signal this long after the first forces the exit. One sooner is the same request again:
 * Ctrl-C in a terminal signals npm and the server alike (one process group), and npm forwards
 * its copy, so a single keypress under `npm start` arrives twice within milliseconds.
 */
const REPEATED_SIGNAL_MS = 1_000;

class UsageError extends Error {}

/**
 * Reads a `--config` file: a JSON object keyed by environment variable names. Numbers and
 * booleans are accepted and turned into the strings the environment would hold.
 */
function readConfigFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`Cannot read config file ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`Config file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`Config file ${path} must hold a JSON object of settings`);
  }
  const known = new Set(Object.keys(EnvSchema.shape));
  const values: Record<string, string> = {};
  const problems: string[] = [];
  for (const [key, value] of Object.entries(parsed)) {
    if (!known.has(key)) {
      problems.push(`  ${key}: unknown setting (expected one of ${[...known].join(', ')})`);
    } else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      values[key] = String(value);
    } else if (value !== null) {
      problems.push(`  ${key}: must be a string, number or boolean`);
    }
  }
  if (problems.length > 0) {
    throw new ConfigError(`Invalid config file ${path}:\n${problems.join('\n')}`);
  }
  return values;
}

function parseCommand(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        'no-worker': { type: 'boolean' },
        count: { type: 'string' },
        requeue: { type: 'boolean' },
        id: { type: 'string', multiple: true },
        partition: { type: 'string' },
        config: { type: 'string', short: 'c' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const command = positionals[0] ?? 'start';
  if (positionals.length > 1) throw new UsageError(`Unexpected argument "${positionals[1]}".`);
  if (values['no-worker'] && command !== 'start') {
    throw new UsageError('--no-worker only applies to "start".');
  }
  if (values.count !== undefined && command !== 'dead-letters') {
    throw new UsageError('--count only applies to "dead-letters".');
  }
  if (values.requeue && command !== 'dead-letters') {
    throw new UsageError('--requeue only applies to "dead-letters".');
  }
  if (values.partition !== undefined && command !== 'dead-letters') {
    throw new UsageError('--partition only applies to "dead-letters".');
  }
  const ids = values.id ?? [];
  if (ids.length > 0 && !values.requeue)
    throw new UsageError('--id only applies to "dead-letters --requeue".');
  if (ids.length > 0 && values.count !== undefined) {
    throw new UsageError('--id and --count cannot go together: --id names the dead letters to move.');
  }
  const malformed = ids.find((id) => !isDeadLetterId(id));
  if (malformed !== undefined) {
    throw new UsageError(`--id "${malformed}" is not a dead letter's id (as printed, e.g. 1733500000000-0).`);
  }
  const count = values.count === undefined ? DEAD_LETTERS_SHOWN : Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > MAX_DEAD_LETTERS_SHOWN) {
    throw new UsageError(`--count must be a whole number from 1 to ${MAX_DEAD_LETTERS_SHOWN}.`);
  }
  const partition = values.partition === undefined ? null : Number(values.partition);
  if (partition !== null && (!/^\d+$/.test(values.partition ?? '') || !Number.isSafeInteger(partition))) {
    throw new UsageError('--partition must be a whole number from 0 (as printed).');
  }
  return {
    command,
    help: values.help === true || command === 'help',
    noWorker: values['no-worker'] === true,
    deadLetters: { count, requeue: values.requeue === true, ids, partition },
    configPath: values.config,
  };
}

async function serve(config: Config, mode: 'start' | 'worker', noWorker: boolean): Promise<number> {
  const log = createLogger({ level: config.logLevel, pretty: config.logFormat === 'pretty' });
  const { createApp } = await import('./app.js');
  const { startOpsHttp } = await import('./http/ops.js');
  const runWorker = mode === 'worker' || (!noWorker && config.runWorker);
  const app = await createApp({ ...config, runWorker }, { log, serve: mode === 'start' });
  let ops: { port: number; close(): Promise<void> } | null = null;
  if (mode === 'start') {
    log.info({ url: app.url, worker: runWorker }, `Parley listening on ${app.url}`);
  } else {
    try {
      ops = await startOpsHttp(app.services, { port: config.port, host: config.host });
    } catch (error) {
      await app.close();
      throw error;
    }
    log.info(
      { port: ops.port },
      `persistence worker running; /healthz, /readyz and /metrics on port ${ops.port}`,
    );
  }
  // A second signal, or a drain that hangs, must not keep the process alive forever.
  const force = (reason: string) => {
    log.warn(`${reason}; exiting`);
    process.exit(1);
  };
  let stopping: number | null = null;
  const signal = await new Promise<string>((resolve) => {
    const onSignal = (name: NodeJS.Signals) => {
      if (stopping === null) {
        stopping = Date.now();
        resolve(name);
      } else if (Date.now() - stopping >= REPEATED_SIGNAL_MS) {
        force(`${name} while shutting down`);
      }
    };
    // Kept for the whole shutdown, so a signal never meets the default action (an exit
    // without draining).
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  log.info({ signal }, 'shutting down');
  const deadline = setTimeout(() => force('shutdown did not finish in time'), SHUTDOWN_DEADLINE_MS);
  deadline.unref();
  await ops?.close();
  await app.close();
  clearTimeout(deadline);
  log.info('stopped');
  log.flush();
  return 0;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${HELP}`);
    return EX_USAGE;
  }
  const { command, help, noWorker, deadLetters, configPath } = parsed;
  if (help) {
    console.log(HELP);
    return 0;
  }
  if (!isCommand(command)) {
    console.error(`Unknown command "${command}".\n\n${HELP}`);
    return EX_USAGE;
  }
  let config: Config;
  try {
    // The environment itself is read by the config module and wins; `.env` in the working
    // directory counts as part of it, so it wins over the --config file, which fills what is left.
    const fileValues = {
      ...(configPath ? readConfigFile(configPath) : {}),
      ...readEnvFile(ENV_FILE),
    };
    config = loadConfig(undefined, {}, fileValues);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return EX_CONFIG;
    }
    throw error;
  }
  if (!config.redisUrl && (command === 'worker' || noWorker)) {
    const what = command === 'worker' ? 'parley worker' : '--no-worker';
    console.error(`Invalid configuration:\n  ${what}: ${IN_PROCESS_WORKER_ONLY}`);
    return EX_CONFIG;
  }
  if (!config.redisUrl && command === 'dead-letters') {
    console.error(
      'Invalid configuration:\n  parley dead-letters: needs REDIS_URL (the in-process broker keeps its dead letters in the process that runs it)',
    );
    return EX_CONFIG;
  }
  const partitions = config.eventPartitions;
  if (deadLetters.partition !== null && deadLetters.partition >= partitions) {
    console.error(
      `--partition ${deadLetters.partition}: this deployment has ${partitions === 1 ? 'one partition, 0' : `${partitions} partitions, 0 to ${partitions - 1}`} (REDIS_PARTITIONS).\n\n${HELP}`,
    );
    return EX_USAGE;
  }
  if (deadLetters.ids.length > 0 && deadLetters.partition === null && partitions > 1) {
    console.error(
      `--id needs --partition: this deployment has ${partitions} partitions (REDIS_PARTITIONS), each numbering its dead letters on its own.\n\n${HELP}`,
    );
    return EX_USAGE;
  }
  try {
    return await run(config, command, noWorker, deadLetters);
  } catch (error) {
    if (error instanceof DataDirLocked) {
      console.error(error.message);
      return EX_TEMPFAIL;
    }
    throw error;
  }
}

async function run(config: Config, command: Command, noWorker: boolean, deadLetters: DeadLetterOptions) {
  if (command === 'dead-letters') return handleDeadLetters(config, deadLetters);
  if (command === 'migrate') {
    const log = createLogger({ level: config.logLevel, pretty: config.logFormat === 'pretty' });
    const { openDatabase } = await import('./db/index.js');
    const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
    try {
      await database.migrate();
    } finally {
      await database.close();
    }
    log.info({ database: database.engine }, 'migrations applied');
    log.flush();
    return 0;
  }
  return serve(config, command, noWorker);
}

interface DeadLetterOptions {
  count: number;
  requeue: boolean;
  /** With `requeue`: the dead letters to move, instead of the oldest `count`. */
  ids: string[];
  /** Only this partition's dead letters (null: every partition's). */
  partition: number | null;
}

/**
 * Prints the worker's dead letters, one JSON object a line: the partition whose queue it was in
 * (`partition`), its id among that partition's dead letters (`id`), the queue entry it was
 * (`entry`), why it was set aside (`reason`), and the entry's own fields (`op`, the change; `m`,
 * its message as queued). With `requeue`, moves them back into the queue instead (the oldest
 * `count`, or those of `ids`), printing for each its `partition`, its `id`, the `entry` it was
 * and the entry it is now (`requeued`).
 */
async function handleDeadLetters(
  config: Config,
  { count, requeue, ids, partition: only }: DeadLetterOptions,
): Promise<number> {
  const { openBroker } = await import('./broker/index.js');
  const broker = await openBroker({
    url: config.redisUrl,
    cluster: config.redisCluster,
    prefix: config.redisPrefix,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    eventPartitions: config.eventPartitions,
  });
  try {
    for (const [partition, queue] of broker.queues.entries()) {
      if (only !== null && partition !== only) continue;
      if (requeue) {
        const selections = ids.length > 0 ? ids.map((id) => ({ id })) : [{ count }];
        for (const which of selections) {
          for (const moved of await queue.requeueDeadLetters(which)) {
            console.log(JSON.stringify({ partition, ...moved }));
          }
        }
        continue;
      }
      for (const { id, fields } of await queue.deadLetters(count)) {
        console.log(JSON.stringify({ partition, id, ...fields }));
      }
    }
  } finally {
    await broker.close();
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
