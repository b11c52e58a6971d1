import { conversationLog } from '../keyspace.js';
import { EVENT_LOG_LENGTH } from '../ports/events.js';
import { MemoryBus } from './bus.js';
import { MemoryEvents } from './events.js';
import { MemoryRosters } from './rosters.js';
import {
  type Allowance,
  type AppendOptions,
  type AppendResult,
  type Broker,
  type GroupInfo,
  type PendingEntry,
  type Publication,
  type Spent,
  type StreamEntry,
  type StreamInfo,
  compareStreamIds,
  refuses,
} from '../types.js';

interface Group {
  lastDeliveredId: string;
  pending: Map<string, { consumer: string; deliveredAt: number; deliveries: number }>;
}

interface Stream {
  entries: StreamEntry[];
  lastId: string;
  maxDeletedId: string;
  groups: Map<string, Group>;
  waiters: Set<() => void>;
}

interface KeyValue {
  value: string;
  expiresAt: number | null;
}

/**
 * The single-process broker: the same semantics as Redis for everything Parley uses, held in
 * memory. Handlers run on a later tick, as they would after a network hop, so no caller can
 * come to rely on synchronous delivery.
 */
export class MemoryBroker implements Broker {
  readonly engine = 'memory' as const;
  readonly rosters = new MemoryRosters();
  readonly bus = new MemoryBus();
  readonly events: MemoryEvents;
  private readonly streams = new Map<string, Stream>();
  private readonly keys = new Map<string, KeyValue>();
  private readonly hashes = new Map<string, Map<string, string>>();
  private readonly zsets = new Map<string, Map<string, number>>();
  private lastMs = 0;
  private lastSeq = 0;
  private closed = false;

  constructor(options: { eventLogLength?: number } = {}) {
    this.events = new MemoryEvents(this.bus, options.eventLogLength ?? EVENT_LOG_LENGTH);
  }

  publish(channel: string, message: string): Promise<void> {
    this.bus.deliver(channel, message);
    return Promise.resolve();
  }

  append(stream: string, fields: Record<string, string>, options: AppendOptions = {}): Promise<AppendResult> {
    if (Object.keys(fields).length === 0) return Promise.reject(noFields());
    const fan = options.fanOut && options.fanOut.streams.length > 0 ? options.fanOut : null;
    if (fan && Object.keys(fan.fields).length === 0) return Promise.reject(noFields());
    if (options.roster) {
      const member = this.rosters.holds(options.roster.conversationId, options.roster.userId);
      if (member === null) return Promise.resolve({ appended: false, noSet: true });
      if (!member) return Promise.resolve({ appended: false, notMember: true });
    }
    const refused = (options.refuseIf ?? []).findIndex((refusal) =>
      refuses(refusal, this.readKey(refusal.key)),
    );
    if (refused >= 0) return Promise.resolve({ appended: false, refused });
    if (options.limit) {
      const { key, max, ttlMs } = options.limit;
      if (this.count(key, ttlMs) > max) return Promise.resolve({ appended: false, limited: true });
    }
    if (options.unique) {
      const held = this.readKey(options.unique.key);
      if (held !== null) return Promise.resolve({ appended: false, existing: held });
    }
    let fill = (value: string) => value;
    let counter: number | undefined;
    if (options.counter) {
      const { key, slot } = options.counter;
      const current = this.readKey(key);
      if (current === null) return Promise.resolve({ appended: false, missingCounter: true });
      const next = Number(current) + 1;
      this.keys.set(key, { value: String(next), expiresAt: this.keys.get(key)?.expiresAt ?? null });
      counter = next;
      fill = (value) => {
        const at = value.indexOf(slot);
        return at < 0 ? value : value.slice(0, at) + String(next) + value.slice(at + slot.length);
      };
    }
    if (options.unique) {
      this.keys.set(options.unique.key, {
        value: options.unique.value,
        expiresAt: Date.now() + options.unique.ttlMs,
      });
    }
    const filled: Record<string, string> = {};
    for (const name in fields) filled[name] = fill(fields[name] as string);
    const id = this.addEntry(stream, filled, options.maxLen);
    for (const write of options.pending ?? []) {
      this.hashFor(write.key).set(write.field, `${id}|${fill(write.value)}`);
    }
    if (fan) {
      // A fan-out is a conversation's event: into its log, under the event log's own ids.
      const payload = fill(fan.fields.e ?? '');
      for (const log of fan.streams) this.events.announce(log.slice(conversationLog('').length), payload);
    }
    return Promise.resolve(counter === undefined ? { appended: true, id } : { appended: true, id, counter });
  }

