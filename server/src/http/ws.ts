import type { IncomingMessage } from 'node:http';
import {
  type AnyTRPCRootTypes,
  type AnyTRPCRouter,
  callTRPCProcedure,
  getTRPCErrorFromUnknown,
  getTRPCErrorShape,
  isTrackedEnvelope,
  TRPCError,
  type TRPCErrorShape,
  type TRPCProcedureType,
  type TRPCRootConfig,
  transformTRPCResponse,
} from '@trpc/server';
import { parseConnectionParamsFromUnknown } from '@trpc/server/http';
import { parseTRPCMessage } from '@trpc/server/rpc';
import type { RawData, WebSocket, WebSocketServer } from 'ws';
import { sendEventFrame } from '../realtime/frames.js';

/**
 * tRPC's WebSocket protocol, as `wsLink` speaks it, served for one router: queries, mutations
 * and subscriptions in JSON text frames, `connectionParams` as the first message when the URL
 * asks for it, `PING`/`PONG`, `subscription.stop` and the `reconnect` notification. It answers
 * every message as `@trpc/server/adapters/ws` does (same frames, same error shapes), with less
 * state per connection: one object and two listeners, a subscription entry per subscription,
 * and no timer per socket (one sweep serves the keep-alive and the authentication deadline of
 * every connection). A subscription whose stream can write its own frames (`directStream`) is
 * handed the socket and holds no iterator, promise or abort signal while it waits for events.
 */
export interface WsHandlerOptions<TContext> {
  wss: WebSocketServer;
  router: AnyTRPCRouter;
  createContext(opts: {
    req: IncomingMessage;
    socket: WebSocket;
    connectionParams: Record<string, string | undefined> | null;
  }): Promise<TContext>;
  /** A connection quiet for `pingMs` gets `PING`; one that stays quiet `pongWaitMs` longer is cut. */
  keepAlive: { pingMs: number; pongWaitMs: number };
  /** Most calls one message may carry. */
  maxBatchSize: number;
  /**
   * A connection still without an authenticated context this long after it opened is closed
   * with 1008. One whose context is being built is left to finish: `wsLink` sends its
   * `connectionParams` as the first message, and the token check may take a moment.
   */
  authDeadline?: { ms: number; authenticated(ctx: TContext): boolean };
  /**
   * Asked once a connection's context is built: an error refuses the connection (answered,
   * then closed with 1008); otherwise `release` is called with the context when it closes.
   */
  admit?(ctx: TContext): TRPCError | null;
  release?(ctx: TContext): void;
  /** Told of every connection opened and closed (for metrics). */
  onConnection?(open: boolean): void;
  /**
   * Asked once a subscription's procedure has returned its stream (its middlewares and input
   * parser ran as for any call): the stream's handle, once it has taken `socket` to write its
   * own data frames for the subscription `request`; or null, to have the stream iterated here.
   */
  directStream?(
    path: string,
    stream: unknown,
    socket: WebSocket,
    request: SubscriptionRequest,
  ): DirectStream | null;
  onError(info: {
    error: TRPCError;
    path: string | undefined;
    type: TRPCProcedureType | 'unknown';
    ctx: TContext | undefined;
  }): void;
}

export interface WsHandler {
  /** Tells every client to reconnect (before a deploy). */
  broadcastReconnectNotification(): void;
  /** Stops the keep-alive sweep. */
  close(): void;
}

type RequestId = string | number;

/** What a subscription's data frames carry of its request: its id and JSON-RPC version. */
export interface SubscriptionRequest {
  id: RequestId;
  jsonrpc: '2.0' | undefined;
}

/** A subscription's stream that writes its own data frames, in the format `wsLink` reads. */
export interface DirectStream {
  /**
   * Writes the stream's frames (backfill, then live events) to the socket from now on; `end`
   * is called once, with the error that ended the stream, or with null once it was stopped.
   */
  start(end: (error: Error | null) => void): void;
  /** Stops the stream (the client's `subscription.stop`, or its socket closed). */
  stop(): void;
}

interface Call {
  id: RequestId;
  jsonrpc: '2.0' | undefined;
  type: TRPCProcedureType;
  path: string;
  input: unknown;
}

