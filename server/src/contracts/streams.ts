/**
 * Broker stream names shared by the message store that writes them, the worker that drains them
 * and the health and metrics probes that watch them.
 */
export const MESSAGES_STREAM = 'parley:messages';
export const PERSIST_GROUP = 'persist';
export const DEAD_LETTER_STREAM = 'parley:messages:dead';
