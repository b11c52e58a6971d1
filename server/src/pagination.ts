import { Invalid } from './errors.js';

/** Cursors are opaque to clients: base64url JSON of the keyset position. */
export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position)).toString('base64url');
}

export function decodeCursor<K extends string>(
  cursor: string | null | undefined,
  keys: readonly K[],
): Record<K, string> | null {
  if (!cursor) return null;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (parsed && typeof parsed === 'object') {
      const record = parsed as Record<string, unknown>;
      if (keys.every((key) => typeof record[key] === 'string' || typeof record[key] === 'number')) {
        return Object.fromEntries(keys.map((key) => [key, String(record[key])])) as Record<K, string>;
      }
    }
  } catch {
    // falls through to the error below
  }
  throw new Invalid('is not a cursor this server issued', 'cursor');
}
