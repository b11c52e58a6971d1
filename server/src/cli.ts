import { parseArgs } from 'node:util';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config/index.js';
import { openDatabase } from './db/index.js';
import { createLogger } from './logger.js';

const HELP = `Usage: parley <command> [options]

Commands:
  start [--no-worker]   Serve the API (HTTP /trpc, WebSocket /ws) and run the persistence worker
  worker                Run only the persistence worker
  migrate               Apply pending database migrations and exit

Options:
  --no-worker           With start: do not run the persistence worker in this process
  -h, --help            Show this help

Configuration comes from environment variables (see .env.example).`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      'no-worker': { type: 'boolean' },
    },
  });
  const command = positionals[0] ?? 'start';
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 78; // EX_CONFIG
    }
    throw error;
  }
  const log = createLogger({ level: config.logLevel });

  switch (command) {
    case 'migrate': {
      const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
      await database.migrate();
      await database.close();
      log.info('migrations applied');
      return 0;
    }
    case 'start':
    case 'worker': {
      const app = await createApp(
        { ...config, runWorker: command === 'worker' || (!values['no-worker'] && config.runWorker) },
        { log, serve: command === 'start' },
      );
      if (command === 'start') log.info({ url: app.url }, `Parley listening on ${app.url}`);
      else log.info('persistence worker running');
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          log.info({ signal }, 'shutting down');
          resolve();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      await app.close();
      return 0;
    }
    default:
      console.error(`Unknown command "${command}".\n\n${HELP}`);
      return 64; // EX_USAGE
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
