import superjson from 'superjson';

export type Serialized = ReturnType<typeof superjson.serialize>;

/** A value this module leaves to superjson. */
const UNSUPPORTED = Symbol('unsupported');

type Annotation = ['Date'] | ['undefined'];
/** superjson's annotations of one value: its own, or those below it by escaped path. */
type Note = Annotation | Record<string, Annotation> | null;

interface Walk {
  /** The annotations of the value visited last. */
  note: Note;
  /** Every object met so far: one met twice makes superjson record a referential equality. */
  seen: Set<object>;
}

// superjson's escaping of a key inside an annotation path.
const escapeKey = (key: string) => key.replace(/\\/g, '\\\\').replace(/\./g, '\\.');

/**
 * Exactly what `superjson.serialize` returns, for the values Parley sends: plain objects and
 * arrays of strings, booleans, null, finite numbers, `Date`s and `undefined`. superjson walks
 * each value with fresh path arrays and an identity map for every object, which made it the
 * largest allocator on the send and fan-out paths; this takes one pass and allocates little
 * more than the output. Anything else (Map, Set, BigInt, NaN, -0, a class instance, an object
 * reached twice, a key superjson refuses) is left to superjson itself.
 */
export function serialize(value: unknown): Serialized {
  return serializePlain(value) ?? superjson.serialize(value);
}

/** `serialize`'s own pass: null for a value it leaves to superjson. */
export function serializePlain(value: unknown): Serialized | null {
  if (typeof value !== 'object' || value === null || value instanceof Date) return null;
  const walk: Walk = { note: null, seen: new Set() };
  const json = visit(value, walk);
  if (json === UNSUPPORTED) return null;
  const values = walk.note as Record<string, Annotation> | null;
  return values
    ? { json: json as Serialized['json'], meta: { values, v: 1 } }
    : { json: json as Serialized['json'] };
}

/** `JSON.stringify(serialize(value))`, which is `superjson.stringify(value)`. */
export function stringify(value: unknown): string {
  return JSON.stringify(serialize(value));
}

/**
 * Adds a child's annotations under its key, as superjson does: in a plain object, so that
 * integer-like keys (array indexes) come first wherever superjson's do.
 */
function gather(inner: Record<string, Annotation> | null, key: string, note: Note) {
  if (note === null) return inner;
  const out = inner ?? {};
  const escaped = escapeKey(key);
  if (Array.isArray(note)) out[escaped] = note;
  else for (const sub of Object.keys(note)) out[`${escaped}.${sub}`] = note[sub] as Annotation;
  return out;
}

function visit(value: unknown, walk: Walk): unknown {
  walk.note = null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0) ? value : UNSUPPORTED;
    case 'undefined':
      walk.note = ['undefined'];
      return null;
    case 'object':
      break;
    case 'bigint':
    case 'function':
    case 'symbol':
      return UNSUPPORTED;
  }
  if (value === null) return null;
  if (walk.seen.has(value)) return UNSUPPORTED;
  walk.seen.add(value);
  if (value instanceof Date) {
    if (Number.isNaN(value.valueOf())) return UNSUPPORTED;
    walk.note = ['Date'];
    return value.toISOString();
  }
  let inner: Record<string, Annotation> | null = null;
  if (Array.isArray(value)) {
    const items = value as unknown[];
    // Holes and extra properties: superjson's Object.entries walk sees them differently.
    if (Object.keys(items).length !== items.length) return UNSUPPORTED;
    const out: unknown[] = [];
    for (let index = 0; index < items.length; index++) {
      const item = visit(items[index], walk);
      if (item === UNSUPPORTED) return UNSUPPORTED;
      inner = gather(inner, String(index), walk.note);
      out.push(item);
    }
    walk.note = inner;
    return out;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return UNSUPPORTED;
  const record = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(record)) {
    // superjson throws on these; let it.
    if (key === '__proto__' || key === 'constructor' || key === 'prototype') return UNSUPPORTED;
    const item = visit(record[key], walk);
    if (item === UNSUPPORTED) return UNSUPPORTED;
    inner = gather(inner, key, walk.note);
    out[key] = item;
  }
  walk.note = inner;
  return out;
}
