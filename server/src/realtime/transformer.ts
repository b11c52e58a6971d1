import superjson from 'superjson';
import { type Serialized, serialize } from './serialize.js';

/** Event objects handed to many local subscriptions at once (see `Hub`). */
const shared = new WeakSet<object>();
const serialized = new WeakMap<object, Serialized>();
/** The serialized `meta` of a shared event as it appears inside tRPC's `{ id, data }` wrapper. */
const wrappedMeta = new WeakMap<object, Serialized['meta']>();
/** The JSON text of a shared event's data and wrapped meta, for frames written directly. */
const frameParts = new WeakMap<object, { json: string; meta: string } | null>();

/** Marks an event that several subscriptions will send, so it is serialized only once. */
export function shareEvent<T extends object>(event: T): T {
  shared.add(event);
  return event;
}

function once(value: object): Serialized {
  let result = serialized.get(value);
  if (!result) {
    result = serialize(value);
    serialized.set(value, result);
  }
  return result;
}

function metaInWrapper(event: object, inner: Serialized): Serialized['meta'] {
  if (wrappedMeta.has(event)) return wrappedMeta.get(event);
  let meta: Serialized['meta'] = undefined;
  if (inner.meta) {
    const values = Object.fromEntries(
      Object.entries(inner.meta.values ?? {}).map(([path, annotation]) => [`data.${path}`, annotation]),
    );
    meta = { ...inner.meta, values };
  }
  wrappedMeta.set(event, meta);
  return meta;
}

/**
 * Whether an event's serialization can be reused inside the wrapper. References between parts
 * of a value, or a top-level annotation, are rewritten by superjson relative to the whole.
 */
function reusable(inner: Serialized): boolean {
  return !(inner.meta && (inner.meta.referentialEqualities || Array.isArray(inner.meta.values)));
}

/** What a subscription's data frames carry of its JSON-RPC request: its id and version. */
export interface SubscriptionRequest {
  id: string | number;
  jsonrpc: '2.0' | undefined;
}

/**
 * superjson, except that an event fanned out to many sockets of this instance is serialized
 * once and the result reused for every recipient. The wire format is plain superjson.
 */
export const transformer = {
  serialize(value: unknown): Serialized {
    if (typeof value !== 'object' || value === null) return serialize(value);
    if (shared.has(value)) return once(value);
    // The WebSocket adapter wraps each tracked event in a fresh `{ id, data }` per socket.
    const wrapper = value as { id?: unknown; data?: unknown };
    if (
      typeof wrapper.id === 'string' &&
      typeof wrapper.data === 'object' &&
      wrapper.data !== null &&
      shared.has(wrapper.data) &&
      Object.keys(wrapper).length === 2
    ) {
      const inner = once(wrapper.data);
      if (!reusable(inner)) return serialize(value);
      const meta = metaInWrapper(wrapper.data, inner);
      const json = { id: wrapper.id, data: inner.json };
      return meta ? { json, meta } : { json };
    }
    return serialize(value);
  },
  deserialize<T>(payload: Serialized | undefined): T {
    // A call may leave its input out (`events` from a plain JSON-RPC client): it has none.
    if (payload === undefined) return undefined as T;
    // In place: the payload was just parsed from the request and belongs to no one else.
    return superjson.deserialize<T>(payload, { inPlace: true });
  },
};

/**
 * The text of the data frame tRPC's WebSocket adapter would send for `tracked(eventId, event)`
 * on the subscription whose frames start with `prefix` (see `framePrefix`). The event is
 * serialized once, whatever the number of recipients; the text is what `transformer` and
 * `JSON.stringify` give.
 */
export function eventFrame(prefix: string, eventId: string, event: object): string {
  let parts = frameParts.get(event);
  if (parts === undefined) {
    const inner = once(event);
    const meta = metaInWrapper(event, inner);
    parts = reusable(inner)
      ? { json: JSON.stringify(inner.json), meta: meta ? `,"meta":${JSON.stringify(meta)}` : '' }
      : null;
    frameParts.set(event, parts);
  }
  const id = JSON.stringify(eventId);
  const data = parts
    ? `{"json":{"id":${id},"data":${parts.json}}${parts.meta}}`
    : JSON.stringify(serialize({ id: eventId, data: event }));
  return `${prefix},"result":{"type":"data","data":${data},"id":${id}}}`;
}

/**
 * Decodes an event received as `stringify`'s text (from the broker's channel), marked shared, and
 * keeps the JSON text it arrived in for its frames (see `eventFrame`): an event received once is
 * not serialized again to be sent. Text this cannot split exactly is serialized as before.
 */
export function parseSharedEvent<T extends object>(payload: string): T {
  const wire = JSON.parse(payload) as Serialized;
  const metaText = wire.meta === undefined ? '' : `,"meta":${JSON.stringify(wire.meta)}`;
  const exact = reusable(wire) && payload.startsWith('{"json":') && payload.endsWith(`${metaText}}`);
  const jsonText = exact ? payload.slice('{"json":'.length, payload.length - metaText.length - 1) : null;
  const event = shareEvent(superjson.deserialize<T>(wire, { inPlace: true }));
  if (jsonText !== null) {
    const meta = metaInWrapper(event, wire);
    frameParts.set(event, { json: jsonText, meta: meta ? `,"meta":${JSON.stringify(meta)}` : '' });
  }
  return event;
}

/** The start of every frame of one subscription: `{"id":…` and `"jsonrpc"` when it sent one. */
export function framePrefix(request: SubscriptionRequest): string {
  return `{"id":${JSON.stringify(request.id)}${request.jsonrpc ? ',"jsonrpc":"2.0"' : ''}`;
}
