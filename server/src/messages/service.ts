import { z } from 'zod';
import { v7 as uuidv7 } from 'uuid';
import { type AppendOptions, type Broker, type Refusal, refuses } from '../broker/types.js';
import type { Limits } from '../config/index.js';
import type { Memberships } from '../membership/index.js';
import type { Message } from '../contracts/schemas.js';
import { Forbidden, NotFound, RateLimited, Unauthorized, Unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { CursorField, decodeCursor, encodeCursor } from '../pagination.js';
import type { EventPublisher } from '../contracts/events.js';
import type { EditMessage, ListMessages, SendMessage } from './schemas.js';
import type { MessageStore } from './store.js';

/** What `create` answers when the roster a send relied on changed before its append. */
const ROSTER_CHANGED = Symbol('roster changed');

export interface Sender {
  id: string;
  username: string;
}

export class MessageService {
  constructor(
    private readonly store: MessageStore,
    private readonly memberships: Memberships,
    private readonly events: EventPublisher,
    private readonly broker: Broker,
    private readonly limits: Limits,
    private readonly log: Logger,
    private readonly metrics?: Pick<Metrics, 'messagesSent'>,
  ) {}

  /**
   * Resolves once the message has its id and seq and is in the stream; the worker writes it
   * to PostgreSQL. A repeated `clientMessageId` returns the first message instead. With
   * `session`, the append is refused when one of those marks (the sender's session revoked) is
   * set, checked in the same broker step as the append.
   */
  async send(sender: Sender, input: SendMessage, session: Refusal[] = []): Promise<Message> {
    // A clientMessageId still claimed in the broker is caught by the append itself; PostgreSQL
    // covers a retry after the claim expired. Looked up while the roster is read.
    const earlierLookup = input.clientMessageId
      ? this.store.writtenClientId(sender.id, input.conversationId, input.clientMessageId)
      : null;
    let roster = await this.senderRoster(sender.id, input.conversationId, session, false);
    const earlier = await earlierLookup;
    if (earlier) {
      await this.requireSession(session);
      return this.firstOf(earlier.id);
    }
    for (let attempt = 1; ; attempt++) {
      const result = await this.create(
        input.conversationId,
        sender,
        input.content,
        'text',
        input.clientMessageId ?? null,
        roster.members,
        {
          requireValue: { key: roster.key, value: roster.text },
          refuseIf: session,
          limit: this.sendLimit(sender.id),
        },
      );
      if (result !== ROSTER_CHANGED) return result;
      // The membership changed since this instance read it: read it again, and check again.
      if (attempt >= 3) throw new Unavailable('The conversation kept changing; nothing was sent');
      roster = await this.senderRoster(sender.id, input.conversationId, session, true);
    }
  }

  /** The roster of a conversation the sender is in (a copy missing them is checked afresh). */
  private async senderRoster(senderId: string, conversationId: string, session: Refusal[], fresh: boolean) {
    try {
      let roster = await this.memberships.sendRoster(conversationId, fresh);
      if (!fresh && !roster.members.includes(senderId)) {
        roster = await this.memberships.sendRoster(conversationId, true);
      }
      if (!roster.members.includes(senderId)) throw new NotFound('Conversation');
      return roster;
    } catch (error) {
      // A revoked session learns nothing, not even whether it is a member.
      await this.requireSession(session);
      throw error;
    }
  }

  /** A `system` message ("al added bo") in the conversation's history, seen by every member. */
  async appendSystem(conversationId: string, actor: Sender, content: string): Promise<Message> {
    const recipients = await this.memberships.memberIds(conversationId);
    const created = await this.create(conversationId, actor, content, 'system', null, recipients);
    // Without `requireValue` the append never answers `changed`.
    if (created === ROSTER_CHANGED) throw new Error('an append without a roster check answered `changed`');
    return created;
  }

  async list(userId: string, input: ListMessages) {
    await this.memberships.require(userId, input.conversationId);
    const position = decodeCursor(input.cursor, z.object({ seq: CursorField.seq, order: CursorField.order }));
    const ascending = position ? position.order === 'asc' : input.afterSeq !== undefined;
    const range = ascending
      ? { after: position ? Number(position.seq) : (input.afterSeq ?? 0) }
      : { before: position ? Number(position.seq) : null };
    const { items, more } = await this.store.page(input.conversationId, range, input.limit);
    const last = items[items.length - 1];
    return {
      items,
      nextCursor: more && last ? encodeCursor({ seq: last.seq, order: ascending ? 'asc' : 'desc' }) : null,
    };
  }

  async byId(userId: string, id: string): Promise<Message> {
    const message = await this.store.byId(id);
    if (!message || !(await this.memberships.find(userId, message.conversationId))) {
      throw new NotFound('Message');
    }
    return message;
  }

  async edit(userId: string, input: EditMessage): Promise<Message> {
    const message = await this.byId(userId, input.id);
    if (message.senderId !== userId || message.type === 'system') {
      throw new Forbidden('Only the sender can edit a message');
    }
    if (message.deletedAt) throw new Forbidden('A deleted message cannot be edited');
    const edited: Message = { ...message, content: input.content, editedAt: new Date() };
    const recipients = await this.memberships.memberIds(message.conversationId);
    // Refused in the append itself when a deletion came in since the read above.
    const appended = await this.store.appendEdit(
      edited,
      this.events.fanOut(recipients, { type: 'message.updated', message: edited }),
    );
    if (!appended) throw new Forbidden('A deleted message cannot be edited');
    return edited;
  }

  /** Leaves a tombstone (empty content, `deletedAt`), so seq stays gapless. */
  async delete(userId: string, id: string): Promise<{ ok: true }> {
    const message = await this.byId(userId, id);
    const membership = await this.memberships.require(userId, message.conversationId);
    const moderator = membership.type === 'group' && membership.role !== 'member';
    if (message.senderId !== userId && !moderator) {
      throw new Forbidden('Only the sender or a group admin can delete a message');
    }
    if (message.deletedAt) return { ok: true };
    const tombstone: Message = { ...message, content: '', deletedAt: new Date() };
    const recipients = await this.memberships.memberIds(message.conversationId);
    // Not appended when a concurrent deletion marked the message first: deleted all the same.
    await this.store.appendTombstone(
      tombstone,
      this.events.fanOut(recipients, {
        type: 'message.deleted',
        conversationId: message.conversationId,
        messageId: message.id,
      }),
    );
    return { ok: true };
  }

  private async create(
    conversationId: string,
    sender: Sender,
    content: string,
    type: Message['type'],
    clientMessageId: string | null,
    recipients: string[],
    guard?: Pick<AppendOptions, 'requireValue' | 'refuseIf' | 'limit'>,
  ): Promise<Message | typeof ROSTER_CHANGED> {
    const draft = {
      id: uuidv7(),
      conversationId,
      senderId: sender.id,
      senderUsername: sender.username,
      content,
      type,
      clientMessageId,
      sentAt: new Date(),
      editedAt: null,
      deletedAt: null,
    };
    // The seq is taken, and the event written to every recipient's log and published, in the
    // same broker step as the append: an accepted message always has its event.
    const result = await this.store.appendNew(
      draft,
      (seqSlot) =>
        this.events.fanOutNewMessage(
          recipients,
          { type: 'message.created', message: { ...draft, seq: 0 } },
          seqSlot,
        ),
      guard,
    );
    if (result.appended) {
      this.metrics?.messagesSent.inc({ type });
      return { ...draft, seq: result.seq };
    }
    if ('refused' in result) throw new Unauthorized('Session ended');
    if ('changed' in result) return ROSTER_CHANGED;
    if ('limited' in result) {
      const windowMs = this.limits.sendWindowSeconds * 1000;
      const retryAfter = Math.ceil((windowMs - (Date.now() % windowMs)) / 1000);
      throw new RateLimited(`Too many messages; try again in ${retryAfter} s`, retryAfter);
    }
    // The clientMessageId is claimed (a retry, or a concurrent send that won): answer with the
    // first message.
    return this.firstOf(result.existing.id);
  }

  private async firstOf(id: string): Promise<Message> {
    const message = await this.store.byId(id);
    if (!message) throw new NotFound('Message');
    return message;
  }

  /** At most `sendsPerUser` sends per user in each window of `sendWindowSeconds`. */
  private sendLimit(userId: string): NonNullable<AppendOptions['limit']> {
    const windowMs = this.limits.sendWindowSeconds * 1000;
    const window = Math.floor(Date.now() / windowMs);
    return { key: `throttle:send:${userId}:${window}`, max: this.limits.sendsPerUser, ttlMs: windowMs };
  }

  /** For the paths that answer without appending: refuses a revoked session the same way. */
  private async requireSession(session: Refusal[]): Promise<void> {
    if (session.length === 0) return;
    const values = await this.broker.mget(session.map((mark) => mark.key));
    if (session.some((mark, i) => refuses(mark, values[i] ?? null))) throw new Unauthorized('Session ended');
  }
}
