import superjson, { type SuperJSONResult } from 'superjson';

/** Keys superjson refuses in a path: following them could reach a prototype. */
const UNSAFE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * superjson's decoding, taking a short path for what nearly every Parley result is: plain
 * objects and arrays whose only annotations are dates. Anything else (maps, sets, shared
 * references, escaped keys, other types) goes to superjson itself, so the result is always
 * the one superjson gives.
 *
 * It decodes in place: what it decodes was just parsed from the wire and belongs to no one else,
 * so the deep copy superjson makes first would only cost time on every event.
 */
export function deserialize(payload: SuperJSONResult): unknown {
  const { json, meta } = payload;
  if (meta === undefined) return json;
  const values = meta.values;
  if (meta.referentialEqualities !== undefined || meta.v !== 1 || !isRecord(values)) {
    return superjson.deserialize(payload, { inPlace: true });
  }
  const found: { parent: Record<string, unknown> | unknown[]; key: string }[] = [];
  for (const path in values) {
    const annotation = values[path];
    const place =
      Array.isArray(annotation) && annotation.length === 1 && annotation[0] === 'Date'
        ? datePlace(json, path)
        : null;
    if (place === null) return superjson.deserialize(payload, { inPlace: true });
    found.push(place);
  }
  for (const { parent, key } of found) {
    const text = (parent as Record<string, unknown>)[key] as string;
    (parent as Record<string, unknown>)[key] = new Date(text);
  }
  return json;
}

/**
 * Where a date annotated at `path` sits: a plain path (no escaped keys) through plain objects
 * and arrays, ending at a string. Null for anything else.
 */
function datePlace(
  root: unknown,
  path: string,
): { parent: Record<string, unknown> | unknown[]; key: string } | null {
  if (path === '' || path.includes('\\')) return null;
  const keys = path.split('.');
  let parent: unknown = root;
  for (let i = 0; i < keys.length - 1; i += 1) {
    const key = keys[i] as string;
    if (UNSAFE_KEYS.has(key) || !isContainer(parent)) return null;
    parent = (parent as Record<string, unknown>)[key];
  }
  const last = keys[keys.length - 1] as string;
  if (UNSAFE_KEYS.has(last) || !isContainer(parent) || !Object.hasOwn(parent, last)) return null;
  if (typeof (parent as Record<string, unknown>)[last] !== 'string') return null;
  return { parent, key: last };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value `JSON.parse` makes to hold others: an array or a plain object. */
function isContainer(value: unknown): value is Record<string, unknown> | unknown[] {
  if (Array.isArray(value)) return true;
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** superjson, decoding through `deserialize` above. */
export const transformer = {
  serialize: (value: unknown) => superjson.serialize(value),
  deserialize: (payload: SuperJSONResult): unknown => deserialize(payload),
};
