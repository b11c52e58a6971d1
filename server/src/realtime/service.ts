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

/** Changes whenever the broker loses its data, so ids from before cannot be resumed from. */
const EPOCH_KEY = 'events:epoch';
const BACKFILL_PAGE = 500;

interface LiveState {
  queue: Delivery[];
  failure: Error | null;
  wake: (() => void) | null;
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

    const live: LiveState = { queue: [], failure: null, wake: null };
    const fail = (error: Error) => {
      live.failure ??= error;
      live.wake?.();
    };
    const key = `${this.instanceId}:${randomUUID()}`;
    const remove = this.hub.add({
      userId: user.id,
      sessionId: user.sessionId,
      key,
      deliver: (delivery) => {
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
      },
      revoke: () => fail(new TRPCError({ code: 'UNAUTHORIZED', message: 'Session ended' })),
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
      const log = userLog(user.id);
      const start = request.lastEventId
        ? await this.resumePoint(log, epoch, request.lastEventId)
        : { last: await this.broker.lastId(log), resync: false, backfill: false };
      return this.run(request, live, cleanup, epoch, log, start);
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
    cleanup: () => Promise<void>,
    epoch: string,
    log: string,
    start: { last: string; resync: boolean; backfill: boolean },
  ): AsyncGenerator<TrackedEnvelope<ParleyEvent>> {
    const { signal, socket } = request;
    const { limits } = this.config;
    let last = start.last;
    try {
      if (start.resync) {
        // The gap can no longer be filled: the client refetches with queries.
        yield tracked(`${epoch}.${last}`, { type: 'resync' });
      }
      if (start.backfill) {
        for (;;) {
          const page = await this.broker.rangeAfter(log, last, BACKFILL_PAGE);
          for (const entry of page) {
            last = entry.id;
            if (entry.fields.e) yield tracked(`${epoch}.${last}`, decode(entry.fields.e));
          }
          if (page.length < BACKFILL_PAGE) break;
        }
      }
      const removed = new Set<string>();
      for (;;) {
        if (live.failure) throw live.failure;
        if (signal?.aborted) return;
        const next = live.queue.shift();
        if (!next) {
          await new Promise<void>((resolve) => (live.wake = resolve));
          live.wake = null;
          continue;
        }
        if (next.id !== null) {
          // Already given by the backfill.
          if (start.backfill && compareStreamIds(next.id, last) <= 0) continue;
          if (compareStreamIds(next.id, last) > 0) last = next.id;
        }
        const conversationId = conversationOf(next.event);
        if (next.event.type === 'conversation.removed') removed.add(next.event.conversationId);
        else if (next.event.type === 'conversation.upserted') removed.delete(next.event.conversation.id);
        else if (conversationId && removed.has(conversationId)) continue;
        if (socket && socket.bufferedAmount > limits.maxSocketBufferBytes) {
          socket.close(1013, 'slow consumer');
          throw new SlowConsumer();
        }
        yield tracked(`${epoch}.${last}`, next.event);
      }
    } finally {
      await cleanup();
    }
  }

  private async epoch(): Promise<string> {
    const current = await this.broker.get(EPOCH_KEY);
    if (current) return current;
    await this.broker.set(EPOCH_KEY, randomBytes(6).toString('base64url'), { nx: true });
    return (await this.broker.get(EPOCH_KEY)) ?? '';
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
