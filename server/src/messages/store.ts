import DataLoader from 'dataloader';
import { and, asc, desc, eq, gt, inArray, lt, sql } from 'drizzle-orm';
import { members, messages } from '../../../drizzle/schema.js';
import { type MessageLog, SEQ_SLOT, type SendGuards } from '../broker/ports/message-log.js';
import type { Message } from '../contracts/schemas.js';
import type { Database } from '../db/index.js';
/** How long a send waits for PostgreSQL's answer on an unclaimed clientMessageId. */
const CLIENT_ID_LOOKUP_TIMEOUT_MS = 250;

/** At most this many client-id lookups share one query. */
const CLIENT_ID_LOOKUP_BATCH = 200;

interface WrittenMessage {
  id: string;
  conversationId: string;
}

interface ClientIdLookup {
  senderId: string;
  conversationId: string;
  clientMessageId: string;
}

const lookupKey = (of: { senderId: string; conversationId: string; clientMessageId: string | null }) =>
  `${of.senderId} ${of.conversationId} ${of.clientMessageId}`;

/** A message as it travels through the stream and sits in the pending store. */
export interface WireMessage {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  senderUsername: string;
  type: 'text' | 'system';
  content: string;
  clientMessageId: string | null;
  sentAt: number;
  editedAt: number | null;
  deletedAt: number | null;
}

/** A new message's wire JSON with `SEQ_SLOT` in place of its seq (not yet known). */
function wireJsonAwaitingSeq(message: Omit<Message, 'seq'>): string {
  const rest: Omit<WireMessage, 'seq'> = {
    id: message.id,
    conversationId: message.conversationId,
    senderId: message.senderId,
    senderUsername: message.senderUsername,
    type: message.type,
    content: message.content,
    clientMessageId: message.clientMessageId,
    sentAt: message.sentAt.getTime(),
    editedAt: message.editedAt?.getTime() ?? null,
    deletedAt: message.deletedAt?.getTime() ?? null,
  };
  return `{"seq":${SEQ_SLOT},${JSON.stringify(rest).slice(1)}`;
}

export function toWire(message: Message): WireMessage {
  return {
    ...message,
    sentAt: message.sentAt.getTime(),
    editedAt: message.editedAt?.getTime() ?? null,
    deletedAt: message.deletedAt?.getTime() ?? null,
  };
}

export function fromWire(wire: WireMessage): Message {
  return {
    ...wire,
    sentAt: new Date(wire.sentAt),
    editedAt: wire.editedAt === null ? null : new Date(wire.editedAt),
    deletedAt: wire.deletedAt === null ? null : new Date(wire.deletedAt),
  };
}

type MessageRow = typeof messages.$inferSelect;

/** A changed message as the message log takes it. */
function changeOf(message: Message) {
  return { id: message.id, conversationId: message.conversationId, body: JSON.stringify(toWire(message)) };
}

export function fromRow(row: MessageRow): Message {
  return {
    id: row.id,
    conversationId: row.conversationId,
    seq: row.seq,
    senderId: row.senderId,
    senderUsername: row.senderUsername,
    content: row.content,
    type: row.type,
    clientMessageId: row.clientMessageId,
    sentAt: row.sentAt,
    editedAt: row.editedAt,
    deletedAt: row.deletedAt,
  };
}

/** Stream ids as fixed-width text, so PostgreSQL orders versions as Redis orders ids. */
export function versionOf(entryId: string): string {
  const [ms = '0', n = '0'] = entryId.split('-');
  return `${ms.padStart(16, '0')}-${n.padStart(10, '0')}`;
}

/**
 * Tells when a stream entry is in PostgreSQL. Given only where the stream dies with the process
 * (the in-process broker): there a change is acknowledged once it is written, not once queued.
 */
export interface Durability {
  /** Resolves once the entry is committed; rejects when it will not be, or not in time. */
  untilWritten(entryId: string): Promise<void>;
}

/**
 * Reads and writes messages across the two places they live: PostgreSQL for everything the
 * worker has written, and the broker's pending store for changes still on their way there.
 * A pending copy is always at least as new as the row, so it wins when both exist.
 */
export class MessageStore {
  /** The queries of the send path, built once (and prepared by PostgreSQL once per connection). */
  private readonly byClientId;
  private readonly byClientIds;
  private readonly maxSeq;
  /** Client-id lookups, batched: one query for all sends of a loop turn. */
  private readonly writtenByClientId: DataLoader<ClientIdLookup, WrittenMessage | null, string>;

