import { PasswordGuesses } from './credentials/guesses.js';
import { Passwords } from './credentials/passwords.js';
import { AuthService } from './auth/service.js';
import { Sessions } from './credentials/sessions.js';
import type { Broker } from './broker/types.js';
import type { Config } from './config/index.js';
import type { Database, DatabaseHandle } from './db/index.js';
import { HealthService } from './health.js';
import type { Logger } from './logger.js';
import { Memberships } from './membership/index.js';
import { ConversationService } from './conversations/service.js';
import { MessageService } from './messages/service.js';
import { type Durability, MessageStore } from './messages/store.js';
import type { EventPublisher } from './contracts/events.js';
import { Hub } from './realtime/hub.js';
import { Presence } from './realtime/presence.js';
import { BrokerEventPublisher } from './realtime/publisher.js';
import { Realtime } from './realtime/service.js';
import { createMetrics, type Metrics } from './metrics.js';
import { LastSeen, UserService } from './users/service.js';

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
  memberships: Memberships;
  store: MessageStore;
  events: EventPublisher;
  messages: MessageService;
  conversations: ConversationService;
  realtime: Realtime;
  metrics: Metrics;
}

export function buildServices(deps: {
  config: Config;
  log: Logger;
  database: DatabaseHandle;
  broker: Broker;
  /** Makes message changes resolve only once written to PostgreSQL (see `createApp`). */
  durability?: Durability | null;
}): Services {
  const { config, log, database, broker, durability = null } = deps;
  const db = database.db;
  const sessions = new Sessions(db, broker.sessions, broker.bus, config, log);
  const passwords = new Passwords(config.passwordHashCost, config.limits);
  const guesses = new PasswordGuesses(broker.limits, passwords, config.limits);
  const memberships = new Memberships(db, broker.rosters);
  const events = new BrokerEventPublisher(broker.events, broker.bus);
  const lastSeen = new LastSeen(db);
  const presence = new Presence(
    broker.presence,
    memberships,
    lastSeen,
    events,
    config.presence,
    log,
    config.limits.largeGroup,
  );
  const users = new UserService(db, sessions, passwords, guesses, presence, lastSeen);
  const auth = new AuthService(config, users, sessions, guesses);
  const health = new HealthService(database, broker, config.version);
  // The hub exists only further down; the gauge reads it on scrape.
  let hub: Hub | null = null;
  const metrics = createMetrics({
    broker,
    subscriptions: () => hub?.count() ?? 0,
    held: () => hub?.holding ?? false,
  });
  const store = new MessageStore(db, broker.messages, durability);
  const messages = new MessageService(store, memberships, events, sessions, config.limits, log, metrics);
  const conversations = new ConversationService(
    db,
    store,
    memberships,
    messages,
    events,
    broker.typing,
    config.limits,
  );
  hub = new Hub(broker.bus, sessions, log, broker.events.partitions, metrics);
  const realtime = new Realtime(broker.events, hub, presence, config, log, {
    conversationsOf: (userId, sinceMs) => memberships.conversationsOf(userId, sinceMs),
    view: (conversationId, userId) => conversations.viewOf(conversationId, userId),
  });
  return {
    config,
    log,
    db,
    broker,
    sessions,
    auth,
    users,
    health,
    memberships,
    store,
    events,
    messages,
    conversations,
    realtime,
    metrics,
  };
}
