import { randomBytes, randomUUID } from 'node:crypto';
import { type TrackedEnvelope, TRPCError, tracked } from '@trpc/server';
import superjson from 'superjson';
import type { WebSocket } from 'ws';
import type { AuthUser } from '../auth/tokens.js';
import { type Broker, compareStreamIds, STREAM_ID } from '../broker/types.js';
import type { Config } from '../config/index.js';
import { RateLimited } from '../errors.js';
import type { Logger } from '../logger.js';
import { EPHEMERAL_EVENTS, type ParleyEvent } from './events.js';
import type { Delivery, Hub } from './hub.js';
import type { Presence } from './presence.js';
import { userLog } from './publisher.js';
import { eventFrame, framePrefix, type SubscriptionRequest } from './transformer.js';

/** Changes whenever the broker loses its data, so ids from before cannot be resumed from. */
const EPOCH_KEY = 'events:epoch';
const BACKFILL_PAGE = 500;

interface LiveState {
  queue: Delivery[];
  failure: Error | null;
  wake: (() => void) | null;
  /**
   * Set once tRPC has sent everything the stream yielded: from then on each delivery is
   * written to the socket as it arrives, and nothing is queued.
   */
  direct: ((delivery: Delivery) => void) | null;
  /** While the events channel is down and until the catch-up: what arrived meanwhile. */
  held: Delivery[] | null;
  /** Set once the stream's start is known. */
  position: StreamPosition | null;
}

/** Per-WebSocket state shared by the calls on one connection. */
export interface ConnectionState {
  subscriptions: number;
}

export interface StreamRequest {
  user: AuthUser;
  lastEventId: string | null;
  signal: AbortSignal | undefined;
  socket: WebSocket | null;
  connection: ConnectionState | null;
  /** The JSON-RPC request of the subscription, when it came over the WebSocket. */
  request: SubscriptionRequest | null;
}

/** Ends a subscription whose client does not keep up; it resumes after reconnecting. */
class SlowConsumer extends TRPCError {
  constructor() {
    super({
      code: 'TOO_MANY_REQUESTS',
      message: 'Connection closed: events were not being read fast enough',
    });
  }
}

export class Realtime {
  readonly instanceId = randomUUID();

  constructor(
    private readonly broker: Broker,
    readonly hub: Hub,
    readonly presence: Presence,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.hub.start();
    this.presence.start(() => this.hub.subscribers().map((s) => ({ userId: s.userId, key: s.key })));
  }

  async stop(): Promise<void> {
    this.presence.stop();
    await this.hub.stop();
  }

