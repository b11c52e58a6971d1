import { SUBSCRIPTION_REQUEST, type SubscriptionRequest } from './transformer.js';

/** The procedure whose live data frames Parley writes to the socket itself (`Realtime.stream`). */
const EVENTS_PATH = 'events';

type Message = Record<string, unknown>;

function isObject(value: unknown): value is Message {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Marks the input of an `events` subscription request with the request's JSON-RPC id, so the
 * subscription can write its own data frames, in the format tRPC's `wsLink` reads
 * (`DirectStream`). Everything else is tRPC's plain JSON encoding.
 */
function tagEventsRequest(message: unknown): void {
  if (!isObject(message) || message.method !== 'subscription' || !isObject(message.params)) return;
  const { params, id, jsonrpc } = message;
  if (params.path !== EVENTS_PATH || (typeof id !== 'number' && typeof id !== 'string')) return;
  const raw = params.input;
  const input = raw === undefined ? {} : isObject(raw) ? raw : null;
  if (!input) return; // not an input at all: tRPC rejects it
  const request: SubscriptionRequest = { id, jsonrpc: jsonrpc === '2.0' ? '2.0' : undefined };
  Object.defineProperty(input, SUBSCRIPTION_REQUEST, { value: request, enumerable: true });
  params.input = input;
}

/** Decodes the WebSocket's JSON text frames, with `events` requests tagged on the way in. */
export const wsEncoder = {
  decode(data: string | ArrayBuffer | Uint8Array): unknown {
    if (typeof data !== 'string') {
      throw new Error('Binary WebSocket frames are not accepted: messages are JSON text frames');
    }
    const parsed: unknown = JSON.parse(data);
    if (Array.isArray(parsed)) for (const message of parsed) tagEventsRequest(message);
    else tagEventsRequest(parsed);
    return parsed;
  },
};

/**
 * Set on the stream an `events` subscription returns when it can write its own frames (it came
 * over Parley's WebSocket handler, `http/ws.ts`): the handler then hands the socket over to it
 * instead of iterating the stream.
 */
export const DIRECT_STREAM = Symbol('direct stream');

export interface DirectStream {
  /**
   * Writes the stream's frames (backfill, then live events) to the socket from now on; `end`
   * is called once, with the error that ended the stream, or with null once it was stopped.
   */
  start(end: (error: Error | null) => void): void;
  /** Stops the stream (the client's `subscription.stop`, or its socket closed). */
  stop(): void;
}

/** The direct stream behind a subscription's result, if it has one. */
export function directStreamOf(result: unknown): DirectStream | null {
  if (typeof result !== 'object' || result === null) return null;
  return (result as { [DIRECT_STREAM]?: DirectStream })[DIRECT_STREAM] ?? null;
}
