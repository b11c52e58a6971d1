import { sql } from 'drizzle-orm';
import type { Broker, StreamEntry } from '../broker/types.js';
import type { Config } from '../config/index.js';
import type { Database } from '../db/index.js';
import type { Logger } from '../logger.js';
import {
  DEAD_LETTER_STREAM,
  MESSAGES_STREAM,
  PENDING_INDEX,
  PERSIST_GROUP,
  type WireMessage,
  pendingKey,
  versionOf,
} from '../messages/store.js';

interface Change {
  entryId: string;
  message: WireMessage;
}

export interface WorkerStats {
  /** Rows written (inserted or updated) since start. */
  persisted: number;
  batches: number;
  deadLettered: number;
}

export interface PersistHooks {
  onBatch?(size: number, durationMs: number): void;
  onDeadLetter?(entryId: string): void;
}

const TRIM_INTERVAL_MS = 5_000;

/**
 * Writes the message stream to PostgreSQL. Entries are acknowledged only after the commit that
 * contains them, so a crash at any point leaves them pending to be written again; writes are
 * idempotent upserts keyed by the message id, guarded by the entry's version, so writing an
 * entry twice, or an older change after a newer one, changes nothing.
 */
export class PersistenceWorker {
  readonly stats: WorkerStats = { persisted: 0, batches: 0, deadLettered: 0 };
  private running: Promise<void> | null = null;
  private stopping = false;
  /** Acknowledgements and pending-copy releases of committed batches, done in the background. */
  private settling: Promise<void> = Promise.resolve();
  private lastTrim = 0;
  private lastClaim = 0;

