import type { ServerResponse } from 'node:http';
import { type TrackedEnvelope, TRPCError, tracked } from '@trpc/server';
import superjson from 'superjson';
import type { WebSocket } from 'ws';
import { eventPartition } from '../broker/keyspace.js';
import type { EventLog, LogEntry, LogName } from '../broker/ports/events.js';
import { compareStreamIds } from '../broker/types.js';
import type { Limits } from '../config/index.js';
import { toTRPCError } from '../errors.js';
import type { Logger } from '../logger.js';
import { EPHEMERAL_EVENTS, type Mark, type ParleyEvent } from '../contracts/events.js';
import type { Conversation } from '../contracts/schemas.js';
import type { Delivery, LocalSubscriber } from './hub.js';
import { sendEventFrame } from './frames.js';
import { formatPosition, StreamPosition } from './position.js';
import { eventFrame, framePrefix, type SubscriptionRequest } from './transformer.js';

/** Per-WebSocket state shared by the calls on one connection. */
export interface ConnectionState {
  subscriptions: number;
}

const BACKFILL_PAGE = 500;
const RESYNC: Delivery = { id: null, partition: 0, event: { type: 'resync' } };
/**
 * An ended stream's HTTP response that has not finished this long after (its client stopped
 * reading) is cut off, so it holds no connection.
 */
const RESPONSE_GRACE_MS = 5_000;

/** Ends a subscription whose client does not keep up; it resumes after reconnecting. */
export class SlowConsumer extends TRPCError {
  constructor() {
    super({
      code: 'TOO_MANY_REQUESTS',
      message: 'Connection closed: events were not being read fast enough',
    });
  }
}

/**
 * Where a stream starts: after `last` (an id in each event order), with `resync` first or a
 * backfill from the logs.
 */
export interface StreamStart {
  last: readonly string[];
  resync: boolean;
  backfill: boolean;
}

/** What every stream of an instance shares. */
export interface StreamDeps {
  events: EventLog;
  limits: Limits;
  log: Logger;
  /** Starts (and `unfollow` stops) delivering a conversation's live events to the stream. */
  follow: (stream: EventStream, conversationIds: readonly string[]) => Promise<void>;
  unfollow: (stream: EventStream, conversationId: string) => void;
  /** Resolves once everything published before it has been delivered (see `Hub.barrier`). */
  barrier: () => Promise<void>;
  /**
   * The conversations whose logs a catch-up reads: the user's, and those deleted since
   * `sinceMs` (their last events are still due).
   */
  conversationsOf: (userId: string, sinceMs: number | null) => Promise<string[]>;
  /** The conversation as `userId` sees it, for `conversation.upserted`; null once it is gone. */
  view: (conversationId: string, userId: string) => Promise<Conversation | null>;
  /** Runs once per stream, when it ends (however it ends). */
  onEnd: (stream: EventStream) => void;
}

/**
 * One `events` subscription: what the hub hands it, where it stands in the logs it follows,
 * and how it reaches its client. It is the hub's subscriber itself, and, once Parley's
 * WebSocket handler hands it the socket (`writeTo`), writes its own frames there (`start`,
 * `stop`); other consumers iterate it. All of its state is in its fields, with no closure per subscription: thousands
 * of idle subscriptions hold little more than their sockets.
 *
 * What arrives is written out in id order within each event order (`EventLog.partitions`; a
 * conversation's events and its members' marks share one), each durable event once. Anything
 * that needs the logs (the backfill at the start, a conversation joined, a gap after the event
 * channels were down) holds what arrives live meanwhile, reads the logs, waits until everything
 * published before the reads has arrived (`barrier`), and writes both merged in id order.
 */