  constructor(
    private readonly db: Database,
    private readonly log: MessageLog,
    /** With it, every append resolves only once its change is in PostgreSQL. */
    private readonly durability: Durability | null = null,
  ) {
    this.byClientId = db
      .select({ id: messages.id, conversationId: messages.conversationId })
      .from(messages)
      .where(
        and(
          eq(messages.senderId, sql.placeholder('senderId')),
          eq(messages.conversationId, sql.placeholder('conversationId')),
          eq(messages.clientMessageId, sql.placeholder('clientMessageId')),
        ),
      )
      .prepare('parley_message_by_client_id');
    // One index lookup per key, whatever the planner knows of the table: a plain join or `IN`
    // lets a plan made while the table was small (prepared statements keep theirs) hash-join
    // against a sequential scan of every message, and keep doing so as the table grows.
    const keys = sql`unnest(${sql.placeholder('senderIds')}::uuid[], ${sql.placeholder('conversationIds')}::uuid[], ${sql.placeholder('clientMessageIds')}::text[]) as k(sender_id, conversation_id, client_message_id)`;
    const match = db
      .select({
        id: messages.id,
        conversationId: messages.conversationId,
        senderId: messages.senderId,
        clientMessageId: messages.clientMessageId,
      })
      .from(messages)
      .where(
        sql`${messages.senderId} = k.sender_id and ${messages.conversationId} = k.conversation_id and ${messages.clientMessageId} = k.client_message_id`,
      )
      .limit(1)
      .as('m');
    this.byClientIds = db
      .select({
        id: match.id,
        conversationId: match.conversationId,
        senderId: match.senderId,
        clientMessageId: match.clientMessageId,
      })
      .from(keys)
      .crossJoinLateral(match)
      .prepare('parley_messages_by_client_ids');
    this.maxSeq = db
      .select({ max: sql<string | null>`max(${messages.seq})` })
      .from(messages)
      .where(eq(messages.conversationId, sql.placeholder('conversationId')))
      .prepare('parley_message_max_seq');
    this.writtenByClientId = new DataLoader((keys) => this.lookUpWritten(keys), {
      maxBatchSize: CLIENT_ID_LOOKUP_BATCH,
      // After this turn's I/O: every send that arrived in it shares one query.
      batchScheduleFn: (flush) => setImmediate(flush),
      // Each lookup asks PostgreSQL afresh: a row written a moment later must be found.
      cache: false,
    });
  }

  /**
   * Appends a new message under the next seq of its conversation, taken in the same atomic
   * step as the append (so seqs grow in queue order and a refused append takes none), with its
   * announcement (`SEQ_SLOT` where the seq goes). With a `clientMessageId` already claimed,
   * appends nothing and answers with the first message's ids. When the counter is missing (a new
   * conversation, or Redis lost its data) it restarts from the highest seq PostgreSQL holds.
   */
  async appendNew(
    message: Omit<Message, 'seq'>,
    announcement: string | null,
    /** Checked in the same step, before anything is written. */
    guards: SendGuards = {},
  ): Promise<
    | { appended: true; seq: number }
    | { duplicate: { conversationId: string; messageId: string } }
    | { refused: 'noRoster' | 'notMember' | 'revoked' | 'limited' }
  > {
    const entry = {
      id: message.id,
      conversationId: message.conversationId,
      senderId: message.senderId,
      clientMessageId: message.clientMessageId,
      body: wireJsonAwaitingSeq(message),
    };
    let checks = guards;
    for (let attempt = 0; ; attempt++) {
      const result = await this.log.appendNew(entry, checks, announcement);
      if ('appended' in result) {
        await this.untilMessageWritten(message.id);
        return { appended: true, seq: result.seq };
      }
      if ('refused' in result) return result;
      if ('duplicate' in result) {
        // The first send may still be on its way (a concurrent duplicate, or a retry after it
        // timed out): the answer acknowledges it too.
        await this.untilMessageWritten(result.duplicate.messageId);
        return result;
      }
      // Only a counter removed again right after it was restored gets here twice.
      if (attempt >= 2) throw new Error(`seq counter of ${message.conversationId} keeps disappearing`);
      const [row] = await this.maxSeq.execute({ conversationId: message.conversationId });
      await this.log.restoreSeq(message.conversationId, Number(row?.max ?? 0));
      // The send was counted already; the retry must not count it twice.
      checks = { ...checks, sendLimit: undefined };
    }
  }

