import { revokedSessionKey, revokedUserKey } from '../keyspace.js';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import { MemoryBus } from './bus.js';
import { MemoryEvents } from './events.js';
import { MemoryMessageLog } from './message-log.js';
import { PendingCopies } from './pending.js';
import { MemoryQueue } from './queue.js';
import { MemoryRosters } from './rosters.js';
import { type Allowance, type Broker, refuses, type Spent } from '../types.js';

interface KeyValue {
  value: string;
  expiresAt: number | null;
}

/**
 * The single-process broker: each port's operations on plain data held in memory, with the same
 * outcomes as the Redis engine (the contract suites hold both to them). An operation runs without
 * a pause, so it is one atomic step, as a script is in Redis. Handlers run on a later tick, as
 * they would after a network hop, so no caller can come to rely on synchronous delivery.
 */
export class MemoryBroker implements Broker {
  readonly engine = 'memory' as const;
  readonly rosters = new MemoryRosters();
  readonly bus = new MemoryBus();
  readonly events: MemoryEvents;
  /** Pending copies: written by the message log, released by the queue. */
  private readonly copies = new PendingCopies();
  readonly queue = new MemoryQueue(this.copies);
  readonly messages: MemoryMessageLog;
  private readonly keys = new Map<string, KeyValue>();
  private readonly zsets = new Map<string, Map<string, number>>();
  private closed = false;

  constructor(options: { eventLogLength?: number } = {}) {
    this.events = new MemoryEvents(this.bus, options.eventLogLength ?? EVENT_LOG_LENGTH);
    this.messages = new MemoryMessageLog(
      this.rosters,
      (session) => this.revoked(session),
      this.events,
      this.queue,
      this.copies,
    );
  }

  publish(channel: string, message: string): Promise<void> {
    this.bus.deliver(channel, message);
    return Promise.resolve();
  }

  get(key: string): Promise<string | null> {
    return Promise.resolve(this.readKey(key));
  }

  mget(keys: string[]): Promise<(string | null)[]> {
    return Promise.resolve(keys.map((key) => this.readKey(key)));
  }

  set(key: string, value: string, options: { ttlMs?: number; nx?: boolean } = {}): Promise<boolean> {
    if (options.nx && this.readKey(key) !== null) return Promise.resolve(false);
    this.keys.set(key, {
      value,
      expiresAt: options.ttlMs === undefined ? null : Date.now() + options.ttlMs,
    });
    return Promise.resolve(true);
  }

  del(...keys: string[]): Promise<number> {
    let removed = 0;
    for (const key of keys) {
      const had = this.readKey(key) !== null || this.zsets.has(key);
      this.keys.delete(key);
      this.zsets.delete(key);
      if (had) removed++;
    }
    return Promise.resolve(removed);
  }

  ttlMs(key: string): Promise<number> {
    if (this.readKey(key) === null) return Promise.resolve(-2);
    const expiresAt = this.keys.get(key)?.expiresAt ?? null;
    return Promise.resolve(expiresAt === null ? -1 : Math.max(0, expiresAt - Date.now()));
  }

  spend(allowances: Allowance[]): Promise<Spent> {
    const now = Date.now();
    const states = allowances.map((allowance) => this.allowanceState(allowance.key));
    let waitMs = 0;
    allowances.forEach((allowance, i) => {
      const state = states[i];
      if (!state || state.taken < allowance.max) return;
      const wait = allowance.backoff ? state.notBefore - now : (state.expiresAt ?? now) - now;
      waitMs = Math.max(waitMs, wait);
    });
    if (waitMs > 0) return Promise.resolve({ spent: false, retryAfterMs: waitMs });
    allowances.forEach((allowance, i) => {
      const state = states[i];
      const taken = (state?.taken ?? 0) + 1;
      const { backoff } = allowance;
      const notBefore =
        backoff && taken >= allowance.max
          ? now + Math.min(backoff.maxMs, backoff.firstMs * 2 ** (taken - allowance.max))
          : (state?.notBefore ?? 0);
      // A fixed window keeps the expiry its first attempt gave it; a backoff window restarts.
      const expiresAt = backoff || !state ? now + allowance.windowMs : state.expiresAt;
      this.keys.set(allowance.key, { value: `${taken}:${notBefore}`, expiresAt });
    });
    return Promise.resolve({ spent: true });
  }

