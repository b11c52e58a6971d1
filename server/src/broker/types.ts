import type { EventBus, EventLog } from './ports/events.js';
import type { RosterStore } from './ports/rosters.js';

export type { SubscriptionWatcher, Unsubscribe } from './ports/events.js';

/**
 * What Parley needs from Redis, as one interface with two engines: `RedisBroker` (ioredis)
 * for deployments and `MemoryBroker` for the single-process default. Both pass the same
 * contract tests (`test/broker.contract.test.ts`).
 *
 * Every key, stream and channel name given here is logical: the engine adds its prefix.
 * Stream entry ids are Redis ids (`<ms>-<n>`) in both engines and compare in that order.
 */

export interface StreamEntry {
  id: string;
  fields: Record<string, string>;
}

export interface PendingEntry {
  id: string;
  consumer: string;
  idleMs: number;
  deliveries: number;
}

export interface GroupInfo {
  /** Entries delivered to the group and not yet acknowledged. */
  pending: number;
  /** Entries in the stream not yet delivered to the group. */
  lag: number;
  lastDeliveredId: string;
}

export interface StreamInfo {
  length: number;
  firstId: string | null;
  lastId: string;
  /**
   * At or above every id ever removed from the stream (`0-0` when nothing was): reading on
   * from an id at or above it misses nothing.
   */
  maxDeletedId: string;
}

export type AppendResult =
  | { appended: true; id: string; /** The counter's new value, with `counter`. */ counter?: number }
  | { appended: false; existing: string }
  /** With `counter`: the counter did not exist, so nothing was written. */
  | { appended: false; missingCounter: true }
  /** With `refuseIf`: the refusal at this index held, so nothing was written. */
  | { appended: false; refused: number }
  /** With `limit`: the count went past its maximum, so nothing else was written. */
  | { appended: false; limited: true }
  /** With `roster`: the set does not hold the member, so nothing was written. */
  | { appended: false; notMember: true }
  /** With `roster`: the set does not exist (not filled yet, or expired); nothing was written. */
  | { appended: false; noSet: true };

/** A key whose presence refuses an append: any value, or a number of at least `atLeast`. */
export interface Refusal {
  key: string;
  atLeast?: number;
}

/** Whether `value`, the current value of `refusal.key` (null when absent), refuses. */
export function refuses(refusal: Refusal, value: string | null): boolean {
  if (value === null) return false;
  return refusal.atLeast === undefined || Number(value) >= refusal.atLeast;
}

export interface AppendOptions {
  /** Cap the stream at about this many entries (only trims whole old entries). */
  maxLen?: number;
  /**
   * Checked first, in the same atomic step: unless the conversation's roster (`RosterStore`)
   * holds the user, nothing at all is written and the result says `notMember` (or `noSet` when
   * there is no roster).
   */
  roster?: { conversationId: string; userId: string };
  /**
   * Checked next: when one of these refuses, nothing at all is written (not even the `limit`
   * count) and the result gives its index.
   */
  refuseIf?: Refusal[];
  /**
   * Then counted, in the same atomic step: `key` is incremented (and given a lifetime of
   * `ttlMs` when new); when its new value is above `max`, nothing else is written and the result
   * says `limited`.
   */
  limit?: { key: string; max: number; ttlMs: number };
  /**
   * Claim `key` with `value` (expiring after `ttlMs`) in the same atomic step; when the key is
   * already held, nothing is appended and its current value is returned instead.
   */
  unique?: { key: string; value: string; ttlMs: number };
  /** Store `<entry id>|<value>` in each hash `key` under `field`, in the same atomic step. */
  pending?: { key: string; field: string; value: string }[];
  /**
   * Increment the existing counter `key` in the same atomic step (after the `unique` check, so
   * a refused append takes no number) and write its new value in place of the first `slot` in
   * every field value and pending value. When the counter does not exist nothing is written
   * (no claim either) and the result says `missingCounter`.
   */
  counter?: { key: string; slot: string };
  /**
   * Once the entry is appended, in the same atomic step: what `appendToMany` does with these
   * arguments, with the counter's new value in place of the first `slot` in each field value
   * and in the published message. Nothing of it happens when nothing is appended.
   */
  fanOut?: FanOut;
}

/** The arguments of `appendToMany`, for a fan-out that rides on another append. */
export interface FanOut {
  idStream: string;
  streams: string[];
  fields: Record<string, string>;
  maxLen: number;
  publish?: Publication;
}

/** What an append publishes once it is written: `<entry id>\n<message>` on each channel. */
export interface Publication {
  channels: string[];
  message: string;
}

/**
 * An allowance of attempts under one key, for `spend`: `max` attempts per window of `windowMs`,
 * the window starting with the first attempt.
 */
export interface Allowance {
  key: string;
  max: number;
  windowMs: number;
  /**
   * Past `max`, slow down instead of refusing until the window ends: the next attempt is allowed
   * `firstMs` after the last one, each further one after twice as long as the one before, at
   * most `maxMs`; and every attempt starts the window afresh, so it ends only once the attempts
   * stop.
   */
  backoff?: { firstMs: number; maxMs: number };
}

/** What `spend` answers: taken, or refused with how long to wait before trying again. */
export type Spent = { spent: true } | { spent: false; retryAfterMs: number };

export interface Broker {
  readonly engine: 'redis' | 'memory';
  readonly rosters: RosterStore;
  readonly events: EventLog;
  readonly bus: EventBus;

  /** Publishes on a channel by its keyspace name (`bus.publish` for the event channels). */
  publish(channel: string, message: string): Promise<void>;

