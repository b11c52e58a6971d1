import fc from 'fast-check';
import superjson from 'superjson';
import { describe, expect, it } from 'vitest';
import { serialize, serializePlain, stringify } from '../server/src/realtime/serialize.js';
import { superjsonValues } from './support/values.js';

/** Same value and same text (so the same key order) as superjson, by its own pass or not. */
function expectSuperjson(value: unknown, ownPass: boolean): void {
  expect(serializePlain(value) !== null).toBe(ownPass);
  expect(serialize(value)).toStrictEqual(superjson.serialize(value));
  expect(stringify(value)).toBe(superjson.stringify(value));
}

const message = () => ({
  id: '0190a000-0000-7000-8000-000000000001',
  conversationId: '0190a000-0000-7000-8000-000000000002',
  seq: 7,
  senderId: '0190a000-0000-7000-8000-000000000003',
  senderUsername: 'al',
  type: 'text',
  content: 'hi "there"\n\\ .dots. ',
  clientMessageId: null,
  sentAt: new Date(1_700_000_000_000),
  editedAt: null,
  deletedAt: new Date(1_700_000_000_123),
});

describe('serialize', () => {
  it('gives what superjson gives for events, messages and pages', () => {
    expectSuperjson({ type: 'message.created', message: message() }, true);
    expectSuperjson({ items: [message(), { ...message(), sentAt: new Date(0) }], nextCursor: null }, true);
    expectSuperjson({ 'dotted.key': { 'back\\slash': new Date(5), list: [undefined, new Date(6)] } }, true);
    expectSuperjson({ ok: true }, true);
    expectSuperjson([], true);
    expectSuperjson({}, true);
    expectSuperjson(Object.assign(Object.create(null) as object, { a: new Date(1) }), true);
  });

  it('leaves to superjson what it does not handle itself, with the same result', () => {
    const shared = new Date(3);
    const repeated = { a: 1 };
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const holes = [1, , 3];
    const extra = Object.assign([1, 2], { extra: new Date(2) });
    for (const value of [
      new Date(4),
      undefined,
      null,
      'text',
      42,
      { n: Number.NaN, i: -Infinity, z: -0 },
      { big: 10n },
      { map: new Map([[1, new Date(1)]]), set: new Set(['a']) },
      { shared, again: shared },
      {
        items: [message(), { ...message(), id: 'm2' }].map((m, i, all) => ({
          ...m,
          deletedAt: all[0]?.deletedAt,
        })),
      },
      { repeated, again: [repeated] },
      cyclic,
      holes,
      extra,
      { invalid: new Date(Number.NaN) },
      { url: new URL('https://example.test/a') },
      { error: new Error('boom') },
      { fn: () => 1, sym: Symbol('s') },
      { regexp: /a.b/g },
    ]) {
      expectSuperjson(value, false);
    }
    expect(() => serialize(JSON.parse('{"__proto__":{"x":1}}'))).toThrow(/prototype pollution/);
  });

  it('matches superjson on generated values', () => {
    let plain = 0;
    fc.assert(
      fc.property(superjsonValues(), (value) => {
        let expected: unknown;
        try {
          expected = superjson.serialize(value);
        } catch (error) {
          expect(() => serialize(value)).toThrow((error as Error).message);
          return;
        }
        const own = serializePlain(value);
        if (own) plain += 1;
        expect(serialize(value)).toStrictEqual(expected);
        expect(JSON.stringify(serialize(value))).toBe(JSON.stringify(expected));
      }),
      { numRuns: 2_000 },
    );
    // Enough generated values are plain for the own pass to have been compared too.
    expect(plain).toBeGreaterThan(100);
  });

  it('takes its own pass for every plain value, and matches superjson', () => {
    const leaf = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
      fc.date({ noInvalidDate: true }),
    );
    const key = fc.string().filter((k) => !['__proto__', 'constructor', 'prototype'].includes(k));
    const { value } = fc.letrec<{ value: unknown }>((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        leaf,
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(key, tie('value'), { maxKeys: 4 }),
      ),
    }));
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 6 }), (record) => {
        expectSuperjson(record, true);
      }),
      { numRuns: 1_000 },
    );
  });
});