export class EventStream implements LocalSubscriber, AsyncIterable<TrackedEnvelope<ParleyEvent>> {
  private queue: Delivery[] = [];
  /** While the logs are being read: what arrives live meanwhile. Held from the start. */
  private held: Delivery[] | null = [];
  /** A catch-up is running (`held` is set until it ends). */
  private catchingUp = false;
  /** The event channels came back while a catch-up ran: it reads the logs once more. */
  private missedSince: string[] | null = null;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private position: StreamPosition | null = null;
  private epoch = '';
  private start_: StreamStart | null = null;
  private started = false;
  private ended = false;
  /** The conversations whose live events the hub delivers to this stream. */
  readonly following = new Set<string>();
  /** Set for a direct stream: its socket and frame prefix. */
  private socket: WebSocket | null = null;
  private prefix = '';
  private end: ((error: Error | null) => void) | null = null;
  /** For an iterated stream: its consumer's signal. */
  private signal: AbortSignal | undefined = undefined;
  /**
   * For a stream iterated into an HTTP response (server-sent events): that response, which
   * gets the WebSocket's slow-consumer rule. The response is written as the stream is read,
   * so a client that stops reading stops the reads: the queue then fills, or the bytes pile
   * up in the response's buffer.
   */
  private response: ServerResponse | null = null;

  constructor(
    private readonly deps: StreamDeps,
    readonly userId: string,
    readonly sessionId: string,
    /** When the access token behind the stream was issued (ms), to find its revocation marks. */
    readonly issuedAt: number,
    /** Unique per subscription across instances. */
    readonly key: string,
    /** When the access token behind the stream expires (the context is built once per connection). */
    readonly expiresAt: number,
    /** The counters of the WebSocket connection it runs on, if any. */
    readonly connection: ConnectionState | null,
  ) {}

  /** Starts following `conversationIds` (the user's, as the stream starts). */
  async follow(conversationIds: readonly string[]): Promise<void> {
    for (const id of conversationIds) this.following.add(id);
    await this.deps.follow(this, conversationIds);
  }

  /** Where the stream starts, once known; events that arrive before are held. */
  begin(epoch: string, start: StreamStart): void {
    this.epoch = epoch;
    this.start_ = start;
    this.position = new StreamPosition([...start.last]);
  }

  /**
   * Makes this stream write its own frames to `socket`, for the subscription `request`, from
   * `start` on; it is not iterated, so it lets go of its consumer's signal.
   */
  writeTo(socket: WebSocket, request: SubscriptionRequest): this {
    this.signal?.removeEventListener('abort', this);
    this.signal = undefined;
    this.response = null;
    this.socket = socket;
    this.prefix = framePrefix(request);
    return this;
  }

  // --- the hub's side ---------------------------------------------------------------------

  deliver(delivery: Delivery): void {
    if (this.held) {
      if (this.held.length >= this.deps.limits.maxQueuedEvents) this.tooSlow();
      else this.held.push(delivery);
      return;
    }
    if (delivery.mark) {
      this.held = [];
      void this.sequence(() => Promise.resolve([delivery]));
      return;
    }
    this.accept(delivery);
  }

  revoke(): void {
    this.fail(new TRPCError({ code: 'UNAUTHORIZED', message: 'Session ended' }));
  }

  hold(): void {
    this.held ??= [];
  }

  /**
   * After the event channels came back: what the logs got meanwhile, then what arrived live
   * since (held), merged in order. When a log no longer reaches back that far, or lost its
   * data, the client gets `resync`.
   */
  catchUp(): void {
    const position = this.position;
    if (!position || !this.started || this.ended) return;
    if (this.catchingUp) {
      this.missedSince ??= position.snapshot();
      return;
    }
    this.held ??= [];
    void this.sequence(() => this.missedAfter(position.snapshot()));
  }

  // --- the direct stream ------------------------------------------------------------------

  start(end: (error: Error | null) => void): void {
    this.end = end;
    if (this.failure) {
      this.finish(this.failure);
      return;
    }
    this.run();
  }

  stop(): void {
    this.finish(null);
  }

  /**
   * For a consumer that iterates the stream (HTTP, a caller) and stops it with `signal`;
   * over HTTP, `response` is what it writes into.
   */
  iterateWith(signal: AbortSignal | undefined, response: ServerResponse | null = null): this {
    this.signal = signal;
    this.response = response;
    // An iterated stream abandoned before its first read would never run its `finally`. The
    // stream is the listener itself (`handleEvent`): no closure, and `writeTo` can remove it.
    signal?.addEventListener('abort', this, { once: true });
    return this;
  }

