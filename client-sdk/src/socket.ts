import { createWSClient, type TRPCWebSocketClient, type WebSocketClientOptions } from '@trpc/client';
import type { StreamCallbacks } from './events.js';
import { type KeepAlive, watchSocket } from './connection.js';
import { transformer } from './transformer.js';

/** The SDK's transformer, both ways, as tRPC's WebSocket client takes it. */
const combined = { input: transformer, output: transformer };

/**
 * The parts of a WebSocket class the client needs. The browser's `WebSocket` and the default
 * export of the `ws` package both fit.
 */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): object;
  readonly CONNECTING: number;
  readonly OPEN: number;
  readonly CLOSING: number;
  readonly CLOSED: number;
}

type TrpcWebSocketClass = NonNullable<WebSocketClientOptions['WebSocket']>;

interface ClosableSocket {
  close(code?: number, reason?: string): void;
}

/**
 * Finds a WebSocket class: the one given, the runtime's own, or, in Node versions without one,
 * the `ws` package when it is installed.
 */
export async function resolveWebSocket(given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given) return given;
  const builtIn = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (builtIn) return builtIn;
  // A variable specifier keeps browser bundlers from trying to resolve a Node-only package.
  const specifier = 'ws';
  try {
    const module = (await import(/* @vite-ignore */ specifier)) as {
      default?: WebSocketConstructor;
      WebSocket?: WebSocketConstructor;
    };
    const found = module.WebSocket ?? module.default;
    if (found) return found;
  } catch {
    // Fall through to the explanation below.
  }
  throw new Error(
    'No WebSocket implementation found: install the `ws` package or pass `WebSocket` to createParleyClient',
  );
}

export interface SocketOptions {
  url: string;
  WebSocket?: WebSocketConstructor;
  /** The access token for a new connection (renewed first if it is about to expire). */
  token: () => Promise<string | null>;
  retryDelayMs: (attempt: number) => number;
  keepAlive: Required<KeepAlive>;
}

/**
 * The one WebSocket of a client. The server authenticates a connection once, from its
 * `connectionParams`, so a new token means a new connection: `renew()` closes the current one
 * and the tRPC client reconnects with the new token, sending each open subscription again
 * with the id of the last event it delivered.
 */
export class Socket {
  readonly client: TRPCWebSocketClient;
  /** The token the current connection was opened with. */
  private openedWith: string | null = null;
  /** Whether a connection is fetching the token it will authenticate with. */
  private authenticating = false;
  private implementation: WebSocketConstructor | null;

  constructor(options: SocketOptions) {
    this.implementation = options.WebSocket ?? null;
    const resolved = () => {
      if (!this.implementation) throw new Error('WebSocket implementation not resolved yet');
      return this.implementation;
    };
    // The class tRPC constructs: the implementation, resolved by then (`url` below is awaited
    // first; without a class given or built in, `ws` is imported there), readied by
    // `watchSocket` before tRPC adds its listeners.
    class WatchedWebSocket {
      static readonly CONNECTING = 0;
      static readonly OPEN = 1;
      static readonly CLOSING = 2;
      static readonly CLOSED = 3;
      constructor(url: string) {
        const Implementation = resolved();
        const socket = new Implementation(url);
        watchSocket(socket, options.keepAlive);
        return socket;
      }
    }
    this.client = createWSClient({
      url: async () => {
        this.implementation ??= await resolveWebSocket(options.WebSocket);
        return options.url;
      },
      WebSocket: WatchedWebSocket as unknown as TrpcWebSocketClass,
      connectionParams: async () => {
        this.authenticating = true;
        try {
          const token = await options.token();
          this.openedWith = token;
          return token ? { token } : {};
        } finally {
          this.authenticating = false;
        }
      },
      // Opened on first use, closed when idle; an open subscription keeps it open.
      lazy: { enabled: true, closeMs: 30_000 },
      // `watchSocket` keeps the connection alive, without a timer reset per frame.
      keepAlive: { enabled: false },
      retryDelayMs: options.retryDelayMs,
    });
  }

  /**
   * A subscription sent straight through this socket's tRPC client, past the client's chain of
   * links: tRPC still sends it, sends it again after a reconnect with the id of the last event it
   * delivered, and decodes its frames, but an event no longer passes through each link's
   * observable on its way (most of what a client spends per event beyond parsing it). What
   * the chain does for other calls (fresh tokens, retries) a subscription does not use.
   */
  subscribe(path: string, input: unknown, callbacks: StreamCallbacks): { unsubscribe(): void } {
    const state = this.client.connectionState.subscribe({
      next: (connection) => callbacks.onConnectionStateChange(connection),
    });
    const request = this.client
      .request({ op: { id: 0, type: 'subscription', path, input, signal: undefined }, transformer: combined })
      .subscribe({
        next: ({ result }) => {
          if (result.type === 'started') callbacks.onStarted();
          else if (result.type === 'data' || result.type === undefined)
            callbacks.onData(result.data as Parameters<StreamCallbacks['onData']>[0]);
        },
        error: (error) => callbacks.onError(error),
        complete: () => callbacks.onComplete(),
      });
    return {
      unsubscribe: () => {
        request.unsubscribe();
        state.unsubscribe();
      },
    };
  }

  /** The token the current connection authenticated with. */
  get token(): string | null {
    return this.openedWith;
  }

  /** Moves to a new connection if the current one was opened with another token. */
  renew(token: string | null): void {
    // A connection still waiting for its token gets the renewed one: closing it now would fail
    // the calls waiting for it to open.
    if (this.authenticating) return;
    const connection = this.client.connection;
    if (!connection || connection.state === 'closed' || this.openedWith === token) return;
    this.openedWith = token;
    (connection.ws as unknown as ClosableSocket).close(1000, 'renewing credentials');
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
