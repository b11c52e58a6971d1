import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RosterStore } from '../../server/src/broker/ports/rosters.js';
import type { Broker } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** A conversation id of its own per use, so tests never share a roster. */
const fresh = () => `conversation-${++counter}`;

function contract(engine: Engine) {
  let broker: Broker;
  let rosters: RosterStore;

  beforeAll(async () => {
    broker = await engine.open();
    rosters = broker.rosters;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  it('has no roster, version or size until one is filled', async () => {
    const id = fresh();
    expect(await rosters.has(id, 'al')).toBeNull();
    expect(await rosters.size(id)).toBeNull();
    expect(await rosters.version(id)).toBeNull();
  });

  it('fills a roster of any size once, and never overwrites one that exists', async () => {
    const id = fresh();
    const many = Array.from({ length: 12_000 }, (_, i) => `user-${i}`);
    expect(await rosters.fill(id, many, null)).toBe(true);
    expect(await rosters.size(id)).toBe(12_000);
    expect(await rosters.has(id, 'user-11999')).toBe(true);
    expect(await rosters.has(id, 'al')).toBe(false);
    expect(await rosters.fill(id, ['al'], null)).toBe(false);
    expect(await rosters.has(id, 'al')).toBe(false);
  });

  it('holds an empty roster as existing with nobody in it', async () => {
    const id = fresh();
    expect(await rosters.fill(id, [], null)).toBe(true);
    expect(await rosters.size(id)).toBe(0);
    expect(await rosters.has(id, '')).toBe(false);
    expect(await rosters.has(id, 'al')).toBe(false);
  });

  it('after invalidate: no roster, a new version, and a fill that read the old version does not land', async () => {
    const id = fresh();
    const before = await rosters.version(id);
    expect(await rosters.fill(id, ['al', 'bo'], before)).toBe(true);
    // A fill reads the version, then the members; a membership change lands in between.
    const read = await rosters.version(id);
    await rosters.invalidate(id);
    expect(await rosters.has(id, 'al')).toBeNull();
    const now = await rosters.version(id);
    expect(now).not.toBeNull();
    expect(now).not.toBe(read);
    expect(await rosters.fill(id, ['al', 'bo'], read)).toBe(false);
    expect(await rosters.has(id, 'al')).toBeNull();
    expect(await rosters.fill(id, ['bo'], now)).toBe(true);
    expect(await rosters.has(id, 'al')).toBe(false);
    expect(await rosters.size(id)).toBe(1);
    // Every change moves the version on.
    await rosters.invalidate(id);
    expect(await rosters.version(id)).not.toBe(now);
  });

  it('is one roster for every instance', async () => {
    const id = fresh();
    const peer = await engine.peer(broker);
    expect(await peer.rosters.fill(id, ['al'], null)).toBe(true);
    expect(await rosters.has(id, 'al')).toBe(true);
    await rosters.invalidate(id);
    expect(await peer.rosters.has(id, 'al')).toBeNull();
  });
}

await onBothEngines('rosters contract', contract);
