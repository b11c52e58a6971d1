import {
  CLIENT_ID_TTL_MS,
  DELETED_MARK_TTL_MS,
  type EditResult,
  type MessageChange,
  type MessageLog,
  type NewMessage,
  type NewMessageResult,
  SEQ_SLOT,
  type SendGuards,
  sendWindow,
  type TombstoneResult,
} from '../ports/message-log.js';
import type { MemoryEvents } from './events.js';
import type { PendingCopies } from './pending.js';
import type { MemoryQueue } from './queue.js';
import type { MemoryRosters } from './rosters.js';

type Session = NonNullable<SendGuards['session']>;

/**
 * The message log of the in-process engine. Each operation runs without a pause, so it is one
 * step, as a script is in Redis; the roster, the revocation marks, the event log and the queue
 * it touches are read and written through their engines' synchronous methods.
 */
export class MemoryMessageLog implements MessageLog {
  private readonly seqs = new Map<string, number>();
  /** clientMessageId claims: key → `<conversation id>:<message id>`, until it expires. */
  private readonly claims = new Map<string, { value: string; expiresAt: number }>();
  /** Deleted marks: message id → when the mark expires. */
  private readonly deleted = new Map<string, number>();
  /** Sends counted per sender and window: `<sender> <window>` → count, until the window ends. */
  private readonly sends = new Map<string, { count: number; expiresAt: number }>();

  constructor(
    private readonly rosters: MemoryRosters,
    private readonly revoked: (session: Session) => boolean,
    private readonly events: MemoryEvents,
    private readonly queue: MemoryQueue,
    private readonly copies: PendingCopies,
  ) {}

  appendNew(message: NewMessage, guards: SendGuards, announcement: string | null): Promise<NewMessageResult> {
    const { id, conversationId, senderId, clientMessageId } = message;
    if (guards.roster) {
      const member = this.rosters.holds(conversationId, senderId);
      if (member === null) return Promise.resolve({ refused: 'noRoster' });
      if (!member) return Promise.resolve({ refused: 'notMember' });
    }
    if (guards.session && this.revoked(guards.session)) return Promise.resolve({ refused: 'revoked' });
    if (guards.sendLimit && this.countSend(senderId, guards.sendLimit) > guards.sendLimit.max) {
      return Promise.resolve({ refused: 'limited' });
    }
    const claim = clientMessageId ? claimKey(senderId, conversationId, clientMessageId) : null;
    const held = claim === null ? null : live(this.claims, claim);
    if (held) {
      const colon = held.value.indexOf(':');
      return Promise.resolve({
        duplicate: { conversationId: held.value.slice(0, colon), messageId: held.value.slice(colon + 1) },
      });
    }
    const current = this.seqs.get(conversationId);
    if (current === undefined) return Promise.resolve({ seqMissing: true });
    const seq = current + 1;
    this.seqs.set(conversationId, seq);
    if (claim !== null) {
      this.claims.set(claim, { value: `${conversationId}:${id}`, expiresAt: Date.now() + CLIENT_ID_TTL_MS });
    }
    const body = message.body.replace(SEQ_SLOT, () => String(seq));
    const entryId = this.write('create', conversationId, id, body);
    if (announcement !== null)
      this.events.announce(
        conversationId,
        announcement.replace(SEQ_SLOT, () => String(seq)),
      );
    return Promise.resolve({ appended: true, entryId, seq });
  }

  appendEdit(change: MessageChange, announcement: string | null): Promise<EditResult> {
    if (this.isDeleted(change.id)) return Promise.resolve({ refused: 'deleted' });
    return Promise.resolve({ appended: true, entryId: this.writeChange(change, announcement) });
  }

  appendTombstone(change: MessageChange, announcement: string | null): Promise<TombstoneResult> {
    if (this.isDeleted(change.id)) return Promise.resolve({ alreadyDeleted: true });
    this.deleted.set(change.id, Date.now() + DELETED_MARK_TTL_MS);
    return Promise.resolve({ appended: true, entryId: this.writeChange(change, announcement) });
  }

  pendingOf(conversationId: string): Promise<string[]> {
    return Promise.resolve(this.copies.of(conversationId));
  }

  pendingMessage(messageId: string): Promise<string | null> {
    return Promise.resolve(this.copies.find(messageId)?.body ?? null);
  }

  pendingEntry(messageId: string): Promise<string | null> {
    return Promise.resolve(this.copies.find(messageId)?.entryId ?? null);
  }

  seq(conversationId: string): Promise<number | null> {
    return Promise.resolve(this.seqs.get(conversationId) ?? null);
  }

  restoreSeq(conversationId: string, highest: number): Promise<void> {
    if (!this.seqs.has(conversationId)) this.seqs.set(conversationId, highest);
    return Promise.resolve();
  }

  expireClaim(senderId: string, conversationId: string, clientMessageId: string): Promise<boolean> {
    const key = claimKey(senderId, conversationId, clientMessageId);
    const held = live(this.claims, key) !== null;
    this.claims.delete(key);
    return Promise.resolve(held);
  }

  private writeChange(change: MessageChange, announcement: string | null): string {
    const entryId = this.write('update', change.conversationId, change.id, change.body);
    if (announcement !== null) this.events.announce(change.conversationId, announcement);
    return entryId;
  }

  /** Queues the change and keeps its pending copy. */
  private write(op: 'create' | 'update', conversationId: string, messageId: string, body: string): string {
    const entryId = this.queue.push({ op, m: body });
    this.copies.keep(conversationId, messageId, entryId, body);
    return entryId;
  }

  private isDeleted(messageId: string): boolean {
    const expiresAt = this.deleted.get(messageId);
    if (expiresAt === undefined) return false;
    if (expiresAt > Date.now()) return true;
    this.deleted.delete(messageId);
    return false;
  }

  /** Counts one more send in the sender's current window; returns the count. */
  private countSend(senderId: string, limit: { windowMs: number }): number {
    const now = Date.now();
    const key = `${senderId} ${sendWindow(now, limit.windowMs)}`;
    // The previous window is over: its count goes.
    this.sends.delete(`${senderId} ${sendWindow(now, limit.windowMs) - 1}`);
    const current = live(this.sends, key);
    const count = (current?.count ?? 0) + 1;
    this.sends.set(key, { count, expiresAt: current?.expiresAt ?? now + limit.windowMs });
    return count;
  }
}

/** A claim is the sender's within one conversation. */
function claimKey(senderId: string, conversationId: string, clientMessageId: string): string {
  return `${senderId} ${conversationId} ${clientMessageId}`;
}

/** The entry under `key` unless it expired (then it is dropped). */
function live<T extends { expiresAt: number }>(map: Map<string, T>, key: string): T | null {
  const entry = map.get(key);
  if (!entry) return null;
  if (entry.expiresAt <= Date.now()) {
    map.delete(key);
    return null;
  }
  return entry;
}
