import type { Channel } from './ports/events.js';

/**
 * The keyspace: every broker key, stream and channel name, and nowhere else. Names are logical;
 * the engine adds its prefix.
 */

// --- the message stream the worker drains --------------------------------------------------

export const MESSAGES_STREAM = 'parley:messages';
export const PERSIST_GROUP = 'persist';
export const DEAD_LETTER_STREAM = 'parley:messages:dead';

// --- messages on their way to PostgreSQL -------------------------------------------------------

/** Unwritten messages of one conversation: message id → `<entry id>|<message JSON>`. */
export const pendingKey = (conversationId: string) => `pending:conversation:${conversationId}`;
/** Where an unwritten message lives: message id → `<entry id>|<conversation id>`. */
export const PENDING_INDEX = 'pending:messages';
/** Live seq counter of a conversation. */
export const seqKey = (conversationId: string) => `seq:${conversationId}`;
/**
 * Idempotency claim of a client message id, which is the sender's within one conversation (the
 * same id in another conversation is another message): value `<conversation id>:<message id>`.
 */
export const clientIdKey = (senderId: string, conversationId: string, clientMessageId: string) =>
  `client-message:${senderId}:${conversationId}:${clientMessageId}`;
/** Set, in the same step as its tombstone's append, once a message is deleted. */
export const deletedKey = (messageId: string) => `deleted:${messageId}`;
/** A user's sends in one window of the send limit. */
export const sendThrottleKey = (userId: string, window: number) => `throttle:send:${userId}:${window}`;
/** Claimed by the one `typing` call per user and conversation that sends the event. */
export const typingKey = (conversationId: string, userId: string) => `typing:${conversationId}:${userId}`;

// --- sessions and limits -----------------------------------------------------------------------

/** Revocations, for every instance to end the streams of revoked sessions. */
export const REVOCATIONS_CHANNEL = 'auth:revoked';
/** Set once a session (a refresh-token family) is revoked. */
export const revokedSessionKey = (sessionId: string) => `revoked:session:${sessionId}`;
/** Every access token of the user issued before this time (ms) is revoked. */
export const revokedUserKey = (userId: string) => `revoked:user:${userId}`;
/** A rotated refresh token's successor, sealed, for the reuse grace. */
export const refreshSuccessorKey = (tokenHash: string) => `refresh:successor:${tokenHash}`;
/** One budget of `limits/budgets.ts` for one caller (`user:<id>` or `address:<bucket>`). */
export const budgetKey = (entry: string, subject: string) => `throttle:budget:${entry}:${subject}`;
/** Password guesses, by what they are counted against. */
export const loginThrottleKey = (by: 'account' | 'unknown' | 'address' | 'device', subject: string) =>
  `throttle:login:${by}:${subject}`;

// --- presence ----------------------------------------------------------------------------------

/**
 * Presence is kept in this many shards, each user in one (`presenceShard`): a user's connections
 * and the online set they are in share a hash tag, so one script updates both on a Redis Cluster.
 */
export const PRESENCE_SHARDS = 16;
/** The shard of a user's presence (FNV-1a of the id). */
export function presenceShard(userId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) hash = Math.imul(hash ^ userId.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % PRESENCE_SHARDS;
}
/** A user's live connections (stream keys), scored by when they expire. */
export const connectionsKey = (userId: string) => `presence:{s${presenceShard(userId)}}:user:${userId}`;
/** The users of one shard with a live connection, scored by when their last one expires. */
export const onlineKey = (shard: number) => `presence:{s${shard}}:online`;

// --- the event log ---------------------------------------------------------------------------

/** Changes whenever the broker loses its data, so ids from before cannot be resumed from. */
export const EPOCH_KEY = 'events:epoch';

/** One-entry stream whose ids order every durable event of the deployment. */
export const EVENT_IDS_STREAM = 'events:ids';

/** A conversation's events, each written once, capped (an older gap gets `resync`). */
export const conversationLog = (conversationId: string) => `events:conversation:${conversationId}`;

/**
 * A user's inbox: what concerns that user alone (joining or leaving a conversation, events for
 * their own devices). It is also where events went, one copy per member, before conversation
 * logs existed, so a position from then still resumes.
 */
export const inbox = (userId: string) => `events:user:${userId}`;

/** Live events of one conversation, for the instances holding a member's stream. */
export const conversationChannel = (conversationId: string) => `c:${conversationId}`;

/** Live events of one user's inbox, and their contacts' presence. */
export const userChannel = (userId: string) => `u:${userId}`;

/** One instance's own channel: a message it sends itself arrives after everything before it. */
export const instanceChannel = (instanceId: string) => `i:${instanceId}`;

/** The name of a channel of the event bus. */
export function channelName(channel: Channel): string {
  if ('conversation' in channel) return conversationChannel(channel.conversation);
  if ('user' in channel) return userChannel(channel.user);
  if ('instance' in channel) return instanceChannel(channel.instance);
  return REVOCATIONS_CHANNEL;
}

/** Who is in a conversation: a set, the send step's membership check. */
export const rosterKey = (conversationId: string) => `members:{${conversationId}}`;

/**
 * Changed (to a new random value) after every membership change: a stale fill never lands. In
 * the roster's hash slot, so one script reads both.
 */
export const rosterVersionKey = (conversationId: string) => `members:{${conversationId}}:version`;