  /** The consumer's signal aborted (see `iterateWith`). */
  handleEvent(): void {
    this.stop();
  }

  [Symbol.asyncIterator](): AsyncGenerator<TrackedEnvelope<ParleyEvent>> {
    return this.iterate();
  }

  /** Ends the stream with `UNAUTHORIZED` once its access token has expired. */
  expireBy(now: number): void {
    if (now >= this.expiresAt) {
      this.fail(new TRPCError({ code: 'UNAUTHORIZED', message: 'Access token expired' }));
    }
  }

  private async *iterate(): AsyncGenerator<TrackedEnvelope<ParleyEvent>> {
    const { signal } = this;
    if (!this.position) throw new Error('stream iterated before it began');
    this.run();
    try {
      for (;;) {
        // Mapped here: tRPC's middlewares have returned by the time a stream fails.
        if (this.failure) throw toTRPCError(this.failure);
        if (signal?.aborted || this.ended) return;
        const next = this.queue.shift();
        if (!next) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = null;
          continue;
        }
        if (next.event) yield tracked(formatPosition(this.epoch, next.id ?? ''), next.event);
      }
    } finally {
      this.finish(null);
    }
  }

  // --- internals --------------------------------------------------------------------------

  fail(error: Error): void {
    this.failure ??= error;
    this.wake?.();
    // A direct stream ends at once; an iterated one throws at its next read.
    if (this.end) this.finish(error);
  }

  /** `resync` or the backfill first, merged with what arrived meanwhile; then live. */
  private run(): void {
    if (this.started) return;
    this.started = true;
    const start = this.start_;
    const position = this.position;
    if (!start || !position) throw new Error('stream started before it began');
    // Read once: not kept for the stream's life.
    this.start_ = null;
    void this.sequence(() => {
      if (start.resync) return Promise.resolve<Delivery[]>([RESYNC]);
      return start.backfill ? this.missedAfter(position.snapshot()) : Promise.resolve([]);
    });
  }

  /**
   * Writes `first()`'s deliveries and what is held, merged in id order, stopping at each mark
   * to follow or leave its conversation (a joined conversation's log is read from the mark
   * on); once nothing is left, goes live. `held` is set throughout.
   */
  private async sequence(first: () => Promise<Delivery[]>): Promise<void> {
    this.catchingUp = true;
    try {
      let pending = await first();
      for (;;) {
        if (this.ended) return;
        if (this.missedSince !== null) {
          const since = this.missedSince;
          this.missedSince = null;
          pending = merge(pending, await this.missedAfter(since));
        }
        await this.deps.barrier();
        pending = merge(pending, this.held ?? []);
        this.held = [];
        const at = pending.findIndex((delivery) => delivery.mark !== undefined);
        for (const delivery of at < 0 ? pending : pending.slice(0, at)) this.accept(delivery);
        // A client too slow for what was just written ends the stream.
        if (this.ended) return;
        if (at < 0) {
          if (this.held.length === 0 && this.missedSince === null) break;
          pending = [];
          continue;
        }
        const mark = pending[at] as Delivery & { mark: Mark };
        pending = merge(pending.slice(at + 1), await this.applyMark(mark));
      }
      this.held = null;
    } catch (error) {
      this.deps.log.warn({ err: error }, 'events could not be read from the logs');
      this.fail(error instanceof Error ? error : new Error(String(error)));
    } finally {
      this.catchingUp = false;
    }
  }

  /**
   * A change of the user's memberships: joining follows the conversation and reads its log
   * from the mark on; leaving stops following it. Either is written as the event the client
   * knows (`conversation.upserted`, `conversation.removed`).
   */
  private async applyMark(delivery: Delivery & { mark: Mark }): Promise<Delivery[]> {
    const position = this.position;
    const { id, partition } = delivery;
    if (!position || compareStreamIds(id, position.at(partition)) <= 0) return [];
    const { conversationId, change } = delivery.mark;
    if (change === 'out') {
      // Sent, then followed no more (`accept` leaves a conversation it says is removed).
      this.accept({ id, partition, event: { type: 'conversation.removed', conversationId } });
      return [];
    }
    if (!this.following.has(conversationId)) await this.follow([conversationId]);
    const conversation = await this.deps.view(conversationId, this.userId);
    if (conversation) this.accept({ id, partition, event: { type: 'conversation.upserted', conversation } });
    else position.skipTo(partition, id);
    return readAll(this.deps.events, { conversation: conversationId }, delivery.id);
  }

  private leave(conversationId: string): void {
    this.position?.leave(conversationId);
    if (this.following.delete(conversationId)) this.deps.unfollow(this, conversationId);
  }

  /**
   * Every durable event for this user after `after` (an id in each event order), oldest first
   * within each order, from their inboxes and the logs of their conversations (and of those they
   * left since); or `resync` when a log was trimmed past `after`. A conversation whose first
   * mark since is a join was not theirs at `after`: its earlier events are skipped.
   */
  private async missedAfter(after: readonly string[]): Promise<Delivery[]> {
    const position = this.position;
    if (!position) return [];
    const { events } = this.deps;
    const inboxes = await Promise.all(
      after.map(async (from, partition) => {
        const log: LogName = { inbox: this.userId, partition };
        return { log, from, entries: await readAll(events, log, from) };
      }),
    );
    // A conversation's marks are all in its own order's inbox.
    const firstMark = new Map<string, Mark['change']>();
    for (const { entries } of inboxes) {
      for (const entry of entries) {
        if (entry.mark && !firstMark.has(entry.mark.conversationId)) {
          firstMark.set(entry.mark.conversationId, entry.mark.change);
        }
      }
    }
    const conversations = new Set([
      ...(await this.deps.conversationsOf(this.userId, earliestTime(after))),
      ...firstMark.keys(),
    ]);
    const logs = await Promise.all(
      [...conversations].map(async (id) => {
        const log: LogName = { conversation: id };
        const from = after[eventPartition(id, events.partitions)] ?? '0-0';
        return { log, from, entries: await readAll(events, log, from) };
      }),
    );
    const read = [...inboxes, ...logs];
    const trimmed = await Promise.all(
      read.map(({ log, from, entries }) =>
        entries.length === 0 ? Promise.resolve(false) : events.trimmedAfter(log, from),
      ),
    );
    const newest = await events.newestIds();
    if (trimmed.some(Boolean) || after.some((id, k) => compareStreamIds(id, newest[k] ?? '0-0') > 0)) {
      position.restart(newest);
      return [RESYNC];
    }
    for (const [id, change] of firstMark) if (change === 'in') position.leave(id);
    return merge(...read.map((log) => log.entries));
  }

  /** Sends `delivery` to the client, unless it was sent already or is not for this user. */
  private accept(delivery: Delivery): void {
    const position = this.position;
    if (!position || !delivery.event || !position.admit(delivery, this.userId)) return;
    const { event } = delivery;
    if (event.type === 'conversation.removed') this.leave(event.conversationId);
    // Its id, as the client keeps it, is the whole position.
    const sent: Delivery = { id: position.text(), partition: delivery.partition, event };
    if (this.socket) {
      this.write(sent);
      return;
    }
    const { maxQueuedEvents, maxSocketBufferBytes } = this.deps.limits;
    if (this.queue.length >= maxQueuedEvents) {
      // Ephemeral events go first; if that is not enough, the client is cut off.
      this.queue = this.queue.filter((queued) => !queued.event || !EPHEMERAL_EVENTS.has(queued.event.type));
      if (this.queue.length >= maxQueuedEvents) {
        this.tooSlow();
        return;
      }
    }
    if (this.response && this.response.writableLength > maxSocketBufferBytes) {
      this.tooSlow();
      return;
    }
    this.queue.push(sent);
    this.wake?.();
  }

  /**
   * Ends a stream whose client does not keep up. An iterated stream learns of it at its next
   * read; over HTTP that read never comes (the response waits for the client), so the
   * response is cut off and the stream ends at once.
   */
  private tooSlow(): void {
    this.fail(new SlowConsumer());
    const response = this.response;
    if (!response) return;
    response.destroy();
    this.finish(this.failure);
  }

  /**
   * Writes one frame: the request's prefix and the event's text, serialized once per event on
   * this instance and framed once for every socket whose frame is the same bytes (see
   * `sendEventFrame`). A client too slow to read its socket is cut off instead.
   */
  private write(delivery: Delivery): void {
    const socket = this.socket;
    if (this.ended || !socket || socket.readyState !== socket.OPEN || !delivery.event) return;
    if (socket.bufferedAmount > this.deps.limits.maxSocketBufferBytes) {
      socket.close(1013, 'slow consumer');
      this.finish(new SlowConsumer());
      return;
    }
    const { event } = delivery;
    const id = formatPosition(this.epoch, delivery.id ?? '');
    // With several partitions a position is the stream's own, and so is its frame.
    const key = this.deps.events.partitions === 1 ? `${this.prefix}|${id}` : null;
    sendEventFrame(socket, event, key, () => eventFrame(this.prefix, id, event));
  }

  private finish(error: Error | null): void {
    if (this.ended) return;
    this.ended = true;
    this.wake?.();
    const response = this.response;
    if (response && !response.writableFinished) {
      setTimeout(() => {
        if (!response.writableFinished) response.destroy();
      }, RESPONSE_GRACE_MS).unref();
    }
    this.response = null;
    this.queue = [];
    this.held = null;
    this.deps.onEnd(this);
    const end = this.end;
    this.end = null;
    end?.(error === null ? null : toTRPCError(error));
  }
}

