import superjson from 'superjson';

type Serialized = ReturnType<typeof superjson.serialize>;

/** Event objects handed to many local subscriptions at once (see `Hub`). */
const shared = new WeakSet<object>();
const serialized = new WeakMap<object, Serialized>();
/** The serialized `meta` of a shared event as it appears inside tRPC's `{ id, data }` wrapper. */
const wrappedMeta = new WeakMap<object, Serialized['meta']>();

/** Marks an event that several subscriptions will send, so it is serialized only once. */
export function shareEvent<T extends object>(event: T): T {
  shared.add(event);
  return event;
}

function once(value: object): Serialized {
  let result = serialized.get(value);
  if (!result) {
    result = superjson.serialize(value);
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
 * superjson, except that an event fanned out to many sockets of this instance is serialized
 * once and the result reused for every recipient. The wire format is plain superjson.
 */
export const transformer = {
  serialize(value: unknown): Serialized {
    if (typeof value !== 'object' || value === null) return superjson.serialize(value);
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
      if (inner.meta && (inner.meta.referentialEqualities || Array.isArray(inner.meta.values))) {
        return superjson.serialize(value);
      }
      const meta = metaInWrapper(wrapper.data, inner);
      const json = { id: wrapper.id, data: inner.json };
      return meta ? { json, meta } : { json };
    }
    return superjson.serialize(value);
  },
  deserialize<T>(payload: Serialized): T {
    return superjson.deserialize<T>(payload);
  },
};
