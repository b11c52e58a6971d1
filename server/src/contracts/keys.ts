/**
 * Every broker name the domains share: streams, logs, channels and the sets the send step
 * checks. Names are logical; the broker engine adds its prefix.
 */

// --- the message stream the worker drains --------------------------------------------------

export const MESSAGES_STREAM = 'parley:messages';
export const PERSIST_GROUP = 'persist';
export const DEAD_LETTER_STREAM = 'parley:messages:dead';

// --- the event log ---------------------------------------------------------------------------

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

/** Who is in a conversation: a set, the send step's membership check. */
export const rosterKey = (conversationId: string) => `members:${conversationId}`;

/** Changed (to a new random value) after every membership change: a stale fill never lands. */
export const rosterVersionKey = (conversationId: string) => `members:${conversationId}:version`;
