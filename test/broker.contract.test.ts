import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../server/src/broker/types.js';
import { type Engine, onBothEngines } from './support/engines.js';

/**
 * One contract, two engines: what the broker as a whole must do, beyond each port's own suite
 * (`test/ports/`), behaves the same on the in-process engine and on Redis.
 */

let counter = 0;
/** A fresh logical name per use, so tests never share a key. */
const fresh = (what: string) => `${what}-${++counter}`;

function contract(engine: Engine) {
  let broker: Broker;

  beforeAll(async () => {
    broker = await engine.open();
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  describe('concurrency', () => {
    it('answers a burst of concurrent calls of every port, each with its own result', async () => {
      const user = fresh('user');
      const conversation = fresh('conversation');
      const allowance = fresh('allowance');
      const calls: Promise<unknown>[] = [];
      const now = Date.now();
      for (let i = 0; i < 300; i++) {
        calls.push(broker.presence.connect(user, `stream-${i}`, { max: 1000, now, until: now + 60_000 }));
        calls.push(broker.events.toConversation(conversation, String(i)));
        calls.push(
          broker.queues[0].release([{ entryId: `${i}-0`, conversationId: conversation, messageId: `m${i}` }]),
        );
        calls.push(broker.messages.pendingMessage(`missing-${i}`));
        calls.push(broker.limits.spend([{ key: allowance, max: 100, windowMs: 60_000 }]));
        if (i % 3 === 0) calls.push(broker.limits.refund([allowance]));
        calls.push(broker.rosters.has(conversation, user));
      }
      const results = await Promise.all(calls);
      expect(results.filter((r) => r === null).length).toBeGreaterThanOrEqual(600);
      expect(await broker.inspect.connections(user, now)).toBe(300);
      const events = await broker.events.conversationAfter(conversation, '0-0', 1000);
      expect(events.map((event) => event.payload)).toEqual(Array.from({ length: 300 }, (_, i) => String(i)));
      // 300 spends, 100 refunds that land in between: whatever the order, the allowance of 100
      // is used up, and no refund took more than was spent.
      expect((await broker.limits.spend([{ key: allowance, max: 100, windowMs: 60_000 }])).spent).toBe(false);
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
