import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import type { WorkQueue } from '../../server/src/broker/ports/queue.js';
import { type Broker, compareStreamIds } from '../../server/src/broker/types.js';
import { type Engine, onBothEngines } from '../support/engines.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let counter = 0;

function contract(engine: Engine) {
  let broker: Broker;
  let queue: WorkQueue;

  // Each test gets an empty queue of its own.
  beforeEach(async () => {
    broker = await engine.open({ space: `queue-${++counter}` });
    queue = broker.queues[0];
  });
  afterEach(async () => {
    await broker.close();
  });
  afterAll(async () => {
    await engine.cleanup();
  });

  async function addMany(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await broker.inspect.addQueueEntry({ n: String(i) }));
    return ids;
  }

  it('fails to read before the group is prepared', async () => {
    await expect(queue.readNew('c', 1)).rejects.toThrow(/NOGROUP/);
    await addMany(1);
    await expect(queue.readOwn('c', '0-0', 1)).rejects.toThrow(/NOGROUP/);
    expect(await queue.info()).toEqual({ length: 1, group: null });
  });

  it('prepare creates the queue and the group, is idempotent and never rewinds the group', async () => {
    await queue.prepare();
    await queue.prepare();
    expect(await queue.info()).toEqual({ length: 0, group: { pending: 0, lag: 0, lastDeliveredId: '0-0' } });
    const ids = await addMany(2);
    await queue.readNew('c1', 10);
    await queue.ack(ids);
    await queue.prepare();
    expect(await queue.readNew('c1', 10)).toEqual([]);
  });

  it('a new group starts from the first entry already queued', async () => {
    const ids = await addMany(3);
    await queue.prepare();
    expect((await queue.readNew('c', 10)).map((e) => e.id)).toEqual(ids);
  });

  it('hands each new entry to one consumer once; readOwn reads again only that consumer’s', async () => {
    await queue.prepare();
    const ids = await addMany(5);
    const one = await queue.readNew('c1', 2);
    const two = await queue.readNew('c2', 10);
    expect(one.map((e) => e.id)).toEqual(ids.slice(0, 2));
    expect(two.map((e) => e.id)).toEqual(ids.slice(2));
    expect(two[0]?.fields).toEqual({ n: '2' });
    expect(await queue.readNew('c1', 10)).toEqual([]);

    expect((await queue.readOwn('c1', '0-0', 10)).map((e) => e.id)).toEqual(ids.slice(0, 2));
    expect((await queue.readOwn('c2', ids[2] ?? '', 10)).map((e) => e.id)).toEqual(ids.slice(3));
    expect((await queue.readOwn('c2', '0-0', 1)).map((e) => e.id)).toEqual([ids[2]]);

    // Reading pending entries again counts as another delivery, as in Redis.
    const pending = await queue.pending(10);
    expect(pending.map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
      [ids[0], 'c1', 2],
      [ids[1], 'c1', 2],
      [ids[2], 'c2', 2],
      [ids[3], 'c2', 2],
      [ids[4], 'c2', 2],
    ]);
    await queue.ack(ids.slice(0, 2));
    expect(await queue.readOwn('c1', '0-0', 10)).toEqual([]);
  });

  it('a blocking read wakes as soon as an entry is queued, and times out empty otherwise', async () => {
    await queue.prepare();
    const started = Date.now();
    expect(await queue.readNew('c', 10, 200)).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);

    const writer = await engine.peer(broker);
    const reading = queue.readNew('c', 10, 10_000);
    await sleep(50);
    const woke = Date.now();
    const id = await writer.inspect.addQueueEntry({ late: 'yes' });
    expect(await reading).toEqual([{ id, fields: { late: 'yes' } }]);
    expect(Date.now() - woke).toBeLessThan(2000);
  });

  it('blocking reads started together on a fresh broker all get an answer', async () => {
    await queue.prepare();
    const reads = [1, 2, 3].map((n) => queue.readNew(`c${n}`, 10, 100));
    await expect(Promise.all(reads)).resolves.toEqual([[], [], []]);
  });

  it('ack removes entries from pending and counts only what was pending', async () => {
    await queue.prepare();
    const ids = await addMany(3);
    await queue.readNew('c', 10);
    expect(await queue.ack([])).toBe(0);
    expect(await queue.ack([ids[0] ?? '', ids[1] ?? ''])).toBe(2);
    expect(await queue.ack([ids[0] ?? ''])).toBe(0);
    expect((await queue.pending(10)).map((p) => p.id)).toEqual([ids[2]]);
  });

  it('lists pending entries oldest first with consumer, deliveries and a growing idle time', async () => {
    await queue.prepare();
    const ids = await addMany(4);
    await queue.readNew('c1', 1);
    await queue.readNew('c2', 3);
    await sleep(60);
    const pending = await queue.pending(3);
    expect(pending.map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
      [ids[0], 'c1', 1],
      [ids[1], 'c2', 1],
      [ids[2], 'c2', 1],
    ]);
    for (const p of pending) expect(p.idleMs).toBeGreaterThanOrEqual(50);
  });

  it('claimIdle takes over only entries idle long enough, counting one more delivery', async () => {
    await queue.prepare();
    const ids = await addMany(2);
    await queue.readNew('gone', 1);
    // Idle times of hundreds of milliseconds: a stalled machine must not make the busy entry idle.
    await sleep(600);
    await queue.readNew('busy', 1);
    const claimed = await queue.claimIdle('rescuer', 500, 10);
    expect(claimed).toEqual([{ id: ids[0], fields: { n: '0' } }]);
    expect((await queue.pending(10)).map((p) => [p.id, p.consumer, p.deliveries])).toEqual([
      [ids[0], 'rescuer', 2],
      [ids[1], 'busy', 1],
    ]);
    expect(await queue.claimIdle('rescuer', 60_000, 10)).toEqual([]);
  });

  it('claimIdle drops entries trimmed away while pending instead of returning them', async () => {
    await queue.prepare();
    const ids = await addMany(3);
    await queue.readNew('gone', 3);
    expect(await queue.trimBelow(ids[2] ?? '')).toBe(2);
    await sleep(30);
    expect((await queue.claimIdle('rescuer', 10, 10)).map((e) => e.id)).toEqual([ids[2]]);
    expect((await queue.pending(10)).map((p) => p.id)).toEqual([ids[2]]);
  });

  it('reports the length, and the group’s lag and pending entries', async () => {
    await addMany(3);
    expect(await queue.info()).toEqual({ length: 3, group: null });
    await queue.prepare();
    const [first] = await queue.readNew('c', 1);
    expect(await queue.info()).toEqual({
      length: 3,
      group: { pending: 1, lag: 2, lastDeliveredId: first?.id },
    });
  });

  it('trimBelow removes exactly the entries below the id', async () => {
    const ids = await addMany(6);
    expect(await queue.trimBelow('0-1')).toBe(0);
    expect(await queue.trimBelow(ids[3] ?? '')).toBe(3);
    expect((await broker.inspect.queueEntries('0-0', 10)).map((e) => e.id)).toEqual(ids.slice(3));
    expect(await queue.trimBelow(ids[3] ?? '')).toBe(0);
    expect((await queue.info()).length).toBe(3);
    // What is left reads on as before.
    await queue.prepare();
    expect((await queue.readNew('c', 10)).map((e) => e.id)).toEqual(ids.slice(3));
  });

  it('sets an entry aside with its reason and acknowledges it in one step', async () => {
    await queue.prepare();
    const [id] = await addMany(2);
    const [entry] = await queue.readNew('c', 1);
    if (!entry) throw new Error('nothing read');
    await queue.deadLetter(entry, 'unreadable');
    expect(await queue.pending(10)).toEqual([]);
    const dead = await queue.deadLetters(10);
    expect(dead.map((entry) => entry.fields)).toEqual([{ n: '0', entry: id, reason: 'unreadable' }]);
  });

  it('moves the oldest dead letters back into the queue as new entries with their own fields', async () => {
    await queue.prepare();
    const ids = await addMany(3);
    const read = await queue.readNew('c', 3);
    for (const entry of read) await queue.deadLetter(entry, `refused ${entry.fields.n ?? ''}`);
    const letters = await queue.deadLetters(10);
    expect(letters).toHaveLength(3);

    const first = await queue.requeueDeadLetters({ count: 2 });
    expect(first.map(({ id, entry }) => [id, entry])).toEqual([
      [letters[0]?.id, ids[0]],
      [letters[1]?.id, ids[1]],
    ]);
    // New entries, after every entry the queue had: read by the group like any other.
    for (const { requeued } of first) expect(compareStreamIds(requeued, ids[2] ?? '')).toBeGreaterThan(0);
    // `v`: the entry each was first queued as, the place of its change among the message's.
    const again = await queue.readNew('c', 10);
    expect(again).toEqual([
      { id: first[0]?.requeued, fields: { n: '0', v: ids[0] } },
      { id: first[1]?.requeued, fields: { n: '1', v: ids[1] } },
    ]);
    expect((await queue.deadLetters(10)).map((letter) => letter.id)).toEqual([letters[2]?.id]);

    // Set aside and moved back once more, an entry keeps its first place.
    const [retried] = again;
    if (!retried) throw new Error('nothing read');
    await queue.deadLetter(retried, 'refused again');
    await queue.ack(again.map((entry) => entry.id));
    const rest = await queue.requeueDeadLetters({ count: 10 });
    expect(rest.map(({ id, entry }) => [id, entry])).toEqual([
      [letters[2]?.id, ids[2]],
      [expect.any(String), retried.id],
    ]);
    expect((await queue.readNew('c', 10)).map((entry) => entry.fields)).toEqual([
      { n: '2', v: ids[2] },
      { n: '0', v: ids[0] },
    ]);
    expect(await queue.deadLetters(10)).toEqual([]);
    expect(await queue.requeueDeadLetters({ count: 10 })).toEqual([]);
  });

  it('moves one dead letter back by its id, leaving the others where they were', async () => {
    await queue.prepare();
    const ids = await addMany(3);
    for (const entry of await queue.readNew('c', 3)) await queue.deadLetter(entry, 'refused');
    const letters = await queue.deadLetters(10);
    const middle = letters[1]?.id ?? '';

    const moved = await queue.requeueDeadLetters({ id: middle });
    expect(moved.map(({ id, entry }) => [id, entry])).toEqual([[middle, ids[1]]]);
    expect(await queue.readNew('c', 10)).toEqual([{ id: moved[0]?.requeued, fields: { n: '1', v: ids[1] } }]);
    expect((await queue.deadLetters(10)).map((letter) => letter.id)).toEqual([
      letters[0]?.id,
      letters[2]?.id,
    ]);
    // Gone from the dead letters, or never there: nothing moves.
    expect(await queue.requeueDeadLetters({ id: middle })).toEqual([]);
    expect(await queue.requeueDeadLetters({ id: '1-0' })).toEqual([]);
    expect((await queue.deadLetters(10)).map((letter) => letter.id)).toEqual([
      letters[0]?.id,
      letters[2]?.id,
    ]);
  });

  it('releases a pending copy only while it is the one the written entry left', async () => {
    const messages = broker.messages;
    await messages.restoreSeq('c1', 0);
    const sent = await messages.appendNew(
      { id: 'm1', conversationId: 'c1', senderId: 'al', clientMessageId: null, body: 'first' },
      {},
      null,
    );
    if (!('appended' in sent)) throw new Error('not appended');
    const edited = await messages.appendEdit({ id: 'm1', conversationId: 'c1', body: 'edited' }, null);
    if (!('appended' in edited)) throw new Error('not appended');
    // The first entry is written: the copy is the edit's now, and stays.
    expect(await queue.release([{ entryId: sent.entryId, conversationId: 'c1', messageId: 'm1' }])).toBe(0);
    expect(await messages.pendingOf('c1')).toEqual(['edited']);
    expect(await messages.pendingEntry('m1')).toBe(edited.entryId);
    expect(await queue.release([{ entryId: edited.entryId, conversationId: 'c1', messageId: 'm1' }])).toBe(1);
    expect(await messages.pendingOf('c1')).toEqual([]);
    expect(await messages.pendingMessage('m1')).toBeNull();
    expect(await messages.pendingEntry('m1')).toBeNull();
    expect(await queue.release([])).toBe(0);
  });
}

await onBothEngines('WorkQueue contract', contract);
