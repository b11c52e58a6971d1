import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { uuidv7, uuidv7Source } from '../server/src/ids.js';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The Unix milliseconds in a UUIDv7's first 48 bits. */
const msOf = (id: string) => Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);

describe('uuidv7', () => {
  it('makes version-7, RFC 4122-variant ids that carry the time they were made at', () => {
    for (const now of [0, 1, 1_796_630_558_424, 2 ** 48 - 1]) {
      const id = uuidv7Source(() => now)();
      expect(id).toMatch(V7);
      expect(z.uuid().safeParse(id).success).toBe(true);
      expect(msOf(id)).toBe(now);
    }
    const before = Date.now();
    const id = uuidv7();
    expect(msOf(id)).toBeGreaterThanOrEqual(before);
    expect(msOf(id)).toBeLessThanOrEqual(Date.now());
  });

  it('makes ids that only increase, within one millisecond, across the random block and when the clock steps back', () => {
    const start = 1_796_630_558_424;
    let now = start;
    const next = uuidv7Source(() => now);
    const ids: string[] = [];
    // 5,000 ids in one millisecond use the block of random bytes up many times over.
    for (let i = 0; i < 5_000; i++) ids.push(next());
    for (let i = 0; i < 100; i++) {
      now = start + 1 + Math.floor(i / 10);
      ids.push(next());
    }
    // The clock steps back: the ids go on under the last millisecond seen.
    now = start - 1_000;
    for (let i = 0; i < 100; i++) ids.push(next());
    for (const id of ids) expect(id).toMatch(V7);
    expect(ids.toSorted()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.map(msOf).slice(0, 5_000)).toEqual(Array(5_000).fill(start));
    expect(msOf(ids.at(-1) ?? '')).toBe(start + 10);
  });

  it('fills the rest of an id with random bits', () => {
    // Ids in distinct milliseconds, so that only chance could make two tails alike: the last 48
    // bits are 42 random bits and 6 of the counter's random seed.
    let now = 0;
    const next = uuidv7Source(() => now++);
    const tails = new Set<string>();
    for (let i = 0; i < 4_096; i++) tails.add(next().slice(-12));
    expect(tails.size).toBe(4_096);
    // The counter's top bits: 11 random bits in each new millisecond.
    const seeds = new Set<string>();
    for (let i = 0; i < 256; i++) seeds.add(next().slice(14, 18));
    expect(seeds.size).toBeGreaterThan(200);
  });
});