  /**
   * Appends an edited message with its pending copy and its announcement, all in one broker
   * step, unless the message has been deleted: then nothing is written and the answer is false.
   * Checked in that step, so an edit that read the message before a deletion can never land
   * after it and bring the content back.
   */
  async appendEdit(message: Message, announcement: string | null): Promise<boolean> {
    const result = await this.log.appendEdit(changeOf(message), announcement);
    if (!('appended' in result)) return false;
    await this.untilMessageWritten(message.id);
    return true;
  }

  /**
   * Appends a tombstone with its pending copy and its announcement, and marks the message
   * deleted, all in one broker step; false when it was marked already (a concurrent deletion
   * won).
   */
  async appendTombstone(message: Message, announcement: string | null): Promise<boolean> {
    const result = await this.log.appendTombstone(changeOf(message), announcement);
    // A deletion that lost to a concurrent one acknowledges that one: both wait for it.
    await this.untilMessageWritten(message.id);
    return 'appended' in result;
  }

  /**
   * With `durability`: resolves once the change pending for this message, if any, is written.
   * The worker releases a pending copy before it reports the entry written, so a copy still
   * there once the wait has begun is reported to that wait; a newer change that replaced it
   * is waited for instead (writing it writes the whole message).
   */
  private async untilMessageWritten(messageId: string): Promise<void> {
    if (!this.durability) return;
    let entryId = await this.log.pendingEntry(messageId);
    while (entryId !== null) {
      const written = this.durability.untilWritten(entryId);
      const now = await this.log.pendingEntry(messageId);
      if (now === entryId) {
        await written;
        return;
      }
      written.catch(() => undefined);
      entryId = now;
    }
  }

