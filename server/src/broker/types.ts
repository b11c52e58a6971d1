import type { EventBus, EventLog } from './ports/events.js';
import type { MessageLog } from './ports/message-log.js';
import type { WorkQueue } from './ports/queue.js';
import type { RosterStore } from './ports/rosters.js';

export type { SubscriptionWatcher, Unsubscribe } from './ports/events.js';

/** A key whose presence refuses: any value, or a number of at least `atLeast`. */
export interface Refusal {
  key: string;
  atLeast?: number;
}

/** Whether `value`, the current value of `refusal.key` (null when absent), refuses. */
export function refuses(refusal: Refusal, value: string | null): boolean {
  if (value === null) return false;
  return refusal.atLeast === undefined || Number(value) >= refusal.atLeast;
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

/**
 * What Parley needs from Redis, with two engines: `RedisBroker` (ioredis) for deployments and
 * `MemoryBroker` for the single-process default. Each concern is a port of its own (`ports/`),
 * implemented by both engines and held to one contract suite per port (`test/ports/`); what is
 * left here passes `test/broker.contract.test.ts`.
 *
 * Every key and channel name is logical (`keyspace.ts`): the engine adds its prefix. Ids of
 * logs and queues are Redis stream ids (`<ms>-<n>`) in both engines and compare in that order.
 */
export interface Broker {
  readonly engine: 'redis' | 'memory';
  readonly rosters: RosterStore;
  readonly events: EventLog;
  readonly bus: EventBus;
  readonly messages: MessageLog;
  readonly queue: WorkQueue;

  /**
   * Publishes on a channel by its keyspace name: how `Sessions` announces revocations, which the
   * hub hears on `bus` (`{ revocations: true }`). Every event channel goes through `bus`.
   */
  publish(channel: string, message: string): Promise<void>;

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