  appendToMany(
    idStream: string,
    streams: string[],
    fields: Record<string, string>,
    options: { maxLen: number; publish?: Publication },
  ): Promise<string> {
    if (Object.keys(fields).length === 0) return Promise.reject(noFields());
    const id = this.addEntry(idStream, { x: '1' }, 1);
    for (const name of streams) this.addEntry(name, fields, options.maxLen, id);
    if (options.publish) {
      const text = `${id}\n${options.publish.message}`;
      for (const channel of options.publish.channels) void this.publish(channel, text);
    }
    return Promise.resolve(id);
  }

  rangeAfter(stream: string, afterId: string, count: number): Promise<StreamEntry[]> {
    const entries = this.streams.get(stream)?.entries ?? [];
    const out: StreamEntry[] = [];
    for (const entry of entries) {
      if (compareStreamIds(entry.id, afterId) > 0) {
        out.push(copy(entry));
        if (out.length >= count) break;
      }
    }
    return Promise.resolve(out);
  }

  lastId(stream: string): Promise<string> {
    return Promise.resolve(this.streams.get(stream)?.lastId ?? '0-0');
  }

  streamInfo(stream: string): Promise<StreamInfo> {
    const s = this.streams.get(stream);
    return Promise.resolve({
      length: s?.entries.length ?? 0,
      firstId: s?.entries[0]?.id ?? null,
      lastId: s?.lastId ?? '0-0',
      maxDeletedId: s?.maxDeletedId ?? '0-0',
    });
  }

  trimBelow(stream: string, minId: string): Promise<number> {
    const s = this.streams.get(stream);
    if (!s) return Promise.resolve(0);
    let removed = 0;
    while (s.entries[0] && compareStreamIds(s.entries[0].id, minId) < 0) {
      const entry = s.entries.shift();
      if (entry) s.maxDeletedId = entry.id;
      removed++;
    }
    return Promise.resolve(removed);
  }

  ensureGroup(stream: string, group: string): Promise<void> {
    const s = this.streamFor(stream);
    if (!s.groups.has(group)) s.groups.set(group, { lastDeliveredId: '0-0', pending: new Map() });
    return Promise.resolve();
  }

