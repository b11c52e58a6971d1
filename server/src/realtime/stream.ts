import type { ServerResponse } from 'node:http';
import { type TrackedEnvelope, TRPCError, tracked } from '@trpc/server';
import superjson from 'superjson';
import type { WebSocket } from 'ws';
import { type Broker, compareStreamIds } from '../broker/types.js';
import type { Limits } from '../config/index.js';
import { toTRPCError } from '../errors.js';
import type { Logger } from '../logger.js';
import { EPHEMERAL_EVENTS, type ParleyEvent } from '../contracts/events.js';
import { DIRECT_STREAM, type DirectStream } from './frames.js';
import type { Delivery, LocalSubscriber } from './hub.js';
import { userLog } from './publisher.js';
import type { ConnectionState } from './service.js';
import { eventFrame, framePrefix, type SubscriptionRequest } from './transformer.js';

const BACKFILL_PAGE = 500;
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

/** Where a stream starts: after `last`, with `resync` first or a backfill from the log. */
export interface StreamStart {
  last: string;
  resync: boolean;
  backfill: boolean;
}

/** What every stream of an instance shares. */
export interface StreamDeps {
  broker: Broker;
  limits: Limits;
  log: Logger;
  /** Runs once per stream, when it ends (however it ends). */
  onEnd: (stream: EventStream) => void;
}

/**
 * One `events` subscription: what the hub hands it, where it stands in the user's log, and
 * how it reaches its client. It is the hub's subscriber itself, and, over Parley's WebSocket
 * handler, the `DirectStream` that writes its own frames; other consumers iterate `iterate()`.
 * All of its state is in its fields, with no closure per subscription: thousands of idle
 * subscriptions hold little more than their sockets.
 */
