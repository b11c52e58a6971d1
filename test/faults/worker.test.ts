import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../server/src/contracts/schemas.js';
import { signUp } from '../support/client.js';
import { tap } from '../support/events.js';
import { oracle, Scenario } from './harness.js';
import { ParleyProcess } from './processes.js';
import { waitUntil } from './support.js';

const scenarios: Scenario[] = [];
const processes: ParleyProcess[] = [];
afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => p.kill()));
  for (const scenario of scenarios.splice(0)) await scenario.close();
});

const JWT_SECRET = 'fault-scenario-secret-of-at-least-32-bytes';

/**
 * The persistence worker runs as its own `parley worker` process, talking to PostgreSQL and
 * Redis through the proxies, so the test can stop it at an exact point and SIGKILL it there.
 */
async function setUp() {
  const scenario = await Scenario.create({ ownRedisDb: true });
  scenarios.push(scenario);
  // The API instance runs no worker and talks to both directly.
  const app = await scenario.deployment.start({
    redisUrl: scenario.redisUrl,
    redisPrefix: '',
    runWorker: false,
  });
  const [al, bo] = await Promise.all([signUp(app.url), signUp(app.url)]);
  const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
  const recipients = [{ name: 'bo', events: await tap(bo, app, bo.user.id) }];
  const resolved: Message[] = [];
  const send = async (content: string) => {
    resolved.push(await al.api.message.send.mutate({ conversationId: id, content }));
  };
  const worker = () => {
    const process = ParleyProcess.spawn('worker', {
      DATABASE_URL: scenario.pg.rewrite(scenario.deployment.databaseUrl ?? ''),
      REDIS_URL: scenario.redis.rewrite(scenario.redisUrl),
      JWT_SECRET,
      // The same name after a restart: the worker resumes its own pending entries at once.
      PARLEY_WORKER_ID: 'persist-1',
    });
    processes.push(process);
    return process;
  };
  const close = async () => {
    await Promise.all(recipients.map((r) => r.events.stop()));
    await Promise.all([al.close(), bo.close()]);
  };
  return { scenario, app, id, recipients, resolved, send, worker, close };
}

/** Resolves the first time the proxy forwards a chunk matching `pattern` in `direction`. */
function when(
  proxy: Scenario['pg'],
  direction: 'up' | 'down',
  pattern: RegExp,
  then: () => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proxy.onForward = null;
      reject(new Error(`nothing matching ${String(pattern)} went ${direction} within 30 s`));
    }, 30_000);
    proxy.onForward = (chunk, seen) => {
      if (seen !== direction || !pattern.test(chunk.toString('latin1'))) return;
      proxy.onForward = null;
      clearTimeout(timer);
      then();
      resolve();
    };
  });
}

describe('persistence worker killed', () => {
  it('SIGKILLed mid-batch before its commit, then restarted: every message stored once', async () => {
    const { scenario, id, recipients, resolved, send, worker, close } = await setUp();
    for (let i = 0; i < 40; i++) await send(`batch-${i}`);
    // Hold the batch's INSERT on its way to PostgreSQL, then kill the worker there.
    const atInsert = when(scenario.pg, 'up', /insert into "?messages"?/i, () => scenario.pg.pause());
    const first = worker();
    await atInsert;
    // Earlier batches may have committed; the one held here has not.
    const committedAtKill = (await scenario.rows(id)).length;
    expect(committedAtKill).toBeLessThan(40);
    await first.kill();
    // Its connection dies with it; what it had sent never reaches PostgreSQL.
    scenario.pg.cut();
    scenario.pg.restore();
    for (let i = 0; i < 10; i++) await send(`while-down-${i}`);
    expect((await scenario.rows(id)).length).toBe(committedAtKill);

    worker();
    await oracle({
      label: 'worker SIGKILL before commit',
      scenario,
      conversationId: id,
      attempted: 50,
      resolved,
      recipients,
      notes: { killedAt: 'insert sent, not committed', committedAtKill, workerRestarts: 1 },
    });
    await close();
  });

  it('SIGKILLed after its commit but before its acknowledgement, then restarted: nothing doubled', async () => {
    const { scenario, id, recipients, resolved, send, worker, close } = await setUp();
    for (let i = 0; i < 40; i++) await send(`batch-${i}`);
    // From the batch's INSERT on, hold everything the worker says to Redis (its XACK comes
    // after the COMMIT), while PostgreSQL keeps flowing, so the transaction commits.
    const atInsert = when(scenario.pg, 'up', /insert into "?messages"?/i, () => scenario.redis.pause());
    const first = worker();
    await atInsert;
    await waitUntil(async () => (await scenario.rows(id)).length === 40, 'the batch was committed');
    await first.kill();
    scenario.redis.cut();
    scenario.redis.restore();
    // The entries are still pending in Redis, though PostgreSQL has them.
    const pendingBefore = (await scenario.broker.queues[0].info()).group?.pending ?? 0;
    expect(pendingBefore).toBe(40);
    for (let i = 0; i < 10; i++) await send(`while-down-${i}`);

    worker();
    await oracle({
      label: 'worker SIGKILL after commit',
      scenario,
      conversationId: id,
      attempted: 50,
      resolved,
      recipients,
      notes: { killedAt: 'committed, not acknowledged', pendingAtKill: pendingBefore, workerRestarts: 1 },
    });
    await close();
  });
});
