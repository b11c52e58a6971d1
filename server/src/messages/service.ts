import { z } from 'zod';
import { uuidv7 } from '../ids.js';
import type { SendGuards } from '../broker/ports/message-log.js';
import type { SessionHolder, Sessions } from '../credentials/sessions.js';
import type { AuthUser } from '../credentials/tokens.js';
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
import { SEQ_SLOT } from '../broker/ports/message-log.js';

/** What `create` answers when the conversation's roster is not in the broker (fill it, then retry). */
const NO_ROSTER = Symbol('no roster');
/** What `create` answers when the sender is not in the conversation. */
const NOT_MEMBER = Symbol('not a member');

export interface Sender {
  id: string;
  username: string;
}

export class MessageService {
  constructor(
    private readonly store: MessageStore,
    private readonly memberships: Memberships,
    private readonly events: EventPublisher,
    private readonly sessions: Pick<Sessions, 'revokedAmong'>,
    private readonly limits: Limits,
    private readonly log: Logger,
    private readonly metrics?: Pick<Metrics, 'messagesSent'>,
  ) {}

  /**
   * Resolves once the message has its id and seq and is queued; the worker writes it to
   * PostgreSQL. A repeated `clientMessageId` returns the first message instead. The append is
   * refused when the sender's session is revoked, checked in the same broker step.
   */
  async send(sender: AuthUser, input: SendMessage): Promise<Message> {
    const session: SessionHolder = {
      userId: sender.id,
      sessionId: sender.sessionId,
      issuedAt: sender.issuedAt,
    };
    // A clientMessageId still claimed in the broker is caught by the append itself; PostgreSQL
    // covers a retry after the claim expired (a first attempt cannot be one).
    if (input.clientMessageId) {
      const earlier = await this.store.writtenClientId(
        sender.id,
        input.conversationId,
        input.clientMessageId,
        input.firstAttempt === true,
      );
      if (earlier) {
        await this.requireSession(session);
        if (!(await this.memberships.isMember(sender.id, input.conversationId))) {
          throw new NotFound('Conversation');
        }
        return this.firstOf(earlier.id);
      }
    }
    for (let attempt = 1; ; attempt++) {
      const result = await this.create(
        input.conversationId,
        sender,
        input.content,
        'text',
        input.clientMessageId ?? null,
        {
          roster: true,
          session,
          sendLimit: { max: this.limits.sendsPerUser, windowMs: this.limits.sendWindowSeconds * 1000 },
        },
      );
      if (result === NOT_MEMBER) {
        // A revoked session learns nothing, not even whether it is a member.
        await this.requireSession(session);
        throw new NotFound('Conversation');
      }
      if (result !== NO_ROSTER) return result;
      // The roster expired or changed since it was last filled: fill it from PostgreSQL.
      if (attempt >= 3) throw new Unavailable('The conversation kept changing; nothing was sent');
      await this.memberships.fillRoster(input.conversationId);
    }
  }

  /** A `system` message ("al added bo") in the conversation's history, seen by every member. */
  async appendSystem(conversationId: string, actor: Sender, content: string): Promise<Message> {
    const created = await this.create(conversationId, actor, content, 'system', null);
    // Without `roster` the append never answers about the roster.
    if (typeof created === 'symbol') throw new Error('an append without a roster check answered about it');
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
    // Refused in the append itself when a deletion came in since the read above.
    const appended = await this.store.appendEdit(
      edited,
      this.events.announcement({ type: 'message.updated', message: edited }),
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
    // Not appended when a concurrent deletion marked the message first: deleted all the same.
    await this.store.appendTombstone(
      tombstone,
      this.events.announcement({
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
    guards?: SendGuards,
  ): Promise<Message | typeof NO_ROSTER | typeof NOT_MEMBER> {
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
    // The seq is taken, and the event written to the conversation's log and published, in the
    // same broker step as the append: an accepted message always has its event.
    const result = await this.store.appendNew(
      draft,
      this.events.newMessageAnnouncement(
        { type: 'message.created', message: { ...draft, seq: 0 } },
        SEQ_SLOT,
      ),
      guards,
    );
    if ('appended' in result) {
      this.metrics?.messagesSent.inc({ type });
      return { ...draft, seq: result.seq };
    }
    if ('duplicate' in result) {
      // The clientMessageId is claimed (a retry, or a concurrent send that won): answer with the
      // first message.
      return this.firstOf(result.duplicate.messageId);
    }
    switch (result.refused) {
      case 'revoked':
        throw new Unauthorized('Session ended');
      case 'notMember':
        return NOT_MEMBER;
      case 'noRoster':
        return NO_ROSTER;
      case 'limited': {
        const windowMs = this.limits.sendWindowSeconds * 1000;
        const retryAfter = Math.ceil((windowMs - (Date.now() % windowMs)) / 1000);
        throw new RateLimited(`Too many messages; try again in ${retryAfter} s`, retryAfter);
      }
    }
  }

  private async firstOf(id: string): Promise<Message> {
    const message = await this.store.byId(id);
    if (!message) throw new NotFound('Message');
    return message;
  }

  /** For the paths that answer without appending: refuses a revoked session the same way. */
  private async requireSession(session: SessionHolder): Promise<void> {
    const [revoked] = await this.sessions.revokedAmong([session]);
    if (revoked) throw new Unauthorized('Session ended');
  }
}
