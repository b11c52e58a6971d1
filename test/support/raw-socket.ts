import superjson from 'superjson';
import WebSocket from 'ws';
import { wsUrl } from './client.js';

/** A frame of tRPC's WebSocket protocol, as a plain client reads it. */
export interface WireMessage {
  id?: string | number | null;
  result?: { type?: string; data?: unknown };
  error?: { json?: { message?: string; data?: { code?: string } } };
}

export interface RawSocket {
  socket: WebSocket;
  /** Every message received, parsed (`{ id: null }` for one that is not JSON). */
  received: WireMessage[];
  /** Resolves with the first message (already received or to come) that matches. */
  next(predicate: (message: WireMessage) => boolean, timeoutMs?: number): Promise<WireMessage>;
  closed: Promise<{ code: number; reason: string }>;
  send(message: unknown): void;
}

/**
 * A plain WebSocket client of the app at `url` (`query` such as `?token=…`): every frame it
 * gets but keep-alive pings, parsed, and how the socket closed. Rejects when the upgrade is
 * refused.
 */
export function openRaw(url: string, query = '', headers: Record<string, string> = {}): Promise<RawSocket> {
  const socket = new WebSocket(`${wsUrl(url)}${query}`, { headers });
  const received: WireMessage[] = [];
  const listeners = new Set<() => void>();
  socket.on('message', (data: Buffer) => {
    const text = data.toString('utf8');
    if (text === 'PING' || text === 'PONG') return;
    try {
      received.push(JSON.parse(text) as WireMessage);
    } catch {
      received.push({ id: null });
    }
    for (const listener of [...listeners]) listener();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  const raw: RawSocket = {
    socket,
    received,
    closed,
    send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    next: (predicate, timeoutMs = 5_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = received.find(predicate);
          if (!found) return;
          clearTimeout(timer);
          listeners.delete(check);
          resolve(found);
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no matching message; got ${JSON.stringify(received).slice(0, 500)}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      }),
  };
  return new Promise((resolve, reject) => {
    socket.once('open', () => resolve(raw));
    socket.once('unexpected-response', (_req, res) =>
      reject(new Error(`upgrade refused: ${res.statusCode}`)),
    );
    socket.once('error', reject);
  });
}

/** One call in tRPC's WebSocket protocol, its input serialized as `wsLink` does. */
export const call = (
  id: number,
  method: 'query' | 'mutation' | 'subscription',
  path: string,
  input?: unknown,
) => ({ id, method, params: { path, input: superjson.serialize(input) } });

/** The tRPC error code a frame carries, if any. */
export const codeOf = (message: WireMessage) => message.error?.json?.data?.code;
