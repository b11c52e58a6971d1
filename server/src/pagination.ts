import { z } from 'zod';
import { Invalid } from './errors.js';

/** Cursors are opaque to clients: base64url JSON of the keyset position. */
export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position)).toString('base64url');
}

/**
 * The keyset position a cursor holds, checked against `shape` so that a forged cursor is the
 * caller's `BAD_REQUEST` and never reaches a query as a value PostgreSQL cannot compare.
 */
export function decodeCursor<T extends z.ZodType>(
  cursor: string | null | undefined,
  shape: T,
): z.output<T> | null {
  if (!cursor) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const position = shape.safeParse(parsed);
  if (!position.success) throw new Invalid('is not a cursor this server issued', 'cursor');
  return position.data;
}

/** The position fields cursors are made of. */
export const CursorField = {
  id: z.uuid(),
  at: z.iso.datetime(),
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  order: z.enum(['asc', 'desc']),
  username: z.string().max(64),
};
