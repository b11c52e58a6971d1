import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Broker, compareStreamIds, STREAM_ID, type StreamInfo } from '../server/src/broker/types.js';
import { type Engine, onBothEngines } from './support/engines.js';

/**
 * One contract, two engines: everything Parley relies on from the broker behaves the same on
 * the in-process engine and on Redis. Each port has its own suite besides (`test/ports/`).
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `maxDeletedId` is at or above every removed id and below the first id left, so a reader
 * resuming from it or above misses nothing, and one resuming below the removed ones is told.
 */
function expectTrimBound(info: StreamInfo, highestRemoved: string | undefined): void {
  expect(highestRemoved).toBeDefined();
  expect(compareStreamIds(info.maxDeletedId, highestRemoved ?? '')).toBeGreaterThanOrEqual(0);
  if (info.firstId !== null) expect(compareStreamIds(info.maxDeletedId, info.firstId)).toBe(-1);
}

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

  async function appendMany(stream: string, count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const result = await broker.append(stream, { n: String(i) });
      if (!result.appended) throw new Error('append without options must append');
      ids.push(result.id);
    }
    return ids;
  }

  describe('streams', () => {
    it('appends with increasing ids and reads them back oldest first', async () => {
      const stream = fresh('stream');
      const ids = await appendMany(stream, 5);
      for (const id of ids) expect(id).toMatch(STREAM_ID);
      for (let i = 1; i < ids.length; i++) expect(compareStreamIds(ids[i - 1] ?? '', ids[i] ?? '')).toBe(-1);
      const all = await broker.rangeAfter(stream, '0-0', 100);
      expect(all).toEqual(ids.map((id, n) => ({ id, fields: { n: String(n) } })));
    });

    it('append with `unique` claims the key once and returns the holder on a second try', async () => {
      const stream = fresh('stream');
      const key = fresh('idem');
      const first = await broker.append(
        stream,
        { body: 'x' },
        { unique: { key, value: 'first', ttlMs: 60_000 } },
      );
      expect(first.appended).toBe(true);
      const second = await broker.append(
        stream,
        { body: 'y' },
        { unique: { key, value: 'second', ttlMs: 60_000 } },
      );
      expect(second).toEqual({ appended: false, existing: 'first' });
      expect((await broker.streamInfo(stream)).length).toBe(1);
      expect(await broker.get(key)).toBe('first');
      const ttl = await broker.ttlMs(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_000);
    });

    it('append with `pending` records `<id>|<value>` in each hash in the same step', async () => {
      const stream = fresh('stream');
      const hash = fresh('pending');
      const other = fresh('pending');
      const result = await broker.append(
        stream,
        { body: 'x' },
        {
          pending: [
            { key: hash, field: 'msg-1', value: 'payload' },
            { key: other, field: 'f', value: 'second copy' },
          ],
        },
      );
      if (!result.appended) throw new Error('expected an append');
      expect(await broker.hget(hash, 'msg-1')).toBe(`${result.id}|payload`);
      expect(await broker.hgetall(other)).toEqual({ f: `${result.id}|second copy` });
      // A refused unique claim writes no pending copy either.
      const key = fresh('idem');
      await broker.append(stream, { body: 'v' }, { unique: { key, value: 'v', ttlMs: 10_000 } });
      const refused = await broker.append(
        stream,
        { body: 'w' },
        { unique: { key, value: 'w', ttlMs: 10_000 }, pending: [{ key: hash, field: 'msg-2', value: 'p' }] },
      );
      expect(refused.appended).toBe(false);
      expect(await broker.hget(hash, 'msg-2')).toBeNull();
    });

    it('append with `counter` takes the next number in the same step and writes it into the slot', async () => {
      const stream = fresh('stream');
      const hash = fresh('pending');
      const counter = fresh('seq');
      const slot = '\u0000n\u0000';
      // No counter: nothing is written, not even the claim.
      const key = fresh('idem');
      const missing = await broker.append(
        stream,
        { body: `{"n":${slot}}` },
        {
          counter: { key: counter, slot },
          unique: { key, value: 'a', ttlMs: 10_000 },
          pending: [{ key: hash, field: 'm1', value: `{"n":${slot}}` }],
        },
      );
      expect(missing).toEqual({ appended: false, missingCounter: true });
      expect((await broker.streamInfo(stream)).length).toBe(0);
      expect(await broker.get(key)).toBeNull();
      expect(await broker.get(counter)).toBeNull();
      expect(await broker.hgetall(hash)).toEqual({});

      await broker.set(counter, '41', { ttlMs: 60_000 });
      const first = await broker.append(
        stream,
        { op: 'create', body: `{"n":${slot},"text":"${slot} stays"}`, plain: 'no slot' },
        {
          counter: { key: counter, slot },
          unique: { key, value: 'a', ttlMs: 10_000 },
          pending: [{ key: hash, field: 'm1', value: `{"n":${slot}}` }],
        },
      );
      if (!first.appended) throw new Error('expected an append');
      expect(first.counter).toBe(42);
      // Only the first slot of each value is filled.
      expect(await broker.rangeAfter(stream, '0-0', 10)).toEqual([
        {
          id: first.id,
          fields: { op: 'create', body: `{"n":42,"text":"${slot} stays"}`, plain: 'no slot' },
        },
      ]);
      expect(await broker.hget(hash, 'm1')).toBe(`${first.id}|{"n":42}`);
      expect(await broker.get(counter)).toBe('42');
      expect(await broker.ttlMs(counter)).toBeGreaterThan(0);

      // A refused claim takes no number.
      const refused = await broker.append(
        stream,
        { body: slot },
        { counter: { key: counter, slot }, unique: { key, value: 'b', ttlMs: 10_000 } },
      );
      expect(refused).toEqual({ appended: false, existing: 'a' });
      expect(await broker.get(counter)).toBe('42');

      // Concurrent appends get distinct numbers, in the order of their entries.
      const results = await Promise.all(
        Array.from({ length: 20 }, () =>
          broker.append(stream, { body: slot }, { counter: { key: counter, slot } }),
        ),
      );
      const numbers = results.map((result) => (result.appended ? result.counter : -1));
      expect([...numbers].sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual(
        Array.from({ length: 20 }, (_, i) => 43 + i),
      );
      const entries = await broker.rangeAfter(stream, first.id, 100);
      expect(entries.map((entry) => Number(entry.fields.body))).toEqual(
        Array.from({ length: 20 }, (_, i) => 43 + i),
      );
      // Without `counter`, a value holding the slot is written as given.
      const untouched = await broker.append(stream, { body: slot });
      if (!untouched.appended) throw new Error('expected an append');
      expect(untouched.counter).toBeUndefined();
      expect((await broker.rangeAfter(stream, first.id, 100)).at(-1)).toEqual({
        id: untouched.id,
        fields: { body: slot },
      });
    });

    it('append with `refuseIf` and `limit` checks both first, and writes nothing when either refuses', async () => {
      const stream = fresh('stream');
      const counter = fresh('seq');
      const claim = fresh('claim');
      const hash = fresh('pending');
      const [session, everyone, limit] = [fresh('mark'), fresh('mark'), fresh('limit')];
      const slot = '\u0000n\u0000';
      await broker.set(counter, '0', { ttlMs: 60_000 });
      const options = (value: string) => ({
        refuseIf: [{ key: session }, { key: everyone, atLeast: 1_000 }],
        limit: { key: limit, max: 2, ttlMs: 60_000 },
        counter: { key: counter, slot },
        unique: { key: claim, value, ttlMs: 10_000 },
        pending: [{ key: hash, field: value, value: slot }],
      });
      expect(await broker.append(stream, { m: slot }, options('a'))).toMatchObject({
        appended: true,
        counter: 1,
      });
      expect(await broker.get(limit)).toBe('1');
      expect(await broker.ttlMs(limit)).toBeGreaterThan(0);
      // A mark below `atLeast` does not refuse; one at it does, and so does any value without it.
      await broker.set(everyone, '999', { ttlMs: 60_000 });
      expect(await broker.append(stream, { m: slot }, { ...options('b'), unique: undefined })).toMatchObject({
        appended: true,
        counter: 2,
      });
      await broker.set(everyone, '1000', { ttlMs: 60_000 });
      expect(await broker.append(stream, { m: slot }, options('c'))).toEqual({ appended: false, refused: 1 });
      await broker.del(everyone);
      await broker.set(session, 'any', { ttlMs: 60_000 });
      expect(await broker.append(stream, { m: slot }, options('c'))).toEqual({ appended: false, refused: 0 });
      // A refusal counts nothing, claims nothing and takes no number.
      expect(await broker.get(limit)).toBe('2');
      expect(await broker.get(counter)).toBe('2');
      expect(await broker.get(claim)).toBe('a');
      await broker.del(session);
      // Past the limit: counted, nothing else written. The claim is checked after the limit.
      await broker.del(claim);
      expect(await broker.append(stream, { m: slot }, options('d'))).toEqual({
        appended: false,
        limited: true,
      });
      expect(await broker.get(limit)).toBe('3');
      expect(await broker.get(counter)).toBe('2');
      expect(await broker.get(claim)).toBeNull();
      expect(Object.keys(await broker.hgetall(hash)).sort()).toEqual(['a', 'b']);
      expect((await broker.streamInfo(stream)).length).toBe(2);
    });

    it('append with `roster` writes nothing unless the roster holds the member', async () => {
      const stream = fresh('stream');
      const roster = fresh('conversation');
      const limit = fresh('limit');
      const options = (member: string) => ({
        roster: { conversationId: roster, userId: member },
        limit: { key: limit, max: 10, ttlMs: 60_000 },
      });
      // No set: refused before anything is counted or written.
      expect(await broker.append(stream, { m: '1' }, options('al'))).toEqual({
        appended: false,
        noSet: true,
      });
      expect(await broker.rosters.fill(roster, ['al', 'bo'], null)).toBe(true);
      expect(await broker.append(stream, { m: '2' }, options('cy'))).toEqual({
        appended: false,
        notMember: true,
      });
      expect(await broker.get(limit)).toBeNull();
      expect((await broker.streamInfo(stream)).length).toBe(0);
      expect(await broker.append(stream, { m: '3' }, options('bo'))).toMatchObject({ appended: true });
      expect(await broker.get(limit)).toBe('1');
      expect((await broker.rangeAfter(stream, '0-0', 10)).map((entry) => entry.fields.m)).toEqual(['3']);
    });

    it('append with `maxLen` keeps at least that many of the newest entries and trims whole old ones', async () => {
      const stream = fresh('stream');
      const ids: string[] = [];
      for (let i = 0; i < 400; i++) {
        const result = await broker.append(stream, { n: String(i) }, { maxLen: 10 });
        if (result.appended) ids.push(result.id);
      }
      const info = await broker.streamInfo(stream);
      expect(info.length).toBeGreaterThanOrEqual(10);
      expect(info.length).toBeLessThan(400);
      expect(info.lastId).toBe(ids[ids.length - 1]);
      // What is left is exactly the newest entries, and maxDeletedId bounds what was removed.
      const firstKept = ids.length - info.length;
      expect(info.firstId).toBe(ids[firstKept]);
      expectTrimBound(info, ids[firstKept - 1]);
    });

    it('refuses an entry without fields', async () => {
      const stream = fresh('stream');
      await expect(broker.append(stream, {})).rejects.toThrow(/wrong number of arg/i);
      expect((await broker.streamInfo(stream)).length).toBe(0);
    });

    it('rangeAfter is strictly after, honours count, and is empty for a missing stream', async () => {
      const stream = fresh('stream');
      const ids = await appendMany(stream, 6);
      const [a, b, c] = ids;
      expect((await broker.rangeAfter(stream, a ?? '', 2)).map((e) => e.id)).toEqual([b, c]);
      expect(await broker.rangeAfter(stream, ids[5] ?? '', 10)).toEqual([]);
      expect(await broker.rangeAfter(fresh('missing'), '0-0', 10)).toEqual([]);
      // Any id works as a position, not only ids of entries.
      expect((await broker.rangeAfter(stream, '0-1', 100)).map((e) => e.id)).toEqual(ids);
    });

    it('lastId and streamInfo describe missing, filled and emptied streams', async () => {
      const stream = fresh('stream');
      expect(await broker.lastId(stream)).toBe('0-0');
      expect(await broker.streamInfo(stream)).toEqual({
        length: 0,
        firstId: null,
        lastId: '0-0',
        maxDeletedId: '0-0',
      });
      const ids = await appendMany(stream, 3);
      expect(await broker.lastId(stream)).toBe(ids[2]);
      expect(await broker.streamInfo(stream)).toEqual({
        length: 3,
        firstId: ids[0],
        lastId: ids[2],
        maxDeletedId: '0-0',
      });
      // Trimmed to nothing, the stream still remembers the last id it handed out.
      const [ms, seq] = (ids[2] ?? '').split('-');
      expect(await broker.trimBelow(stream, `${ms}-${Number(seq) + 1}`)).toBe(3);
      expect(await broker.lastId(stream)).toBe(ids[2]);
      expect(await broker.streamInfo(stream)).toEqual({
        length: 0,
        firstId: null,
        lastId: ids[2],
        maxDeletedId: ids[2],
      });
    });

    it('trimBelow removes exactly the entries below the id and records the highest removed', async () => {
      const stream = fresh('stream');
      const ids = await appendMany(stream, 6);
      expect(await broker.trimBelow(stream, '0-1')).toBe(0);
      expect(await broker.trimBelow(stream, ids[3] ?? '')).toBe(3);
      const rest = await broker.rangeAfter(stream, '0-0', 10);
      expect(rest.map((e) => e.id)).toEqual(ids.slice(3));
      expectTrimBound(await broker.streamInfo(stream), ids[2]);
      expect(await broker.trimBelow(stream, ids[3] ?? '')).toBe(0);
      expect(await broker.trimBelow(fresh('missing'), '1-0')).toBe(0);
    });
  });

  describe('consumer groups', () => {
    it('ensureGroup creates the stream, is idempotent and never rewinds a group', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      await broker.ensureGroup(stream, 'g');
      expect(await broker.streamInfo(stream)).toMatchObject({ length: 0, lastId: '0-0' });
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 0, lastDeliveredId: '0-0' });
      const ids = await appendMany(stream, 2);
      await broker.readGroup(stream, 'g', 'c1', { count: 10, mode: 'new' });
      await broker.ack(stream, 'g', ids);
      await broker.ensureGroup(stream, 'g');
      expect(await broker.readGroup(stream, 'g', 'c1', { count: 10, mode: 'new' })).toEqual([]);
    });

    it('a new group starts from the first entry already in the stream', async () => {
      const stream = fresh('stream');
      const ids = await appendMany(stream, 3);
      await broker.ensureGroup(stream, 'late');
      const got = await broker.readGroup(stream, 'late', 'c', { count: 10, mode: 'new' });
      expect(got.map((e) => e.id)).toEqual(ids);
    });

    it('readGroup `new` hands each entry to one consumer once; `own` re-reads only that consumer’s', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const ids = await appendMany(stream, 5);
      const one = await broker.readGroup(stream, 'g', 'c1', { count: 2, mode: 'new' });
      const two = await broker.readGroup(stream, 'g', 'c2', { count: 10, mode: 'new' });
      expect(one.map((e) => e.id)).toEqual(ids.slice(0, 2));
      expect(two.map((e) => e.id)).toEqual(ids.slice(2));
      expect(two[0]?.fields).toEqual({ n: '2' });
      expect(await broker.readGroup(stream, 'g', 'c1', { count: 10, mode: 'new' })).toEqual([]);

      const own = await broker.readGroup(stream, 'g', 'c1', { count: 10, mode: 'own' });
      expect(own.map((e) => e.id)).toEqual(ids.slice(0, 2));
      const after = await broker.readGroup(stream, 'g', 'c2', {
        count: 10,
        mode: 'own',
        afterId: ids[2] ?? '',
      });
      expect(after.map((e) => e.id)).toEqual(ids.slice(3));
      expect((await broker.readGroup(stream, 'g', 'c2', { count: 1, mode: 'own' })).map((e) => e.id)).toEqual(
        [ids[2]],
      );

      // Re-reading pending entries counts as another delivery, as in Redis.
      const pending = await broker.pending(stream, 'g', 10);
      expect(pending.map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
        [ids[0], 'c1', 2],
        [ids[1], 'c1', 2],
        [ids[2], 'c2', 2],
        [ids[3], 'c2', 2],
        [ids[4], 'c2', 2],
      ]);

      await broker.ack(stream, 'g', ids.slice(0, 2));
      expect(await broker.readGroup(stream, 'g', 'c1', { count: 10, mode: 'own' })).toEqual([]);
    });

    it('readGroup on a missing group fails with NOGROUP', async () => {
      const stream = fresh('stream');
      await expect(broker.readGroup(stream, 'nope', 'c', { count: 1, mode: 'new' })).rejects.toThrow(
        /NOGROUP/,
      );
      await appendMany(stream, 1);
      await expect(broker.readGroup(stream, 'nope', 'c', { count: 1, mode: 'own' })).rejects.toThrow(
        /NOGROUP/,
      );
    });

    it('a blocking read wakes as soon as an entry is appended, and times out empty otherwise', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const started = Date.now();
      const empty = await broker.readGroup(stream, 'g', 'c', { count: 10, mode: 'new', blockMs: 200 });
      expect(empty).toEqual([]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(150);

      const writer = await engine.peer(broker);
      const reading = broker.readGroup(stream, 'g', 'c', { count: 10, mode: 'new', blockMs: 10_000 });
      await sleep(50);
      const woke = Date.now();
      const appended = await writer.append(stream, { late: 'yes' });
      const got = await reading;
      expect(Date.now() - woke).toBeLessThan(2000);
      expect(got).toEqual([{ id: appended.appended ? appended.id : '', fields: { late: 'yes' } }]);
    });

    it('blocking reads started together on a fresh broker all get an answer', async () => {
      const own = await engine.open();
      try {
        const streams = [fresh('stream'), fresh('stream'), fresh('stream')];
        for (const stream of streams) await own.ensureGroup(stream, 'g');
        const reads = streams.map((stream) =>
          own.readGroup(stream, 'g', 'c', { count: 10, mode: 'new', blockMs: 100 }),
        );
        await expect(Promise.all(reads)).resolves.toEqual([[], [], []]);
      } finally {
        await own.close();
      }
    });

    it('ack removes entries from pending and counts only what was pending', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const ids = await appendMany(stream, 3);
      await broker.readGroup(stream, 'g', 'c', { count: 10, mode: 'new' });
      expect(await broker.ack(stream, 'g', [])).toBe(0);
      expect(await broker.ack(stream, 'g', [ids[0] ?? '', ids[1] ?? ''])).toBe(2);
      expect(await broker.ack(stream, 'g', [ids[0] ?? ''])).toBe(0);
      expect((await broker.pending(stream, 'g', 10)).map((p) => p.id)).toEqual([ids[2]]);
    });

    it('pending lists entries oldest first with consumer, deliveries and a growing idle time', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const ids = await appendMany(stream, 4);
      await broker.readGroup(stream, 'g', 'c1', { count: 1, mode: 'new' });
      await broker.readGroup(stream, 'g', 'c2', { count: 3, mode: 'new' });
      await sleep(60);
      const pending = await broker.pending(stream, 'g', 3);
      expect(pending.map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
        [ids[0], 'c1', 1],
        [ids[1], 'c2', 1],
        [ids[2], 'c2', 1],
      ]);
      for (const p of pending) {
        expect(p.idleMs).toBeGreaterThanOrEqual(50);
        expect(p.idleMs).toBeLessThan(10_000);
      }
      await expect(broker.pending(fresh('missing'), 'g', 10)).rejects.toThrow(/NOGROUP/);
      await expect(broker.claimIdle(stream, 'missing', 'c', 0, 10)).rejects.toThrow(/NOGROUP/);
    });

    it('claimIdle takes over only entries idle long enough, counting one more delivery', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const ids = await appendMany(stream, 3);
      await broker.readGroup(stream, 'g', 'dead', { count: 3, mode: 'new' });
      expect(await broker.claimIdle(stream, 'g', 'alive', 60_000, 10)).toEqual([]);
      await sleep(80);
      const claimed = await broker.claimIdle(stream, 'g', 'alive', 50, 2);
      expect(claimed).toEqual([
        { id: ids[0], fields: { n: '0' } },
        { id: ids[1], fields: { n: '1' } },
      ]);
      const pending = await broker.pending(stream, 'g', 10);
      expect(pending.map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
        [ids[0], 'alive', 2],
        [ids[1], 'alive', 2],
        [ids[2], 'dead', 1],
      ]);
      // A claim resets the idle time: the same entries are not claimable again at once.
      expect((await broker.claimIdle(stream, 'g', 'other', 50, 10)).map((e) => e.id)).toEqual([ids[2]]);
      expect(
        (await broker.readGroup(stream, 'g', 'alive', { count: 10, mode: 'own' })).map((e) => e.id),
      ).toEqual(ids.slice(0, 2));
      expect(await broker.readGroup(stream, 'g', 'dead', { count: 10, mode: 'own' })).toEqual([]);
    });

    it('claimIdle drops entries trimmed away while pending instead of returning them', async () => {
      const stream = fresh('stream');
      await broker.ensureGroup(stream, 'g');
      const ids = await appendMany(stream, 3);
      await broker.readGroup(stream, 'g', 'dead', { count: 3, mode: 'new' });
      await broker.trimBelow(stream, ids[1] ?? '');
      await sleep(30);
      const claimed = await broker.claimIdle(stream, 'g', 'alive', 10, 10);
      expect(claimed.map((e) => e.id)).toEqual(ids.slice(1));
      expect((await broker.pending(stream, 'g', 10)).map((p) => p.id)).toEqual(ids.slice(1));
    });

    it('groupInfo reports lag and pending, and null for a missing stream or group', async () => {
      const stream = fresh('stream');
      expect(await broker.groupInfo(stream, 'g')).toBeNull();
      await broker.ensureGroup(stream, 'g');
      expect(await broker.groupInfo(stream, 'other')).toBeNull();
      const ids = await appendMany(stream, 5);
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 5, lastDeliveredId: '0-0' });
      await broker.readGroup(stream, 'g', 'c', { count: 2, mode: 'new' });
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 2, lag: 3, lastDeliveredId: ids[1] });
      await broker.ack(stream, 'g', ids.slice(0, 2));
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 3, lastDeliveredId: ids[1] });
      // Lag stays right after trimming delivered entries, and after trimming undelivered ones.
      await broker.trimBelow(stream, ids[1] ?? '');
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 3, lastDeliveredId: ids[1] });
      await broker.trimBelow(stream, ids[3] ?? '');
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 2, lastDeliveredId: ids[1] });
      await broker.trimBelow(stream, '99999999999999-0');
      expect(await broker.groupInfo(stream, 'g')).toEqual({ pending: 0, lag: 0, lastDeliveredId: ids[1] });
    });
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
      const [plain, hash, zset, stream] = [fresh('k'), fresh('h'), fresh('z'), fresh('s')];
      await broker.set(plain, 'v');
      await broker.hset(hash, 'f', 'v');
      await broker.zadd(zset, 1, 'm');
      await broker.append(stream, { a: '1' });
      expect(await broker.del()).toBe(0);
      expect(await broker.del(plain, hash, zset, stream, fresh('missing'))).toBe(4);
      expect(await broker.get(plain)).toBeNull();
      expect(await broker.hgetall(hash)).toEqual({});
      expect(await broker.zcard(zset)).toBe(0);
      expect(await broker.streamInfo(stream)).toMatchObject({ length: 0, lastId: '0-0' });
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

  describe('hashes', () => {
    it('hset, hget and hgetall', async () => {
      const key = fresh('hash');
      expect(await broker.hget(key, 'f')).toBeNull();
      expect(await broker.hgetall(key)).toEqual({});
      await broker.hset(key, 'a', '1');
      await broker.hset(key, 'b', '2');
      await broker.hset(key, 'a', '3');
      expect(await broker.hget(key, 'a')).toBe('3');
      expect(await broker.hgetall(key)).toEqual({ a: '3', b: '2' });
    });

    it('hdelIfPrefix deletes only while the value starts with `<prefix>|`', async () => {
      const key = fresh('hash');
      await broker.hset(key, 'm', '1700000000000-1|payload');
      expect(await broker.hdelIfPrefix(key, 'm', '1700000000000-2')).toBe(false);
      // A prefix of the id that is not the whole id must not match.
      expect(await broker.hdelIfPrefix(key, 'm', '1700000000000-')).toBe(false);
      expect(await broker.hdelIfPrefix(key, 'm', '1700000000000')).toBe(false);
      expect(await broker.hget(key, 'm')).toBe('1700000000000-1|payload');
      expect(await broker.hdelIfPrefix(key, 'm', '1700000000000-1')).toBe(true);
      expect(await broker.hget(key, 'm')).toBeNull();
      expect(await broker.hdelIfPrefix(key, 'm', '1700000000000-1')).toBe(false);
      expect(await broker.hdelIfPrefix(fresh('missing'), 'm', 'x')).toBe(false);
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
      const stream = fresh('stream');
      const hash = fresh('hash');
      const allowance = fresh('allowance');
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        calls.push(
          broker.zaddCapped(zset, `m${i}`, Date.now() + 60_000, { max: 1000, expireUpTo: Date.now() }),
        );
        calls.push(broker.append(stream, { n: String(i) }, { maxLen: 50 }));
        calls.push(broker.hset(hash, `f${i}`, `${i}-0|x`));
        calls.push(broker.hdelIfPrefix(hash, `f${i - 1}`, `${i - 1}-0`));
        calls.push(broker.hget(hash, 'missing'));
        calls.push(broker.spend([{ key: allowance, max: 100, windowMs: 60_000 }]));
        if (i % 3 === 0) calls.push(broker.refund([allowance]));
      }
      const results = await Promise.all(calls);
      expect(results.filter((r) => r === null).length).toBeGreaterThanOrEqual(300);
      expect(await broker.zcard(zset)).toBe(300);
      expect((await broker.streamInfo(stream)).length).toBe(50);
      expect(Object.keys(await broker.hgetall(hash))).toEqual(['f299']);
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
