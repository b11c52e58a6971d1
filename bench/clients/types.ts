import type { Child } from '../lib/children.js';
/** What the load generator needs from a client library, whichever server it talks to. */

export type Transport = 'ws' | 'http';

export interface ClientSpec {
  index: number;
  /** Conversation (room) this client sends to and listens on. */
  conversationId: string;
  /** Access token (Parley, Socket.IO); the raw server has no auth. */
  token: string;
  /** Parley: the session's refresh token and the access token's lifetime, for `@parley/client`. */
  refreshToken?: string;
  expiresIn?: number;
}

export interface BenchConnection {
  /** Resolves once the server accepted the message, with its stored id when the server keeps one. */
  send(conversationId: string, content: string): Promise<string | null>;
  close(): Promise<void>;
}

export interface PrepareContext {
  url: string;
  count: number;
  groupSize: number;
  /** Secret the Socket.IO server verifies handshake tokens with. */
  jwtSecret: string;
  /** The server process, for setup work it offers in-process (Parley: creating accounts). */
  server: Child;
  /**
   * The conversations exist only once `afterConnect` has run (Parley: written then, without
   * their announcement; see `writeRooms` in bench/servers/parley.ts). For rooms of thousands.
   */
  roomsAfterConnect?: boolean;
}

export interface ClientAdapter {
  /**
   * Creates what `count` clients need (accounts, conversations of `groupSize`, tokens); client
   * `i` belongs to conversation `floor(i / groupSize)`.
   */
  prepare(context: PrepareContext): Promise<ClientSpec[]>;
  /** After every client connected, with `roomsAfterConnect`: makes the conversations. */
  afterConnect?(context: PrepareContext): Promise<void>;
  /**
   * Connects, authenticates and subscribes; resolves once messages for the client's
   * conversation will be delivered to `onMessage` (content only, as sent).
   */
  connect(
    url: string,
    spec: ClientSpec,
    transport: Transport,
    onMessage: (content: string) => void,
  ): Promise<BenchConnection>;
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<unknown> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status} from ${url}`);
  return response.json();
}
