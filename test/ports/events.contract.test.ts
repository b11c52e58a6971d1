import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventPartition } from '../../server/src/broker/keyspace.js';
import { type EventBus, type EventLog, markText } from '../../server/src/broker/ports/events.js';
import { type Broker, compareStreamIds, STREAM_ID } from '../../server/src/broker/types.js';
import { collector } from '../support/collector.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
/** An id of its own per use, so tests never share a log or a channel. */
const fresh = (what: string) => `${what}-${++counter}`;

/** The item at `index` (from the end when negative), which the test knows is there. */
function nth<T>(list: readonly T[], index: number): T {
  const item = list.at(index);
  if (item === undefined) throw new Error(`no item at ${index}`);
  return item;
}

/** How many events each log keeps in this suite: small, so trimming is quick to reach. */
const LOG_LENGTH = 5;

function contract(engine: Engine) {
  let broker: Broker;
  let events: EventLog;
  let bus: EventBus;
  /** A user's own order, where their inbox events go, or a conversation's, with its marks. */
  const order = (id: string) => eventPartition(id, events.partitions);
  const inboxOf = (user: string, after: string, count: number, partition = order(user)) =>
    events.inboxAfter(user, partition, after, count);

  beforeAll(async () => {
    broker = await engine.open({ eventLogLength: LOG_LENGTH });
    events = broker.events;
    bus = broker.bus;
  });
  afterAll(async () => {
    await broker?.close();
    await engine.cleanup();
  });

  describe('the bus', () => {
    it('delivers each message to every subscriber of the channel, across instances, and to no other channel', async () => {
      const user = fresh('user');
      const other = await engine.peer(broker);
      const first = collector();
      const second = collector();
      const elsewhere = collector();
      const unsubscribe = [
        await bus.subscribe({ user }, first.push),
        await other.bus.subscribe({ user }, second.push),
        // Same id, another kind of channel.
        await bus.subscribe({ conversation: user }, elsewhere.push),
      ];
      await bus.publish({ user }, 'one');
      await other.bus.publish({ user }, 'two');
      expect(await first.waitFor(2)).toEqual(['one', 'two']);
      expect(await second.waitFor(2)).toEqual(['one', 'two']);
      expect(elsewhere.messages).toEqual([]);
      for (const stop of unsubscribe) await stop();
    });

    it('stops delivering to a subscription once unsubscribed, leaving the others on the channel', async () => {
      const channel = { instance: fresh('instance'), partition: 0 };
      const kept = collector();
      const dropped = collector();
      const stopKept = await bus.subscribe(channel, kept.push);
      const stopDropped = await bus.subscribe(channel, dropped.push);
      await bus.publish(channel, 'before');
      await dropped.waitFor(1);
      await stopDropped();
      await bus.publish(channel, 'after');
      // Messages on one channel arrive in order: once "after" reached the kept subscriber, it
      // would also have reached the dropped one.
      expect(await kept.waitFor(2)).toEqual(['before', 'after']);
      expect(dropped.messages).toEqual(['before']);
      await stopKept();
      await bus.publish(channel, 'nobody listens');
    });

    it('treats the same handler subscribed twice as two subscriptions', async () => {
      const channel = { conversation: fresh('conversation') };
      const box = collector();
      const stopOne = await bus.subscribe(channel, box.push);
      const stopTwo = await bus.subscribe(channel, box.push);
      await bus.publish(channel, 'a');
      expect(await box.waitFor(2)).toEqual(['a', 'a']);
      await stopOne();
      const marker = collector();
      const stopMarker = await bus.subscribe(channel, marker.push);
      await bus.publish(channel, 'b');
      // The marker subscribed last, so once it has "b" every earlier subscription has it too.
      await marker.waitFor(1);
      expect(box.messages).toEqual(['a', 'a', 'b']);
      await stopTwo();
      await stopMarker();
    });

    it('removes a subscription once, however often its unsubscribe is called', async () => {
      const channel = { conversation: fresh('conversation') };
      const box = collector();
      const stopOne = await bus.subscribe(channel, box.push);
      const stopTwo = await bus.subscribe(channel, box.push);
      await stopOne();
      await stopOne();
      await bus.publish(channel, 'still here');
      expect(await box.waitFor(1)).toEqual(['still here']);
      await stopTwo();
      // Unsubscribed now, from the last of its subscriptions: a marker on the same channel
      // arrives alone.
      const marker = collector();
      const stopMarker = await bus.subscribe(channel, marker.push);
      await bus.publish(channel, 'marker');
      await marker.waitFor(1);
      expect(box.messages).toEqual(['still here']);
      await stopMarker();
    });

    it('publishes one message on each of several channels, once each, across instances', async () => {
      const other = await engine.peer(broker);
      const boxes = Array.from({ length: 12 }, () => ({ user: fresh('user'), box: collector() }));
      const bystander = collector();
      const stops = await Promise.all([
        ...boxes.map(({ user, box }, i) => (i % 2 === 0 ? bus : other.bus).subscribe({ user }, box.push)),
        bus.subscribe({ user: fresh('user') }, bystander.push),
      ]);
      const [twice, marked] = [nth(boxes, 0), nth(boxes, 1)];
      // A channel named twice gets the message twice, as two publishes would give it.
      await bus.publishEach([...boxes.map(({ user }) => ({ user })), { user: twice.user }], 'online');
      await bus.publishEach([], 'to nobody');
      for (const { box } of boxes) {
        const expected = box === twice.box ? ['online', 'online'] : ['online'];
        expect([...(await box.waitFor(expected.length))]).toEqual(expected);
      }
      // A marker published after on one of them arrives after the message, and alone.
      await bus.publishEach([{ user: marked.user }], 'marker');
      expect([...(await marked.box.waitFor(2))]).toEqual(['online', 'marker']);
      expect(bystander.messages).toEqual([]);
      for (const stop of stops) await stop();
    });

    it('publishes on more channels than one call of the engine takes, each once', async () => {
      const users = Array.from({ length: 1_201 }, () => fresh('user'));
      const got = new Map<string, string[]>();
      const box = collector();
      const stops = await Promise.all(
        users.map((user) =>
          bus.subscribe({ user }, (message) => {
            got.set(user, [...(got.get(user) ?? []), message]);
            box.push(user);
          }),
        ),
      );
      await bus.publishEach(
        users.map((user) => ({ user })),
        'many',
      );
      await box.waitFor(users.length);
      expect(users.filter((user) => got.get(user)?.join() !== 'many')).toEqual([]);
      for (const stop of stops) await stop();
    });

    it('carries revocations to every instance', async () => {
      const other = await engine.peer(broker);
      const box = collector();
      const stop = await other.bus.subscribe({ revocations: true }, box.push);
      await bus.publish({ revocations: true }, 'revoked');
      expect(await box.waitFor(1)).toEqual(['revoked']);
      await stop();
    });
  });

  describe('the logs', () => {
    it('writes a conversation event once, under a new id, and publishes `<id>\\n<payload>` on its channel alone', async () => {
      const conversation = fresh('conversation');
      const box = collector();
      const others = collector();
      const stops = [
        await bus.subscribe({ conversation }, box.push),
        await bus.subscribe({ user: conversation }, others.push),
      ];
      const id = await events.toConversation(conversation, 'hello\nworld');
      expect(id).toMatch(STREAM_ID);
      expect(await events.conversationAfter(conversation, '0-0', 10)).toEqual([
        { id, payload: 'hello\nworld' },
      ]);
      expect(await inboxOf(conversation, '0-0', 10)).toEqual([]);
      expect((await events.newestIds())[order(conversation)]).toBe(id);
      expect(await box.waitFor(1)).toEqual([`${id}\nhello\nworld`]);
      // A marker on the same channel: once it arrived, nothing else was on its way.
      const marker = await events.toConversation(conversation, 'marker');
      expect(await box.waitFor(2)).toEqual([`${id}\nhello\nworld`, `${marker}\nmarker`]);
      expect(others.messages).toEqual([]);
      for (const stop of stops) await stop();
    });

    it('writes a user’s own event into their inbox and on their channel', async () => {
      const user = fresh('user');
      const box = collector();
      const stop = await bus.subscribe({ user }, box.push);
      const id = await events.toInbox(user, '{"for":"me"}');
      expect(await inboxOf(user, '0-0', 10)).toEqual([{ id, payload: '{"for":"me"}' }]);
      expect(await box.waitFor(1)).toEqual([`${id}\n{"for":"me"}`]);
      await stop();
    });

    it('marks a membership change in every inbox under one id, once per user, and publishes the mark', async () => {
      const [al, bo] = [fresh('user'), fresh('user')];
      const conversation = fresh('conversation');
      const boxes = [collector(), collector()];
      const stops = [
        await bus.subscribe({ user: al }, nth(boxes, 0).push),
        await bus.subscribe({ user: bo }, nth(boxes, 1).push),
      ];
      const mark = { change: 'in' as const, conversationId: conversation };
      const id = await events.mark([al, bo, al], mark);
      const inOrder = order(conversation);
      for (const user of [al, bo]) expect(await inboxOf(user, '0-0', 10, inOrder)).toEqual([{ id, mark }]);
      for (const box of boxes) expect(await box.waitFor(1)).toEqual([`${id}\n${markText(mark)}`]);
      const out = { change: 'out' as const, conversationId: conversation };
      const second = await events.mark([bo], out);
      expect(await inboxOf(bo, id, 10, inOrder)).toEqual([{ id: second, mark: out }]);
      expect(await inboxOf(al, id, 10, inOrder)).toEqual([]);
      for (const stop of stops) await stop();
    });

    it('gives every log one order, whatever log each event goes to, with one partition', async () => {
      const [a, b] = [fresh('conversation'), fresh('conversation')];
      const user = fresh('user');
      // Concurrent writes: the order is whatever the engine decides, but one order for all.
      const written = await Promise.all([
        events.toConversation(a, '1'),
        events.toConversation(b, '2'),
        events.toInbox(user, '3'),
        events.mark([user], { change: 'in', conversationId: a }),
        events.toConversation(a, '5'),
        events.toConversation(b, '6'),
      ]);
      expect(new Set(written).size).toBe(written.length);
      const ids = async (page: Promise<{ id: string }[]>) => (await page).map((entry) => entry.id);
      const sorted = (list: string[]) => [...list].sort(compareStreamIds);
      expect(await ids(events.conversationAfter(a, '0-0', 10))).toEqual(
        sorted([nth(written, 0), nth(written, 4)]),
      );
      expect(await ids(events.conversationAfter(b, '0-0', 10))).toEqual(
        sorted([nth(written, 1), nth(written, 5)]),
      );
      expect(await ids(inboxOf(user, '0-0', 10))).toEqual(sorted([nth(written, 2), nth(written, 3)]));
      expect(await events.newestIds()).toEqual([sorted(written).at(-1)]);
    });

    it('reads strictly after a position, a page at a time, from any id; a missing log is empty', async () => {
      const conversation = fresh('conversation');
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) ids.push(await events.toConversation(conversation, String(i)));
      const [first, second, third] = ids;
      expect((await events.conversationAfter(conversation, first ?? '', 2)).map((e) => e.id)).toEqual([
        second,
        third,
      ]);
      expect(await events.conversationAfter(conversation, nth(ids, 3), 10)).toEqual([]);
      expect((await events.conversationAfter(conversation, '0-1', 100)).map((e) => e.id)).toEqual(ids);
      expect(await events.conversationAfter(fresh('missing'), '0-0', 10)).toEqual([]);
      expect(await inboxOf(fresh('missing'), '0-0', 10)).toEqual([]);
    });

    it('keeps the newest events of a log and tells a reader whose position was trimmed away', async () => {
      const conversation = fresh('conversation');
      const log = { conversation };
      const ids: string[] = [];
      for (let i = 0; i < LOG_LENGTH; i++) ids.push(await events.toConversation(conversation, String(i)));
      // Full, nothing trimmed yet: every position resumes.
      expect(await events.trimmedAfter(log, '0-0')).toBe(false);
      for (let i = LOG_LENGTH; i < 3 * LOG_LENGTH; i++)
        ids.push(await events.toConversation(conversation, String(i)));
      const kept = await events.conversationAfter(conversation, '0-0', 100);
      expect(kept.map((e) => e.id)).toEqual(ids.slice(-LOG_LENGTH));
      // Before the last trimmed event: a gap. From the first kept one on: nothing is missing. (In
      // between, an engine may answer either way: Redis knows only where what is left begins.)
      expect(await events.trimmedAfter(log, '0-0')).toBe(true);
      expect(await events.trimmedAfter(log, nth(ids, -LOG_LENGTH - 2))).toBe(true);
      expect(await events.trimmedAfter(log, nth(ids, -LOG_LENGTH))).toBe(false);
      expect(await events.trimmedAfter(log, nth(ids, -1))).toBe(false);
      expect(await events.trimmedAfter({ inbox: fresh('missing'), partition: 0 }, '0-0')).toBe(false);
      // Inboxes keep the same number.
      const user = fresh('user');
      for (let i = 0; i < LOG_LENGTH + 2; i++) await events.toInbox(user, String(i));
      expect(await inboxOf(user, '0-0', 100)).toHaveLength(LOG_LENGTH);
      expect(await events.trimmedAfter({ inbox: user, partition: order(user) }, '0-0')).toBe(true);
    });

    it('claims one epoch for the deployment, the same for every instance and every call', async () => {
      const other = await engine.peer(broker);
      const [mine, theirs] = await Promise.all([events.epoch(), other.events.epoch()]);
      expect(mine).toMatch(/^[\w-]{6,}$/);
      expect(theirs).toBe(mine);
      expect(await events.epoch()).toBe(mine);
    });
  });
}

await onBothEngines('EventLog and EventBus contract', contract);