  refund(keys: string[]): Promise<void> {
    for (const key of keys) {
      const state = this.allowanceState(key);
      if (!state || state.taken <= 0) continue;
      this.keys.set(key, { value: `${state.taken - 1}:${state.notBefore}`, expiresAt: state.expiresAt });
    }
    return Promise.resolve();
  }

  /** An allowance is kept as `<taken>:<not before, ms>` under its key. */
  private allowanceState(key: string) {
    const value = this.readKey(key);
    if (value === null) return null;
    const [taken, notBefore] = value.split(':').map(Number);
    return {
      taken: taken ?? 0,
      notBefore: notBefore ?? 0,
      expiresAt: this.keys.get(key)?.expiresAt ?? null,
    };
  }

  zadd(key: string, score: number, ...members: string[]): Promise<void> {
    if (members.length === 0) return Promise.resolve();
    let zset = this.zsets.get(key);
    if (!zset) {
      zset = new Map();
      this.zsets.set(key, zset);
    }
    for (const member of members) zset.set(member, score);
    return Promise.resolve();
  }

  zaddCapped(
    key: string,
    member: string,
    score: number,
    cap: { max: number; expireUpTo: number },
  ): Promise<{ added: boolean; others: number }> {
    // No await in between: the check and the add are one step, as in Redis.
    void this.zremRangeByScore(key, cap.expireUpTo);
    const zset = this.zsets.get(key);
    const present = zset?.has(member) ?? false;
    const others = (zset?.size ?? 0) - (present ? 1 : 0);
    if (!present && others >= cap.max) return Promise.resolve({ added: false, others });
    void this.zadd(key, score, member);
    return Promise.resolve({ added: true, others });
  }

  zrem(key: string, member: string): Promise<number> {
    const zset = this.zsets.get(key);
    const removed = zset?.delete(member) ? 1 : 0;
    if (zset?.size === 0) this.zsets.delete(key);
    return Promise.resolve(removed);
  }

  zremRangeByScore(key: string, max: number): Promise<number> {
    const zset = this.zsets.get(key);
    let removed = 0;
    for (const [member, score] of zset ?? []) {
      if (score <= max) {
        zset?.delete(member);
        removed++;
      }
    }
    if (zset?.size === 0) this.zsets.delete(key);
    return Promise.resolve(removed);
  }

  zcard(key: string): Promise<number> {
    return Promise.resolve(this.zsets.get(key)?.size ?? 0);
  }

  zrangeByScore(key: string, max: number, count: number): Promise<string[]> {
    const entries = [...(this.zsets.get(key) ?? [])].filter(([, score]) => score <= max);
    entries.sort(([am, a], [bm, b]) => a - b || (am < bm ? -1 : am > bm ? 1 : 0));
    return Promise.resolve(entries.slice(0, count).map(([member]) => member));
  }

  zscores(key: string, members: string[]): Promise<(number | null)[]> {
    const zset = this.zsets.get(key);
    return Promise.resolve(members.map((member) => zset?.get(member) ?? null));
  }

  ping(): Promise<boolean> {
    return Promise.resolve(!this.closed);
  }

  close(): Promise<void> {
    this.closed = true;
    this.queue.close();
    this.bus.close();
    return Promise.resolve();
  }

  /** Whether the session's marks (as `Sessions` sets them) revoke it: the message log's guard. */
  private revoked(session: { userId: string; sessionId: string; issuedAt: number }): boolean {
    return (
      this.readKey(revokedSessionKey(session.sessionId)) !== null ||
      refuses(
        { key: revokedUserKey(session.userId), atLeast: session.issuedAt },
        this.readKey(revokedUserKey(session.userId)),
      )
    );
  }

  private readKey(key: string): string | null {
    const entry = this.keys.get(key);
    if (!entry) return null;
    if (entry.expiresAt !== null && entry.expiresAt <= Date.now()) {
      this.keys.delete(key);
      return null;
    }
    return entry.value;
  }
}
