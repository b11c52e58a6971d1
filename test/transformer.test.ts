import superjson from 'superjson';
import { describe, expect, it } from 'vitest';
import { compareStreamIds } from '../server/src/broker/types.js';
import { shareEvent, transformer } from '../server/src/realtime/transformer.js';

const event = () => ({
  type: 'message.created' as const,
  message: {
    id: 'm1',
    sentAt: new Date(1_700_000_000_000),
    editedAt: null,
    deletedAt: new Date(0),
    'dotted.key': 1,
  },
});

describe('event transformer', () => {
  it('serializes a shared event, alone or in the adapter’s { id, data } wrapper, exactly as superjson does', () => {
    const plain = event();
    const shared = shareEvent(event());
    expect(transformer.serialize(shared)).toEqual(superjson.serialize(plain));
    const wrapped = transformer.serialize({ id: 'e.1-0', data: shared });
    expect(wrapped).toEqual(superjson.serialize({ id: 'e.1-0', data: plain }));
    const back = superjson.deserialize<{ id: string; data: ReturnType<typeof event> }>(wrapped);
    expect(back.data.message.sentAt).toEqual(new Date(1_700_000_000_000));
    expect(back.data.message.deletedAt).toEqual(new Date(0));
  });

  it('reuses one serialization for every recipient of a shared event', () => {
    const shared = shareEvent(event());
    const first = transformer.serialize({ id: 'a', data: shared });
    const second = transformer.serialize({ id: 'b', data: shared });
    expect(first.json).not.toBe(second.json);
    expect((first.json as { data: unknown }).data).toBe((second.json as { data: unknown }).data);
  });

  it('leaves everything else to superjson', () => {
    const value = { at: new Date(5), list: [1, 2] };
    expect(transformer.serialize(value)).toEqual(superjson.serialize(value));
    expect(transformer.deserialize(transformer.serialize(value))).toEqual(value);
  });
});

describe('stream ids', () => {
  it('compare numerically, part by part', () => {
    const ordered = [
      '0-0',
      '0-1',
      '9-0',
      '10-0',
      '10-2',
      '10-10',
      '1795318107917-0',
      '1795318107917-11',
      '18446744073709551615-0',
    ];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = 0; j < ordered.length; j++) {
        expect(
          Math.sign(compareStreamIds(ordered[i] ?? '', ordered[j] ?? '')),
          `${ordered[i]} vs ${ordered[j]}`,
        ).toBe(Math.sign(i - j));
      }
    }
  });
});