/** Merges lists that are each in id order into one, by id; ephemeral events keep their place. */
function merge(...lists: Delivery[][]): Delivery[] {
  const nonEmpty = lists.filter((list) => list.length > 0);
  if (nonEmpty.length <= 1) return nonEmpty[0] ?? [];
  // A stable sort by id; an ephemeral event sorts with the durable one before it.
  let lastId = '0-0';
  const keyed = nonEmpty.flat().map((delivery, index) => {
    if (delivery.id !== null) lastId = delivery.id;
    return { delivery, index, id: lastId };
  });
  keyed.sort((a, b) => compareStreamIds(a.id, b.id) || a.index - b.index);
  return keyed.map((item) => item.delivery);
}

/** The entries of a log after `after`, oldest first, read a page at a time. */
async function readAll(events: EventLog, log: LogName, after: string): Promise<Delivery[]> {
  const out: Delivery[] = [];
  const partition =
    'conversation' in log ? eventPartition(log.conversation, events.partitions) : log.partition;
  for (let last = after; ;) {
    const page: LogEntry[] =
      'conversation' in log
        ? await events.conversationAfter(log.conversation, last, BACKFILL_PAGE)
        : await events.inboxAfter(log.inbox, log.partition, last, BACKFILL_PAGE);
    for (const entry of page) {
      last = entry.id;
      if (entry.mark) out.push({ id: entry.id, partition, mark: entry.mark });
      else if (entry.payload) {
        out.push({ id: entry.id, partition, event: superjson.parse<ParleyEvent>(entry.payload) });
      }
    }
    if (page.length < BACKFILL_PAGE) return out;
  }
}

/**
 * The earliest time (ms) among a position's ids, for the conversations deleted since. An order
 * at `0-0` held nothing when the stream began, so every conversation of it that matters is
 * one joined since, which its marks name: it is left out.
 */
function earliestTime(ids: readonly string[]): number {
  let earliest = Number.POSITIVE_INFINITY;
  for (const id of ids) {
    if (id !== '0-0') earliest = Math.min(earliest, Number(id.slice(0, id.indexOf('-'))));
  }
  return Number.isFinite(earliest) ? earliest : 0;
}
