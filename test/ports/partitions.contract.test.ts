import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { eventPartition } from '../../server/src/broker/keyspace.js';
import { SEQ_SLOT } from '../../server/src/broker/ports/message-log.js';
import type { Broker } from '../../server/src/broker/types.js';
import { collector } from '../support/collector.js';
import { type Engine, onBothEngines } from '../support/engines.js';

/**
 * A broker split into partitions (`REDIS_PARTITIONS`): each conversation's events, messages,
 * roster and queue entries in its own partition, under its own order of ids, and what must hold
 * in all of them (a session's revocation) held in each.
 */

const PARTITIONS = 3;
let counter = 0;
const fresh = (what: string) => `${what}-${++counter}`;

/** One new id in each partition, by partition. */
function onePerPartition(what: string): string[] {
  const found: (string | undefined)[] = Array.from({ length: PARTITIONS }, () => undefined);
  while (found.some((id) => id === undefined)) {
    const id = fresh(what);
    found[eventPartition(id, PARTITIONS)] ??= id;
  }
  return found as string[];
}

function draft(conversationId: string, senderId: string) {
  const id = fresh('message');
  return { id, conversationId, senderId, clientMessageId: null, body: `{"seq":${SEQ_SLOT},"id":"${id}"}` };
}

function contract(engine: Engine) {
  let broker: Broker;

  // Each test gets an empty broker of its own: it reads newest ids and queues.
  beforeEach(async () => {
    broker = await engine.open({ partitions: PARTITIONS, space: fresh('partitions') });
  });
  afterEach(async () => {
    await broker.close();
  });
  afterAll(async () => {
    await engine.cleanup();
  });

  it('keeps an order of ids per partition, each conversation’s events in its own', async () => {
    const { events } = broker;
    expect(events.partitions).toBe(PARTITIONS);
    expect(await events.newestIds()).toEqual(['0-0', '0-0', '0-0']);
    const conversations = onePerPartition('conversation');
    const ids: string[] = [];
    for (const conversation of conversations)
      ids.push(await events.toConversation(conversation, conversation));
    expect(await events.newestIds()).toEqual(ids);
    for (const [k, conversation] of conversations.entries()) {
      expect(await events.conversationAfter(conversation, '0-0', 10)).toEqual([
        { id: ids[k], payload: conversation },
      ]);
    }
  });

  it('puts a conversation’s marks in its partition’s inbox, a user’s own events in theirs, and publishes both on the user’s channel', async () => {
    const { events, bus } = broker;
    const conversations = onePerPartition('conversation');
    const user = fresh('user');
    const own = eventPartition(user, PARTITIONS);
    const box = collector();
    const stop = await bus.subscribe({ user }, box.push);
    const ownEvent = await events.toInbox(user, 'mine');
    const marks: string[] = [];
    for (const [k, conversationId] of conversations.entries()) {
      const id = await events.mark([user], { change: 'in', conversationId });
      marks.push(`${id}\n!in ${conversationId}`);
      const entries = await events.inboxAfter(user, k, '0-0', 10);
      expect(entries.filter((entry) => entry.mark)).toEqual([{ id, mark: { change: 'in', conversationId } }]);
      expect(entries.some((entry) => entry.payload === 'mine')).toBe(k === own);
    }
    expect((await events.inboxAfter(user, own, '0-0', 10)).map((entry) => entry.id)).toContain(ownEvent);
    expect((await box.waitFor(1 + PARTITIONS)).sort()).toEqual([`${ownEvent}\nmine`, ...marks].sort());
    await stop();
  });

  it('queues each conversation’s messages in its partition’s queue, announced in its order', async () => {
    const conversations = onePerPartition('conversation');
    const sent: string[] = [];
    for (const conversation of conversations) {
      await broker.messages.restoreSeq(conversation, 0);
      const message = draft(conversation, 'al');
      sent.push(message.id);
      expect(await broker.messages.appendNew(message, {}, `{"in":"${conversation}"}`)).toMatchObject({
        appended: true,
        seq: 1,
      });
    }
    expect(broker.queues).toHaveLength(broker.engine === 'memory' ? 1 : PARTITIONS);
    const queued = await Promise.all(
      broker.queues.map(async (queue) => {
        await queue.prepare();
        return (await queue.readNew('reader', 10)).map(
          (entry) => (JSON.parse(entry.fields.m ?? '{}') as { id: string }).id,
        );
      }),
    );
    // On Redis each partition has its queue, with its conversation's message alone; the
    // in-process engine has no slots to spread and keeps one.
    if (broker.engine === 'redis') expect(queued).toEqual(sent.map((id) => [id]));
    else expect(queued).toEqual([sent]);
    for (const [k, conversation] of conversations.entries()) {
      const [event] = await broker.events.conversationAfter(conversation, '0-0', 1);
      expect(event?.payload).toBe(`{"in":"${conversation}"}`);
      expect((await broker.events.newestIds())[k]).toBe(event?.id);
      expect(await broker.messages.pendingMessage(sent[k] ?? '')).toContain(sent[k]);
    }
  });

  it('refuses a revoked session’s sends in every partition', async () => {
    const conversations = onePerPartition('conversation');
    const session = { userId: fresh('user'), sessionId: fresh('session'), issuedAt: Date.now() - 1_000 };
    for (const conversation of conversations) await broker.messages.restoreSeq(conversation, 0);
    await broker.sessions.revokeSession(session.sessionId, 60_000);
    for (const conversation of conversations) {
      expect(await broker.messages.appendNew(draft(conversation, session.userId), { session }, null)).toEqual(
        {
          refused: 'revoked',
        },
      );
    }
    const later = { ...session, sessionId: fresh('session') };
    await broker.sessions.revokeUserBefore(session.userId, Date.now(), 60_000);
    for (const conversation of conversations) {
      expect(
        await broker.messages.appendNew(draft(conversation, session.userId), { session: later }, null),
      ).toEqual({ refused: 'revoked' });
    }
  });
}

await onBothEngines('Broker split into partitions', contract);
