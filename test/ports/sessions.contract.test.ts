import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { SessionStore } from '../../server/src/broker/ports/sessions.js';
import type { Broker } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** An id of its own per use, so tests never share a mark. */
const fresh = (what: string) => `${what}-${++counter}`;

function contract(engine: Engine) {
  let broker: Broker;
  let sessions: SessionStore;

  beforeAll(async () => {
    broker = await engine.open();
    sessions = broker.sessions;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  it('a revoked session refuses every token of it, and of no other session', async () => {
    const [al, one, two] = [fresh('user'), fresh('session'), fresh('session')];
    const holders = [
      { userId: al, sessionId: one, issuedAt: 1_000 },
      { userId: al, sessionId: two, issuedAt: 1_000 },
    ];
    expect(await sessions.revokedAmong(holders)).toEqual([false, false]);
    await sessions.revokeSession(one, 60_000);
    expect(await sessions.revokedAmong(holders)).toEqual([true, false]);
    expect(await sessions.revokedAmong([])).toEqual([]);
  });

  it("revoking a user's tokens before a time refuses those issued at or before it, in every session", async () => {
    const [al, bo] = [fresh('user'), fresh('user')];
    await sessions.revokeUserBefore(al, 5_000, 60_000);
    expect(
      await sessions.revokedAmong([
        { userId: al, sessionId: fresh('session'), issuedAt: 4_999 },
        { userId: al, sessionId: fresh('session'), issuedAt: 5_000 },
        { userId: al, sessionId: fresh('session'), issuedAt: 5_001 },
        { userId: bo, sessionId: fresh('session'), issuedAt: 1 },
      ]),
    ).toEqual([true, true, false, false]);
  });

  it('checks many holders at once, in order', async () => {
    const holders = Array.from({ length: 1_200 }, () => ({
      userId: fresh('user'),
      sessionId: fresh('session'),
      issuedAt: 1_000,
    }));
    await Promise.all(
      holders.filter((_, i) => i % 7 === 0).map((holder) => sessions.revokeSession(holder.sessionId, 60_000)),
    );
    expect(await sessions.revokedAmong(holders)).toEqual(holders.map((_, i) => i % 7 === 0));
  });

  it('marks lapse after their time, and are the same on every instance', async () => {
    const [al, session] = [fresh('user'), fresh('session')];
    const peer = await engine.peer(broker);
    // Two seconds: long enough that a stalled machine cannot let a mark lapse before it is read.
    await peer.sessions.revokeSession(session, 2_000);
    await peer.sessions.revokeUserBefore(al, 9_000, 2_000);
    const holders = [
      { userId: fresh('user'), sessionId: session, issuedAt: 1 },
      { userId: al, sessionId: fresh('session'), issuedAt: 1 },
    ];
    expect(await sessions.revokedAmong(holders)).toEqual([true, true]);
    await vi.waitFor(
      async () => {
        expect(await sessions.revokedAmong(holders)).toEqual([false, false]);
      },
      { timeout: 6_000, interval: 20 },
    );
    if (peer !== broker) await peer.close();
  });

  it('keeps a sealed successor for its time, the last one kept winning', async () => {
    const hash = fresh('hash');
    expect(await sessions.successor(hash)).toBeNull();
    await sessions.keepSuccessor(hash, 'sealed-1', 60_000);
    await sessions.keepSuccessor(hash, 'sealed-2', 2_000);
    expect(await sessions.successor(hash)).toBe('sealed-2');
    expect(await sessions.successor(fresh('hash'))).toBeNull();
    await vi.waitFor(
      async () => {
        expect(await sessions.successor(hash)).toBeNull();
      },
      { timeout: 6_000, interval: 20 },
    );
  });
}

await onBothEngines('sessions contract', contract);