interface Subscription {
  stopped: boolean;
  stop(): void;
}

type ContextResult<TContext> = { ok: true; ctx: TContext } | { ok: false; error: TRPCError };

const OPEN = 1;

export function serveWebSocket<TContext>(options: WsHandlerOptions<TContext>): WsHandler {
  const connections = new Set<Connection<TContext>>();
  const { pingMs, pongWaitMs } = options.keepAlive;
  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const connection of connections) {
        connection.keepAlive(now, pingMs, pongWaitMs);
        connection.checkAuthenticated(now);
      }
    },
    Math.min(1_000, pongWaitMs),
  );
  sweep.unref();
  options.wss.on('connection', (socket: WebSocket, req: IncomingMessage) => {
    const connection = new Connection(options, socket, req);
    connections.add(connection);
    options.onConnection?.(true);
    socket.on('message', (data, isBinary) => connection.receive(data, isBinary));
    socket.on('error', (cause) => connection.report(getTRPCErrorFromUnknown(cause), undefined, 'unknown'));
    socket.once('close', () => {
      connections.delete(connection);
      connection.closed();
      options.onConnection?.(false);
    });
  });
  return {
    broadcastReconnectNotification() {
      const frame = JSON.stringify({ id: null, method: 'reconnect' });
      for (const client of options.wss.clients) if (client.readyState === OPEN) client.send(frame);
    },
    close: () => clearInterval(sweep),
  };
}

class Connection<TContext> {
  private ctx: TContext | undefined = undefined;
  private ctxPromise: Promise<ContextResult<TContext>> | null = null;
  private ctxSettled = false;
  /**
   * The subscriptions running on this connection, by request id: the first (nearly always the
   * only one, `events`) in fields of its own, any others in a map made for them.
   */
  private soleId: RequestId | null = null;
  private sole: Subscription | null = null;
  private others: Map<RequestId, Subscription> | null = null;
  /** Kept only until the context is built from it. */
  private req: IncomingMessage | null;
  private lastSeen = Date.now();
  private pingedAt = 0;
  /** When the connection opened, until it is authenticated (then 0). */
  private unauthenticatedSince = Date.now();
  /** Counted by `admit`: to be released when the connection closes. */
  private admitted = false;

  constructor(
    private readonly options: WsHandlerOptions<TContext>,
    private readonly socket: WebSocket,
    req: IncomingMessage,
  ) {
    this.req = req;
    const url = new URL(req.url ?? '/', 'http://localhost');
    // Without `connectionParams=1` the context is built at once; otherwise from the first message.
    if (url.searchParams.get('connectionParams') !== '1') this.ctxPromise = this.createContext(() => null);
  }

  /** Closes a connection that has not authenticated within the deadline. */
  checkAuthenticated(now: number): void {
    const deadline = this.options.authDeadline;
    if (!deadline || this.unauthenticatedSince === 0 || now - this.unauthenticatedSince < deadline.ms) return;
    // A context being built (the first message arrived) gets to finish; it decides then.
    if (this.ctxPromise && !this.ctxSettled) return;
    this.unauthenticatedSince = 0;
    this.socket.close(1008, 'Authentication required');
  }

  keepAlive(now: number, pingMs: number, pongWaitMs: number): void {
    if (this.pingedAt !== 0) {
      if (now - this.pingedAt >= pongWaitMs) this.socket.terminate();
    } else if (now - this.lastSeen >= pingMs && this.socket.readyState === OPEN) {
      this.pingedAt = now;
      this.socket.send('PING');
    }
  }