  // Streams.
  append(stream: string, fields: Record<string, string>, options?: AppendOptions): Promise<AppendResult>;
  /**
   * Appends one entry to each of `streams` under a single new id, taken from the monotonic
   * `idStream`, then publishes `<id>\n<message>` on each of `publish.channels`; all atomically,
   * so every stream sees ids in one global order.
   */
  appendToMany(
    idStream: string,
    streams: string[],
    fields: Record<string, string>,
    options: { maxLen: number; publish?: Publication },
  ): Promise<string>;
  /** Entries with id strictly greater than `afterId`, oldest first. */
  rangeAfter(stream: string, afterId: string, count: number): Promise<StreamEntry[]>;
  /** The newest entry's id, or `0-0`. */
  lastId(stream: string): Promise<string>;
  streamInfo(stream: string): Promise<StreamInfo>;
  /** Removes entries with id lower than `minId`; returns how many. */
  trimBelow(stream: string, minId: string): Promise<number>;

  // Consumer groups.
  /** Creates the group (and the stream) if missing, starting from the first entry. */
  ensureGroup(stream: string, group: string): Promise<void>;
  /**
   * `mode: 'new'` delivers entries never delivered to the group (waiting up to `blockMs`);
   * `mode: 'own'` re-reads this consumer's pending entries (after `afterId`).
   */
  readGroup(
    stream: string,
    group: string,
    consumer: string,
    options: { count: number; blockMs?: number; mode: 'new' | 'own'; afterId?: string },
  ): Promise<StreamEntry[]>;
  ack(stream: string, group: string, ids: string[]): Promise<number>;
  pending(stream: string, group: string, count: number): Promise<PendingEntry[]>;
  /** Takes over entries idle for at least `minIdleMs` from any consumer (delivery count +1). */
  claimIdle(
    stream: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    count: number,
  ): Promise<StreamEntry[]>;
  groupInfo(stream: string, group: string): Promise<GroupInfo | null>;

  // Keys.
  get(key: string): Promise<string | null>;
  /** The value of each key, null where it is missing. */
  mget(keys: string[]): Promise<(string | null)[]>;
  /** Returns false when `nx` is set and the key already exists. */
  set(key: string, value: string, options?: { ttlMs?: number; nx?: boolean }): Promise<boolean>;
  del(...keys: string[]): Promise<number>;
  ttlMs(key: string): Promise<number>;

  /**
   * Takes one attempt from each allowance, all or none, in one atomic step shared by every
   * instance: when any of them has none left, nothing is taken and the answer says how long until
   * all of them would allow one. A refused call takes nothing, so asking again costs nothing.
   */
  spend(allowances: Allowance[]): Promise<Spent>;
  /** Gives back one attempt taken by `spend` from each key (never below none taken). */
  refund(keys: string[]): Promise<void>;
  hget(key: string, field: string): Promise<string | null>;
  hgetall(key: string): Promise<Record<string, string>>;
  hset(key: string, field: string, value: string): Promise<void>;
  /** Deletes `field` only while its value still starts with `<prefix>|`. */
  hdelIfPrefix(key: string, field: string, prefix: string): Promise<boolean>;
  /** `hdelIfPrefix` for many fields at once; returns how many were deleted. */
  hdelIfPrefixMany(items: { key: string; field: string; prefix: string }[]): Promise<number>;

  // Sorted sets (presence, rate windows).
  /** Adds or moves each of `members` to `score`, in one step. */
  zadd(key: string, score: number, ...members: string[]): Promise<void>;
  /**
   * Adds `member` at `score` unless `key` already holds `max` members, counted once those
   * scored at or below `expireUpTo` are removed; all in one step, so callers racing on any
   * instance never take more than `max` places between them. A member already present keeps
   * its place (moved to `score`). Says whether `member` holds a place now, and how many other
   * members the set held.
   */
  zaddCapped(
    key: string,
    member: string,
    score: number,
    cap: { max: number; expireUpTo: number },
  ): Promise<{ added: boolean; others: number }>;
  zrem(key: string, member: string): Promise<number>;
  zremRangeByScore(key: string, max: number): Promise<number>;
  zcard(key: string): Promise<number>;
  /** Members whose score is at most `max`, lowest first. */
  zrangeByScore(key: string, max: number, count: number): Promise<string[]>;
  /** The score of each member, null where it is absent. */
  zscores(key: string, members: string[]): Promise<(number | null)[]>;

  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** Compares two stream ids (`<ms>-<n>`) numerically, without allocating (hot path). */
export function compareStreamIds(a: string, b: string): number {
  const aDash = a.indexOf('-');
  const bDash = b.indexOf('-');
  const aMs = aDash < 0 ? a : a.slice(0, aDash);
  const bMs = bDash < 0 ? b : b.slice(0, bDash);
  const byMs = compareDigits(aMs, bMs);
  if (byMs !== 0) return byMs;
  return compareDigits(aDash < 0 ? '0' : a.slice(aDash + 1), bDash < 0 ? '0' : b.slice(bDash + 1));
}

/** Compares two unsigned decimal numbers written without leading zeros. */
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

export const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** Thrown when the broker cannot be reached; the API maps it to a clear, retryable error. */
export class BrokerUnavailableError extends Error {
  override name = 'BrokerUnavailableError';

  constructor(
    message: string,
    options?: ErrorOptions & {
      /** The command went out before the connection failed or timed out: it may have run. */
      outcomeUnknown?: boolean;
    },
  ) {
    super(message, options);
    this.outcomeUnknown = options?.outcomeUnknown ?? false;
  }

  readonly outcomeUnknown: boolean;
}
