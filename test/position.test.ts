import { describe, expect, it } from 'vitest';
import { formatPosition, parsePosition, StreamPosition } from '../server/src/realtime/position.js';

const event = { type: 'resync' as const };

describe('a stream position as an event id carries it', () => {
  it('is the one stream id with one partition, as event ids were before partitions', () => {
    const position = new StreamPosition(['1733500000000-12']);
    expect(formatPosition('ep', position.text())).toBe('ep.1733500000000-12');
    expect(parsePosition('ep.1733500000000-12', 1)).toEqual({ epoch: 'ep', ids: ['1733500000000-12'] });
  });

  it('holds an id of each partition, compactly, and reads back exactly, up to the largest stream id', () => {
    const ids = ['1733500000000-12', '0-0', '18446744073709551615-18446744073709551615'];
    const position = new StreamPosition([...ids]);
    expect(position.text()).toBe('m4cx54hs-c_0-0_3w5e11264sgsf-3w5e11264sgsf');
    // An epoch may hold `_` and `-` (base64url): the ids follow its last dot.
    expect(parsePosition(formatPosition('a_b-c', position.text()), 3)).toEqual({ epoch: 'a_b-c', ids });
  });

  it('moves within one partition only, and its text follows', () => {
    const position = new StreamPosition(['5-0', '5-0']);
    expect(position.admit({ id: '6-0', partition: 1, event }, 'user')).toBe(true);
    expect(position.admit({ id: '5-0', partition: 1, event }, 'user')).toBe(false);
    // Lower than partition 1's position, and new in partition 0's.
    expect(position.admit({ id: '5-1', partition: 0, event }, 'user')).toBe(true);
    expect(position.snapshot()).toEqual(['5-1', '6-0']);
    expect(parsePosition(formatPosition('e', position.text()), 2)?.ids).toEqual(['5-1', '6-0']);
  });

  it('is no position of a deployment with another number of partitions, nor a malformed one', () => {
    const two = formatPosition('e', new StreamPosition(['1-0', '2-0']).text());
    expect(parsePosition(two, 1)).toBeNull();
    expect(parsePosition(two, 3)).toBeNull();
    expect(parsePosition('e.1-0', 2)).toBeNull();
    expect(parsePosition('e.1-0_2-x!', 2)).toBeNull();
    // Past 2^64 - 1.
    expect(parsePosition('e.zzzzzzzzzzzzz-0_0-0', 2)).toBeNull();
    expect(parsePosition('no-dot', 1)).toBeNull();
  });
});
