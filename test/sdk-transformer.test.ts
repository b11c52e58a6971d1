import fc from 'fast-check';
import superjson from 'superjson';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { deserialize } from '../client-sdk/src/transformer.js';
import { superjsonValues } from './support/values.js';

afterEach(() => vi.restoreAllMocks());

type Wire = Parameters<typeof deserialize>[0];

/** What the SDK decodes from `value` as it arrives (fresh from `JSON.parse`), and whether superjson did it. */
function decode(value: unknown): { result: unknown; bySuperjson: boolean } {
  const wire = JSON.parse(JSON.stringify(superjson.serialize(value))) as Parameters<typeof deserialize>[0];
  const spy = vi.spyOn(superjson, 'deserialize');
  const result = deserialize(wire);
  const bySuperjson = spy.mock.calls.length > 0;
  spy.mockRestore();
  return { result, bySuperjson };
}

/** What superjson itself makes of `value` after the wire. */
function expected(value: unknown): unknown {
  return superjson.parse(superjson.stringify(value));
}

const message = () => ({
  id: '0190a000-0000-7000-8000-000000000001',
  conversationId: '0190a000-0000-7000-8000-000000000002',
  content: 'hi "there"',
  sentAt: new Date(1_700_000_000_000),
  editedAt: null,
  deletedAt: new Date(1_700_000_000_123),
});

describe('the SDK decoding results', () => {
  it('decodes events, messages and pages by itself, as superjson would', () => {
    for (const value of [
      { id: '1-0', data: { type: 'message.created', message: message() } },
      { items: [message(), { ...message(), sentAt: new Date(0) }], nextCursor: null },
      { nested: [[new Date(1)], { at: new Date(2) }] },
      { ok: true },
      [],
      'text',
      null,
    ]) {
      const { result, bySuperjson } = decode(value);
      expect(bySuperjson).toBe(false);
      expect(result).toStrictEqual(expected(value));
    }
  });

  it('leaves to superjson what is not plain dates in plain objects and arrays, with its result', () => {
    const shared = { a: 1 };
    for (const value of [
      new Date(4),
      { 'dotted.key': new Date(5) },
      { 'back\\slash': new Date(6) },
      { map: new Map([[1, new Date(1)]]) },
      { set: new Set([new Date(2)]) },
      { shared, again: shared },
      { big: 10n, at: new Date(3) },
      { n: Number.NaN },
      { missing: undefined },
    ]) {
      const { result, bySuperjson } = decode(value);
      expect(bySuperjson).toBe(true);
      expect(result).toStrictEqual(expected(value));
    }
  });

  it('refuses a path through a prototype, as superjson does', () => {
    const payloads = [
      { json: { a: 'x' }, meta: { values: { '__proto__.polluted': ['Date'] }, v: 1 } },
      { json: { a: { b: 'x' } }, meta: { values: { 'constructor.prototype': ['Date'] }, v: 1 } },
    ];
    for (const payload of payloads) {
      const wire = () => structuredClone(payload) as unknown as Wire;
      let refusal = '';
      try {
        superjson.deserialize(wire());
      } catch (error) {
        refusal = (error as Error).message;
      }
      expect(refusal).not.toBe('');
      expect(() => deserialize(wire())).toThrow(refusal);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('leaves a date annotation that does not point at a string to superjson', () => {
    // Not what a Parley server sends; what superjson makes of it is the answer.
    const payload = () => ({ json: { a: 5, b: { c: 'x' } }, meta: { values: { a: ['Date'] }, v: 1 } });
    const own = deserialize(payload() as unknown as Wire);
    expect(own).toStrictEqual(superjson.deserialize(payload() as unknown as Wire));
  });

  it('matches superjson on generated values', () => {
    let own = 0;
    fc.assert(
      fc.property(superjsonValues(), (value) => {
        let want: unknown;
        try {
          want = expected(value);
        } catch {
          return;
        }
        const { result, bySuperjson } = decode(value);
        if (!bySuperjson) own += 1;
        expect(result).toStrictEqual(want);
      }),
      { numRuns: 2_000 },
    );
    // Enough generated values are decoded by the SDK's own pass for it to have been compared too.
    expect(own).toBeGreaterThan(100);
  });
});
