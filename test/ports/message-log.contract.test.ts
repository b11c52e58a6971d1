import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { type MessageLog, type NewMessage, SEQ_SLOT } from '../../server/src/broker/ports/message-log.js';
import type { Broker } from '../../server/src/broker/types.js';
import { collector } from '../support/collector.js';
import { type Engine, onBothEngines } from '../support/engines.js';

let counter = 0;
const fresh = (what: string) => `${what}-${++counter}`;

/** A new message of `senderId` in `conversationId`, its body holding the seq's stand-in. */
function draft(conversationId: string, senderId: string, clientMessageId: string | null = null): NewMessage {
  const id = fresh('message');
  return { id, conversationId, senderId, clientMessageId, body: `{"seq":${SEQ_SLOT},"id":"${id}"}` };
}

function contract(engine: Engine) {
  let broker: Broker;
  let log: MessageLog;

  // Each test gets an empty broker of its own: it counts queue entries.
  beforeEach(async () => {
    broker = await engine.open({ space: fresh('log') });
    log = broker.messages;
  });
  afterEach(async () => {
    await broker.close();
  });
  afterAll(async () => {
    await engine.cleanup();
  });

  /** What the step wrote: queue entries, the conversation's pending copies and its events. */
  async function written(conversationId: string) {
    return {
      queued: (await broker.inspect.queueEntries('0-0', 100)).map((entry) => entry.fields),
      pending: await log.pendingOf(conversationId),
      events: (await broker.events.conversationAfter(conversationId, '0-0', 100)).map((e) => e.payload),
    };
  }

  it('without a seq counter writes nothing and says so; restoring it never overwrites one', async () => {
    const conversation = fresh('conversation');
    const message = draft(conversation, 'al', 'client-1');
    expect(await log.seq(conversation)).toBeNull();
    expect(await log.appendNew(message, {}, `{"seq":${SEQ_SLOT}}`)).toEqual({ seqMissing: true });
    expect(await written(conversation)).toEqual({ queued: [], pending: [], events: [] });
    await log.restoreSeq(conversation, 6);
    await log.restoreSeq(conversation, 2);
    expect(await log.seq(conversation)).toBe(6);
    // The claim was not taken by the refused attempt: the same client id appends now.
    expect(await log.appendNew(message, {}, null)).toMatchObject({ appended: true, seq: 7 });
  });

  it('appends under the next seq, filled into the body and the announcement, with the copy and the event in the same step', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 41);
    const box = collector();
    const stop = await broker.bus.subscribe({ conversation }, box.push);
    const message = draft(conversation, 'al');
    const result = await log.appendNew(message, {}, `{"seq":${SEQ_SLOT},"text":"${SEQ_SLOT} stays"}`);
    if (!('appended' in result)) throw new Error(`not appended: ${JSON.stringify(result)}`);
    expect(result.seq).toBe(42);
    const body = `{"seq":42,"id":"${message.id}"}`;
    const event = `{"seq":42,"text":"${SEQ_SLOT} stays"}`;
    expect(await written(conversation)).toEqual({
      queued: [{ op: 'create', m: body }],
      pending: [body],
      events: [event],
    });
    expect(await log.pendingMessage(message.id)).toBe(body);
    expect(await log.pendingEntry(message.id)).toBe(result.entryId);
    expect(await log.seq(conversation)).toBe(42);
    const [logged] = await broker.events.conversationAfter(conversation, '0-0', 1);
    expect(await box.waitFor(1)).toEqual([`${logged?.id}\n${event}`]);
    await stop();
  });

  it('claims a clientMessageId once, per sender and conversation, and answers a repeat with the first message', async () => {
    const conversation = fresh('conversation');
    const other = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    await log.restoreSeq(other, 0);
    const first = draft(conversation, 'al', 'retry-me');
    expect(await log.appendNew(first, {}, null)).toMatchObject({ appended: true, seq: 1 });
    const again = draft(conversation, 'al', 'retry-me');
    expect(await log.appendNew(again, {}, 'event')).toEqual({
      duplicate: { conversationId: conversation, messageId: first.id },
    });
    // The repeat took no seq, queued nothing and announced nothing.
    expect(await log.seq(conversation)).toBe(1);
    expect((await written(conversation)).queued).toHaveLength(1);
    expect((await written(conversation)).events).toEqual([]);
    // Another sender, or another conversation, has ids of its own.
    expect(await log.appendNew(draft(conversation, 'bo', 'retry-me'), {}, null)).toMatchObject({ seq: 2 });
    expect(await log.appendNew(draft(other, 'al', 'retry-me'), {}, null)).toMatchObject({ seq: 1 });
    // Once the claim expires, the id is free again (PostgreSQL's key catches a late retry).
    expect(await broker.inspect.expireClaim('al', conversation, 'retry-me')).toBe(true);
    expect(await broker.inspect.expireClaim('al', conversation, 'retry-me')).toBe(false);
    expect(await log.appendNew(draft(conversation, 'al', 'retry-me'), {}, null)).toMatchObject({ seq: 3 });
  });

  it('refuses a sender the roster does not hold, or a conversation without a roster, writing nothing', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    expect(await log.appendNew(draft(conversation, 'al'), { roster: true }, 'e')).toEqual({
      refused: 'noRoster',
    });
    await broker.rosters.fill(conversation, ['bo'], null);
    expect(await log.appendNew(draft(conversation, 'al'), { roster: true }, 'e')).toEqual({
      refused: 'notMember',
    });
    expect(await written(conversation)).toEqual({ queued: [], pending: [], events: [] });
    expect(await log.appendNew(draft(conversation, 'bo'), { roster: true }, 'e')).toMatchObject({ seq: 1 });
    // Without the guard, the roster is not asked.
    expect(await log.appendNew(draft(conversation, 'al'), {}, null)).toMatchObject({ seq: 2 });
  });

  it('refuses a revoked session: its own mark, or its user’s set at or after it was issued', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    const session = { userId: fresh('user'), sessionId: fresh('session'), issuedAt: 1_000 };
    expect(await log.appendNew(draft(conversation, session.userId), { session }, null)).toMatchObject({
      seq: 1,
    });
    // A user-wide mark from before the token was issued does not refuse it.
    await broker.sessions.revokeUserBefore(session.userId, 999, 60_000);
    expect(await log.appendNew(draft(conversation, session.userId), { session }, null)).toMatchObject({
      seq: 2,
    });
    await broker.sessions.revokeUserBefore(session.userId, 1000, 60_000);
    expect(await log.appendNew(draft(conversation, session.userId), { session }, null)).toEqual({
      refused: 'revoked',
    });
    const other = { ...session, issuedAt: 2_000, sessionId: fresh('session') };
    expect(await log.appendNew(draft(conversation, session.userId), { session: other }, null)).toMatchObject({
      seq: 3,
    });
    await broker.sessions.revokeSession(other.sessionId, 60_000);
    expect(await log.appendNew(draft(conversation, session.userId), { session: other }, null)).toEqual({
      refused: 'revoked',
    });
    expect((await written(conversation)).queued).toHaveLength(3);
  });

  it('counts sends against the limit, even refused ones, but not those refused by an earlier guard', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    const sendLimit = { max: 2, windowMs: 60_000 };
    const session = { userId: 'al', sessionId: fresh('session'), issuedAt: 0 };
    await broker.sessions.revokeSession(session.sessionId, 60_000);
    // Revoked first: not counted.
    expect(await log.appendNew(draft(conversation, 'al'), { session, sendLimit }, null)).toEqual({
      refused: 'revoked',
    });
    const claimed = draft(conversation, 'al', 'once');
    expect(await log.appendNew(claimed, { sendLimit }, null)).toMatchObject({ seq: 1 });
    // A duplicate is counted: the limit comes before the claim.
    expect(await log.appendNew(draft(conversation, 'al', 'once'), { sendLimit }, null)).toMatchObject({
      duplicate: { messageId: claimed.id },
    });
    expect(await log.appendNew(draft(conversation, 'al'), { sendLimit }, null)).toEqual({
      refused: 'limited',
    });
    // Another sender has a count of their own.
    expect(await log.appendNew(draft(conversation, 'bo'), { sendLimit }, null)).toMatchObject({ seq: 2 });
    expect((await written(conversation)).queued).toHaveLength(2);
  });

  it('refuses an edit once the message is deleted, and deletes it once', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    const message = draft(conversation, 'al');
    await log.appendNew(message, {}, null);
    const change = (body: string) => ({ id: message.id, conversationId: conversation, body });
    const edit = await log.appendEdit(change('edited'), 'updated');
    expect(edit).toMatchObject({ appended: true });
    expect(await log.pendingMessage(message.id)).toBe('edited');
    const tombstone = await log.appendTombstone(change('deleted'), 'removed');
    expect(tombstone).toMatchObject({ appended: true });
    expect(await log.appendTombstone(change('deleted again'), 'removed again')).toEqual({
      alreadyDeleted: true,
    });
    expect(await log.appendEdit(change('too late'), 'late')).toEqual({ refused: 'deleted' });
    expect(await written(conversation)).toEqual({
      queued: [
        { op: 'create', m: `{"seq":1,"id":"${message.id}"}` },
        { op: 'update', m: 'edited' },
        { op: 'update', m: 'deleted' },
      ],
      pending: ['deleted'],
      events: ['updated', 'removed'],
    });
    expect(await log.pendingEntry(message.id)).toBe('appended' in tombstone ? tombstone.entryId : '');
  });

  it('gives concurrent sends distinct seqs, in queue order', async () => {
    const conversation = fresh('conversation');
    await log.restoreSeq(conversation, 0);
    const results = await Promise.all(
      Array.from({ length: 50 }, () => log.appendNew(draft(conversation, 'al'), {}, null)),
    );
    const appended = results.flatMap((result) => ('appended' in result ? [result] : []));
    expect(appended.map((result) => result.seq).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    const queued = await broker.inspect.queueEntries('0-0', 100);
    expect(queued.map((entry) => (JSON.parse(entry.fields.m ?? '{}') as { seq: number }).seq)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
  });
}

await onBothEngines('MessageLog contract', contract);
