import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../server/src/contracts/schemas.js';
import { signUp } from '../support/client.js';
import { tap } from '../support/events.js';
import { oracle, Scenario } from './harness.js';
import { faultEngines } from './support.js';

const scenarios: Scenario[] = [];
afterEach(async () => {
  for (const scenario of scenarios.splice(0)) await scenario.close();
});

/**
 * Redis losing everything this deployment holds, as after a restart without persistence or a
 * FLUSHALL. Only this deployment's keys are deleted: the Redis server is shared.
 */
async function loseRedisData(prefix: string): Promise<number> {
  const redis = new Redis(faultEngines().redisUrl);
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.del(...keys);
  } while (cursor !== '0');
  redis.disconnect();
  return deleted;
}

describe('stream faults', () => {
  it('an entry delivered twice and poison entries: every message stored once, the poison set aside', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ worker: { blockMs: 100, maxDeliveries: 2, claimIdleMs: 500 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const recipients = [{ name: 'bo', events: await tap(bo, app, bo.user.id) }];
    const resolved: Message[] = [];
    for (let i = 0; i < 10; i++) {
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `m${i}` }));
    }
    await scenario.drained();
    // The same entries appended again, as a retried append or a replayed stream would do.
    const { inspect } = scenario.broker;
    const entries = await inspect.queueEntries('0-0', 1000);
    const copies = entries.filter((entry) => entry.fields.op === 'create');
    for (const entry of copies) await inspect.addQueueEntry(entry.fields);
    // Poison: unreadable, and well-formed but refused by PostgreSQL.
    await inspect.addQueueEntry({ op: 'create', m: '{"truncated' });
    await inspect.addQueueEntry({ op: 'bogus', m: 'null' });
    for (let i = 10; i < 20; i++) {
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `m${i}` }));
    }
    await oracle({
      label: 'duplicate and poison entries',
      scenario,
      conversationId: id,
      attempted: 20,
      resolved,
      recipients,
      notes: { replayedEntries: copies.length, poison: 2 },
    });
    const dead = await scenario.broker.queues[0].deadLetters(100);
    expect(dead).toHaveLength(2);
    await recipients[0]?.events.stop();
    await Promise.all([al.close(), bo.close()]);
  });

  it('Redis loses its data: clients get resync, seq counters recover from PostgreSQL, no seq is reused', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ worker: { blockMs: 100 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const before = await tap(bo, app, bo.user.id);
    const resolved: Message[] = [];
    for (let i = 0; i < 10; i++) {
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `before-${i}` }));
    }
    await before.until((r) => r.filter((x) => x.event.type === 'message.created').length >= 10);
    await scenario.drained();
    const lastEventId = before.lastId();
    await before.stop();

    const deleted = await loseRedisData(scenario.deployment.redisPrefix);
    expect(deleted).toBeGreaterThan(0);

    // A client resuming from before the loss cannot be served a gapless stream: it is told so.
    const resumed = await tap(bo, app, bo.user.id, { lastEventId });
    await resumed.until((r) => r.length > 0);
    expect(resumed.received[0]?.event.type).toBe('resync');
    for (let i = 0; i < 10; i++) {
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `after-${i}` }));
    }
    const seqs = resolved.map((m) => m.seq);
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    // History after the refetch is whole.
    const history = await bo.api.message.list.query({ conversationId: id, afterSeq: 0, limit: 100 });
    expect(history.items.map((m) => m.seq)).toEqual(seqs);
    await oracle({
      label: 'redis data loss',
      scenario,
      conversationId: id,
      attempted: 20,
      resolved,
      recipients: [{ name: 'bo (after resync)', events: resumed }],
      delivered: resolved.filter((m) => m.content.startsWith('after-')),
      notes: { keysDeleted: deleted, resync: true, seqsReused: 0 },
    });
    expect((await scenario.rows(id)).length).toBe(20);
    await resumed.stop();
    await Promise.all([al.close(), bo.close()]);
  });
});
