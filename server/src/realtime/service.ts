import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { TrackedEnvelope } from '@trpc/server';
import type { WebSocket } from 'ws';
import type { AuthUser } from '../credentials/tokens.js';
import type { EventLog } from '../broker/ports/events.js';
import { compareStreamIds } from '../broker/types.js';
import type { Config } from '../config/index.js';
import { RateLimited } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ParleyEvent } from '../contracts/events.js';
import type { Hub } from './hub.js';
import type { Presence } from './presence.js';
import { parsePosition } from './position.js';
import { type ConnectionState, EventStream, type StreamDeps, type StreamStart } from './stream.js';
import type { SubscriptionRequest } from './transformer.js';

const EXPIRY_SWEEP_MS = 250;

export interface StreamRequest {
  user: AuthUser;
  lastEventId: string | null;
  signal: AbortSignal | undefined;
  /** Over HTTP (server-sent events): the response the stream is written into. */
  response: ServerResponse | null;
  connection: ConnectionState | null;
}

export class Realtime {
  readonly instanceId = randomUUID();
  /** Numbers this instance's subscriptions, for their keys. */
  private subscriptionCount = 0;
  /** Every open stream, for the sweep that ends those whose access token expired. */
  private readonly streams = new Set<EventStream>();
  private expirySweep: NodeJS.Timeout | null = null;
  private readonly streamDeps: StreamDeps;

  constructor(
    private readonly events: EventLog,
    readonly hub: Hub,
    readonly presence: Presence,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly domain: Pick<StreamDeps, 'conversationsOf' | 'view'>,
  ) {
    this.streamDeps = {
      events,
      limits: config.limits,
      log,
      follow: (stream, conversationIds) => this.hub.follow(stream, conversationIds),
      unfollow: (stream, conversationId) => this.hub.unfollow(stream, conversationId),
      barrier: () => this.hub.barrier(),
      conversationsOf: domain.conversationsOf,
      view: domain.view,
      // What a stream leaves behind when it ends: its hub entries, its count, its presence.
      onEnd: (stream) => {
        this.streams.delete(stream);
        this.hub.remove(stream, stream.following);
        if (stream.connection) stream.connection.subscriptions -= 1;
        void this.presence
          .disconnected(stream.userId, stream.key)
          .catch((error: unknown) => this.log.warn({ err: error }, 'presence not updated on disconnect'));
      },
    };
  }

  async start(): Promise<void> {
    await this.hub.start();
    // One timer for every stream instead of one each: a token's expiry ends its stream within
    // a quarter of a second.
    this.expirySweep = setInterval(() => {
      const now = Date.now();
      for (const stream of this.streams) stream.expireBy(now);
    }, EXPIRY_SWEEP_MS);
    this.expirySweep.unref();
    this.presence.start(() => this.hub.subscribers().map((s) => ({ userId: s.userId, key: s.key })));
  }

  async stop(): Promise<void> {
    if (this.expirySweep) clearInterval(this.expirySweep);
    this.presence.stop();
    await this.hub.stop();
  }

  /**
   * The `events` subscription. Everything that must hold before `started` is sent happens
   * here, before the stream is returned: the limits are checked and the live listener is in
   * place (the user's channel and those of their conversations), so an event published right
   * after `started` is never missed. The stream then backfills what came after `lastEventId`
   * from the logs, drops what the backfill already gave, and goes live. Whoever consumes it
   * iterates it, unless it hands the stream a socket to write its own frames to (`writeTo`).
   */
  async stream(request: StreamRequest): Promise<AsyncIterable<TrackedEnvelope<ParleyEvent>>> {
    const { user, connection } = request;
    const { limits } = this.config;
    if (connection && connection.subscriptions >= limits.maxSubscriptionsPerConnection) {
      throw new RateLimited('Too many subscriptions on this connection', 1);
    }
    // Counted before the first await, so a burst on one connection cannot slip past the cap.
    if (connection) connection.subscriptions += 1;
    const stream = new EventStream(
      this.streamDeps,
      user.id,
      user.sessionId,
      user.issuedAt,
      `${this.instanceId}:${(this.subscriptionCount += 1).toString(36)}`,
      user.expiresAt,
      connection,
    );
    this.streams.add(stream);
    // Counted on this instance at once (the hub's count), its user's channel flowing below.
    const userChannel = this.hub.add(stream);
    userChannel.catch(() => undefined);
    stream.iterateWith(request.signal, request.response);
    // Read while the channels are put in place: nothing before the newest ids depends on it.
    const epochRead = this.events.epoch();
    epochRead.catch(() => undefined);
    try {
      await userChannel;
      // Read once the user's channel flows: a membership change after this read arrives live.
      await stream.follow(await this.domain.conversationsOf(user.id, null));
      // Read once every channel is in place: whatever comes later arrives live.
      const newest = await this.events.newestIds();
      const epoch = await epochRead;
      const start: StreamStart = request.lastEventId
        ? resumePoint(epoch, newest, request.lastEventId)
        : { last: newest, resync: false, backfill: false };
      stream.begin(epoch, start);
      // Counted once it is in place: from then on nothing sent is missed. Contacts hear it next.
      if (!(await this.presence.connect(user.id, stream.key, limits.maxConnectionsPerUser))) {
        throw new RateLimited('Too many connections for this user', 5);
      }
    } catch (error) {
      stream.stop();
      throw error;
    }
    return stream;
  }

  /**
   * Over Parley's WebSocket handler (`http/ws.ts`): makes the stream an `events` subscription
   * returned write its own data frames to `socket`, for the subscription `request`, instead of
   * being iterated. Null for anything else.
   */
  writeTo(stream: unknown, socket: WebSocket, request: SubscriptionRequest): EventStream | null {
    return stream instanceof EventStream ? stream.writeTo(socket, request) : null;
  }
}

/**
 * Where a resumed stream starts, or that it cannot be resumed (`resync`): a position from
 * another epoch or another number of event orders, or past the newest id of an order (the
 * broker lost its data). A log trimmed past the position is found by the backfill.
 */
function resumePoint(epoch: string, newest: readonly string[], lastEventId: string): StreamStart {
  const resume = parsePosition(lastEventId, newest.length);
  if (
    !resume ||
    resume.epoch !== epoch ||
    resume.ids.some((id, k) => compareStreamIds(id, newest[k] ?? '0-0') > 0)
  ) {
    return { last: newest, resync: true, backfill: false };
  }
  return { last: resume.ids, resync: false, backfill: true };
}
