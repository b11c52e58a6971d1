import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect, type TestClient } from './support/client.js';
import { ParleyProcess } from './support/cli.js';
import { TestDeployment, onRealEngines } from './support/env.js';
import { type EventTap } from './support/events.js';
import type { ParleyEvent } from '../server/src/contracts/events.js';

let deployment: TestDeployment;
const processes: ParleyProcess[] = [];

beforeAll(async () => {
  if (onRealEngines) deployment = await TestDeployment.create();
});
afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')));
  await deployment?.cleanup();
});

/** Signs a new user up on `url`; the client talks only to that instance. */
async function signUpOn(url: string, username: string): Promise<TestClient & { id: string }> {
  const anonymous = connect(url);
  const { user, tokens } = await anonymous.api.auth.register.mutate({
    email: `${username}@example.test`,
    username,
    password: 'correct horse battery',
  });
  await anonymous.close();
  return Object.assign(connect(url, tokens.accessToken), { id: user.id });
}

/**
 * Records `message.created` events. Separate processes cannot be asked for their presence
 * counts, so the subscription counts as live once a probe event sent after it arrives.
 */
function listen(client: TestClient): EventTap {
  const received: { id: string; event: ParleyEvent }[] = [];
  const errors: unknown[] = [];
  const subscription = client.api.events.subscribe(
    {},
    {
      onData: (envelope) => received.push({ id: envelope.id, event: envelope.data }),
      onError: (error) => errors.push(error),
    },
  );
  return {
    received,
    errors,
    of: <T extends ParleyEvent['type']>(type: T) =>
      received.map((r) => r.event).filter((e): e is Extract<ParleyEvent, { type: T }> => e.type === type),
    async until(predicate, timeoutMs = 20_000) {
      // Done as soon as the subscription fails, too: that is then the error.
      await vi.waitFor(
        () => {
          if (errors.length > 0 || predicate(received)) return;
          throw new Error(`timed out after ${received.length} events`);
        },
        { timeout: timeoutMs, interval: 25 },
      );
      if (errors.length > 0) throw new Error(`subscription failed: ${String(errors[0])}`);
    },
    lastId: () => received.at(-1)?.id,
    stop: () => {
      subscription.unsubscribe();
      return Promise.resolve();
    },
  };
}

const createdIds = (tap: EventTap) => new Set(tap.of('message.created').map((e) => e.message.id));

describe('scale-out from the CLI on PostgreSQL + Redis', () => {
  it.skipIf(!onRealEngines)(
    'two API processes and a worker process: every message crosses instances and is stored once, across a worker kill (needs TEST_DATABASE_URL and TEST_REDIS_URL: separate processes cannot share the embedded engines)',
    { timeout: 180_000 },
    () => withProcessLogs(scenario),
  );
});

/** Adds the processes' error lines to a failure, so its cause on the server side is visible. */
async function withProcessLogs(run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    // The processes' output may still be on its way through the pipes.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const errors = processes.flatMap((p) =>
      // Error-level log lines, and anything that is not a log line (a crash's stack trace).
      p.lines
        .filter((line) => /"level":(50|60)/.test(line) || !line.startsWith('{'))
        .map((line) => `[${p.args.join(' ')}] ${line}`),
    );
    if (errors.length > 0) {
      throw new Error(`${String(error)}\n\nprocess errors:\n${errors.slice(-40).join('\n')}`, {
        cause: error,
      });
    }
    throw error;
  }
}