  receive(raw: RawData, isBinary: boolean): void {
    this.lastSeen = Date.now();
    this.pingedAt = 0;
    if (!Buffer.isBuffer(raw)) {
      this.respondOrReport(() => ({
        id: null,
        error: this.shape(
          new TRPCError({ code: 'UNPROCESSABLE_CONTENT', message: 'Unexpected WebSocket message format' }),
          'unknown',
          undefined,
          undefined,
        ),
      }));
      return;
    }
    const data = isBinary ? raw : raw.toString('utf8');
    if (data === 'PONG') return;
    if (data === 'PING') {
      this.socket.send('PONG');
      return;
    }
    if (!this.ctxPromise) {
      this.ctxPromise = this.createContext(() => {
        let message: unknown;
        try {
          message = decode(data);
          if (typeof message !== 'object' || message === null) throw new Error('Message was not an object');
        } catch (cause) {
          throw new TRPCError({
            code: 'PARSE_ERROR',
            message: 'Malformed TRPCConnectionParamsMessage',
            cause,
          });
        }
        return parseConnectionParamsFromUnknown((message as { data?: unknown }).data);
      });
      return;
    }
    let messages: ReturnType<typeof parseTRPCMessage>[];
    try {
      const decoded = decode(data);
      const list: unknown[] = Array.isArray(decoded) ? decoded : [decoded];
      if (Array.isArray(decoded) && list.length > this.options.maxBatchSize) {
        this.refuseBatch(list);
        return;
      }
      const { transformer } = this.config;
      messages = list.map((message) => parseTRPCMessage(message, transformer));
    } catch (cause) {
      const error = new TRPCError({ code: 'PARSE_ERROR', cause });
      this.respondOrReport(() => ({ id: null, error: this.shape(error, 'unknown', undefined, undefined) }));
      return;
    }
    messages.forEach((message, index) => {
      this.handle(message, index).catch((cause: unknown) =>
        this.report(getTRPCErrorFromUnknown(cause), undefined, 'unknown'),
      );
    });
  }

  closed(): void {
    if (this.admitted && this.ctx !== undefined) {
      this.admitted = false;
      this.options.release?.(this.ctx);
    }
    const running = [...(this.sole ? [this.sole] : []), ...(this.others?.values() ?? [])];
    this.sole = null;
    this.soleId = null;
    this.others = null;
    for (const subscription of running) subscription.stop();
  }

  report(error: TRPCError, path: string | undefined, type: TRPCProcedureType | 'unknown'): void {
    try {
      this.options.onError({ error, path, type, ctx: this.ctx });
    } catch (cause) {
      console.error('[parley ws] onError failed', cause);
    }
  }

  private async createContext(
    connectionParams: () => Record<string, string | undefined> | null,
  ): Promise<ContextResult<TContext>> {
    const req = this.req;
    this.req = null;
    let refused = false;
    try {
      if (!req) throw new Error('connection context built twice');
      const ctx = await this.options.createContext({
        req,
        socket: this.socket,
        connectionParams: connectionParams(),
      });
      this.ctx = ctx;
      // Closed meanwhile: nothing to admit, and nothing would release it.
      if (this.socket.readyState !== OPEN) throw new TRPCError({ code: 'CLIENT_CLOSED_REQUEST' });
      const refusal = this.options.admit?.(ctx) ?? null;
      if (refusal) {
        refused = true;
        throw refusal;
      }
      this.admitted = this.options.admit !== undefined;
      if (this.options.authDeadline?.authenticated(ctx) ?? true) this.unauthenticatedSince = 0;
      return { ok: true, ctx };
    } catch (cause) {
      const error = getTRPCErrorFromUnknown(cause);
      this.report(error, undefined, 'unknown');
      this.respondOrReport(() => ({ id: null, error: this.shape(error, 'unknown', undefined, undefined) }));
      setImmediate(() => (refused ? this.socket.close(1008, error.message) : this.socket.close()));
      return { ok: false, error };
    } finally {
      this.ctxSettled = true;
    }
  }

  private async handle(message: ReturnType<typeof parseTRPCMessage>, batchIndex: number): Promise<void> {
    const { id, jsonrpc } = message;
    if (id === null) {
      const error = new TRPCError({ code: 'PARSE_ERROR', message: '`id` is required' });
      this.report(error, undefined, 'unknown');
      this.respond({ id, jsonrpc, error: this.shape(error, 'unknown', undefined, undefined) });
      return;
    }
    if (message.method === 'subscription.stop') {
      this.subscription(id)?.stop();
      return;
    }
    const { path, lastEventId } = message.params;
    const type = message.method;
    let { input } = message.params;
    if (lastEventId !== undefined) {
      if (typeof input === 'object' && input !== null && !Array.isArray(input))
        input = { ...input, lastEventId };
      else input ??= { lastEventId };
    }
    if (type !== 'subscription') {
      try {
        const ready = await this.ctxPromise;
        if (!ready?.ok) throw ready?.error ?? new TRPCError({ code: 'UNAUTHORIZED' });
        const data: unknown = await callTRPCProcedure({
          router: this.options.router,
          path,
          getRawInput: () => Promise.resolve(input),
          ctx: ready.ctx,
          type,
          signal: undefined,
          batchIndex,
        });
        if (isIterable(data)) {
          throw new TRPCError({
            code: 'UNSUPPORTED_MEDIA_TYPE',
            message: `Cannot return an async iterable or observable from a ${type} procedure with WebSockets`,
          });
        }
        this.respond({ id, jsonrpc, result: { type: 'data', data } });
      } catch (cause) {
        this.fail({ id, jsonrpc, type, path, input }, cause);
      }
      return;
    }
    await this.subscribe({ id, jsonrpc, type, path, input }, batchIndex);
  }

