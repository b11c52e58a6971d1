import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TRPCError } from '@trpc/server';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { WebSocketServer } from 'ws';
import type { Limits } from '../config/index.js';
import { clientAddress, createContext } from '../context.js';
import { RateLimited } from '../errors.js';
import { type AppRouter, appRouter } from '../routers/_app.js';
import { routeOf } from '../metrics.js';
import { SocketCounts } from './admission.js';
import { countRequest, handleOpsRequest } from './ops.js';
import { createRestApi } from './rest.js';
import { serveWebApp } from './web.js';
import { serveWebSocket } from './ws.js';
import type { Services } from '../services.js';

/** How long a closing server waits for the requests in flight to answer. */
const CLOSE_GRACE_MS = 5_000;

export interface HttpSurface {
  server: http.Server;
  wss: WebSocketServer;
  port: number;
  /**
   * Tells WebSocket clients to reconnect elsewhere, stops accepting, ends server-sent event
   * streams (their EventSource reconnects by itself), lets requests in flight answer for a few
   * seconds, then cuts every connection left.
   */
  close(): Promise<void>;
}

/**
 * Serves `/trpc` (HTTP), `/ws` (WebSocket), `/api/…` and `/openapi.json` (REST), `/healthz`,
 * `/readyz` and `/metrics` on one port, and the web app at every other path.
 */