async function scenario(): Promise<void> {
  const env = (extra: Record<string, string> = {}) => ({
    NODE_ENV: 'production',
    JWT_SECRET: deployment.jwtSecret,
    DATABASE_URL: deployment.databaseUrl ?? '',
    ...deployment.redisEnv(),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    ...extra,
  });
  const [api1, api2, worker1] = await Promise.all([
    ParleyProcess.start(['start', '--no-worker'], env()),
    ParleyProcess.start(['start', '--no-worker'], env()),
    ParleyProcess.start(['worker'], env({ PARLEY_WORKER_ID: 'worker-1' })),
  ]);
  processes.push(api1, api2, worker1);

  const suffix = Math.random().toString(36).slice(2, 8);
  const al = await signUpOn(api1.url, `al_${suffix}`);
  const bo = await signUpOn(api2.url, `bo_${suffix}`);
  const cy = await signUpOn(api2.url, `cy_${suffix}`);
  const group = await al.api.conversation.createGroup.mutate({ name: 'ops', memberIds: [bo.id, cy.id] });
  const taps = { al: listen(al), bo: listen(bo), cy: listen(cy) };
  // Probe until every subscription (on either instance) sees a message sent on the other.
  const probes: string[] = [];
  for (const [sender, tap] of [
    [bo, taps.al],
    [al, taps.bo],
    [al, taps.cy],
  ] as const) {
    await vi.waitFor(
      async () => {
        if (probes.some((id) => createdIds(tap).has(id))) return;
        const probe = await sender.api.message.send.mutate({ conversationId: group.id, content: 'probe' });
        probes.push(probe.id);
        throw new Error('no probe has crossed yet');
      },
      { timeout: 30_000, interval: 100 },
    );
  }

  const sent: { id: string; content: string }[] = [];
  const chat = async (rounds: number, tag: string) => {
    for (let i = 0; i < rounds; i++) {
      const [fromAl, fromBo, fromCy] = await Promise.all([
        al.api.message.send.mutate({ conversationId: group.id, content: `${tag} al ${i}` }),
        bo.api.message.send.mutate({ conversationId: group.id, content: `${tag} bo ${i}` }),
        cy.api.message.send.mutate({ conversationId: group.id, content: `${tag} cy ${i}` }),
      ]);
      sent.push(fromAl, fromBo, fromCy);
    }
  };

  await chat(10, 'before');
  // Kill the worker without warning while messages keep arriving, then start another.
  const killed = chat(10, 'during');
  await vi.waitFor(() => expect(sent.some((m) => m.content.startsWith('during'))).toBe(true), 10_000);
  await worker1.stop('SIGKILL');
  await killed;
  await chat(5, 'between');
  // With no worker running, what was accepted waits in Redis.
  const waiting = await (await fetch(`${api1.url}/metrics`)).text();
  expect(Number(/^parley_worker_lag_entries (\S+)$/m.exec(waiting)?.[1])).toBeGreaterThanOrEqual(15);
  const worker2 = await ParleyProcess.start(['worker'], env({ PARLEY_WORKER_ID: 'worker-1' }));
  processes.push(worker2);
  await chat(10, 'after');

  // Everyone saw every message live, wherever it was sent.
  for (const tap of Object.values(taps)) {
    await tap.until(() => sent.every((m) => createdIds(tap).has(m.id)), 30_000);
  }

  // Every message whose send resolved is stored exactly once, with gapless seqs.
  const sql = postgres(deployment.databaseUrl ?? '', { max: 1, onnotice: () => {} });
  try {
    const wanted = [...sent.map((m) => m.id), ...probes];
    type Row = { id: string; seq: number; content: string };
    let rows: Row[] = [];
    await vi.waitFor(
      async () => {
        rows = await sql<Row[]>`
            select id, seq::int as seq, content from messages where conversation_id = ${group.id}`;
        const ids = new Set(rows.map((r) => r.id));
        expect(wanted.filter((id) => !ids.has(id))).toEqual([]);
      },
      { timeout: 30_000, interval: 100 },
    );
    const stored = new Map(rows.map((r) => [r.id, r]));
    for (const message of sent) expect(stored.get(message.id)?.content).toBe(message.content);
    for (const probe of probes) expect(stored.has(probe)).toBe(true);
    // Once each: no second row under another id or seq, and no gap.
    const seqs = rows.map((r) => r.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
    const conversation = await bo.api.conversation.byId.query({ id: group.id });
    expect(conversation.lastSeq).toBe(rows.length);
    // Besides the chat, only the conversation's own notices (type 'system') are stored.
    const [counted] = await sql<{ others: number }[]>`
          select count(*)::int as others from messages
          where conversation_id = ${group.id} and type <> 'system' and not (id = any(${wanted}))`;
    expect(counted?.others).toBe(0);
  } finally {
    await sql.end();
  }

  // The new worker wrote what the killed one left behind, and says so in its metrics.
  const metrics = await (await fetch(`${worker2.url}/metrics`)).text();
  const written = /^parley_persist_batch_size_sum (\S+)$/m.exec(metrics)?.[1];
  expect(Number(written)).toBeGreaterThan(0);
  expect(metrics).toMatch(/^parley_worker_lag_entries 0$/m);

  // No process logged a password, a token or the signing secret.
  const secrets = [deployment.jwtSecret, 'correct horse battery', al.token, bo.token, cy.token];
  for (const instance of processes) {
    expect(instance.lines.length).toBeGreaterThan(0);
    for (const secret of secrets) {
      expect(secret).toBeTruthy();
      expect(instance.lines.filter((line) => line.includes(secret ?? ''))).toEqual([]);
    }
  }

  await Promise.all(Object.values(taps).map((tap) => tap.stop()));
  await Promise.all([al.close(), bo.close(), cy.close()]);
  for (const instance of [api1, api2, worker2]) expect(await instance.stop('SIGTERM')).toBe(0);
}
