import type { Channel } from './ports/events.js';

/**
 * The keyspace: every broker key, stream and channel name, and nowhere else. Names are logical;
 * the engine adds its prefix.
 */

// --- the partition -------------------------------------------------------------------------

/**
 * Where the event log, the message log, the rosters, the worker's queue, the session
 * revocation marks and the send limit's counts keep their keys and channels: a send's one
 * script touches all of them. Each conversation belongs to one partition
 * (`eventPartition`), and a user's own inbox events to the user's. A partition's names carry its
 * hash tag (`partitionsOf`), so a send's script touches one hash slot on a Redis Cluster, and
 * the partitions spread over its masters. With one partition on a single server, no tag: the
 * names from before Parley ran on a cluster, so such a deployment upgrades with nothing to move.
 * Every function below that takes a partition (`p`) names such a key or channel.
 */
export type Partition = '' | `{p${string}}:`;

/** The one partition of a deployment that has one: tagged on a cluster, untagged on a single server. */
export function partitionOf(cluster: boolean): Partition {
  return cluster ? '{p0}:' : '';
}

/** Hash slots of a Redis Cluster. */
const SLOTS = 16_384;

/**
 * The partitions of a deployment, by index: with more than one, each tagged, on any Redis.
 * Partition k's tag (`{p<k>.<n>}`) is the first whose hash slot lies in the middle half of the
 * k-th of `count` equal ranges of slots: a cluster whose masters hold equal ranges in order (as
 * `redis-cli --cluster create` deals them) then holds the same number of partitions on each,
 * when `count` is a multiple of the masters.
 */
export function partitionsOf(cluster: boolean, count: number): Partition[] {
  if (count <= 1) return [partitionOf(cluster)];
  return Array.from({ length: count }, (_, k): Partition => {
    const width = SLOTS / count;
    const low = k * width + width / 4;
    const high = k * width + (3 * width) / 4;
    for (let n = 0; ; n++) {
      const tag = `p${k}.${n}`;
      const slot = crc16(tag) % SLOTS;
      if (slot >= low && slot < high) return `{p${k}.${n}}:`;
    }
  });
}

/** CRC-16/XMODEM, the hash Redis Cluster takes a key's slot from. */
function crc16(text: string): number {
  let crc = 0;
  for (const byte of Buffer.from(text)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/**
 * Which of `count` independent event orders a conversation's events (and its members' marks),
 * or a user's own inbox events, belong to: FNV-1a of the id. With one order, always 0.
 */
export function eventPartition(id: string, count: number): number {
  return count <= 1 ? 0 : fnv1a(id) % count;
}

/** FNV-1a (32 bits) of a string's UTF-16 code units. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

// --- the message stream the worker drains --------------------------------------------------

export const messagesStream = (p: Partition) => `parley:${p}messages`;
export const PERSIST_GROUP = 'persist';
export const deadLetterStream = (p: Partition) => `parley:${p}messages:dead`;

// --- messages on their way to PostgreSQL -------------------------------------------------------

/** Unwritten messages of one conversation: message id → `<entry id>|<message JSON>`. */
export const pendingKey = (p: Partition, conversationId: string) =>
  `pending:${p}conversation:${conversationId}`;
/** Where an unwritten message lives: message id → `<entry id>|<conversation id>`. */
export const pendingIndex = (p: Partition) => `pending:${p}messages`;
/** Live seq counter of a conversation. */
export const seqKey = (p: Partition, conversationId: string) => `seq:${p}${conversationId}`;
/**
 * Idempotency claim of a client message id, which is the sender's within one conversation (the
 * same id in another conversation is another message): value `<conversation id>:<message id>`.
 */
export const clientIdKey = (
  p: Partition,
  senderId: string,
  conversationId: string,
  clientMessageId: string,
) => `client-message:${p}${senderId}:${conversationId}:${clientMessageId}`;
/** Set, in the same step as its tombstone's append, once a message is deleted. */
export const deletedKey = (p: Partition, messageId: string) => `deleted:${p}${messageId}`;
/** A user's sends in one window of the send limit (counted by the send's script). */
export const sendThrottleKey = (p: Partition, userId: string, window: number) =>
  `throttle:${p}send:${userId}:${window}`;
/** Claimed by the one `typing` call per user and conversation that sends the event. */
export const typingKey = (conversationId: string, userId: string) => `typing:${conversationId}:${userId}`;

// --- sessions and limits -----------------------------------------------------------------------

/** Revocations, for every instance to end the streams of revoked sessions. */
export const revocationsChannel = (p: Partition) => `auth:${p}revoked`;
/** Set once a session (a refresh-token family) is revoked; read by the send's script. */
export const revokedSessionKey = (p: Partition, sessionId: string) => `revoked:${p}session:${sessionId}`;
/** Every access token of the user issued before this time (ms) is revoked; read by the send's script. */
export const revokedUserKey = (p: Partition, userId: string) => `revoked:${p}user:${userId}`;
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
  return fnv1a(userId) % PRESENCE_SHARDS;
}
/** A user's live connections (stream keys), scored by when they expire. */
export const connectionsKey = (userId: string) => `presence:{s${presenceShard(userId)}}:user:${userId}`;
/** The users of one shard with a live connection, scored by when their last one expires. */
export const onlineKey = (shard: number) => `presence:{s${shard}}:online`;

// --- the event log ---------------------------------------------------------------------------

/** Changes whenever the broker loses its data, so ids from before cannot be resumed from. */
export const epochKey = (p: Partition) => `events:${p}epoch`;

/** One-entry stream whose ids order every durable event of the deployment. */
export const eventIdsStream = (p: Partition) => `events:${p}ids`;

/** A conversation's events, each written once, capped (an older gap gets `resync`). */
export const conversationLog = (p: Partition, conversationId: string) =>
  `events:${p}conversation:${conversationId}`;

/**
 * A user's inbox: what concerns that user alone (joining or leaving a conversation, events for
 * their own devices). It is also where events went, one copy per member, before conversation
 * logs existed, so a position from then still resumes.
 */
export const inbox = (p: Partition, userId: string) => `events:${p}user:${userId}`;

/** Live events of one conversation, for the instances holding a member's stream. */
export const conversationChannel = (p: Partition, conversationId: string) => `c:${p}${conversationId}`;

/**
 * Live events of one user's inbox of a partition (the marks of that partition's conversations;
 * in the user's own partition, their own events and their contacts' presence).
 */
export const userChannel = (p: Partition, userId: string) => `u:${p}${userId}`;

/**
 * One instance's own channel in a partition: a message it sends itself arrives after everything
 * published before it in that partition.
 */
export const instanceChannel = (p: Partition, instanceId: string) => `i:${p}${instanceId}`;

/** The name of a channel of the event bus. */
export function channelName(p: Partition, channel: Channel): string {
  if ('conversation' in channel) return conversationChannel(p, channel.conversation);
  if ('user' in channel) return userChannel(p, channel.user);
  if ('instance' in channel) return instanceChannel(p, channel.instance);
  return revocationsChannel(p);
}

/**
 * Who is in a conversation: a set, the send step's membership check. On a single server it
 * carries its conversation as hash tag (its name from before the partition).
 */
export const rosterKey = (p: Partition, conversationId: string) =>
  p ? `members:${p}${conversationId}` : `members:{${conversationId}}`;

/**
 * Changed (to a new random value) after every membership change: a stale fill never lands. In
 * the roster's hash slot, so one script reads both.
 */
export const rosterVersionKey = (p: Partition, conversationId: string) =>
  `${rosterKey(p, conversationId)}:version`;
