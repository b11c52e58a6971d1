import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PresenceStore } from '../../server/src/broker/ports/presence.js';
import type { Broker } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** A user id of its own per use, so tests never share a user's streams. */
const fresh = () => `user-${++counter}`;

/**
 * Times are the caller's (ms), so the tests give them outright. Every test works at or after
 * `LATER`, except the one that reads the expired users, below it: the online set is one for all.
 */
const LATER = 1_000_000;

function contract(engine: Engine) {
  let broker: Broker;
  let presence: PresenceStore;

  beforeAll(async () => {
    broker = await engine.open();
    presence = broker.presence;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  it('counts streams below the cap only, after dropping expired ones; a counted stream keeps its place', async () => {
    const al = fresh();
    const at = (now: number, until: number) => ({ max: 2, now, until });
    expect(await presence.onlineUntil([al])).toEqual([null]);
    expect(await presence.connect(al, 'a', at(LATER, LATER + 100))).toEqual({ connected: true, first: true });
    expect(await presence.onlineUntil([al])).toEqual([LATER + 100]);
    expect(await presence.connect(al, 'b', at(LATER, LATER + 100))).toEqual({
      connected: true,
      first: false,
    });
    expect(await presence.connect(al, 'c', at(LATER, LATER + 100))).toEqual({
      connected: false,
      first: false,
    });
    expect(await broker.inspect.connections(al, LATER)).toBe(2);
    // Already counted: its expiry moves, it is not refused.
    expect(await presence.connect(al, 'a', at(LATER + 10, LATER + 200))).toEqual({
      connected: true,
      first: false,
    });
    // Once `b` has expired (at LATER + 100, at or before LATER + 150), there is room again.
    expect(await presence.connect(al, 'c', at(LATER + 150, LATER + 300))).toEqual({
      connected: true,
      first: false,
    });
    expect(await broker.inspect.connections(al, LATER + 150)).toBe(2);
    expect(await broker.inspect.connections(al, LATER + 200)).toBe(1);
    // With every stream expired, the next one is the first again.
    expect(await presence.connect(al, 'd', at(LATER + 300, LATER + 400))).toEqual({
      connected: true,
      first: true,
    });
  });

  it('never lets concurrent connects, on two instances, past the cap', async () => {
    const al = fresh();
    const peer = await engine.peer(broker);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        (i % 2 ? peer : broker).presence.connect(al, `s${i}`, { max: 20, now: LATER, until: LATER + 60_000 }),
      ),
    );
    expect(results.filter((result) => result.connected)).toHaveLength(20);
    expect(results.filter((result) => result.first)).toHaveLength(1);
    expect(await broker.inspect.connections(al, LATER)).toBe(20);
    if (peer !== broker) await peer.close();
  });

  it('heartbeat moves the given streams and their users in the online set; others run out', async () => {
    const [al, bo] = [fresh(), fresh()];
    const options = { max: 10, now: LATER, until: LATER + 100 };
    await presence.connect(al, 'a1', options);
    await presence.connect(al, 'a2', options);
    await presence.connect(bo, 'b1', options);
    await presence.heartbeat(new Map(), LATER + 1_000);
    await presence.heartbeat(new Map([[al, ['a1']]]), LATER + 1_000);
    expect(await presence.onlineUntil([al, bo])).toEqual([LATER + 1_000, LATER + 100]);
    expect(await broker.inspect.connections(al, LATER + 500)).toBe(1);
    expect(await broker.inspect.connections(bo, LATER + 500)).toBe(0);
    // Several users and several streams each, in one heartbeat.
    await presence.heartbeat(
      new Map([
        [al, ['a1', 'a3']],
        [bo, ['b1', 'b2']],
      ]),
      LATER + 2_000,
    );
    expect(await presence.onlineUntil([bo, al])).toEqual([LATER + 2_000, LATER + 2_000]);
    expect(await broker.inspect.connections(al, LATER + 1_500)).toBe(2);
    expect(await broker.inspect.connections(bo, LATER + 1_500)).toBe(2);
  });

  it('disconnect takes the user offline with their last live stream only, and says so once', async () => {
    const al = fresh();
    const options = { max: 10, now: LATER, until: LATER + 100 };
    await presence.connect(al, 'a', options);
    await presence.connect(al, 'b', { ...options, until: LATER + 1_000 });
    expect(await presence.disconnect(al, 'b', LATER)).toBe(false);
    expect(await presence.onlineUntil([al])).toEqual([LATER + 1_000]);
    // `a` is the last one, and so is `b` once `a` has expired.
    expect(await presence.disconnect(al, 'a', LATER)).toBe(true);
    expect(await presence.onlineUntil([al])).toEqual([null]);
    expect(await presence.disconnect(al, 'a', LATER)).toBe(false);

    const bo = fresh();
    await presence.connect(bo, 'a', options);
    await presence.connect(bo, 'b', { ...options, until: LATER + 1_000 });
    expect(await presence.disconnect(bo, 'b', LATER + 200)).toBe(true);
  });

  it('of instances racing to take a user offline, exactly one does', async () => {
    const al = fresh();
    await presence.connect(al, 'a', { max: 10, now: LATER, until: LATER + 100 });
    const peer = await engine.peer(broker);
    const results = await Promise.all([
      presence.leaveIfGone(al, LATER + 200),
      peer.presence.leaveIfGone(al, LATER + 200),
      presence.disconnect(al, 'a', LATER + 200),
      peer.presence.disconnect(al, 'a', LATER + 200),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    if (peer !== broker) await peer.close();
  });

  it('lists the users whose presence ran out, soonest first, and keeps online one with a live stream', async () => {
    const [al, bo, cy, di] = [fresh(), fresh(), fresh(), fresh()];
    await presence.connect(al, 'a', { max: 10, now: 0, until: 300 });
    await presence.connect(bo, 'b', { max: 10, now: 0, until: 100 });
    await presence.connect(cy, 'c', { max: 10, now: 0, until: 200 });
    await presence.connect(di, 'd', { max: 10, now: 0, until: 900 });
    expect(await presence.expired(50, 10)).toEqual([]);
    expect(await presence.expired(300, 10)).toEqual([bo, cy, al]);
    expect(await presence.expired(300, 2)).toEqual([bo, cy]);
    // A heartbeat keeps a user out of the list.
    await presence.heartbeat(new Map([[cy, ['c']]]), 500);
    expect(await presence.expired(300, 10)).toEqual([bo, al]);
    expect(await presence.leaveIfGone(bo, 300)).toBe(true);
    expect(await presence.leaveIfGone(bo, 300)).toBe(false);
    expect(await presence.expired(300, 10)).toEqual([al]);
    // A user whose presence ran out while a stream of theirs is still live stays online.
    await presence.connect(di, 'd2', { max: 10, now: 0, until: 250 });
    expect(await presence.expired(300, 10)).toEqual([di, al]);
    expect(await presence.leaveIfGone(di, 300)).toBe(false);
    expect(await presence.onlineUntil([bo, di, 'nobody'])).toEqual([null, 250, null]);
    expect(await presence.onlineUntil([])).toEqual([]);
  });
}

await onBothEngines('presence contract', contract);
