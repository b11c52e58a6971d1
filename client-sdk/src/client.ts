import {
  createTRPCClient,
  httpBatchLink,
  httpSubscriptionLink,
  splitLink,
  type TRPCLink,
  wsLink,
} from '@trpc/client';
import { type KeepAlive, keepAliveTimings } from './connection.js';
import { EventStream, type ParleyEvents } from './events.js';
import { type SendRetry, sendRetryLink, sessionLink } from './links.js';
import type { AppRouter } from './router.js';
import { type AuthChange, Session } from './session.js';
import { Socket, type WebSocketConstructor } from './socket.js';
import { memoryTokenStorage, type StoredTokens, type TokenStorage } from './storage.js';
import { transformer } from './transformer.js';
import type { LoginInput, Me, ParleyApi, RegisterInput, Tokens } from './types.js';

export interface ParleyClientOptions {
  /** The server's base URL, e.g. `https://chat.example.com` (HTTP at `/trpc`, WebSocket at `/ws`). */
  url: string;
  /** Tokens to start with, from an earlier `login` (otherwise read from `storage`). */
  tokens?: Tokens | StoredTokens;
  /** Where tokens are kept; in memory by default. */
  storage?: TokenStorage;
  /** Called on sign-in, on every refresh and on sign-out (including an expired session). */
  onAuthChange?: (change: AuthChange) => void;
  /** The WebSocket class, where the runtime has none (Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** Send mutations over the WebSocket too, instead of HTTP (queries always use HTTP). */
  mutationsOverSocket?: boolean;
  /**
   * How the event stream travels: over the WebSocket (`'websocket'`, the default) or as
   * server-sent events (`'sse'`: `GET /trpc/events`, through proxies that do not pass WebSockets).
   */
  transport?: 'websocket' | 'sse';
  /** The EventSource class for `transport: 'sse'`, where the runtime has none (Node: the `eventsource` package). */
  EventSource?: EventSourceConstructor;
  /** How `message.send` is retried after a network failure. */
  sendRetry?: SendRetry;
  /** Delay before reconnect attempt `attempt` (0 is the first) of the socket and the event stream. */
  reconnectDelayMs?: (attempt: number) => number;
  /**
   * When a quiet socket is checked: after a whole `intervalMs` (20 s) without a frame the client
   * sends `PING`, and reconnects if nothing arrives within `pongTimeoutMs` (5 s) more.
   */
  keepAlive?: KeepAlive;
  /**
   * Resume the event stream after this event (`events.lastEventId` saved by an earlier run);
   * if the server can no longer fill the gap, the stream starts with `resync`.
   */
  lastEventId?: string;
}

export interface ParleyClient {
  /** Every procedure of the server, typed from its router: `api.message.send.mutate(…)`. */
  readonly api: ParleyApi;
  /** The signed-in user, once known (after `login`, `register` or `currentUser()`). */
  readonly user: Me | null;
  /** The current tokens, or null when signed out. */
  readonly tokens: StoredTokens | null;
  /**
   * This device's token from its last sign-in (kept after sign-out, in `storage` when it can
   * hold one), sent with every `login` so that others' failed attempts do not slow it down.
   */
  readonly deviceToken: string | null;
  /** The event stream: `events.on('message.created', …)`, `for await (const e of events)`. */
  readonly events: ParleyEvents;
  login(input: LoginInput): Promise<Me>;
  register(input: RegisterInput): Promise<Me>;
  /** Ends this session on the server (or all of them with `everywhere`) and forgets the tokens. */
  logout(options?: { everywhere?: boolean }): Promise<void>;
  /** The signed-in user, fetched if not known yet; null when signed out. */
  currentUser(): Promise<Me | null>;
  /** Calls `handler` on every sign-in, refresh and sign-out; returns a function that stops it. */
  onAuthChange(handler: (change: AuthChange) => void): () => void;
  /** Stops the event stream and closes the socket. */
  close(): Promise<void>;
}

/** The parts of an `EventSource` class tRPC's `httpSubscriptionLink` uses; the browser's fits. */
export interface EventSourceConstructor {
  new (url: string, init?: { withCredentials?: boolean }): object;
  readonly CONNECTING: number;
  readonly OPEN: number;
  readonly CLOSED: number;
}

type SubscriptionLinkEventSource = NonNullable<Parameters<typeof httpSubscriptionLink>[0]['EventSource']>;

const defaultReconnectDelay = (attempt: number) =>
  attempt === 0 ? 0 : Math.min(15_000, 500 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);

