import { sql } from 'drizzle-orm';
import type { QueueEntry, WorkQueue } from '../broker/ports/queue.js';
import { compareStreamIds } from '../broker/types.js';
import type { Config } from '../config/index.js';
import type { Database } from '../db/index.js';
import { isConnectionFailure } from '../errors.js';
import type { Logger } from '../logger.js';
import { type WireMessage, versionOf } from '../messages/store.js';

interface Change {
  entryId: string;
  /**
   * The stream id that orders this change against the message's others: its own entry's, or,
   * for a dead letter moved back into the queue, the entry it was first queued as (field `v`).
   */
  versionId: string;
  /** What the entry says it is (`create` or `update`), kept as it was for a dead letter. */
  op: string;
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
  /** After the entry went to the dead-letter stream (and its pending copy was released). */
  onDeadLetter?(entryId: string, reason: string): void;
  /**
   * After these entries were committed and their pending copies released: a caller that saw an
   * entry's pending copy before waiting for it is always told (`WrittenEntries` relies on it).
   */
  onWritten?(entryIds: string[]): void;
}

const TRIM_INTERVAL_MS = 5_000;
/** A stream id, `<ms>-<n>`. */
const STREAM_ID = /^\d+-\d+$/;
/** Below this many entries a batch counts as small, and the next read waits `lingerMs`. */
const SMALL_BATCH = 50;
/** The first retry of an entry PostgreSQL refused; each later one waits twice as long. */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;