export async function startHttp(
  app: Services,
  options: { port: number; host: string },
): Promise<HttpSurface> {
  const { config, log, metrics } = app;

  const onError = ({
    error,
    path,
    ctx,
  }: {
    error: { code: string; cause?: unknown; message: string };
    path?: string;
    ctx?: { requestId: string; user: { id: string } | null };
  }) => {
    if (error.code !== 'INTERNAL_SERVER_ERROR') return;
    const cause = error.cause ?? error;
    // A client breaking the WebSocket protocol (an oversized or malformed frame) is the client's
    // fault, and `ws` has closed its socket already: not a failure of ours.
    const code = (cause as { code?: unknown }).code;
    if (!path && typeof code === 'string' && code.startsWith('WS_ERR_')) {
      log.debug({ err: cause }, 'WebSocket protocol violation; connection closed');
      return;
    }
    log.error({ err: cause, path, requestId: ctx?.requestId, userId: ctx?.user?.id }, 'procedure failed');
  };

  const trpcHandler = createHTTPHandler({
    router: withServerSentEvents(appRouter, config.limits),
    basePath: '/trpc/',
    maxBodySize: config.limits.maxBodyBytes,
    maxBatchSize: config.limits.maxBatchSize,
    createContext: (opts) =>
      createContext(app, { req: opts.req, response: opts.res, info: opts.info }, 'http'),
    onError,
    // A call refused as too many carries its wait in `error.data.retryAfter`; HTTP clients and
    // proxies read it from `Retry-After` (the longest, when several calls of a batch were refused).
    responseMeta: ({ errors }) => {
      const waits = errors.flatMap((error) =>
        error.cause instanceof RateLimited ? [error.cause.retryAfterSeconds] : [],
      );
      return waits.length > 0 ? { headers: { 'retry-after': String(Math.max(...waits)) } } : {};
    },
  });

  // The same procedures as plain JSON at `/api/…`, described at `/openapi.json`.
  const rest = createRestApi(app, { router: appRouter, maxBodyBytes: config.limits.maxBodyBytes, onError });
  // The browser app at `/`, after every API path.
  const web = config.webDir ? serveWebApp(config.webDir, log) : null;

  const requests = new InFlight();
  const eventStreams = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    requests.track(res);
    countRequest(app, req, res);
    const origin = req.headers.origin;
    if (origin && config.corsOrigins.includes(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Allow-Headers', 'authorization, content-type, trpc-accept');
      res.setHeader('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
      res.setHeader('Access-Control-Max-Age', '600');
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    if (url === '/trpc' || url.startsWith('/trpc/') || url.startsWith('/trpc?')) {
      // A stream of server-sent events lasts until the client goes: shutting down ends it.
      if (req.method === 'GET' && req.headers.accept?.includes('text/event-stream')) {
        eventStreams.add(res);
        res.once('close', () => eventStreams.delete(res));
      }
      trpcHandler(req, res);
      return;
    }
    if (handleOpsRequest(app, url, req, res)) return;
    if (rest.handle(req, res)) return;
    if (web?.handle(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  });
  server.keepAliveTimeout = 65_000;

  const wss = new WebSocketServer({ noServer: true, maxPayload: config.limits.maxWsPayloadBytes });
  const socketsByUser = new SocketCounts();
  const socketsByAddress = new SocketCounts();
  const wsHandler = serveWebSocket({
    wss,
    router: appRouter,
    createContext: ({ req, connectionParams }) =>
      createContext(app, { req, response: null, info: { connectionParams } }, 'ws'),
    keepAlive: { pingMs: 30_000, pongWaitMs: 5_000 },
    // The same cap as over HTTP: one message must not start an unbounded number of calls.
    maxBatchSize: config.limits.maxBatchSize,
    authDeadline: { ms: config.limits.unauthenticatedSocketMs, authenticated: (ctx) => ctx.user !== null },
    admit: (ctx) =>
      !ctx.user || socketsByUser.take(ctx.user.id, config.limits.maxSocketsPerUser)
        ? null
        : new TRPCError({ code: 'TOO_MANY_REQUESTS', message: 'Too many connections for this user' }),
    release: (ctx) => {
      if (ctx.user) socketsByUser.give(ctx.user.id);
    },
    onConnection: (open) => (open ? metrics.wsConnections.inc() : metrics.wsConnections.dec()),
    // `events` writes its own data frames to the socket: each event serialized once on this
    // instance, each frame one concatenation and one send, and nothing held while it waits.
    directStream: (path, stream, socket, request) =>
      path === 'events' ? app.realtime.writeTo(stream, socket, request) : null,
    onError,
  });
  app.health.connections = () => wss.clients.size;

  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '/').split('?')[0];
    // Counted here: an upgrade request never reaches the request handler's `finish`.
    const count = (status: string) =>
      metrics.httpRequests.inc({ method: req.method ?? 'GET', route: routeOf(path ?? '/'), status });
    if (path !== '/ws') {
      count('404');
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    const origin = req.headers.origin;
    if (config.corsOrigins.length > 0 && origin && !config.corsOrigins.includes(origin)) {
      count('403');
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    // Counted from the upgrade until the TCP connection closes, however the upgrade ends.
    const address = clientAddress(req, config.trustProxy);
    if (!socketsByAddress.takeUntilClosed(address, config.limits.maxSocketsPerAddress, socket)) {
      count('429');
      socket.end('HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    count('101');
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    server,
    wss,
    port,
    async close() {
      wsHandler.broadcastReconnectNotification();
      wsHandler.close();
      // Give clients a moment to read the notification before their sockets close.
      await new Promise((resolve) => setTimeout(resolve, 100));
      for (const client of wss.clients) client.close(1012, 'server restarting');
      // A client that does not answer the close handshake is cut off after a second.
      const deadline = Date.now() + 1_000;
      while (wss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Cut, not ended by tRPC's `return`: the client's EventSource reconnects (elsewhere) and
      // resumes with Last-Event-ID.
      for (const stream of eventStreams) stream.destroy();
      await requests.settled(CLOSE_GRACE_MS);
      // What is left is idle or silent: a kept-alive connection that became idle after
      // `closeIdleConnections`, or one that never sent a request (Node would wait for its
      // `headersTimeout`, a minute).
      server.closeAllConnections();
      await closed;
    },
  };
}

/** Counts the responses not yet finished or abandoned, so that a shutdown can wait for them. */
class InFlight {
  private count = 0;
  private waiters: (() => void)[] = [];

  track(res: http.ServerResponse): void {
    this.count += 1;
    res.once('close', () => {
      this.count -= 1;
      if (this.count === 0) for (const resolve of this.waiters.splice(0)) resolve();
    });
  }

  /** Resolves once none is left, or after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<void> {
    if (this.count === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.waiters.push(resolve);
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
  }
}

/**
 * The router as HTTP serves it: the same procedures, with this instance's settings for
 * subscriptions over server-sent events (`GET /trpc/events`). tRPC reads them from the
 * router's config, which `initTRPC` fixes once per process; these depend on the config. A
 * stream gets a `ping` after `ssePingMs` without an event (the client reconnects after three
 * missed), and ends after `sseMaxDurationMs` without tRPC's `return` event, so the client's
 * EventSource reconnects and resumes with `Last-Event-ID`.
 */
function withServerSentEvents(router: AppRouter, limits: Limits): AppRouter {
  const sse = {
    enabled: true,
    ping: { enabled: true, intervalMs: limits.ssePingMs },
    maxDurationMs: limits.sseMaxDurationMs,
    client: { reconnectAfterInactivityMs: limits.ssePingMs * 3 },
  };
  return { ...router, _def: { ...router._def, _config: { ...router._def._config, sse } } };
}
