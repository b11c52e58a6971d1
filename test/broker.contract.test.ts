import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Broker } from '../server/src/broker/types.js';
import { type Engine, onBothEngines } from './support/engines.js';

/**
 * One contract, two engines: everything Parley relies on from the broker behaves the same on
 * the in-process engine and on Redis. Each port has its own suite besides (`test/ports/`).
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let counter = 0;
/** A fresh logical name per use, so tests never share a key. */
const fresh = (what: string) => `${what}:${++counter}`;

function contract(engine: Engine) {
  let broker: Broker;

  beforeAll(async () => {
    broker = await engine.open();
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  describe('keys', () => {
    it('set and get, with nx refusing to overwrite', async () => {
      const key = fresh('key');
      expect(await broker.get(key)).toBeNull();
      expect(await broker.set(key, 'a', { nx: true })).toBe(true);
      expect(await broker.set(key, 'b', { nx: true })).toBe(false);
      expect(await broker.get(key)).toBe('a');
      expect(await broker.set(key, 'c')).toBe(true);
      expect(await broker.get(key)).toBe('c');
      expect(await broker.ttlMs(key)).toBe(-1);
    });

    it('mget reads several keys at once, null where a key is missing or expired', async () => {
      const [a, b, gone, never] = [fresh('k'), fresh('k'), fresh('k'), fresh('k')];
      await broker.set(a, '1');
      await broker.set(b, 'two', { ttlMs: 60_000 });
      await broker.set(gone, 'x', { ttlMs: 20 });
      await sleep(60);
      expect(await broker.mget([a, never, b, gone])).toEqual(['1', null, 'two', null]);
      expect(await broker.mget([])).toEqual([]);
    });

    it('a key set with a ttl expires; setting again without one makes it permanent', async () => {
      const key = fresh('key');
      await broker.set(key, 'v', { ttlMs: 80 });
      const ttl = await broker.ttlMs(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(80);
      await sleep(150);
      expect(await broker.get(key)).toBeNull();
      expect(await broker.ttlMs(key)).toBe(-2);
      expect(await broker.set(key, 'again', { nx: true, ttlMs: 10_000 })).toBe(true);
      await broker.set(key, 'forever');
      expect(await broker.ttlMs(key)).toBe(-1);
    });

    it('del removes keys of every kind and counts those that existed', async () => {
      const [plain, zset] = [fresh('k'), fresh('z')];
      await broker.set(plain, 'v');
      await broker.zadd(zset, 1, 'm');
      expect(await broker.del()).toBe(0);
      expect(await broker.del(plain, zset, fresh('missing'))).toBe(2);
      expect(await broker.get(plain)).toBeNull();
      expect(await broker.zcard(zset)).toBe(0);
      expect(await broker.ttlMs(plain)).toBe(-2);
    });
  });

  describe('allowances', () => {
    it('spend takes from an allowance until none is left, then refuses with the time left in its window and takes nothing', async () => {
      const key = fresh('allowance');
      const allowance = { key, max: 3, windowMs: 5_000 };
      for (let i = 0; i < 3; i++) expect(await broker.spend([allowance])).toEqual({ spent: true });
      const refused = await broker.spend([allowance]);
      expect(refused.spent).toBe(false);
      const waitMs = refused.spent ? 0 : refused.retryAfterMs;
      expect(waitMs).toBeGreaterThan(4_000);
      expect(waitMs).toBeLessThanOrEqual(5_000);
      // The window started with the first attempt and is not moved by later ones or by refusals.
      expect(await broker.ttlMs(key)).toBeLessThanOrEqual(waitMs);
      await broker.refund([key]);
      expect(await broker.spend([allowance])).toEqual({ spent: true });
      expect((await broker.spend([allowance])).spent).toBe(false);
    });

    it('spend takes from every allowance or from none', async () => {
      const tight = { key: fresh('allowance'), max: 1, windowMs: 60_000 };
      const loose = { key: fresh('allowance'), max: 4, windowMs: 60_000 };
      expect(await broker.spend([tight, loose])).toEqual({ spent: true });
      for (let i = 0; i < 3; i++) expect((await broker.spend([loose, tight])).spent).toBe(false);
      // The refusals took nothing from `loose`: three of its four are left.
      for (let i = 0; i < 3; i++) expect(await broker.spend([loose])).toEqual({ spent: true });
      expect((await broker.spend([loose])).spent).toBe(false);
      expect(await broker.spend([])).toEqual({ spent: true });
    });

    it('past its allowance a backoff slows down, doubling up to its cap, and every attempt restarts the window', async () => {
      const key = fresh('allowance');
      const allowance = { key, max: 2, windowMs: 30_000, backoff: { firstMs: 150, maxMs: 300 } };
      expect(await broker.spend([allowance])).toEqual({ spent: true });
      expect(await broker.spend([allowance])).toEqual({ spent: true });
      const waits: number[] = [];
      for (let round = 0; round < 3; round++) {
        const refused = await broker.spend([allowance]);
        expect(refused.spent).toBe(false);
        waits.push(refused.spent ? 0 : refused.retryAfterMs);
        // Refused attempts cost nothing, so asking until it is allowed is how a client waits.
        await vi.waitFor(
          async () => {
            expect(await broker.spend([allowance])).toEqual({ spent: true });
          },
          { timeout: 2_000, interval: 20 },
        );
        expect(await broker.ttlMs(key)).toBeGreaterThan(29_000);
      }
      const [first, second, third] = waits;
      expect(first).toBeGreaterThan(0);
      expect(first).toBeLessThanOrEqual(150);
      expect(second).toBeGreaterThan(150);
      expect(second).toBeLessThanOrEqual(300);
      expect(third).toBeGreaterThan(150);
      expect(third).toBeLessThanOrEqual(300);
    });

    it('refund gives back one attempt, never below none, and creates nothing', async () => {
      const key = fresh('allowance');
      const allowance = { key, max: 1, windowMs: 60_000 };
      await broker.refund([key]);
      expect(await broker.ttlMs(key)).toBe(-2);
      expect(await broker.spend([allowance])).toEqual({ spent: true });
      await broker.refund([key]);
      await broker.refund([key]);
      expect(await broker.spend([allowance])).toEqual({ spent: true });
      expect((await broker.spend([allowance])).spent).toBe(false);
      await broker.refund([]);
    });

    it('a burst of spends on two instances takes exactly the allowance', async () => {
      const other = await engine.peer(broker);
      const allowance = { key: fresh('allowance'), max: 7, windowMs: 60_000 };
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? other : broker).spend([allowance])),
      );
      expect(results.filter((result) => result.spent)).toHaveLength(7);
      if (other !== broker) await other.close();
    });
  });

  describe('sorted sets', () => {
    it('zadd updates members in place, several at once; zrem and zremRangeByScore (inclusive) count removals', async () => {
      const key = fresh('zset');
      expect(await broker.zcard(key)).toBe(0);
      await broker.zadd(key, 10, 'a');
      await broker.zadd(key, 20, 'b');
      await broker.zadd(key, 30, 'c');
      await broker.zadd(key, 5, 'c');
      expect(await broker.zcard(key)).toBe(3);
      // Several members at once, new and existing, all to one score; no members changes nothing.
      await broker.zadd(key, 7, 'd', 'e', 'b');
      await broker.zadd(key, 9);
      expect(await broker.zscores(key, ['b', 'd', 'e'])).toEqual([7, 7, 7]);
      await broker.zadd(key, 20, 'b');
      expect(await broker.zrem(key, 'd')).toBe(1);
      expect(await broker.zrem(key, 'e')).toBe(1);
      // c moved to 5, so "up to 10" removes a and c.
      expect(await broker.zremRangeByScore(key, 10)).toBe(2);
      expect(await broker.zcard(key)).toBe(1);
      expect(await broker.zrem(key, 'a')).toBe(0);
      expect(await broker.zrem(key, 'b')).toBe(1);
      expect(await broker.zcard(key)).toBe(0);
      expect(await broker.zremRangeByScore(key, 100)).toBe(0);
    });

    it('zrangeByScore lists members up to a score, lowest first, capped; zscores reads several', async () => {
      const key = fresh('zset');
      expect(await broker.zrangeByScore(key, 100, 10)).toEqual([]);
      expect(await broker.zscores(key, [])).toEqual([]);
      await broker.zadd(key, 30, 'c');
      await broker.zadd(key, 10, 'a');
      await broker.zadd(key, 20, 'b');
      await broker.zadd(key, 20, 'bb');
      await broker.zadd(key, 1.5, 'half');
      expect(await broker.zrangeByScore(key, 20, 10)).toEqual(['half', 'a', 'b', 'bb']);
      expect(await broker.zrangeByScore(key, 20, 2)).toEqual(['half', 'a']);
      expect(await broker.zrangeByScore(key, 0, 10)).toEqual([]);
      expect(await broker.zscores(key, ['a', 'missing', 'half', 'c'])).toEqual([10, null, 1.5, 30]);
    });
    it('zaddCapped adds below the cap only, after dropping expired members; a present member keeps its place', async () => {
      const key = fresh('zset');
      expect(await broker.zaddCapped(key, 'a', 100, { max: 2, expireUpTo: 10 })).toEqual({
        added: true,
        others: 0,
      });
      expect(await broker.zaddCapped(key, 'b', 100, { max: 2, expireUpTo: 10 })).toEqual({
        added: true,
        others: 1,
      });
      expect(await broker.zaddCapped(key, 'c', 100, { max: 2, expireUpTo: 10 })).toEqual({
        added: false,
        others: 2,
      });
      expect(await broker.zscores(key, ['c'])).toEqual([null]);
      // Already in: moved, not refused.
      expect(await broker.zaddCapped(key, 'a', 200, { max: 2, expireUpTo: 10 })).toEqual({
        added: true,
        others: 1,
      });
      expect(await broker.zscores(key, ['a'])).toEqual([200]);
      // Once `b` has expired (score 100 at or below 150), there is room again.
      expect(await broker.zaddCapped(key, 'c', 300, { max: 2, expireUpTo: 150 })).toEqual({
        added: true,
        others: 1,
      });
      expect(await broker.zrangeByScore(key, 1000, 10)).toEqual(['a', 'c']);
    });

    it('zaddCapped never lets concurrent callers, on two handles, past the cap', async () => {
      const key = fresh('zset');
      const peer = await engine.peer(broker);
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          (i % 2 ? peer : broker).zaddCapped(key, `m${i}`, Date.now() + 60_000, {
            max: 20,
            expireUpTo: Date.now(),
          }),
        ),
      );
      expect(results.filter((r) => r.added)).toHaveLength(20);
      expect(await broker.zcard(key)).toBe(20);
    });
  });

  describe('concurrency', () => {
    it('answers a burst of concurrent script calls and plain commands, each with its own result', async () => {
      const zset = fresh('zset');
      const conversation = fresh('conversation');
      const allowance = fresh('allowance');
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        calls.push(
          broker.zaddCapped(zset, `m${i}`, Date.now() + 60_000, { max: 1000, expireUpTo: Date.now() }),
        );
        calls.push(broker.events.toConversation(conversation, String(i)));
        calls.push(
          broker.queue.release([{ entryId: `${i}-0`, conversationId: conversation, messageId: `m${i}` }]),
        );
        calls.push(broker.messages.pendingMessage(`missing-${i}`));
        calls.push(broker.spend([{ key: allowance, max: 100, windowMs: 60_000 }]));
        if (i % 3 === 0) calls.push(broker.refund([allowance]));
      }
      const results = await Promise.all(calls);
      expect(results.filter((r) => r === null).length).toBeGreaterThanOrEqual(300);
      expect(await broker.zcard(zset)).toBe(300);
      const events = await broker.events.conversationAfter(conversation, '0-0', 1000);
      expect(events.map((event) => event.payload)).toEqual(Array.from({ length: 300 }, (_, i) => String(i)));
      // 300 spends, 100 refunds that land in between: whatever the order, the allowance of 100
      // is used up, and no refund took more than was spent.
      expect((await broker.spend([{ key: allowance, max: 100, windowMs: 60_000 }])).spent).toBe(false);
    });
  });

  describe('lifecycle', () => {
    it('ping answers true while open and false once closed', async () => {
      const own = await engine.open();
      expect(await own.ping()).toBe(true);
      await own.close();
      expect(await own.ping()).toBe(false);
    });
  });
}

await onBothEngines('broker contract', contract);