/** An entry PostgreSQL refused, set aside to be retried alone, away from the batches. */
interface HeldEntry {
  change: Change;
  /** Attempts that PostgreSQL refused for the entry's own sake, in this process. */
  attempts: number;
  timer: NodeJS.Timeout | null;
}

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
  /** Entries set aside for a retry of their own, by entry id; they stay pending meanwhile. */
  private readonly held = new Map<string, HeldEntry>();
  private readonly retrying = new Set<Promise<void>>();

  constructor(
    private readonly db: Database,
    private readonly queue: WorkQueue,
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
    // Held entries stay pending: whichever worker reads them next tries them again.
    for (const entry of this.held.values()) if (entry.timer) clearTimeout(entry.timer);
    this.held.clear();
    await Promise.all(this.retrying);
    await this.settling;
  }

  private async run(): Promise<void> {
    let backoffMs = 0;
    // Entries this consumer read before a restart or a failure come first.
    let rereadOwn = true;
    // Up to `concurrency` batches are written at once, each in its own transaction, and the
    // next batch is read while they are: a backlog drains at the rate of several round trips in
    // flight rather than one. Order between batches does not matter: every write is guarded by
    // the entry's version, and the conversation's last_seq only ever grows.
    const inFlight = new Set<Promise<void>>();
    const failures: unknown[] = [];
    const launch = (entries: QueueEntry[]) => {
      const task: Promise<void> = this.process(entries)
        .catch((error: unknown) => {
          failures.push(error);
        })
        .finally(() => inFlight.delete(task));
      inFlight.add(task);
    };
    let prefetched: Promise<QueueEntry[]> | null = null;
    while (!this.stopping) {
      try {
        if (backoffMs > 0) await sleep(backoffMs);
        if (rereadOwn) {
          // At the start and after any failure (a group lost with Redis's data included), not
          // on every batch: an existing group answers with an error, which costs a round trip.
          await this.queue.prepare();
          await this.settling;
          await this.drainOwnPending();
          rereadOwn = false;
        }
        if (Date.now() - this.lastClaim >= this.settings.claimIdleMs / 2) {
          this.lastClaim = Date.now();
          const claimed = await this.queue.claimIdle(
            this.settings.consumerName,
            this.settings.claimIdleMs,
            this.settings.batchSize,
          );
          if (claimed.length > 0) {
            this.log.info({ count: claimed.length }, 'claimed entries left pending by another worker');
            launch(claimed);
          }
        }
        const entries = await (prefetched ?? this.readNew());
        prefetched = null;
        if (entries.length > 0) {
          launch(entries);
          // A small batch means messages are trickling in: waiting a moment lets the next read
          // take several at once instead of one statement (and its round trips) per message.
          const linger = entries.length < SMALL_BATCH ? this.settings.lingerMs : 0;
          if (!this.stopping && failures.length === 0) prefetched = this.readNew(linger);
          while (inFlight.size >= this.settings.concurrency) await Promise.race(inFlight);
        }
        if (failures.length > 0) throw failures[0];
        await this.trim();
        backoffMs = 0;
      } catch (error) {
        // Whatever is still in flight finishes (or fails) first: the entries of a failed batch,
        // and of a prefetched one, stay pending for this consumer and are read again with the rest.
        await Promise.all(inFlight);
        await prefetched?.catch(() => undefined);
        prefetched = null;
        failures.length = 0;
        if (this.stopping) break;
        rereadOwn = true;
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), 5_000);
        this.log.warn({ err: error, retryInMs: backoffMs }, 'persistence paused; retrying');
      }
    }
    await Promise.all(inFlight);
    await prefetched?.catch(() => undefined);
  }

  private readNew(afterMs = 0): Promise<QueueEntry[]> {
    const readGroup = () =>
      this.queue.readNew(this.settings.consumerName, this.settings.batchSize, this.settings.blockMs);
    const read = afterMs > 0 ? sleep(afterMs).then(readGroup) : readGroup();
    // A failed prefetch surfaces when it is awaited; until then it must not go unhandled.
    read.catch(() => undefined);
    return read;
  }

  private async drainOwnPending(): Promise<void> {
    let after = '0-0';
    for (;;) {
      const entries = await this.queue.readOwn(this.settings.consumerName, after, this.settings.batchSize);
      const last = entries[entries.length - 1];
      if (!last) return;
      await this.process(entries);
      after = last.id;
    }
  }

  private async process(entries: QueueEntry[]): Promise<void> {
    const changes: Change[] = [];
    const unreadable: QueueEntry[] = [];
    for (const entry of entries) {
      // Read again (a re-read of this consumer's entries, a claim) while its own retry is due.
      if (this.held.has(entry.id)) continue;
      const change = parse(entry);
      if (change) changes.push(change);
      else unreadable.push(entry);
    }
    // An entry that cannot even be read will never succeed: set it aside at once.
    for (const entry of unreadable) await this.deadLetter(entry, 'unreadable entry');
    if (changes.length === 0) return;
    await this.persistSettingAside(changes, { split: false });
  }

  /**
   * Writes the changes as one statement. When PostgreSQL refuses it while it is reachable, some
   * entry is at fault: the changes are written in halves, and so on down, so every other entry
   * is written within a few statements and only those refused on their own are set aside
   * (`setAside`), never holding up the batches behind them. An outage throws: the caller backs
   * off and nothing is set aside, since no entry is at fault.
   */
  private async persistSettingAside(
    changes: Change[],
    /** Shared by the parts of one batch. */
    memo: { split: boolean },
  ): Promise<void> {
    try {
      await this.persistAndAckRetryingConflicts(changes);
      return;
    } catch (error) {
      // No entry is at fault in an outage, or when PostgreSQL refuses every write (read-only
      // after a failover, out of resources): back off, never set anything aside.
      if (notTheEntries(error) || !(await this.databaseReachable())) throw error;
      const [only] = changes;
      if (changes.length === 1 && only) {
        await this.setAside(only, 1, error);
        return;
      }
      if (!memo.split) {
        memo.split = true;
        this.log.warn({ err: error, size: changes.length }, 'batch failed; writing it in parts');
      }
      const half = Math.ceil(changes.length / 2);
      await this.persistSettingAside(changes.slice(0, half), memo);
      await this.persistSettingAside(changes.slice(half), memo);
    }
  }

  /**
   * An entry PostgreSQL refused on its own: after its last attempt it goes to the dead-letter
   * stream; before, it stays pending and is retried alone after a delay, while the batches go on.
   */
  private async setAside(change: Change, attempts: number, error: unknown): Promise<void> {
    if (attempts >= this.settings.maxDeliveries) {
      this.held.delete(change.entryId);
      const fields: Record<string, string> = { op: change.op, m: JSON.stringify(change.message) };
      if (change.versionId !== change.entryId) fields.v = change.versionId;
      await this.deadLetter({ id: change.entryId, fields }, describe(error));
      return;
    }
    this.log.warn(
      { err: error, entryId: change.entryId, attempts },
      'entry not written; will retry it alone',
    );
    this.holdForRetry(change, attempts);
  }

  private holdForRetry(change: Change, attempts: number, delayMs?: number): void {
    if (this.stopping) return;
    const wait = delayMs ?? Math.min(RETRY_FIRST_MS * 2 ** (attempts - 1), RETRY_MAX_MS);
    const entry: HeldEntry = { change, attempts, timer: null };
    entry.timer = setTimeout(() => {
      entry.timer = null;
      const task = this.retryAlone(entry).finally(() => this.retrying.delete(task));
      this.retrying.add(task);
    }, wait);
    this.held.set(change.entryId, entry);
  }

  private async retryAlone(entry: HeldEntry): Promise<void> {
    if (this.stopping || this.held.get(entry.change.entryId) !== entry) return;
    try {
      await this.persistAndAckRetryingConflicts([entry.change]);
      this.held.delete(entry.change.entryId);
    } catch (error) {
      try {
        if (!notTheEntries(error) && (await this.databaseReachable())) {
          await this.setAside(entry.change, entry.attempts + 1, error);
        } else {
          // An outage is no attempt of the entry's: try again once the database is back.
          this.holdForRetry(entry.change, entry.attempts, RETRY_MAX_MS);
        }
      } catch (failure) {
        // Not even set aside (the broker failed too): it stays pending and is read again.
        this.held.delete(entry.change.entryId);
        this.log.warn({ err: failure, entryId: entry.change.entryId }, 'retry of an entry failed');
      }
    }
  }

  /**
   * A deadlock with another writer (the API, or a statement ordering its locks differently) is
   * nobody's fault: PostgreSQL rolled the batch back, so write it again before suspecting it.
   */
  private async persistAndAckRetryingConflicts(changes: Change[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.persistAndAck(changes);
        return;
      } catch (error) {
        if (attempt >= 3 || !isDeadlock(error)) throw error;
        this.log.warn({ err: error, size: changes.length, attempt }, 'batch deadlocked; writing it again');
      }
    }
  }

  private async persistAndAck(changes: Change[]): Promise<void> {
    const started = performance.now();
    // The latest change of each message within the batch (by version: a requeued dead letter
    // keeps its first one) is the one that counts, except that a deletion stays (as the upsert
    // below keeps it against a later change).
    const latest = new Map<string, Change>();
    for (const change of changes) {
      const other = latest.get(change.message.id);
      if (!other) {
        latest.set(change.message.id, change);
        continue;
      }
      const [older, newer] =
        compareStreamIds(other.versionId, change.versionId) <= 0 ? [other, change] : [change, other];
      const deletion = older.message.deletedAt != null && newer.message.deletedAt === null;
      latest.set(change.message.id, deletion ? { ...newer, message: older.message } : newer);
    }
    // One JSON parameter instead of twelve per row: cheap to build and to parse at any size.
    const rows = JSON.stringify(
      [...latest.values()].map(({ versionId, message }) => ({
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
        version: versionOf(versionId),
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
    // One statement, so one round trip and one transaction: the messages and their
    // conversations' last_seq and last_activity_at commit together or not at all. Several
    // batches may be written at once, so every lock is taken in id order (messages, then
    // conversations): batches that share messages (an edit and its original) or conversations
    // wait for each other, never deadlock. The insert is the main query and runs first; the
    // conversation update, a WITH sub-statement nothing reads, runs after it, so a batch waits
    // for another's conversation locks only at its end. greatest() makes that update
    // order-insensitive between batches. A deleted message stays deleted: no later change (an
    // edit that raced the deletion) clears deleted_at or brings its content back.
    await this.db.execute(sql`
      with touched as (
        select c.id, v.seq, v.at
        from conversations as c
        join json_to_recordset(${touched}::json) as v(id uuid, seq bigint, at timestamptz) on v.id = c.id
        order by c.id
        for no key update of c
      ),
      bumped as (
        update conversations as c
        set last_seq = greatest(c.last_seq, t.seq),
            last_activity_at = greatest(c.last_activity_at, t.at)
        from touched as t
        where c.id = t.id
      )
      insert into messages (id, conversation_id, seq, sender_id, sender_username, type, content,
                            client_message_id, sent_at, edited_at, deleted_at, version)
      select id, conversation_id, seq, sender_id, sender_username, type, content,
             client_message_id, sent_at, edited_at, deleted_at, version
      from json_populate_recordset(null::messages, ${rows}::json)
      order by id
      on conflict (id) do update
        set content = case when messages.deleted_at is null then excluded.content else messages.content end,
            edited_at = case when messages.deleted_at is null then excluded.edited_at else messages.edited_at end,
            deleted_at = coalesce(messages.deleted_at, excluded.deleted_at),
            version = excluded.version
        where messages.version < excluded.version`);
    // Committed: releasing the pending copies and then acknowledging can run while the next
    // batch is written. Released first: if either fails, the entries stay pending and are
    // written and released again, harmlessly; acknowledged first, a failed release would leave
    // copies that nothing releases any more.
    const ids = changes.map((change) => change.entryId);
    const previous = this.settling;
    this.settling = (async () => {
      await previous;
      await this.releasePending(changes);
      this.hooks.onWritten?.(ids);
      await this.queue.ack(ids);
    })().catch((error: unknown) => {
      this.log.warn({ err: error }, 'acknowledgement deferred: entries stay pending and will be rewritten');
    });
    this.stats.persisted += latest.size;
    this.stats.batches += 1;
    this.hooks.onBatch?.(latest.size, performance.now() - started);
  }

  /** Drops the pending copies these entries wrote, unless a newer change replaced them. */
  private async releasePending(changes: Change[]): Promise<void> {
    await this.queue.release(
      changes.map(({ entryId, message }) => ({
        entryId,
        conversationId: message.conversationId,
        messageId: message.id,
      })),
    );
  }

  private async deadLetter(entry: QueueEntry, reason: string): Promise<void> {
    this.log.error({ entryId: entry.id, reason }, 'stream entry moved to the dead-letter stream');
    await this.queue.deadLetter(entry, reason);
    const change = parse(entry);
    if (change) await this.releasePending([change]);
    this.stats.deadLettered += 1;
    this.hooks.onDeadLetter?.(entry.id, reason);
  }

  /** Trims the stream below its oldest unacknowledged entry; nothing unwritten is removed. */
  private async trim(): Promise<void> {
    if (Date.now() - this.lastTrim < TRIM_INTERVAL_MS) return;
    this.lastTrim = Date.now();
    const [oldest] = await this.queue.pending(1);
    const { group } = await this.queue.info();
    const below = oldest?.id ?? group?.lastDeliveredId;
    if (below && below !== '0-0') await this.queue.trimBelow(below);
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

function parse(entry: QueueEntry): Change | null {
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
    const versionId = entry.fields.v ?? entry.id;
    if (!STREAM_ID.test(versionId)) return null;
    return { entryId: entry.id, versionId, op: entry.fields.op ?? 'create', message: message as WireMessage };
  } catch {
    return null;
  }
}

/**
 * A failure of PostgreSQL or of the way to it rather than of the data: a broken connection, or
 * SQLSTATE classes 08 (connection), 25 (read-only transaction), 40 (rolled back), 53
 * (resources), 55 (object state, a lock not available), 57 (operator intervention) and 58
 * (system error), anywhere in the cause chain.
 */
function notTheEntries(error: unknown): boolean {
  if (isConnectionFailure(error)) return true;
  for (let current: unknown = error; current instanceof Error; current = current.cause) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^(08|25|40|53|55|57|58)[0-9A-Z]{3}$/.test(code)) return true;
  }
  return false;
}

/** PostgreSQL's deadlock_detected, anywhere in the cause chain. */
function isDeadlock(error: unknown): boolean {
  for (let current: unknown = error; current instanceof Error; current = current.cause) {
    if ((current as { code?: unknown }).code === '40P01') return true;
  }
  return false;
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
