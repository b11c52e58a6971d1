import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { Allowance, LimitStore } from '../../server/src/broker/ports/limits.js';
import type { Broker } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** An allowance key of its own per use, so tests never share one. */
const fresh = () => `throttle:test:${++counter}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function contract(engine: Engine) {
  let broker: Broker;
  let limits: LimitStore;

  beforeAll(async () => {
    broker = await engine.open();
    limits = broker.limits;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  it('takes from an allowance until none is left, then refuses with the time left in its window and takes nothing', async () => {
    const allowance = { key: fresh(), max: 3, windowMs: 5_000 };
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    // The window starts with the first attempt and is not moved by later ones or by refusals.
    await sleep(300);
    for (let i = 0; i < 2; i++) expect(await limits.spend([allowance])).toEqual({ spent: true });
    const refused = await limits.spend([allowance]);
    expect(refused.spent).toBe(false);
    const waitMs = refused.spent ? 0 : refused.retryAfterMs;
    expect(waitMs).toBeGreaterThan(4_000);
    expect(waitMs).toBeLessThanOrEqual(4_750);
    const again = await limits.spend([allowance]);
    expect(again.spent ? 0 : again.retryAfterMs).toBeLessThanOrEqual(waitMs);
    await limits.refund([allowance.key]);
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect((await limits.spend([allowance])).spent).toBe(false);
  });

  it('takes from every allowance or from none', async () => {
    const tight = { key: fresh(), max: 1, windowMs: 60_000 };
    const loose = { key: fresh(), max: 4, windowMs: 60_000 };
    expect(await limits.spend([tight, loose])).toEqual({ spent: true });
    for (let i = 0; i < 3; i++) expect((await limits.spend([loose, tight])).spent).toBe(false);
    // The refusals took nothing from `loose`: three of its four are left.
    for (let i = 0; i < 3; i++) expect(await limits.spend([loose])).toEqual({ spent: true });
    expect((await limits.spend([loose])).spent).toBe(false);
    expect(await limits.spend([])).toEqual({ spent: true });
  });

  it('starts a window afresh once it ended', async () => {
    // Two seconds: the refusal must come within the window even when the machine stalls.
    const allowance = { key: fresh(), max: 1, windowMs: 2_000 };
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect((await limits.spend([allowance])).spent).toBe(false);
    // Asked every millisecond, so that an attempt often lands in the window's last one, which
    // must open the next window, not slip through it uncounted.
    await vi.waitFor(
      async () => {
        expect(await limits.spend([allowance])).toEqual({ spent: true });
      },
      { timeout: 5_000, interval: 1 },
    );
    expect((await limits.spend([allowance])).spent).toBe(false);
  });

  it('past its allowance a backoff slows down, doubling up to its cap', async () => {
    // Waits of several hundred milliseconds: a refusal straight after an allowed attempt must
    // come within the wait even when the machine stalls.
    const allowance = { key: fresh(), max: 2, windowMs: 30_000, backoff: { firstMs: 400, maxMs: 800 } };
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    const waits: number[] = [];
    for (let round = 0; round < 3; round++) {
      const refused = await limits.spend([allowance]);
      expect(refused.spent).toBe(false);
      waits.push(refused.spent ? 0 : refused.retryAfterMs);
      // Refused attempts cost nothing, so asking until it is allowed is how a client waits.
      await vi.waitFor(
        async () => {
          expect(await limits.spend([allowance])).toEqual({ spent: true });
        },
        { timeout: 2_000, interval: 20 },
      );
    }
    const [first, second, third] = waits;
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThanOrEqual(400);
    expect(second).toBeGreaterThan(400);
    expect(second).toBeLessThanOrEqual(800);
    expect(third).toBeGreaterThan(400);
    expect(third).toBeLessThanOrEqual(800);
  });

  it('with a backoff, every attempt starts the window afresh: it ends only once the attempts stop', async () => {
    const allowance: Allowance = {
      key: fresh(),
      max: 2,
      windowMs: 1_500,
      backoff: { firstMs: 300, maxMs: 300 },
    };
    const start = Date.now();
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    // Well past the first attempt's window, each attempt is still slowed: the count was kept.
    while (Date.now() - start < 3 * allowance.windowMs) {
      expect((await limits.spend([allowance])).spent).toBe(false);
      await vi.waitFor(
        async () => {
          expect(await limits.spend([allowance])).toEqual({ spent: true });
        },
        { timeout: 2_000, interval: 20 },
      );
    }
    expect((await limits.spend([allowance])).spent).toBe(false);
    // Once the attempts stop for a whole window, it ends, and the allowance is whole again.
    await sleep(allowance.windowMs + 50);
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect(await limits.spend([allowance])).toEqual({ spent: true });
  });

  it('refund gives back one attempt, never below none, and banks nothing ahead', async () => {
    const allowance = { key: fresh(), max: 1, windowMs: 60_000 };
    await limits.refund([allowance.key]);
    await limits.refund([allowance.key]);
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect((await limits.spend([allowance])).spent).toBe(false);
    await limits.refund([allowance.key]);
    await limits.refund([allowance.key]);
    expect(await limits.spend([allowance])).toEqual({ spent: true });
    expect((await limits.spend([allowance])).spent).toBe(false);
    await limits.refund([]);
  });

  it('a burst of spends on two instances takes exactly the allowance', async () => {
    const other = await engine.peer(broker);
    const allowance = { key: fresh(), max: 7, windowMs: 60_000 };
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? other : broker).limits.spend([allowance])),
    );
    expect(results.filter((result) => result.spent)).toHaveLength(7);
    if (other !== broker) await other.close();
  });

  it('answers a burst of concurrent spends and refunds, each with its own result', async () => {
    const allowance = { key: fresh(), max: 100, windowMs: 60_000 };
    // The order below is what the check relies on: every script is loaded on every server as the
    // broker connects, so none is sent again in full behind the calls after it.
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 300; i++) {
      calls.push(limits.spend([allowance]));
      if (i % 3 === 0) calls.push(limits.refund([allowance.key]));
    }
    const results = await Promise.all(calls);
    expect(results.filter((result) => result === undefined)).toHaveLength(100);
    // 300 spends, 100 refunds that land in between: whatever the order, the allowance of 100 is
    // used up, and no refund took more than was spent.
    expect((await limits.spend([allowance])).spent).toBe(false);
  });
}

await onBothEngines('limits contract', contract);