  async readGroup(
    stream: string,
    group: string,
    consumer: string,
    options: { count: number; blockMs?: number; mode: 'new' | 'own'; afterId?: string },
  ): Promise<StreamEntry[]> {
    const s = this.streams.get(stream);
    const g = s?.groups.get(group);
    if (!s || !g) throw noGroup(stream, group);
    if (options.mode === 'own') {
      const after = options.afterId ?? '0-0';
      const out: StreamEntry[] = [];
      for (const entry of s.entries) {
        const p = g.pending.get(entry.id);
        if (p?.consumer === consumer && compareStreamIds(entry.id, after) > 0) {
          // As in Redis, re-reading a pending entry counts as another delivery.
          g.pending.set(entry.id, { consumer, deliveredAt: Date.now(), deliveries: p.deliveries + 1 });
          out.push(copy(entry));
          if (out.length >= options.count) break;
        }
      }
      return out;
    }
    const deadline = Date.now() + (options.blockMs ?? 0);
    for (;;) {
      const out: StreamEntry[] = [];
      for (const entry of s.entries) {
        if (compareStreamIds(entry.id, g.lastDeliveredId) > 0) {
          out.push(copy(entry));
          if (out.length >= options.count) break;
        }
      }
      if (out.length > 0) {
        const now = Date.now();
        for (const entry of out) {
          g.pending.set(entry.id, { consumer, deliveredAt: now, deliveries: 1 });
        }
        g.lastDeliveredId = out[out.length - 1]?.id ?? g.lastDeliveredId;
        return out;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.closed) return [];
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          s.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, remaining);
        s.waiters.add(wake);
      });
    }
  }

  ack(stream: string, group: string, ids: string[]): Promise<number> {
    const g = this.streams.get(stream)?.groups.get(group);
    let acked = 0;
    for (const id of ids) if (g?.pending.delete(id)) acked++;
    return Promise.resolve(acked);
  }

  pending(stream: string, group: string, count: number): Promise<PendingEntry[]> {
    const g = this.streams.get(stream)?.groups.get(group);
    if (!g) return Promise.reject(noGroup(stream, group));
    const now = Date.now();
    const out = [...g.pending.entries()]
      .sort(([a], [b]) => compareStreamIds(a, b))
      .slice(0, count)
      .map(([id, p]) => ({
        id,
        consumer: p.consumer,
        idleMs: now - p.deliveredAt,
        deliveries: p.deliveries,
      }));
    return Promise.resolve(out);
  }

  claimIdle(
    stream: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    count: number,
  ): Promise<StreamEntry[]> {
    const s = this.streams.get(stream);
    const g = s?.groups.get(group);
    if (!s || !g) return Promise.reject(noGroup(stream, group));
    const now = Date.now();
    const out: StreamEntry[] = [];
    for (const [id, p] of [...g.pending.entries()].sort(([a], [b]) => compareStreamIds(a, b))) {
      if (out.length >= count) break;
      if (now - p.deliveredAt < minIdleMs) continue;
      const entry = s.entries.find((e) => e.id === id);
      if (!entry) {
        // Trimmed away while pending: Redis drops such entries from the PEL on claim.
        g.pending.delete(id);
        continue;
      }
      g.pending.set(id, { consumer, deliveredAt: now, deliveries: p.deliveries + 1 });
      out.push(copy(entry));
    }
    return Promise.resolve(out);
  }

  groupInfo(stream: string, group: string): Promise<GroupInfo | null> {
    const s = this.streams.get(stream);
    const g = s?.groups.get(group);
    if (!s || !g) return Promise.resolve(null);
    const lag = s.entries.filter((e) => compareStreamIds(e.id, g.lastDeliveredId) > 0).length;
    return Promise.resolve({ pending: g.pending.size, lag, lastDeliveredId: g.lastDeliveredId });
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
      const had =
        this.readKey(key) !== null || this.hashes.has(key) || this.zsets.has(key) || this.streams.has(key);
      this.keys.delete(key);
      this.hashes.delete(key);
      this.zsets.delete(key);
      this.streams.delete(key);
      if (had) removed++;
    }
    return Promise.resolve(removed);
  }

  /** INCR, with a lifetime of `ttlMs` for a key it creates. */
  private count(key: string, ttlMs: number | undefined): number {
    const current = this.readKey(key);
    const next = (current === null ? 0 : Number(current)) + 1;
    const existing = this.keys.get(key);
    this.keys.set(key, {
      value: String(next),
      expiresAt:
        current === null ? (ttlMs === undefined ? null : Date.now() + ttlMs) : (existing?.expiresAt ?? null),
    });
    return next;
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

  hget(key: string, field: string): Promise<string | null> {
    return Promise.resolve(this.hashes.get(key)?.get(field) ?? null);
  }

  hgetall(key: string): Promise<Record<string, string>> {
    return Promise.resolve(Object.fromEntries(this.hashes.get(key) ?? []));
  }

  hset(key: string, field: string, value: string): Promise<void> {
    this.hashFor(key).set(field, value);
    return Promise.resolve();
  }

  hdelIfPrefix(key: string, field: string, prefix: string): Promise<boolean> {
    const hash = this.hashes.get(key);
    const value = hash?.get(field);
    if (!hash || value === undefined || !value.startsWith(`${prefix}|`)) return Promise.resolve(false);
    hash.delete(field);
    if (hash.size === 0) this.hashes.delete(key);
    return Promise.resolve(true);
  }

  async hdelIfPrefixMany(items: { key: string; field: string; prefix: string }[]): Promise<number> {
    let deleted = 0;
    for (const item of items) if (await this.hdelIfPrefix(item.key, item.field, item.prefix)) deleted++;
    return deleted;
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
    for (const s of this.streams.values()) for (const wake of [...s.waiters]) wake();
    this.bus.close();
    return Promise.resolve();
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

  private hashFor(key: string): Map<string, string> {
    let hash = this.hashes.get(key);
    if (!hash) {
      hash = new Map();
      this.hashes.set(key, hash);
    }
    return hash;
  }

  private streamFor(name: string): Stream {
    let s = this.streams.get(name);
    if (!s) {
      s = { entries: [], lastId: '0-0', maxDeletedId: '0-0', groups: new Map(), waiters: new Set() };
      this.streams.set(name, s);
    }
    return s;
  }

  private nextId(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.lastSeq = 0;
    } else {
      this.lastSeq++;
    }
    return `${this.lastMs}-${this.lastSeq}`;
  }

  private addEntry(
    name: string,
    fields: Record<string, string>,
    maxLen: number | undefined,
    id: string = this.nextId(),
  ): string {
    const s = this.streamFor(name);
    s.entries.push({ id, fields: { ...fields } });
    s.lastId = id;
    if (maxLen !== undefined) {
      while (s.entries.length > maxLen) {
        const removed = s.entries.shift();
        if (removed) s.maxDeletedId = removed.id;
      }
    }
    for (const wake of [...s.waiters]) wake();
    return id;
  }
}

/** The error Redis gives for a missing stream or group, so callers handle one message. */
function noGroup(stream: string, group: string): Error {
  return new Error(`NOGROUP No such key '${stream}' or consumer group '${group}'`);
}

/** Redis refuses an entry without fields; so does this engine, so no caller depends on it. */
function noFields(): Error {
  return new Error('ERR wrong number of arguments for XADD: an entry needs at least one field');
}

function copy(entry: StreamEntry): StreamEntry {
  return { id: entry.id, fields: { ...entry.fields } };
}