  /**
   * The message PostgreSQL holds for a `clientMessageId`, for a retry that comes after the
   * broker's claim expired (a claim still held is caught by `appendNew` itself). On the first
   * attempt of a send there can be none, and PostgreSQL is not asked; except where a send is
   * answered only once written (the in-process broker): there a second message with the id
   * would fail its send instead of being set aside later, and the lookup costs no round trip.
   */
  async writtenClientId(
    senderId: string,
    conversationId: string,
    clientMessageId: string,
    firstAttempt = false,
  ) {
    if (firstAttempt && !this.durability) return null;
    const lookup = this.writtenByClientId.load({ senderId, conversationId, clientMessageId });
    // While PostgreSQL is unreachable its driver waits for a connection; sending must not. The
    // broker's claim, which covers any retry within its lifetime, then judges duplicates alone.
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), CLIENT_ID_LOOKUP_TIMEOUT_MS);
    });
    try {
      return await Promise.race([lookup, giveUp]);
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
      lookup.catch(() => undefined);
    }
  }

  /** One query for a batch of client-id lookups (the single-key one for a batch of one). */
  private async lookUpWritten(batch: readonly ClientIdLookup[]): Promise<(WrittenMessage | null)[]> {
    const [only] = batch;
    if (batch.length === 1 && only) {
      const [row] = await this.byClientId.execute({ ...only });
      return [row ?? null];
    }
    const rows = await this.byClientIds.execute({
      senderIds: batch.map((lookup) => lookup.senderId),
      conversationIds: batch.map((lookup) => lookup.conversationId),
      clientMessageIds: batch.map((lookup) => lookup.clientMessageId),
    });
    const found = new Map(rows.map((row) => [lookupKey(row), row]));
    return batch.map((lookup) => {
      const row = found.get(lookupKey(lookup));
      return row ? { id: row.id, conversationId: row.conversationId } : null;
    });
  }

  async pendingOf(conversationId: string): Promise<Message[]> {
    const bodies = await this.log.pendingOf(conversationId);
    return bodies.map((body) => fromWire(JSON.parse(body) as WireMessage));
  }

  async byId(id: string): Promise<Message | null> {
    const pending = await this.log.pendingMessage(id);
    if (pending !== null) return fromWire(JSON.parse(pending) as WireMessage);
    const [row] = await this.db.select().from(messages).where(eq(messages.id, id));
    return row ? fromRow(row) : null;
  }

  /**
   * A page of history. `before`: newest first, seq below it; `after`: oldest first, seq above
   * it. Merges unwritten messages in, so every send that resolved is included.
   */
  async page(
    conversationId: string,
    range: { before: number | null } | { after: number },
    limit: number,
  ): Promise<{ items: Message[]; more: boolean }> {
    const ascending = 'after' in range;
    const bound =
      'after' in range
        ? gt(messages.seq, range.after)
        : range.before === null
          ? undefined
          : lt(messages.seq, range.before);
    // Pending copies first: one is dropped only after its row is committed, so whatever the
    // worker does between the two reads, every message is in one or the other.
    const pending = await this.pendingOf(conversationId);
    const rows = await this.db
      .select()
      .from(messages)
      .where(and(eq(messages.conversationId, conversationId), bound))
      .orderBy(ascending ? asc(messages.seq) : desc(messages.seq))
      .limit(limit + 1);
    const byId = new Map(rows.map((row) => [row.id, fromRow(row)]));
    for (const message of pending) {
      const inRange =
        'after' in range ? message.seq > range.after : range.before === null || message.seq < range.before;
      if (inRange) byId.set(message.id, message);
    }
    const merged = [...byId.values()].sort((a, b) => (ascending ? a.seq - b.seq : b.seq - a.seq));
    return { items: merged.slice(0, limit), more: merged.length > limit };
  }

  /** The newest message of each conversation, unwritten ones included. */
  async latest(conversationIds: string[]): Promise<Map<string, Message>> {
    const out = new Map<string, Message>();
    if (conversationIds.length === 0) return out;
    // Pending copies first, as in `page`.
    const pending = await Promise.all(conversationIds.map((id) => this.pendingOf(id)));
    const rows = await this.db
      .selectDistinctOn([messages.conversationId])
      .from(messages)
      .where(inArray(messages.conversationId, conversationIds))
      .orderBy(messages.conversationId, desc(messages.seq));
    for (const row of rows) out.set(row.conversationId, fromRow(row));
    for (const message of pending.flat()) {
      const current = out.get(message.conversationId);
      if (!current || message.seq >= current.seq) out.set(message.conversationId, message);
    }
    return out;
  }

  /** Messages from others after each member's read position, unwritten ones included. */
  async unreadCounts(userId: string, readPositions: Map<string, number>): Promise<Map<string, number>> {
    const ids = [...readPositions.keys()];
    const out = new Map<string, number>(ids.map((id) => [id, 0]));
    if (ids.length === 0) return out;
    // Pending copies first, as in `page`; a message written in between is counted once.
    const pending = (await Promise.all(ids.map((id) => this.pendingOf(id)))).flat();
    if (pending.length === 0) return this.writtenUnread(this.db, userId, ids, out);
    // The count and the rows of the pending messages must come from one snapshot: a message the
    // worker writes between two separate reads would be subtracted without having been counted.
    return this.db.transaction(
      async (tx) => {
        await this.writtenUnread(tx, userId, ids, out);
        const written = await tx
          .select({
            id: messages.id,
            conversationId: messages.conversationId,
            seq: messages.seq,
            senderId: messages.senderId,
            deletedAt: messages.deletedAt,
          })
          .from(messages)
          .where(
            inArray(
              messages.id,
              pending.map((m) => m.id),
            ),
          );
        // Unwritten changes: a new message may add one; a pending deletion may remove one.
        const writtenById = new Map(written.map((row) => [row.id, row]));
        for (const message of pending) {
          const read = readPositions.get(message.conversationId) ?? 0;
          const unreadNow = message.senderId !== userId && message.deletedAt === null && message.seq > read;
          const row = writtenById.get(message.id);
          const countedInDb = row
            ? row.senderId !== userId && row.deletedAt === null && row.seq > read
            : false;
          const delta = Number(unreadNow) - Number(countedInDb);
          out.set(message.conversationId, (out.get(message.conversationId) ?? 0) + delta);
        }
        return out;
      },
      { isolationLevel: 'repeatable read', accessMode: 'read only' },
    );
  }

  /** Written messages from others after the member's read position, per conversation. */
  private async writtenUnread(
    db: Pick<Database, 'select'>,
    userId: string,
    ids: string[],
    out: Map<string, number>,
  ): Promise<Map<string, number>> {
    const counts = await db
      .select({ conversationId: messages.conversationId, count: sql<number>`count(*)::int` })
      .from(messages)
      .innerJoin(
        members,
        and(eq(members.conversationId, messages.conversationId), eq(members.userId, userId)),
      )
      .where(
        and(
          inArray(messages.conversationId, ids),
          sql`${messages.senderId} <> ${userId}`,
          sql`${messages.deletedAt} is null`,
          sql`${messages.seq} > ${members.lastReadSeq}`,
        ),
      )
      .groupBy(messages.conversationId);
    for (const row of counts) out.set(row.conversationId, Number(row.count));
    return out;
  }

  /** The highest seq handed out so far (0 when none). */
  async currentSeq(conversationId: string): Promise<number> {
    const seq = await this.log.seq(conversationId);
    if (seq !== null) return seq;
    const [row] = await this.maxSeq.execute({ conversationId });
    return Number(row?.max ?? 0);
  }
}
