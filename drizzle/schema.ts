import { sql } from 'drizzle-orm';
import {
  bigint,
  check,
  index,
  pgEnum,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
  primaryKey,
} from 'drizzle-orm/pg-core';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey(),
    email: text('email').notNull(),
    username: text('username').notNull(),
    displayName: text('display_name').notNull(),
    passwordHash: text('password_hash').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
    lastSeenAt: ts('last_seen_at'),
    /** Set when the account is deleted; the row stays so history keeps its sender. */
    deletedAt: ts('deleted_at'),
  },
  (t) => [
    // Case-insensitive uniqueness; a deleted account frees its name and address.
    uniqueIndex('users_username_lower_key')
      .on(sql`lower(${t.username})`)
      .where(sql`${t.deletedAt} is null`),
    uniqueIndex('users_email_lower_key')
      .on(sql`lower(${t.email})`)
      .where(sql`${t.deletedAt} is null`),
    index('users_display_name_lower_idx').on(sql`lower(${t.displayName})`),
  ],
);

/**
 * One row per refresh token ever issued. A login starts a family; each refresh rotates to a
 * new row in the same family. Presenting a token whose row is already rotated revokes the family.
 */
export const sessions = pgTable(
  'sessions',
  {
    id: uuid('id').primaryKey(),
    familyId: uuid('family_id').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    /** SHA-256 of the refresh token; the token itself is never stored. */
    tokenHash: text('token_hash').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    expiresAt: ts('expires_at').notNull(),
    rotatedAt: ts('rotated_at'),
    revokedAt: ts('revoked_at'),
  },
  (t) => [
    uniqueIndex('sessions_token_hash_key').on(t.tokenHash),
    index('sessions_family_idx').on(t.familyId),
    index('sessions_user_idx').on(t.userId),
  ],
);

export const conversationType = pgEnum('conversation_type', ['direct', 'group']);
export const memberRole = pgEnum('member_role', ['owner', 'admin', 'member']);
export const messageType = pgEnum('message_type', ['text', 'system']);

export const conversations = pgTable(
  'conversations',
  {
    id: uuid('id').primaryKey(),
    type: conversationType('type').notNull(),
    name: text('name'),
    createdBy: uuid('created_by')
      .notNull()
      .references(() => users.id),
    /** For direct conversations: the two user ids, smaller first, so a pair maps to one row. */
    directKey: text('direct_key'),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
    /** Highest seq written to `messages`; the live counter is in the broker. */
    lastSeq: bigint('last_seq', { mode: 'number' }).notNull().default(0),
    lastActivityAt: ts('last_activity_at').notNull().defaultNow(),
    deletedAt: ts('deleted_at'),
  },
  (t) => [
    uniqueIndex('conversations_direct_key').on(t.directKey),
    index('conversations_activity_idx').on(t.lastActivityAt, t.id),
    check(
      'conversations_direct_shape',
      sql`(${t.type} = 'direct' and ${t.directKey} is not null and ${t.name} is null) or (${t.type} = 'group' and ${t.directKey} is null)`,
    ),
  ],
);

export const members = pgTable(
  'members',
  {
    conversationId: uuid('conversation_id')
      .notNull()
      .references(() => conversations.id, { onDelete: 'cascade' }),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    role: memberRole('role').notNull().default('member'),
    joinedAt: ts('joined_at').notNull().defaultNow(),
    lastReadSeq: bigint('last_read_seq', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.conversationId, t.userId] }), index('members_user_idx').on(t.userId)],
);

export const messages = pgTable(
  'messages',
  {
    /** UUIDv7 given by the API instance at send time; the worker never invents ids. */
    id: uuid('id').primaryKey(),
    /**
     * References `conversations.id` and `users.id`, checked once per statement by triggers
     * (migration 0001) rather than row by row: see `messages_check_references`.
     */
    conversationId: uuid('conversation_id').notNull(),
    seq: bigint('seq', { mode: 'number' }).notNull(),
    senderId: uuid('sender_id').notNull(),
    senderUsername: text('sender_username').notNull(),
    type: messageType('type').notNull().default('text'),
    content: text('content').notNull(),
    clientMessageId: text('client_message_id'),
    sentAt: ts('sent_at').notNull(),
    editedAt: ts('edited_at'),
    deletedAt: ts('deleted_at'),
    /** Stream entry id of the last change applied, so a replayed older change never wins. */
    version: text('version').notNull().default('0-0'),
  },
  (t) => [
    uniqueIndex('messages_conversation_seq_key').on(t.conversationId, t.seq),
    // A clientMessageId is its sender's within one conversation: the same one in another
    // conversation is another message.
    uniqueIndex('messages_sender_conversation_client_id_key').on(
      t.senderId,
      t.conversationId,
      t.clientMessageId,
    ),
  ],
);

export const schema = { users, sessions, conversations, members, messages };
