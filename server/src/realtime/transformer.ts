import superjson from 'superjson';

type Serialized = ReturnType<typeof superjson.serialize>;

/** Event objects handed to many local subscriptions at once (see `Hub`). */
const shared = new WeakSet<object>();
const serialized = new WeakMap<object, Serialized>();

function once(value: object): Serialized {
  let result = serialized.get(value);
  if (!result) {
    result = superjson.serialize(value);
    serialized.set(value, result);
  }
  return result;
}

/** Marks an event that several subscriptions will send, so it is serialized only once. */
export function shareEvent<T extends object>(event: T): T {
  shared.add(event);
  return event;
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
      if (!inner.meta) return { json: { id: wrapper.id, data: inner.json } };
      if (inner.meta.referentialEqualities || Array.isArray(inner.meta.values))
        return superjson.serialize(value);
      const values = Object.fromEntries(
        Object.entries(inner.meta.values ?? {}).map(([path, annotation]) => [`data.${path}`, annotation]),
      );
      return { json: { id: wrapper.id, data: inner.json }, meta: { ...inner.meta, values } };
    }
    return superjson.serialize(value);
  },
  deserialize<T>(payload: Serialized): T {
    return superjson.deserialize<T>(payload);
  },
};
