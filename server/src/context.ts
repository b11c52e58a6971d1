import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AuthUser } from './credentials/tokens.js';
import type { ConnectionState } from './realtime/stream.js';
import type { Services } from './services.js';

export interface Context {
  app: Services;
  user: AuthUser | null;
  /** The caller's address, for throttling. */
  ip: string;
  requestId: string;
  /** Set for calls that arrive over a WebSocket: one value per connection. */
  connectionId: string | null;
  /** The HTTP response a call over HTTP answers into: an `events` stream (SSE) watches it. */
  response: ServerResponse | null;
  connection: ConnectionState | null;
}

/**
 * The caller's address. Behind a reverse proxy every connection comes from the proxy, so with
 * `trustProxy` the address the proxy appended last to `X-Forwarded-For` is used instead
 * (entries before it come from the client and could be forged).
 */
export function clientAddress(req: IncomingMessage, trustProxy = false): string {
  const forwarded = trustProxy ? req.headers['x-forwarded-for'] : undefined;
  const header = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
  const last = header?.split(',').at(-1)?.trim();
  return last || (req.socket.remoteAddress ?? 'unknown');
}

/**
 * One context for HTTP and WebSocket: the bearer token comes from the `Authorization` header,
 * from `connectionParams.token` (over the WebSocket, and over HTTP for a subscription: an
 * `EventSource` cannot set headers, so `httpSubscriptionLink` sends them as the
 * `connectionParams` query parameter) or from `?token=` on the WebSocket URL.
 */
export async function createContext(
  app: Services,
  opts: {
    req: IncomingMessage;
    /** Over HTTP: the response the call answers into. */
    response?: ServerResponse | null;
    info: { connectionParams: Record<string, string | undefined> | null; type?: string };
  },
  transport: 'http' | 'ws',
): Promise<Context> {
  const token = bearerToken(opts.req, opts.info, transport);
  // Over HTTP every request carries the token; a WebSocket carries it once.
  const user = token ? await app.auth.authenticate(token, { reuse: transport === 'http' }) : null;
  return {
    app,
    user,
    ip: clientAddress(opts.req, app.config.trustProxy),
    requestId: newId(),
    connectionId: transport === 'ws' ? newId() : null,
    response: opts.response ?? null,
    connection: transport === 'ws' ? { subscriptions: 0 } : null,
  };
}

/**
 * A random UUID as one flat string: node builds it by concatenation, a tree of some twenty
 * strings (about 0.5 KB) that a connection's context would otherwise keep for its lifetime.
 */
function newId(): string {
  return randomUUID().toLowerCase();
}

function bearerToken(
  req: IncomingMessage,
  info: { connectionParams: Record<string, string | undefined> | null; type?: string },
  transport: 'http' | 'ws',
): string | null {
  const header = req.headers.authorization;
  if (header?.startsWith('Bearer ')) return header.slice(7).trim() || null;
  const { connectionParams } = info;
  // Only a subscription may carry its token in the URL over HTTP: queries and mutations can send
  // a header, and a URL is kept in more places (history, proxies) than a header is.
  if (transport === 'http' && info.type === 'subscription') {
    const fromParams = connectionParams?.token;
    return typeof fromParams === 'string' && fromParams ? fromParams : null;
  }
  if (transport === 'ws') {
    const fromParams = connectionParams?.token;
    if (typeof fromParams === 'string' && fromParams) return fromParams;
    const fromUrl = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
    if (fromUrl) return fromUrl;
  }
  return null;
}
