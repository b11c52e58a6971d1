import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Message } from '../../server/src/contracts/schemas.js';
import { connect, signUp } from '../support/client.js';
import { tap } from '../support/events.js';
import { failureCode, oracle, Scenario } from './harness.js';
import { waitUntil } from './support.js';

const scenarios: Scenario[] = [];
afterEach(async () => {
  for (const scenario of scenarios.splice(0)) await scenario.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `/readyz`, which must answer within 3 s whatever is down. */
async function readiness(url: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(3_000) });
  return { status: response.status, text: await response.text() };
}

async function waitForReady(url: string): Promise<void> {
  await vi.waitFor(
    async () => {
      const { status } = await readiness(url).catch(() => ({ status: 0 }));
      if (status !== 200) throw new Error('not ready 30 s after the outage ended');
    },
    { timeout: 30_000, interval: 200 },
  );
}

describe('dependency outages', () => {
  it('PostgreSQL unreachable for 30 s: readiness says so, the backlog drains after, nothing lost or doubled', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ worker: { blockMs: 200 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const recipients = [
      { name: 'bo', events: await tap(bo, app, bo.user.id) },
      { name: 'al', events: await tap(al, app, al.user.id) },
    ];
    const resolved: Message[] = [];
    const failures: string[] = [];
    let attempted = 0;
    // A client gives up on a send after 5 s, as a user would; the server may still finish it.
    const send = async (content: string) => {
      attempted++;
      try {
        resolved.push(
          await al.api.message.send.mutate(
            { conversationId: id, content, clientMessageId: content },
            { signal: AbortSignal.timeout(5_000) },
          ),
        );
      } catch (error) {
        failures.push(failureCode(error));
      }
    };
    for (let i = 0; i < 5; i++) await send(`before-${i}`);

    scenario.pg.cut();
    const outageEnds = Date.now() + 30_000;
    let sentDuringOutage = 0;
    let readinessChecks = 0;
    while (Date.now() < outageEnds) {
      await send(`during-${sentDuringOutage++}`);
      // Readiness says so for as long as it lasts, and answers promptly.
      const ready = await readiness(app.url);
      expect(ready.status).toBe(503);
      expect(ready.text).toContain('database down');
      readinessChecks++;
      await sleep(500);
    }
    const health = await bo.api.health.query();
    expect(health).toMatchObject({ status: 'degraded', db: false, redis: true });
    const resolvedDuringOutage = resolved.filter((m) => m.content.startsWith('during-')).length;
    scenario.pg.restore();

    await waitForReady(app.url);
    const failedBeforeRestore = failures.length;
    for (let i = 0; i < 5; i++) await send(`after-${i}`);
    expect(failures.length, 'sends after the outage').toBe(failedBeforeRestore);
    await oracle({
      label: 'postgres outage 30 s',
      scenario,
      conversationId: id,
      attempted,
      resolved,
      recipients,
      notes: { sentDuringOutage, resolvedDuringOutage, failedDuringOutage: failures.length, readinessChecks },
    });
    // A failure during the outage is a clear, retryable answer (or the client's own timeout),
    // never an internal error.
    for (const code of failures)
      expect(['SERVICE_UNAVAILABLE', 'This operation was aborted']).toContain(code);
    await Promise.all(recipients.map((r) => r.events.stop()));
    await Promise.all([al.close(), bo.close()]);
  });

  it('Redis unreachable for 10 s: sends fail fast, readiness fails, all heals without a restart', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ worker: { blockMs: 200 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const recipients = [{ name: 'bo', events: await tap(bo, app, bo.user.id) }];
    const resolved: Message[] = [];
    let attempted = 0;
    for (let i = 0; i < 5; i++) {
      attempted++;
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `before-${i}` }));
    }

    scenario.redis.cut();
    const outageEnds = Date.now() + 10_000;
    const failures: { code: string; ms: number }[] = [];
    let slowest = 0;
    while (Date.now() < outageEnds) {
      attempted++;
      const started = Date.now();
      try {
        resolved.push(
          await al.api.message.send.mutate({ conversationId: id, content: `during-${attempted}` }),
        );
      } catch (error) {
        failures.push({ code: failureCode(error), ms: Date.now() - started });
      }
      slowest = Math.max(slowest, Date.now() - started);
      if (Date.now() - started < 200) await sleep(200);
    }
    const ready = await readiness(app.url);
    expect(ready.status).toBe(503);
    expect(ready.text).toContain('broker down');
    // Fail fast with a clear error: no send waits in a queue for Redis to come back.
    expect(failures.length).toBeGreaterThan(0);
    for (const failure of failures) expect(failure.code).toBe('SERVICE_UNAVAILABLE');
    expect(slowest).toBeLessThan(3_000);
    const resolvedDuringOutage = resolved.filter((m) => m.content.startsWith('during-')).length;

    scenario.redis.restore();
    // Heals by itself: the same instance accepts sends again once Redis is back.
    const restoredAt = Date.now();
    await vi.waitFor(
      async () => {
        attempted++;
        resolved.push(
          await al.api.message.send.mutate({ conversationId: id, content: `after-${attempted}` }),
        );
      },
      { timeout: 15_000, interval: 200 },
    );
    const healedAfterMs = Date.now() - restoredAt;
    for (let i = 0; i < 5; i++) {
      attempted++;
      resolved.push(await al.api.message.send.mutate({ conversationId: id, content: `after-more-${i}` }));
    }
    expect((await readiness(app.url)).status).toBe(200);
    await oracle({
      label: 'redis outage 10 s',
      scenario,
      conversationId: id,
      attempted,
      resolved,
      recipients,
      notes: {
        failedDuringOutage: failures.length,
        resolvedDuringOutage,
        slowestSendMs: slowest,
        healedAfterMs,
      },
    });
    await Promise.all(recipients.map((r) => r.events.stop()));
    await Promise.all([al.close(), bo.close()]);
  });

  it('Redis stalls mid-send: the caller learns the send may have landed, and its retry stores it once', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ worker: { blockMs: 200 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const before = await al.api.message.send.mutate({ conversationId: id, content: 'before' });

    // Hold the append itself (the script that writes to the message stream) on its way to Redis:
    // the send times out while Redis has the command, and runs it once the stall ends.
    let held = false;
    scenario.redis.onForward = (chunk, direction) => {
      if (held || direction !== 'up' || !chunk.toString('latin1').includes('parley:messages')) return;
      held = true;
      scenario.redis.pause();
    };
    const input = { conversationId: id, content: 'stalled', clientMessageId: 'stalled-1' };
    const failure = await al.api.message.send.mutate(input).then(
      () => null,
      (error: unknown) => error,
    );
    scenario.redis.onForward = null;
    expect(held).toBe(true);
    expect(failureCode(failure)).toBe('SERVICE_UNAVAILABLE');
    expect(String(failure)).toMatch(/may or may not have been applied/);
    scenario.redis.restore();

    // The retry, as the SDK makes it: same clientMessageId, answered with the one stored message.
    const retried: Message = await vi.waitFor(() => al.api.message.send.mutate(input), {
      timeout: 15_000,
      interval: 200,
    });
    const again = await al.api.message.send.mutate(input);
    expect(again.id).toBe(retried.id);
    await scenario.drained();
    const rows = await scenario.rows(id);
    expect(rows.filter((row) => row.id === retried.id)).toHaveLength(1);
    expect(rows.map((row) => row.seq).sort((a, b) => a - b)).toEqual([before.seq, retried.seq]);
    await Promise.all([al.close(), bo.close()]);
  });

  it('REDIS_COMMAND_TIMEOUT longer than a stall: the send waits it out and lands once', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    const app = await scenario.start({ redisCommandTimeoutMs: 15_000, worker: { blockMs: 200 } });
    const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });

    let held = false;
    scenario.redis.onForward = (chunk, direction) => {
      if (held || direction !== 'up' || !chunk.toString('latin1').includes('parley:messages')) return;
      held = true;
      scenario.redis.pause();
    };
    const sending = al.api.message.send.mutate({
      conversationId: id,
      content: 'slow',
      clientMessageId: 'slow-1',
    });
    await waitUntil(() => held, 'the append to be held');
    // Longer than the default timeout (2 s), under this one: the same stall failed the send above.
    await sleep(3_000);
    scenario.redis.onForward = null;
    scenario.redis.restore();
    const sent = await sending;
    expect(sent.content).toBe('slow');
    await scenario.drained();
    expect((await scenario.rows(id)).map((row) => row.id)).toEqual([sent.id]);
    await Promise.all([al.close(), bo.close()]);
  });
});

