import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { clientAddress } from '../context.js';
import { routeOf } from '../metrics.js';
import type { Services } from '../services.js';

/**
 * Answers `/healthz` (liveness), `/readyz` (database and broker reachable; worker lag shown)
 * and `/metrics`; returns false for any other path. Shared by the API server and the
 * worker-only process.
 */
export function handleOpsRequest(
  app: Services,
  url: string,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): boolean {
  if (url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    return true;
  }
  if (url === '/readyz') {
    // Ready means both engines answer; a lagging worker is reported but does not take an
    // instance out of rotation (it would not make the lag any smaller).
    void app.health.report().then(
      ({ db, redis, worker }) => {
        const ok = db && redis;
        const state = `database ${db ? 'up' : 'down'}, broker ${redis ? 'up' : 'down'}, worker lag ${worker.lag ?? 'unknown'}`;
        res
          .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
          .end(ok ? `ready: ${state}` : `not ready: ${state}`);
      },
      () => res.writeHead(503, { 'content-type': 'text/plain' }).end('not ready'),
    );
    return true;
  }
  if (url === '/metrics') {
    if (!mayScrape(app, req)) {
      res
        .writeHead(403, { 'content-type': 'text/plain' })
        .end('metrics are served to loopback or with METRICS_TOKEN');
      return true;
    }
    void app.metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': app.metrics.registry.contentType }).end(body),
      (error: unknown) => {
        app.log.error({ err: error }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable');
      },
    );
    return true;
  }
  return false;
}

/**
 * Metrics name procedures, counts and the process's internals: on the API port they are for
 * the operator, so a scrape needs `METRICS_TOKEN` as a bearer token when one is set, and
 * otherwise has to come from this machine (a request forwarded by a trusted proxy counts as
 * coming from the address it forwards).
 */
function mayScrape(app: Services, req: http.IncomingMessage): boolean {
  const token = app.config.metricsToken;
  if (token) {
    const given = Buffer.from(req.headers.authorization ?? '');
    const expected = Buffer.from(`Bearer ${token}`);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
  return isLoopback(clientAddress(req, app.config.trustProxy));
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

/** Counts and times a request under its route once the response is sent. */
export function countRequest(app: Services, req: http.IncomingMessage, res: http.ServerResponse): void {
  const started = performance.now();
  res.once('finish', () => {
    const labels = {
      method: req.method ?? 'GET',
      route: routeOf(req.url ?? '/'),
      status: String(res.statusCode),
    };
    app.metrics.httpRequests.inc(labels);
    app.metrics.httpDuration.observe(labels, (performance.now() - started) / 1000);
  });
}

/**
 * The worker-only process (`parley worker`) serves just the ops endpoints, so its health can
 * be checked and its batch and persist metrics scraped like an API instance's.
 */
export async function startOpsHttp(
  app: Services,
  options: { port: number; host: string },
): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    countRequest(app, req, res);
    if (!handleOpsRequest(app, req.url ?? '/', req, res)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