export class EventStream
  implements LocalSubscriber, DirectStream, AsyncIterable<TrackedEnvelope<ParleyEvent>>
{
  private queue: Delivery[] = [];
  /** While the events channel is down and until the catch-up: what arrived meanwhile. */
  private held: Delivery[] | null = null;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private position: StreamPosition | null = null;
  private epoch = '';
  private start_: StreamStart | null = null;
  private ended = false;
  /** Set for a direct stream: its socket and frame prefix, and whether it writes live. */
  private socket: WebSocket | null = null;
  private prefix = '';
  private live = false;
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

  /** Present while the stream writes its own frames (see `DirectStream`). */
  get [DIRECT_STREAM](): DirectStream | undefined {
    return this.socket ? this : undefined;
  }

  /** Where the stream starts, once known; events that arrive before are queued. */
  begin(epoch: string, start: StreamStart): void {
    this.epoch = epoch;
    this.start_ = start;
    this.position = new StreamPosition(start.last);
  }

  /** Makes this stream write its own frames to `socket`, for the subscription `request`. */
  writeTo(socket: WebSocket, request: SubscriptionRequest): void {
    this.socket = socket;
    this.prefix = framePrefix(request);
  }

  // --- the hub's side ---------------------------------------------------------------------

  deliver(delivery: Delivery): void {
    if (this.held) {
      if (this.held.length >= this.deps.limits.maxQueuedEvents) this.tooSlow();
      else this.held.push(delivery);
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
   * After the events channel came back: what the user's log got meanwhile, then what arrived
   * live since (held), each through the usual path, which drops what was already sent. When
   * the log no longer reaches back that far, or lost its data, the client gets `resync`.
   */
  catchUp(): void {
    void this.fetchMissed();
  }

  // --- the direct stream ------------------------------------------------------------------

  start(end: (error: Error | null) => void): void {
    this.end = end;
    if (this.failure) {
      this.finish(this.failure);
      return;
    }
    this.backfill().catch((error: unknown) =>
      this.finish(error instanceof Error ? error : new Error(String(error))),
    );
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
    return this;
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
    const position = this.position;
    const start = this.start_;
    if (!position || !start) throw new Error('stream iterated before it began');
    const { epoch } = this;
    try {
      if (start.resync) {
        // The gap can no longer be filled: the client refetches with queries.
        yield tracked(`${epoch}.${position.last}`, { type: 'resync' });
      }
      if (start.backfill) {
        for await (const entry of eventsAfter(this.deps.broker, userLog(this.userId), position.last)) {
          position.last = entry.id;
          if (entry.event) yield tracked(`${epoch}.${entry.id}`, entry.event);
        }
      }
      for (;;) {
        if (this.failure) throw this.failure;
        if (signal?.aborted || this.ended) return;
        const next = this.queue.shift();
        if (!next) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = null;
          continue;
        }
        if (!position.admit(next)) continue;
        yield tracked(`${epoch}.${position.last}`, next.event);
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

  private accept(delivery: Delivery): void {
    if (this.live) {
      this.send(delivery);
      return;
    }
    const { maxQueuedEvents, maxSocketBufferBytes } = this.deps.limits;
    if (this.queue.length >= maxQueuedEvents) {
      // Ephemeral events go first; if that is not enough, the client is cut off.
      this.queue = this.queue.filter((queued) => !EPHEMERAL_EVENTS.has(queued.event.type));
      if (this.queue.length >= maxQueuedEvents) {
        this.tooSlow();
        return;
      }
    }
    if (this.response && this.response.writableLength > maxSocketBufferBytes) {
      this.tooSlow();
      return;
    }
    this.queue.push(delivery);
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
   * `resync` or the backfill first, then what arrived meanwhile, then each delivery as it
   * arrives: one string concatenation of the request's prefix and the event's text,
   * serialized once per event on this instance, and one `ws.send`.
   */
  private async backfill(): Promise<void> {
    const position = this.position;
    const start = this.start_;
    if (!position || !start) throw new Error('stream started before it began');
    if (start.resync) this.write(`${this.epoch}.${position.last}`, { type: 'resync' });
    if (start.backfill) {
      for await (const entry of eventsAfter(this.deps.broker, userLog(this.userId), position.last)) {
        if (this.ended) return;
        position.last = entry.id;
        if (entry.event) this.write(`${this.epoch}.${entry.id}`, entry.event);
      }
    }
    if (this.ended) return;
    const queued = this.queue;
    this.queue = [];
    this.live = true;
    for (const delivery of queued) this.send(delivery);
  }

  private send(delivery: Delivery): void {
    const position = this.position;
    if (position?.admit(delivery)) this.write(`${this.epoch}.${position.last}`, delivery.event);
  }

  /** Writes one frame; a client too slow to read its socket is cut off instead. */
  private write(eventId: string, event: ParleyEvent): void {
    const socket = this.socket;
    if (this.ended || !socket || socket.readyState !== socket.OPEN) return;
    if (socket.bufferedAmount > this.deps.limits.maxSocketBufferBytes) {
      socket.close(1013, 'slow consumer');
      this.finish(new SlowConsumer());
      return;
    }
    socket.send(eventFrame(this.prefix, eventId, event));
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
    this.live = false;
    this.queue = [];
    this.held = null;
    this.deps.onEnd(this);
    const end = this.end;
    this.end = null;
    end?.(error === null ? null : toTRPCError(error));
  }

  private async fetchMissed(): Promise<void> {
    this.held ??= [];
    const missed: Delivery[] = [];
    const { broker } = this.deps;
    const log = userLog(this.userId);
    try {
      const position = this.position;
      if (position) {
        const info = await broker.streamInfo(log);
        if (
          compareStreamIds(info.maxDeletedId, position.last) > 0 ||
          compareStreamIds(position.last, info.lastId) > 0
        ) {
          position.last = info.lastId;
          missed.push({ id: null, event: { type: 'resync' } });
        } else {
          for await (const { id, event } of eventsAfter(broker, log, position.last)) {
            if (event) missed.push({ id, event });
          }
        }
      }
    } catch (error) {
      this.deps.log.warn(
        { err: error },
        'events missed while the events channel was down could not be fetched',
      );
    } finally {
      // Another catch-up may have finished meanwhile and released them already.
      const held = this.held ?? [];
      this.held = null;
      for (const delivery of missed) this.accept(delivery);
      for (const delivery of held) this.accept(delivery);
    }
  }
}

/**
 * Where one subscription stands: the last durable event it sent, and the conversations the
 * user was removed from since (their later events are not for this user any more).
 */
class StreamPosition {
  private removed: Set<string> | null = null;

  constructor(public last: string) {}

  /**
   * Whether to send `delivery`; it is then sent under `last`. A durable event at or below
   * `last` was sent already (by a backfill or a catch-up) or precedes the stream's start.
   */
  admit(delivery: Delivery): boolean {
    if (delivery.id !== null) {
      if (compareStreamIds(delivery.id, this.last) <= 0) return false;
      this.last = delivery.id;
    }
    const { event } = delivery;
    if (event.type === 'conversation.removed') (this.removed ??= new Set()).add(event.conversationId);
    else if (event.type === 'conversation.upserted') this.removed?.delete(event.conversation.id);
    else if (this.removed) {
      const conversationId = conversationOf(event);
      if (conversationId && this.removed.has(conversationId)) return false;
    }
    return true;
  }
}

/** The entries of a user's log after `after`, oldest first, read a page at a time. */
async function* eventsAfter(
  broker: Broker,
  log: string,
  after: string,
): AsyncGenerator<{ id: string; event: ParleyEvent | null }> {
  for (let last = after; ;) {
    const page = await broker.rangeAfter(log, last, BACKFILL_PAGE);
    for (const entry of page) {
      last = entry.id;
      yield { id: entry.id, event: entry.fields.e ? decode(entry.fields.e) : null };
    }
    if (page.length < BACKFILL_PAGE) return;
  }
}

function decode(payload: string): ParleyEvent {
  return superjson.parse<ParleyEvent>(payload);
}

function conversationOf(event: ParleyEvent): string | null {
  switch (event.type) {
    case 'message.created':
    case 'message.updated':
      return event.message.conversationId;
    case 'message.deleted':
    case 'member.joined':
    case 'member.left':
    case 'typing':
    case 'read':
    case 'conversation.removed':
      return event.conversationId;
    case 'conversation.upserted':
      return event.conversation.id;
    case 'presence':
    case 'resync':
      return null;
  }
}