describe('revocations missed', () => {
  it('a session logged out while one instance had no Redis: its streams there end when Redis is back', async () => {
    const scenario = await Scenario.create();
    scenarios.push(scenario);
    // A reaches Redis through the proxy; B directly, so it can log out while A cannot hear it.
    const a = await scenario.start();
    const b = await scenario.deployment.start();
    const [al, bo, cy] = await Promise.all([signUp(b.url), signUp(a.url), signUp(a.url)]);
    const toBo = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const toCy = await al.api.conversation.openDirect.mutate({ userId: cy.user.id });
    const boEvents = await tap(bo, a, bo.user.id);
    const cyEvents = await tap(cy, a, cy.user.id);

    scenario.redis.cut();
    const boOnB = connect(b.url, bo.tokens.accessToken);
    await boOnB.api.auth.logout.mutate({});
    const toBoDuring = await al.api.message.send.mutate({ conversationId: toBo.id, content: 'after logout' });
    const toCyDuring = await al.api.message.send.mutate({ conversationId: toCy.id, content: 'while cut' });
    scenario.redis.restore();

    // Once A is back on Redis: the logged-out session's stream ends, unserved; the other catches up.
    await waitUntil(
      async () => Promise.resolve(boEvents.errors.length > 0),
      'the revoked stream ended',
      20_000,
    );
    expect(String(boEvents.errors[0])).toMatch(/Session ended/);
    expect(boEvents.of('message.created').map((e) => e.message.id)).not.toContain(toBoDuring.id);
    await cyEvents.until((received) => received.some((r) => r.event.type === 'message.created'), 20_000);
    expect(cyEvents.of('message.created').map((e) => e.message.id)).toEqual([toCyDuring.id]);
    await cyEvents.stop();
    await Promise.all([al.close(), bo.close(), cy.close(), boOnB.close()]);
  });
});
