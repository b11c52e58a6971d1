import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Broker, compareStreamIds, STREAM_ID, type StreamInfo } from '../server/src/broker/types.js';
import { type Engine, onBothEngines } from './support/engines.js';

/**
 * One contract, two engines: everything Parley relies on from the broker behaves the same on
 * the in-process engine and on Redis. Each port has its own suite besides (`test/ports/`).
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Collects messages and lets a test wait for the n-th one without guessing a delay. */
function inbox() {
  const messages: string[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  return {
    messages,
    push: (message: string) => {
      messages.push(message);
      for (const waiter of [...waiters]) {
        if (messages.length >= waiter.count) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    },
    async waitFor(count: number, timeoutMs = 3000): Promise<string[]> {
      if (messages.length < count) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`expected ${count} messages, got ${messages.length}`)),
            timeoutMs,
          );
          waiters.push({
            count,
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
          });
        });
      }
      return messages;
    },
  };
}

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

  describe('pub/sub', () => {
    it('delivers each message to every subscriber of the channel, across instances, and to no other channel', async () => {
      const channel = fresh('chan');
      const other = await engine.peer(broker);
      const first = inbox();
      const second = inbox();
      const elsewhere = inbox();
      const unsubscribe = [
        await broker.subscribe(channel, first.push),
        await other.subscribe(channel, second.push),
        await broker.subscribe(fresh('chan'), elsewhere.push),
      ];
      await broker.publish(channel, 'one');
      await other.publish(channel, 'two');
      expect(await first.waitFor(2)).toEqual(['one', 'two']);
      expect(await second.waitFor(2)).toEqual(['one', 'two']);
      expect(elsewhere.messages).toEqual([]);
      for (const stop of unsubscribe) await stop();
    });

    it('stops delivering to a subscription once unsubscribed, leaving the others on the channel', async () => {
      const channel = fresh('chan');
      const kept = inbox();
      const dropped = inbox();
      const stopKept = await broker.subscribe(channel, kept.push);
      const stopDropped = await broker.subscribe(channel, dropped.push);
      await broker.publish(channel, 'before');
      await dropped.waitFor(1);
      await stopDropped();
      await broker.publish(channel, 'after');
      // Messages on one channel arrive in order: once "after" reached the kept subscriber, it
      // would also have reached the dropped one.
      expect(await kept.waitFor(2)).toEqual(['before', 'after']);
      expect(dropped.messages).toEqual(['before']);
      await stopKept();
      await broker.publish(channel, 'nobody listens');
    });

    it('treats the same handler subscribed twice as two subscriptions', async () => {
      const channel = fresh('chan');
      const box = inbox();
      const stopOne = await broker.subscribe(channel, box.push);
      const stopTwo = await broker.subscribe(channel, box.push);
      await broker.publish(channel, 'a');
      expect(await box.waitFor(2)).toEqual(['a', 'a']);
      await stopOne();
      const marker = inbox();
      const stopMarker = await broker.subscribe(channel, marker.push);
      await broker.publish(channel, 'b');
      // The marker subscribed last, so once it has "b" every earlier subscription has it too.
      await marker.waitFor(1);
      expect(box.messages).toEqual(['a', 'a', 'b']);
      await stopTwo();
      await stopMarker();
    });
  });

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

    it('append with `fanOut` writes the event to every target and publishes it in the same step, or not at all', async () => {
      const stream = fresh('stream');
      const counter = fresh('seq');
      const idStream = fresh('ids');
      const logs = [fresh('log'), fresh('log')];
      const channel = fresh('chan');
      const slot = '\u0000n\u0000';
      const box = inbox();
      const stop = await broker.subscribe(channel, box.push);
      const claim = fresh('claim');
      const options = (value: string) => ({
        counter: { key: counter, slot },
        unique: { key: claim, value, ttlMs: 10_000 },
        fanOut: {
          idStream,
          streams: logs,
          fields: { e: `{"seq":${slot},"text":"${slot} stays"}` },
          maxLen: 100,
          publish: { channels: [channel], message: `{"seq":${slot}}` },
        },
      });
      // No counter: nothing is appended, so no event either.
      expect(await broker.append(stream, { m: slot }, options('first'))).toEqual({
        appended: false,
        missingCounter: true,
      });
      for (const log of logs) expect(await broker.rangeAfter(log, '0-0', 10)).toEqual([]);
      await broker.set(counter, '6', { ttlMs: 60_000 });
      const result = await broker.append(stream, { m: slot }, options('first'));
      expect(result).toMatchObject({ appended: true, counter: 7 });
      const [entry] = await broker.rangeAfter(logs[0] ?? '', '0-0', 10);
      expect(entry?.fields).toEqual({ e: '{"seq":7,"text":"\u0000n\u0000 stays"}' });
      for (const log of logs) expect(await broker.rangeAfter(log, '0-0', 10)).toEqual([entry]);
      expect(await box.waitFor(1)).toEqual([`${entry?.id}\n{"seq":7}`]);
      // A held claim: nothing appended, no event written or published.
      expect(await broker.append(stream, { m: slot }, options('second'))).toEqual({
        appended: false,
        existing: 'first',
      });
      for (const log of logs) expect(await broker.rangeAfter(log, '0-0', 10)).toHaveLength(1);
      // Event ids come from the id stream, in the same order as appendToMany's.
      const later = await broker.appendToMany(idStream, logs, { e: 'later' }, { maxLen: 100 });
      expect(compareStreamIds(entry?.id ?? '', later)).toBe(-1);
      expect(box.messages).toHaveLength(1);
      // A fan-out entry needs a field, checked before anything is written.
      await expect(
        broker.append(stream, { m: 'x' }, { fanOut: { idStream, streams: logs, fields: {}, maxLen: 100 } }),
      ).rejects.toThrow(/wrong number of arg/i);
      expect((await broker.streamInfo(stream)).length).toBe(1);
      await stop();
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
      await expect(broker.appendToMany(fresh('ids'), [stream], {}, { maxLen: 10 })).rejects.toThrow(
        /wrong number of arg/i,
      );
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

  describe('appendToMany', () => {
    it('writes one entry under one id to every stream and publishes `<id>\\n<message>`', async () => {
      const idStream = fresh('ids');
      const streams = [fresh('log'), fresh('log'), fresh('log')];
      const channel = fresh('chan');
      const box = inbox();
      const stop = await broker.subscribe(channel, box.push);
      const id = await broker.appendToMany(
        idStream,
        streams,
        { e: 'payload' },
        {
          maxLen: 100,
          publish: { channels: [channel], message: 'hello\nworld' },
        },
      );
      expect(id).toMatch(STREAM_ID);
      for (const stream of streams) {
        expect(await broker.rangeAfter(stream, '0-0', 10)).toEqual([{ id, fields: { e: 'payload' } }]);
      }
      expect(await box.waitFor(1)).toEqual([`${id}\nhello\nworld`]);
      // Without `publish`, nothing goes on the channel.
      const quiet = await broker.appendToMany(idStream, streams, { e: 'quiet' }, { maxLen: 100 });
      const marker = await broker.appendToMany(
        idStream,
        streams,
        { e: 'm' },
        {
          maxLen: 100,
          publish: { channels: [channel], message: 'marker' },
        },
      );
      expect(await box.waitFor(2)).toEqual([`${id}\nhello\nworld`, `${marker}\nmarker`]);
      expect(compareStreamIds(id, quiet)).toBe(-1);
      await stop();
    });

    it('gives every stream one global order, whatever set of streams each entry goes to', async () => {
      const idStream = fresh('ids');
      const [a, b, c] = [fresh('log'), fresh('log'), fresh('log')];
      const targets = [[a, b], [b, c], [a, c], [a, b, c], [c], [b]] as const;
      const written: { id: string; to: readonly string[] }[] = [];
      // Concurrent calls: the order is whatever the engine decides, but one order for all.
      const ids = await Promise.all(
        targets.map((to, n) => broker.appendToMany(idStream, [...to], { n: String(n) }, { maxLen: 100 })),
      );
      ids.forEach((id, n) => written.push({ id, to: targets[n] ?? [] }));
      const sorted = [...written].sort((x, y) => compareStreamIds(x.id, y.id));
      expect(new Set(ids).size).toBe(ids.length);
      for (const stream of [a, b, c]) {
        const got = await broker.rangeAfter(stream, '0-0', 100);
        expect(got.map((e) => e.id)).toEqual(sorted.filter((w) => w.to.includes(stream)).map((w) => w.id));
      }
      // The id stream keeps only the newest id, which is the highest one handed out.
      const info = await broker.streamInfo(idStream);
      expect(info.length).toBe(1);
      expect(info.lastId).toBe(sorted[sorted.length - 1]?.id);
    });

    it('trims each stream to about maxLen and reports the highest trimmed id', async () => {
      const idStream = fresh('ids');
      const log = fresh('log');
      const ids: string[] = [];
      for (let i = 0; i < 400; i++) {
        ids.push(await broker.appendToMany(idStream, [log], { n: String(i) }, { maxLen: 5 }));
      }
      const info = await broker.streamInfo(log);
      expect(info.length).toBeGreaterThanOrEqual(5);
      expect(info.length).toBeLessThan(400);
      const firstKept = ids.length - info.length;
      expect(info.firstId).toBe(ids[firstKept]);
      expectTrimBound(info, ids[firstKept - 1]);
      // A reader that resumes at or after maxDeletedId has no gap; before it, it would.
      const resumed = await broker.rangeAfter(log, info.maxDeletedId, 1000);
      expect(resumed.map((e) => e.id)).toEqual(ids.slice(firstKept));
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
      const [plain, hash, stream] = [fresh('k'), fresh('h'), fresh('s')];
      await broker.set(plain, 'v');
      await broker.hset(hash, 'f', 'v');
      await broker.append(stream, { a: '1' });
      expect(await broker.del()).toBe(0);
      expect(await broker.del(plain, hash, stream, fresh('missing'))).toBe(3);
      expect(await broker.get(plain)).toBeNull();
      expect(await broker.hgetall(hash)).toEqual({});
      expect(await broker.streamInfo(stream)).toMatchObject({ length: 0, lastId: '0-0' });
      expect(await broker.ttlMs(plain)).toBe(-2);
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

  describe('concurrency', () => {
    it('answers a burst of concurrent script calls and plain commands, each with its own result', async () => {
      const stream = fresh('stream');
      const hash = fresh('hash');
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        calls.push(broker.append(stream, { n: String(i) }, { maxLen: 50 }));
        calls.push(broker.hset(hash, `f${i}`, `${i}-0|x`));
        calls.push(broker.hdelIfPrefix(hash, `f${i - 1}`, `${i - 1}-0`));
        calls.push(broker.hget(hash, 'missing'));
      }
      const results = await Promise.all(calls);
      expect(results.filter((r) => r === null).length).toBeGreaterThanOrEqual(300);
      expect((await broker.streamInfo(stream)).length).toBe(50);
      expect(Object.keys(await broker.hgetall(hash))).toEqual(['f299']);
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
