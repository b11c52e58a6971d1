import { sql } from 'drizzle-orm';
import { messages } from '../../../drizzle/schema.js';
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
  }

  private async run(): Promise<void> {
    let backoffMs = 0;
    // Entries this consumer read before a restart or a failure come first.
    let rereadOwn = true;
    while (!this.stopping) {
      try {
        if (backoffMs > 0) await sleep(backoffMs);
        await this.broker.ensureGroup(MESSAGES_STREAM, PERSIST_GROUP);
        if (rereadOwn) {
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
        const entries = await this.broker.readGroup(
          MESSAGES_STREAM,
          PERSIST_GROUP,
          this.settings.consumerName,
          {
            mode: 'new',
            count: this.settings.batchSize,
            blockMs: this.settings.blockMs,
          },
        );
        if (entries.length > 0) await this.process(entries);
        await this.trim();
        backoffMs = 0;
      } catch (error) {
        if (this.stopping) break;
        rereadOwn = true;
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), 5_000);
        this.log.warn({ err: error, retryInMs: backoffMs }, 'persistence paused; retrying');
      }
    }
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
    const rows = [...latest.values()].map(({ entryId, message }) => ({
      id: message.id,
      conversationId: message.conversationId,
      seq: message.seq,
      senderId: message.senderId,
      senderUsername: message.senderUsername,
      type: message.type,
      content: message.content,
      clientMessageId: message.clientMessageId,
      sentAt: new Date(message.sentAt),
      editedAt: message.editedAt === null ? null : new Date(message.editedAt),
      deletedAt: message.deletedAt === null ? null : new Date(message.deletedAt),
      version: versionOf(entryId),
    }));
    const activity = new Map<string, { seq: number; at: number }>();
    for (const { message } of latest.values()) {
      const current = activity.get(message.conversationId);
      activity.set(message.conversationId, {
        seq: Math.max(current?.seq ?? 0, message.seq),
        at: Math.max(current?.at ?? 0, message.sentAt),
      });
    }
    await this.db.transaction(async (tx) => {
      await tx
        .insert(messages)
        .values(rows)
        .onConflictDoUpdate({
          target: messages.id,
          set: {
            content: sql`excluded.content`,
            editedAt: sql`excluded.edited_at`,
            deletedAt: sql`excluded.deleted_at`,
            version: sql`excluded.version`,
          },
          setWhere: sql`${messages.version} < excluded.version`,
        });
      const values = sql.join(
        [...activity.entries()].map(
          ([id, { seq, at }]) =>
            sql`(${id}::uuid, ${seq}::bigint, ${new Date(at).toISOString()}::timestamptz)`,
        ),
        sql`, `,
      );
      await tx.execute(sql`
        update conversations as c
        set last_seq = greatest(c.last_seq, v.seq),
            last_activity_at = greatest(c.last_activity_at, v.at)
        from (values ${values}) as v(id, seq, at)
        where c.id = v.id`);
    });
    await this.broker.ack(
      MESSAGES_STREAM,
      PERSIST_GROUP,
      changes.map((change) => change.entryId),
    );
    await this.releasePending(changes);
    this.stats.persisted += rows.length;
    this.stats.batches += 1;
    this.hooks.onBatch?.(rows.length, performance.now() - started);
  }

  /** Drops the pending copies these entries wrote, unless a newer change replaced them. */
  private async releasePending(changes: Change[]): Promise<void> {
    await Promise.all(
      changes.flatMap(({ entryId, message }) => [
        this.broker.hdelIfPrefix(pendingKey(message.conversationId), message.id, entryId),
        this.broker.hdelIfPrefix(PENDING_INDEX, message.id, entryId),
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
