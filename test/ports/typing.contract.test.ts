import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { TypingClaims } from '../../server/src/broker/ports/typing.js';
import type { Broker } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** A conversation id of its own per use, so tests never share a slot. */
const fresh = () => `conversation-${++counter}`;

function contract(engine: Engine) {
  let broker: Broker;
  let typing: TypingClaims;

  beforeAll(async () => {
    broker = await engine.open();
    typing = broker.typing;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  it('gives a slot to one claim until it lapses, one slot per user and conversation', async () => {
    const id = fresh();
    // Two seconds: long enough that a stalled machine cannot let a claim lapse between two steps.
    expect(await typing.claim(id, 'al', 2_000)).toBe(true);
    expect(await typing.claim(id, 'al', 2_000)).toBe(false);
    expect(await typing.claim(id, 'bo', 2_000)).toBe(true);
    expect(await typing.claim(fresh(), 'al', 2_000)).toBe(true);
    await vi.waitFor(
      async () => {
        expect(await typing.claim(id, 'al', 60_000)).toBe(true);
      },
      { timeout: 6_000, interval: 20 },
    );
    expect(await typing.claim(id, 'al', 60_000)).toBe(false);
  });

  it('lets one of many concurrent claims on two instances win', async () => {
    const id = fresh();
    const peer = await engine.peer(broker);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? peer : broker).typing.claim(id, 'al', 60_000)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    if (peer !== broker) await peer.close();
  });
}

await onBothEngines('typing contract', contract);