  private async subscribe(call: Call, batchIndex: number): Promise<void> {
    const { id, jsonrpc, path, input } = call;
    if (this.subscription(id)) {
      this.fail(call, new TRPCError({ code: 'BAD_REQUEST', message: `Duplicate id ${id}` }));
      return;
    }
    // Held from now, so a stop (or the socket closing) during the set-up is not missed.
    const entry: Subscription = {
      stopped: false,
      stop() {
        this.stopped = true;
      },
    };
    if (this.sole === null) {
      this.sole = entry;
      this.soleId = id;
    } else (this.others ??= new Map()).set(id, entry);
    // For a stream that is iterated here; a direct stream is stopped through its own handle.
    const controller = new AbortController();
    let result: AsyncIterable<unknown>;
    try {
      const ready = await this.ctxPromise;
      if (!ready?.ok) throw ready?.error ?? new TRPCError({ code: 'UNAUTHORIZED' });
      if (entry.stopped || this.socket.readyState !== OPEN) {
        this.release(id, entry);
        this.respond({ id, jsonrpc, result: { type: 'stopped' } });
        return;
      }
      const value: unknown = await callTRPCProcedure({
        router: this.options.router,
        path,
        getRawInput: () => Promise.resolve(input),
        ctx: ready.ctx,
        type: 'subscription',
        signal: controller.signal,
        batchIndex,
      });
      if (!isIterable(value)) {
        throw new TRPCError({
          code: 'INTERNAL_SERVER_ERROR',
          message: `Subscription ${path} did not return an async iterable`,
        });
      }
      result = value;
    } catch (cause) {
      this.release(id, entry);
      this.fail(call, cause);
      return;
    }
    const direct = this.options.directStream?.(path, result, this.socket, { id, jsonrpc }) ?? null;
    // Only what its frames need is kept for a direct stream, not the call's input.
    if (direct) this.handOver(direct, id, jsonrpc, path, entry);
    else await this.iterate(result, controller, call, entry);
  }

  /** Gives the socket to a stream that writes its own frames; nothing is held here meanwhile. */
  private handOver(
    direct: DirectStream,
    id: RequestId,
    jsonrpc: '2.0' | undefined,
    path: string,
    entry: Subscription,
  ): void {
    if (entry.stopped || this.socket.readyState !== OPEN) {
      this.release(id, entry);
      direct.stop();
      return;
    }
    entry.stop = () => direct.stop();
    this.respond({ id, jsonrpc, result: { type: 'started' } });
    direct.start((error) => {
      this.release(id, entry);
      if (error) this.fail({ id, jsonrpc, type: 'subscription', path, input: undefined }, error);
      this.respond({ id, jsonrpc, result: { type: 'stopped' } });
    });
  }