  constructor(
    private readonly db: Database,
    private readonly broker: Broker,
    private readonly settings: Config['worker'],
    private readonly log: Logger,
    private readonly hooks: PersistHooks = {},
  ) {}

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
    await this.settling;
  }

  private async run(): Promise<void> {
    let backoffMs = 0;
    // Entries this consumer read before a restart or a failure come first.
    let rereadOwn = true;
    // The next batch is read while the current one is written (one transaction at a time).
    let prefetched: Promise<StreamEntry[]> | null = null;
    while (!this.stopping) {
      try {
        if (backoffMs > 0) await sleep(backoffMs);
        await this.broker.ensureGroup(MESSAGES_STREAM, PERSIST_GROUP);
        if (rereadOwn) {
          await this.settling;
          await this.drainOwnPending();
          rereadOwn = false;
        }
        if (Date.now() - this.lastClaim >= this.settings.claimIdleMs / 2) {
          this.lastClaim = Date.now();
          const claimed = await this.broker.claimIdle(
            MESSAGES_STREAM,
            PERSIST_GROUP,
            this.settings.consumerName,
            this.settings.claimIdleMs,
            this.settings.batchSize,
          );
          if (claimed.length > 0) {
            this.log.info({ count: claimed.length }, 'claimed entries left pending by another worker');
            await this.process(claimed);
          }
        }
        const entries = await (prefetched ?? this.readNew());
        prefetched = null;
        if (entries.length > 0) {
          if (!this.stopping) prefetched = this.readNew();
          await this.process(entries);
        }
        await this.trim();
        backoffMs = 0;
      } catch (error) {
        // A prefetched batch stays pending for this consumer and is read again with the rest.
        prefetched = null;
        if (this.stopping) break;
        rereadOwn = true;
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), 5_000);
        this.log.warn({ err: error, retryInMs: backoffMs }, 'persistence paused; retrying');
      }
    }
    await prefetched;
  }

  private readNew(): Promise<StreamEntry[]> {
    const read = this.broker.readGroup(MESSAGES_STREAM, PERSIST_GROUP, this.settings.consumerName, {
      mode: 'new',
      count: this.settings.batchSize,
      blockMs: this.settings.blockMs,
    });
    // A failed prefetch surfaces when it is awaited; until then it must not go unhandled.
    read.catch(() => undefined);
    return read;
  }

  private async drainOwnPending(): Promise<void> {
    let after = '0-0';
    for (;;) {
      const entries = await this.broker.readGroup(
        MESSAGES_STREAM,
        PERSIST_GROUP,
        this.settings.consumerName,
        {
          mode: 'own',
          count: this.settings.batchSize,
          afterId: after,
        },
      );
      const last = entries[entries.length - 1];
      if (!last) return;
      await this.process(entries);
      after = last.id;
    }
  }

  private async process(entries: StreamEntry[]): Promise<void> {
    const changes: Change[] = [];
    const unreadable: StreamEntry[] = [];
    for (const entry of entries) {
      const change = parse(entry);
      if (change) changes.push(change);
      else unreadable.push(entry);
    }
    // An entry that cannot even be read will never succeed: set it aside at once.
    for (const entry of unreadable) await this.deadLetter(entry, 'unreadable entry');
    if (changes.length === 0) return;
    try {
      await this.persistAndAck(changes);
    } catch (error) {
      if (!(await this.databaseReachable())) throw error; // outage: back off, never dead-letter
      // The database is up, so some entry is at fault: write them one by one to find it.
      await this.isolate(changes, error);
    }
  }

  private async isolate(changes: Change[], batchError: unknown): Promise<void> {
    this.log.warn({ err: batchError, size: changes.length }, 'batch failed; writing its entries one by one');
    const deliveries = new Map(
      (await this.broker.pending(MESSAGES_STREAM, PERSIST_GROUP, 10_000)).map((p) => [p.id, p.deliveries]),
    );
    for (const change of changes) {
      try {
        await this.persistAndAck([change]);
      } catch (error) {
        if (!(await this.databaseReachable())) throw error;
        const count = deliveries.get(change.entryId) ?? 1;
        if (count >= this.settings.maxDeliveries) {
          await this.deadLetter(
            { id: change.entryId, fields: { op: 'upsert', m: JSON.stringify(change.message) } },
            describe(error),
          );
        } else {
          // Left pending: read again after the back-off, its delivery count one higher.
          this.log.warn(
            { err: error, entryId: change.entryId, deliveries: count },
            'entry not written; will retry',
          );
        }
      }
    }
    throw new EntriesLeftPending();
  }

  private async persistAndAck(changes: Change[]): Promise<void> {
    const started = performance.now();
    // The latest change of each message within the batch is the one that counts.
    const latest = new Map<string, Change>();
    for (const change of changes) latest.set(change.message.id, change);
    // One JSON parameter instead of twelve per row: cheap to build and to parse at any size.
    const rows = JSON.stringify(
      [...latest.values()].map(({ entryId, message }) => ({
        id: message.id,
        conversation_id: message.conversationId,
        seq: message.seq,
        sender_id: message.senderId,
        sender_username: message.senderUsername,
        type: message.type,
        content: message.content,
        client_message_id: message.clientMessageId,
        sent_at: new Date(message.sentAt).toISOString(),
        edited_at: message.editedAt === null ? null : new Date(message.editedAt).toISOString(),
        deleted_at: message.deletedAt === null ? null : new Date(message.deletedAt).toISOString(),
        version: versionOf(entryId),
      })),
    );
    const activity = new Map<string, { seq: number; at: number }>();
    for (const { message } of latest.values()) {
      const current = activity.get(message.conversationId);
      activity.set(message.conversationId, {
        seq: Math.max(current?.seq ?? 0, message.seq),
        at: Math.max(current?.at ?? 0, message.sentAt),
      });
    }
    const touched = JSON.stringify(
      [...activity.entries()].map(([id, { seq, at }]) => ({ id, seq, at: new Date(at).toISOString() })),
    );
    await this.db.transaction(async (tx) => {
      await tx.execute(sql`
        insert into messages (id, conversation_id, seq, sender_id, sender_username, type, content,
                              client_message_id, sent_at, edited_at, deleted_at, version)
        select id, conversation_id, seq, sender_id, sender_username, type, content,
               client_message_id, sent_at, edited_at, deleted_at, version
        from json_populate_recordset(null::messages, ${rows}::json)
        on conflict (id) do update
          set content = excluded.content,
              edited_at = excluded.edited_at,
              deleted_at = excluded.deleted_at,
              version = excluded.version
          where messages.version < excluded.version`);
      await tx.execute(sql`
        update conversations as c
        set last_seq = greatest(c.last_seq, v.seq),
            last_activity_at = greatest(c.last_activity_at, v.at)
        from json_to_recordset(${touched}::json) as v(id uuid, seq bigint, at timestamptz)
        where c.id = v.id`);
    });
    // Committed: acknowledging and releasing the pending copies can run while the next batch
    // is written. If either fails, the entries stay pending and are written again, harmlessly.
    const ids = changes.map((change) => change.entryId);
    const previous = this.settling;
    this.settling = (async () => {
      await previous;
      await this.broker.ack(MESSAGES_STREAM, PERSIST_GROUP, ids);
      await this.releasePending(changes);
    })().catch((error: unknown) => {
      this.log.warn({ err: error }, 'acknowledgement deferred: entries stay pending and will be rewritten');
    });
    this.stats.persisted += latest.size;
    this.stats.batches += 1;
    this.hooks.onBatch?.(latest.size, performance.now() - started);
  }

  /** Drops the pending copies these entries wrote, unless a newer change replaced them. */
  private async releasePending(changes: Change[]): Promise<void> {
    await this.broker.hdelIfPrefixMany(
      changes.flatMap(({ entryId, message }) => [
        { key: pendingKey(message.conversationId), field: message.id, prefix: entryId },
        { key: PENDING_INDEX, field: message.id, prefix: entryId },
      ]),
    );
  }

  private async deadLetter(entry: StreamEntry, reason: string): Promise<void> {
    this.log.error({ entryId: entry.id, reason }, 'stream entry moved to the dead-letter stream');
    await this.broker.append(DEAD_LETTER_STREAM, { ...entry.fields, entry: entry.id, reason });
    await this.broker.ack(MESSAGES_STREAM, PERSIST_GROUP, [entry.id]);
    const change = parse(entry);
    if (change) await this.releasePending([change]);
    this.stats.deadLettered += 1;
    this.hooks.onDeadLetter?.(entry.id);
  }

  /** Trims the stream below its oldest unacknowledged entry; nothing unwritten is removed. */
  private async trim(): Promise<void> {
    if (Date.now() - this.lastTrim < TRIM_INTERVAL_MS) return;
    this.lastTrim = Date.now();
    const [oldest] = await this.broker.pending(MESSAGES_STREAM, PERSIST_GROUP, 1);
    const info = await this.broker.groupInfo(MESSAGES_STREAM, PERSIST_GROUP);
    const below = oldest?.id ?? info?.lastDeliveredId;
    if (below && below !== '0-0') await this.broker.trimBelow(MESSAGES_STREAM, below);
  }

  private async databaseReachable(): Promise<boolean> {
    try {
      await this.db.execute(sql`select 1`);
      return true;
    } catch {
      return false;
    }
  }
}

/** Thrown after isolating a failed batch when some entries stay pending for a retry. */
class EntriesLeftPending extends Error {
  override name = 'EntriesLeftPending';
  constructor() {
    super('some entries were not written and stay pending');
  }
}

function parse(entry: StreamEntry): Change | null {
  try {
    const raw = entry.fields.m;
    if (!raw) return null;
    const message = JSON.parse(raw) as Partial<WireMessage>;
    if (
      typeof message.id !== 'string' ||
      typeof message.conversationId !== 'string' ||
      typeof message.seq !== 'number' ||
      typeof message.senderId !== 'string' ||
      typeof message.content !== 'string' ||
      typeof message.sentAt !== 'number'
    ) {
      return null;
    }
    return { entryId: entry.id, message: message as WireMessage };
  } catch {
    return null;
  }
}

/** The innermost cause's message: the database's own words, not the query wrapper's. */
function describe(error: unknown): string {
  let current: unknown = error;
  while (current instanceof Error && current.cause instanceof Error) current = current.cause;
  return (current instanceof Error ? current.message : String(current)).slice(0, 500);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