  /**
   * The `events` subscription. Everything that must hold before tRPC answers `started` happens
   * here, before the stream is returned: the limits are checked and the live listener is in
   * place, so an event published right after `started` is never missed. The returned stream
   * then backfills what came after `lastEventId` from the user's log, drops what the backfill
   * already gave, and goes live.
   */
  async stream(request: StreamRequest): Promise<AsyncGenerator<TrackedEnvelope<ParleyEvent>>> {
    const { user, signal, connection } = request;
    const { limits } = this.config;
    if (connection && connection.subscriptions >= limits.maxSubscriptionsPerConnection) {
      throw new RateLimited('Too many subscriptions on this connection', 1);
    }
    // Counted before the first await, so a burst on one connection cannot slip past the cap.
    if (connection) connection.subscriptions += 1;

    const live: LiveState = {
      queue: [],
      failure: null,
      wake: null,
      direct: null,
      held: null,
      position: null,
    };
    const fail = (error: Error) => {
      live.failure ??= error;
      live.wake?.();
    };
    const log = userLog(user.id);
    const accept = (delivery: Delivery) => {
      if (live.direct) {
        live.direct(delivery);
        return;
      }
      if (live.queue.length >= limits.maxQueuedEvents) {
        // Ephemeral events go first; if that is not enough, the client is cut off.
        const kept = live.queue.filter((queued) => !EPHEMERAL_EVENTS.has(queued.event.type));
        live.queue.splice(0, live.queue.length, ...kept);
        if (live.queue.length >= limits.maxQueuedEvents) {
          fail(new SlowConsumer());
          return;
        }
      }
      live.queue.push(delivery);
      live.wake?.();
    };
    const key = `${this.instanceId}:${randomUUID()}`;
    const remove = this.hub.add({
      userId: user.id,
      sessionId: user.sessionId,
      key,
      deliver: (delivery) => {
        if (live.held) {
          if (live.held.length >= limits.maxQueuedEvents) fail(new SlowConsumer());
          else live.held.push(delivery);
          return;
        }
        accept(delivery);
      },
      revoke: () => fail(new TRPCError({ code: 'UNAUTHORIZED', message: 'Session ended' })),
      hold: () => {
        live.held ??= [];
      },
      catchUp: () => void this.catchUp(live, log, accept),
    });
    // tRPC builds the context once per connection: the token's lifetime bounds the stream.
    const expiry = setTimeout(
      () => fail(new TRPCError({ code: 'UNAUTHORIZED', message: 'Access token expired' })),
      Math.max(0, user.expiresAt.getTime() - Date.now()),
    );
    let cleaned = false;
    const cleanup = async () => {
      if (cleaned) return;
      cleaned = true;
      remove();
      clearTimeout(expiry);
      signal?.removeEventListener('abort', onAbort);
      if (connection) connection.subscriptions -= 1;
      await this.presence
        .disconnected(user.id, key)
        .catch((error: unknown) => this.log.warn({ err: error }, 'presence not updated on disconnect'));
    };
    // A stream that is abandoned before its first read never runs its `finally`.
    const onAbort = () => {
      live.wake?.();
      void cleanup();
    };
    signal?.addEventListener('abort', onAbort);

    try {
      if ((await this.presence.connectionCount(user.id)) >= limits.maxConnectionsPerUser) {
        throw new RateLimited('Too many connections for this user', 5);
      }
      await this.presence.connected(user.id, key);
      const epoch = await this.epoch();
      const start = request.lastEventId
        ? await this.resumePoint(log, epoch, request.lastEventId)
        : { last: await this.broker.lastId(log), resync: false, backfill: false };
      live.position = new StreamPosition(start.last);
      return this.run(request, live, live.position, fail, cleanup, epoch, log, start);
    } catch (error) {
      await cleanup();
      throw error;
    }
  }

  /** Where a resumed stream starts, or that it cannot be resumed (`resync`). */
  private async resumePoint(log: string, epoch: string, lastEventId: string) {
    const info = await this.broker.streamInfo(log);
    const resume = parseEventId(lastEventId);
    const usable =
      resume !== null &&
      resume.epoch === epoch &&
      compareStreamIds(resume.id, info.lastId) <= 0 &&
      compareStreamIds(info.maxDeletedId, resume.id) <= 0;
    if (!resume || !usable) return { last: info.lastId, resync: true, backfill: false };
    return { last: resume.id, resync: false, backfill: true };
  }

