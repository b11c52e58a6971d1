import { AuthService } from './auth/service.js';
import { Sessions } from './auth/sessions.js';
import type { Broker } from './broker/types.js';
import type { Config } from './config/index.js';
import type { Database, DatabaseHandle } from './db/index.js';
import { HealthService } from './health.js';
import type { Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { UserService } from './users/service.js';

/** Everything a procedure may call; built once per app by `buildServices`. */
export interface Services {
  config: Config;
  log: Logger;
  db: Database;
  broker: Broker;
  sessions: Sessions;
  auth: AuthService;
  users: UserService;
  health: HealthService;
  metrics: Metrics;
}

export function buildServices(deps: {
  config: Config;
  log: Logger;
  database: DatabaseHandle;
  broker: Broker;
}): Services {
  const { config, log, database, broker } = deps;
  const db = database.db;
  const sessions = new Sessions(db, broker, config, log);
  const users = new UserService(db, sessions, config.passwordHashCost);
  const auth = new AuthService(broker, config, users, sessions);
  const health = new HealthService(database, broker, config.version);
  const metrics = createMetrics({ broker });
  return { config, log, db, broker, sessions, auth, users, health, metrics };
}