  /** Sends what any other stream yields, one value at a time, each raced against a stop. */
  private async iterate(
    stream: AsyncIterable<unknown>,
    controller: AbortController,
    call: Call,
    entry: Subscription,
  ): Promise<void> {
    const { id, jsonrpc, path } = call;
    const iterator = stream[Symbol.asyncIterator]();
    let wake: (() => void) | null = null;
    entry.stop = () => {
      entry.stopped = true;
      // The procedure's `signal`: how a stream waiting for its next value learns of the stop.
      controller.abort();
      wake?.();
    };
    if (!entry.stopped && this.socket.readyState === OPEN) {
      this.respond({ id, jsonrpc, result: { type: 'started' } });
    }
    try {
      while (!entry.stopped && this.socket.readyState === OPEN) {
        const next = await new Promise<IteratorResult<unknown> | null>((resolve, reject) => {
          wake = () => resolve(null);
          iterator.next().then(resolve, reject);
        });
        wake = null;
        if (next === null || next.done) break;
        const value: unknown = next.value;
        this.respond({
          id,
          jsonrpc,
          result: isTrackedEnvelope(value)
            ? { type: 'data', id: value[0], data: { id: value[0], data: value[1] } }
            : { type: 'data', data: value },
        });
      }
    } catch (cause) {
      this.fail(call, cause);
    } finally {
      this.release(id, entry);
      controller.abort();
      void iterator
        .return?.()
        .catch((cause: unknown) => this.report(getTRPCErrorFromUnknown(cause), path, 'subscription'));
      this.respond({ id, jsonrpc, result: { type: 'stopped' } });
    }
  }

  /** Reports a call's failure and answers it with the error. */
  private fail(call: Call, cause: unknown): void {
    const error = getTRPCErrorFromUnknown(cause);
    this.report(error, call.path, call.type);
    this.respond({
      id: call.id,
      jsonrpc: call.jsonrpc,
      error: this.shape(error, call.type, call.path, call.input),
    });
  }

  private subscription(id: RequestId): Subscription | undefined {
    if (this.sole !== null && this.soleId === id) return this.sole;
    return this.others?.get(id);
  }

  private release(id: RequestId, entry: Subscription): void {
    if (this.sole === entry && this.soleId === id) {
      this.sole = null;
      this.soleId = null;
    } else if (this.others?.get(id) === entry) this.others.delete(id);
  }

  private refuseBatch(list: unknown[]): void {
    const error = new TRPCError({ code: 'BAD_REQUEST', message: 'Batch call exceeds maximum size' });
    this.report(error, undefined, 'unknown');
    const shape = this.shape(error, 'unknown', undefined, undefined);
    let answered = false;
    for (const raw of list) {
      if (typeof raw !== 'object' || raw === null) continue;
      const { id, method, jsonrpc } = raw as { id?: unknown; method?: unknown; jsonrpc?: unknown };
      if (method === 'subscription.stop' || (typeof id !== 'number' && typeof id !== 'string')) continue;
      this.respondOrReport(() => ({ id, jsonrpc: jsonrpc === '2.0' ? '2.0' : undefined, error: shape }));
      answered = true;
    }
    if (!answered) this.respondOrReport(() => ({ id: null, error: shape }));
  }

  /** The error shape the client gets: the router's `errorFormatter` applied. */
  private shape(
    error: TRPCError,
    type: TRPCProcedureType | 'unknown',
    path: string | undefined,
    input: unknown,
  ): TRPCErrorShape {
    return getTRPCErrorShape({
      config: this.config,
      error,
      type,
      path,
      input,
      ctx: this.ctx,
    }) as TRPCErrorShape;
  }

  private respond(message: Parameters<typeof transformTRPCResponse>[1]): void {
    if (this.socket.readyState !== OPEN) return;
    // One buffer, header and text, in one write (`ws` writes the two apart).
    sendEventFrame(this.socket, this, null, () =>
      JSON.stringify(transformTRPCResponse(this.config, message)),
    );
  }

  private get config(): TRPCRootConfig<AnyTRPCRootTypes> {
    return this.options.router._def._config as TRPCRootConfig<AnyTRPCRootTypes>;
  }

  /** For answers not tied to a call: a failure to build or send one is reported, not thrown. */
  private respondOrReport(build: () => Parameters<typeof transformTRPCResponse>[1]): void {
    try {
      this.respond(build());
    } catch (cause) {
      this.report(getTRPCErrorFromUnknown(cause), undefined, 'unknown');
    }
  }
}

/** The WebSocket's messages are JSON text frames. */
function decode(data: string | Buffer): unknown {
  if (typeof data !== 'string') {
    throw new Error('Binary WebSocket frames are not accepted: messages are JSON text frames');
  }
  return JSON.parse(data);
}

function isIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function'
  );
}