  private async *run(
    request: StreamRequest,
    live: LiveState,
    position: StreamPosition,
    fail: (error: Error) => void,
    cleanup: () => Promise<void>,
    epoch: string,
    log: string,
    start: { last: string; resync: boolean; backfill: boolean },
  ): AsyncGenerator<TrackedEnvelope<ParleyEvent>> {
    const { signal, socket } = request;
    const { limits } = this.config;
    const tooSlow = (socket: WebSocket) => {
      if (socket.bufferedAmount <= limits.maxSocketBufferBytes) return false;
      socket.close(1013, 'slow consumer');
      return true;
    };
    try {
      if (start.resync) {
        // The gap can no longer be filled: the client refetches with queries.
        yield tracked(`${epoch}.${position.last}`, { type: 'resync' });
      }
      if (start.backfill) {
        for (;;) {
          const page = await this.broker.rangeAfter(log, position.last, BACKFILL_PAGE);
          for (const entry of page) {
            position.last = entry.id;
            if (entry.fields.e) yield tracked(`${epoch}.${entry.id}`, decode(entry.fields.e));
          }
          if (page.length < BACKFILL_PAGE) break;
        }
      }
      for (;;) {
        if (live.failure) throw live.failure;
        if (signal?.aborted) return;
        const next = live.queue.shift();
        if (!next) {
          if (socket && request.request && !live.direct) {
            // tRPC asked for the next value, so it has sent every frame yielded so far: frames
            // written from here on cannot overtake them. The event is serialized once for all
            // its recipients on this instance, and each socket gets one string concatenation
            // and one write, instead of tRPC's envelope, transform and JSON.stringify.
            const prefix = framePrefix(request.request);
            live.direct = (delivery) => {
              if (live.failure || socket.readyState !== socket.OPEN) return;
              if (!position.admit(delivery)) return;
              if (tooSlow(socket)) {
                fail(new SlowConsumer());
                return;
              }
              socket.send(eventFrame(prefix, `${epoch}.${position.last}`, delivery.event));
            };
          }
          await new Promise<void>((resolve) => (live.wake = resolve));
          live.wake = null;
          continue;
        }
        if (!position.admit(next)) continue;
        if (socket && tooSlow(socket)) throw new SlowConsumer();
        yield tracked(`${epoch}.${position.last}`, next.event);
      }
    } finally {
      await cleanup();
    }
  }

  /**
   * After the events channel came back: what the user's log got meanwhile, then what arrived
   * live since (held), each through the usual path, which drops what was already sent. When
   * the log no longer reaches back that far, or lost its data, the client gets `resync`.
   */
  private async catchUp(live: LiveState, log: string, accept: (delivery: Delivery) => void): Promise<void> {
    live.held ??= [];
    const missed: Delivery[] = [];
    try {
      const position = live.position;
      if (position) {
        const info = await this.broker.streamInfo(log);
        if (
          compareStreamIds(info.maxDeletedId, position.last) > 0 ||
          compareStreamIds(position.last, info.lastId) > 0
        ) {
          position.last = info.lastId;
          missed.push({ id: null, event: { type: 'resync' } });
        } else {
          for (let after = position.last; ;) {
            const page = await this.broker.rangeAfter(log, after, BACKFILL_PAGE);
            for (const entry of page) {
              after = entry.id;
              if (entry.fields.e) missed.push({ id: entry.id, event: decode(entry.fields.e) });
            }
            if (page.length < BACKFILL_PAGE) break;
          }
        }
      }
    } catch (error) {
      this.log.warn({ err: error }, 'events missed while the events channel was down could not be fetched');
    } finally {
      // Another catch-up may have finished meanwhile and released them already.
      const held = live.held ?? [];
      live.held = null;
      for (const delivery of missed) accept(delivery);
      for (const delivery of held) accept(delivery);
    }
  }

  private async epoch(): Promise<string> {
    const current = await this.broker.get(EPOCH_KEY);
    if (current) return current;
    await this.broker.set(EPOCH_KEY, randomBytes(6).toString('base64url'), { nx: true });
    return (await this.broker.get(EPOCH_KEY)) ?? '';
  }
}

/**
 * Where one subscription stands: the last durable event it sent, and the conversations the
 * user was removed from since (their later events are not for this user any more).
 */
class StreamPosition {
  private readonly removed = new Set<string>();

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
    if (event.type === 'conversation.removed') this.removed.add(event.conversationId);
    else if (event.type === 'conversation.upserted') this.removed.delete(event.conversation.id);
    else {
      const conversationId = conversationOf(event);
      if (conversationId && this.removed.has(conversationId)) return false;
    }
    return true;
  }
}

/** Event ids are `<epoch>.<stream id>`. */
function parseEventId(value: string): { epoch: string; id: string } | null {
  const dot = value.lastIndexOf('.');
  if (dot <= 0) return null;
  const id = value.slice(dot + 1);
  return STREAM_ID.test(id) ? { epoch: value.slice(0, dot), id } : null;
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