export function createParleyClient(options: ParleyClientOptions): ParleyClient {
  const keepAlive = keepAliveTimings(options.keepAlive);
  const base = options.url.replace(/\/+$/, '');
  const socketUrl = `${base.replace(/^http/, 'ws')}/ws`;
  const reconnectDelayMs = options.reconnectDelayMs ?? defaultReconnectDelay;
  const overSse = options.transport === 'sse';
  const EventSourceClass =
    options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  if (overSse && !EventSourceClass) {
    throw new Error(
      "transport 'sse' needs an EventSource: pass `EventSource` to createParleyClient where the runtime has none (in Node, the `eventsource` package)",
    );
  }
  /** The token the current server-sent events stream was opened with. */
  let sseToken: string | null = null;
  let user: Me | null = null;
  const authListeners = new Set<(change: AuthChange) => void>();

  // Sign-in calls go without an access token: a stale one must not be mistaken for theirs.
  const anonymous = createTRPCClient<AppRouter>({
    links: [httpBatchLink({ url: `${base}/trpc`, transformer })],
  });

  const session = new Session({
    storage: options.storage ?? memoryTokenStorage(),
    initial: options.tokens,
    refresh: async (refreshToken) => (await anonymous.auth.refresh.mutate({ refreshToken })).tokens,
    onChange: (change) => {
      switch (change.type) {
        case 'signedIn':
          if (user && user.id !== change.user.id) events.reset();
          user = change.user;
          socket.renew(change.tokens.accessToken);
          if (events.isWanted) events.start();
          break;
        case 'refreshed':
          socket.renew(change.tokens.accessToken);
          // An EventSource reconnects with the URL it was opened with: move the stream to the new token.
          if (overSse && sseToken !== null && sseToken !== change.tokens.accessToken) events.restart();
          break;
        case 'signedOut':
          user = null;
          events.pause();
          events.reset();
          socket.renew(null);
          break;
      }
      options.onAuthChange?.(change);
      for (const listener of [...authListeners]) listener(change);
    },
    identify: () => api.auth.me.query(),
  });

  const socket = new Socket({
    url: socketUrl,
    WebSocket: options.WebSocket,
    token: () => session.fresh(),
    retryDelayMs: reconnectDelayMs,
    keepAlive,
  });

  const overSocket = (op: { type: string }) =>
    (op.type === 'subscription' && !overSse) ||
    (options.mutationsOverSocket === true && op.type === 'mutation');

  const socketLink = wsLink<AppRouter>({ client: socket.client, transformer });
  const httpLink = httpBatchLink({
    url: `${base}/trpc`,
    transformer,
    headers: () => {
      const token = session.accessToken;
      return token ? { authorization: `Bearer ${token}` } : {};
    },
  });
  const sseLink: TRPCLink<AppRouter> | null = overSse
    ? httpSubscriptionLink<AppRouter, SubscriptionLinkEventSource>({
        url: `${base}/trpc`,
        transformer,
        EventSource: EventSourceClass as unknown as SubscriptionLinkEventSource,
        // An EventSource cannot send headers: the token goes in the URL's `connectionParams`.
        connectionParams: async () => {
          sseToken = await session.fresh();
          return sseToken ? { token: sseToken } : {};
        },
      })
    : null;

  const api: ParleyApi = createTRPCClient<AppRouter>({
    links: [
      sessionLink({
        fresh: () => session.fresh(),
        tokenFor: (op) => (overSocket(op) ? socket.token : session.accessToken),
        recover: async (rejected, op) => {
          const ok = await session.recover(rejected);
          // A socket authenticates once: after a refresh, calls on it need a new connection.
          if (ok && overSocket(op)) socket.renew(session.accessToken);
          return ok;
        },
        newId: uuid,
      }),
      sendRetryLink({
        attempts: options.sendRetry?.attempts ?? 5,
        baseDelayMs: options.sendRetry?.baseDelayMs ?? 250,
        maxDelayMs: options.sendRetry?.maxDelayMs ?? 5_000,
      }),
      sseLink
        ? splitLink({
            condition: (op) => op.type === 'subscription',
            true: sseLink,
            false: splitLink({ condition: overSocket, true: socketLink, false: httpLink }),
          })
        : splitLink({ condition: overSocket, true: socketLink, false: httpLink }),
    ],
  });

  const events: EventStream = new EventStream({
    open: overSse
      ? (input, callbacks) => api.events.subscribe(input, callbacks)
      : (input, callbacks) => socket.subscribe('events', input, callbacks),
    signedIn: () => session.current !== null,
    loaded: session.ready,
    recover: async () => {
      if (overSse) return session.recover(sseToken);
      const ok = await session.recover(socket.token);
      if (ok) socket.renew(session.accessToken);
      return ok;
    },
    retryDelayMs: reconnectDelayMs,
    lastEventId: options.lastEventId,
  });

  return {
    api,
    get user() {
      return user;
    },
    get tokens() {
      return session.current;
    },
    get deviceToken() {
      return session.currentDevice;
    },
    events,
    async login(input) {
      // This device's token, so that failures by anyone else do not slow this sign-in down.
      const deviceToken = input.deviceToken ?? (await session.deviceToken()) ?? undefined;
      const result = await anonymous.auth.login.mutate({ ...input, deviceToken });
      await session.signIn(result.tokens, result.user, result.deviceToken);
      return result.user;
    },
    async register(input) {
      const result = await anonymous.auth.register.mutate(input);
      await session.signIn(result.tokens, result.user, result.deviceToken);
      return result.user;
    },
    async logout({ everywhere } = {}) {
      await session.ready;
      const tokens = session.current;
      try {
        if (tokens) await api.auth.logout.mutate({ refreshToken: tokens.refreshToken, everywhere });
      } finally {
        // Forget the tokens even when the server is unreachable: signing out must not fail.
        await session.signOut('logout');
      }
    },
    async currentUser() {
      await session.ready;
      if (!session.current) return null;
      user = await api.auth.me.query();
      return user;
    },
    onAuthChange(handler) {
      authListeners.add(handler);
      return () => authListeners.delete(handler);
    },
    async close() {
      events.close();
      session.close();
      await socket.close();
    },
  };
}

/** A v4 UUID; `crypto.randomUUID` is missing on plain-HTTP pages, `getRandomValues` is not. */
function uuid(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
