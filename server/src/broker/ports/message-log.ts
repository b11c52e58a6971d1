/**
 * Where a message change is accepted: in one atomic step it is checked against its guards,
 * queued for the worker (`WorkQueue`), kept as the message's pending copy until PostgreSQL has it,
 * and announced (its conversation event written to the conversation's log and published, as
 * `EventLog.toConversation` does). A refused change writes nothing at all.
 *
 * Message bodies are opaque text (the worker's wire JSON); the log only fills in a new message's
 * seq where `SEQ_SLOT` stands, in the body and in its announcement.
 */
export interface MessageLog {
  /**
   * A new message, under the next seq of its conversation. The guards are checked in this order:
   * roster, revocation, send limit (counted even when a later check refuses), then idempotency:
   * a `clientMessageId` already claimed answers with the message that claimed it. Without a seq
   * counter (a new conversation, or the broker lost its data) nothing is written and the answer
   * says so: restore it (`restoreSeq`) and try again.
   */
  appendNew(message: NewMessage, guards: SendGuards, announcement: string | null): Promise<NewMessageResult>;
  /** An edit, refused while the message is marked deleted (`appendTombstone`). */
  appendEdit(change: MessageChange, announcement: string | null): Promise<EditResult>;
  /** A tombstone, which marks the message deleted; refused when it is marked already. */
  appendTombstone(change: MessageChange, announcement: string | null): Promise<TombstoneResult>;
  /** The bodies of the conversation's pending copies: messages changed and not yet written. */
  pendingOf(conversationId: string): Promise<string[]>;
  /** The body of the message's pending copy; null when it has none. */
  pendingMessage(messageId: string): Promise<string | null>;
  /** The queue entry of the message's pending change; null when it has none. */
  pendingEntry(messageId: string): Promise<string | null>;
  /** The highest seq the conversation's counter handed out; null when there is no counter. */
  seq(conversationId: string): Promise<number | null>;
  /** Sets the conversation's counter to `highest` (PostgreSQL's), unless it exists already. */
  restoreSeq(conversationId: string, highest: number): Promise<void>;
}

/**
 * Stands for the seq in a new message's body and announcement until the log fills it in. It
 * holds control characters, which JSON never writes raw, so nothing else in a body matches it.
 */
export const SEQ_SLOT = '\u0000seq\u0000';

export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  clientMessageId: string | null;
  /** With `SEQ_SLOT` in place of the seq. */
  body: string;
}

export interface MessageChange {
  id: string;
  conversationId: string;
  body: string;
}

/** What a new message is checked against, each in the same step as its append. */
export interface SendGuards {
  /** The sender must be in the conversation's roster (`RosterStore`). */
  roster?: boolean;
  /** The session the sender acts under must not be revoked (its marks, as `Sessions` sets them). */
  session?: { userId: string; sessionId: string; issuedAt: number };
  /** At most `max` new messages per sender in each window of `windowMs`. */
  sendLimit?: { max: number; windowMs: number };
}

export type NewMessageResult =
  | { appended: true; entryId: string; seq: number }
  | { refused: 'noRoster' | 'notMember' | 'revoked' | 'limited' }
  /** The `clientMessageId` is claimed by this message. */
  | { duplicate: { conversationId: string; messageId: string } }
  | { seqMissing: true };

export type EditResult = { appended: true; entryId: string } | { refused: 'deleted' };

export type TombstoneResult = { appended: true; entryId: string } | { alreadyDeleted: true };

/**
 * How long a clientMessageId stays claimed. Retries come within seconds or minutes; a later one
 * is caught by PostgreSQL's unique (sender, conversation, clientMessageId) key.
 */
export const CLIENT_ID_TTL_MS = 60 * 60 * 1000;
/**
 * How long a deletion refuses edits. Only an edit that read the message before it was deleted
 * needs the mark (any later one finds the tombstone, pending or written), and such an edit
 * appends within moments of its read; a day leaves room for any stalled call.
 */
export const DELETED_MARK_TTL_MS = 24 * 60 * 60 * 1000;

/** The window of the send limit that `now` falls in. */
export function sendWindow(now: number, windowMs: number): number {
  return Math.floor(now / windowMs);
}
