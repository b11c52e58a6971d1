import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../server/src/app.js';
import WebSocket from 'ws';
import { connect, signUp, wsUrl } from './support/client.js';
import { runParley } from './support/cli.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { deadLetters } from './support/queues.js';
import { tap } from './support/events.js';
import { expectCode } from './support/errors.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Reads the Prometheus text format: `name{a="b",...} value` lines, comments skipped. */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] ?? ''] = pair[2] ?? '';
    }
    samples.push({ name: match[1] ?? '', labels, value: Number(match[3]) });
  }
  return samples;
}

async function scrape(app: App): Promise<Sample[]> {
  const response = await fetch(`${app.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toContain('text/plain');
  return parseMetrics(await response.text());
}

/** Sum of the samples named `name` whose labels include `labels`; undefined when none match. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return matching.length === 0 ? undefined : matching.reduce((sum, s) => sum + s.value, 0);
}

/** The first value `read` gives that `accept` takes; fails with the last one after `ms`. */
async function eventually<T>(read: () => Promise<T>, accept: (value: T) => boolean, ms = 5000): Promise<T> {
  return vi.waitFor(
    async () => {
      const value = await read();
      if (!accept(value)) throw new Error(`not yet: ${JSON.stringify(value).slice(0, 1_000)}`);
      return value;
    },
    { timeout: ms, interval: 50 },
  );
}

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
});
afterAll(async () => {
  await deployment?.cleanup();
});

describe(`metrics (${engineLabel})`, () => {
  it('counts and times tRPC calls per procedure and outcome, and HTTP requests per route', async () => {
    const users = [];
    for (let i = 0; i < 3; i++) users.push(await signUp(app.url));
    const [ada] = users;
    if (!ada) throw new Error('no user');
    await ada.api.auth.me.query();
    await ada.api.auth.me.query();
    const anonymous = connect(app.url);
    await expectCode(
      anonymous.api.auth.login.mutate({ username: ada.user.username, password: 'not the password' }),
      'UNAUTHORIZED',
    );
    await expectCode(anonymous.api.auth.me.query(), 'UNAUTHORIZED');
    await expectCode(
      anonymous.api.auth.register.mutate({ email: 'nope', username: 'x', password: 'short' }),
      'BAD_REQUEST',
    );
    expect((await fetch(`${app.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${app.url}/nowhere/${Math.random()}`)).status).toBe(404);

    const samples = await scrape(app);
    const calls = (procedure: string, code: string) =>
      valueOf(samples, 'parley_trpc_calls_total', { procedure, code }) ?? 0;
    expect(calls('auth.register', 'OK')).toBe(3);
    expect(calls('auth.register', 'BAD_REQUEST')).toBe(1);
    expect(calls('auth.me', 'OK')).toBe(2);
    expect(calls('auth.me', 'UNAUTHORIZED')).toBe(1);
    expect(calls('auth.login', 'UNAUTHORIZED')).toBe(1);
    expect(valueOf(samples, 'parley_trpc_calls_total', { procedure: 'auth.me', type: 'query' })).toBe(3);
    // The histogram saw exactly the calls the counter saw, and they took some time.
    expect(
      valueOf(samples, 'parley_trpc_call_duration_seconds_count', { procedure: 'auth.register', code: 'OK' }),
    ).toBe(3);
    const registerSeconds = valueOf(samples, 'parley_trpc_call_duration_seconds_sum', {
      procedure: 'auth.register',
      code: 'OK',
    });
    expect(registerSeconds).toBeGreaterThan(0);
    expect(
      valueOf(samples, 'parley_trpc_call_duration_seconds_bucket', {
        procedure: 'auth.register',
        code: 'OK',
        le: '+Inf',
      }),
    ).toBe(3);

    // Every call above went over its own HTTP request (sequential awaits, nothing to batch).
    expect(valueOf(samples, 'parley_http_requests_total', { route: '/trpc' })).toBeGreaterThanOrEqual(8);
    expect(valueOf(samples, 'parley_http_requests_total', { route: '/trpc', status: '401' })).toBe(2);
    expect(valueOf(samples, 'parley_http_requests_total', { route: '/trpc', status: '400' })).toBe(1);
    expect(valueOf(samples, 'parley_http_requests_total', { route: '/healthz', status: '200' })).toBe(1);
    // Unknown paths share one label, so scanners cannot create new series.
    expect(valueOf(samples, 'parley_http_requests_total', { route: 'other', status: '404' })).toBe(1);
    expect(valueOf(samples, 'parley_http_request_duration_seconds_count', { route: '/healthz' })).toBe(1);
    await anonymous.close();
    for (const user of users) await user.close();
  });

  it('tracks open WebSocket connections and calls made over them', async () => {
    const before = await scrape(app);
    expect(valueOf(before, 'parley_ws_connections')).toBe(0);
    // The instance's event channels are up: nothing is held.
    expect(valueOf(before, 'parley_live_events_held')).toBe(0);
    const bo = await signUp(app.url);
    // Plain sockets stay open until closed (the tRPC client closes idle ones at once).
    const sockets = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<WebSocket>((resolve, reject) => {
            const socket = new WebSocket(`${wsUrl(app.url)}?token=${bo.tokens.accessToken}`);
            socket.once('open', () => resolve(socket));
            socket.once('error', reject);
          }),
      ),
    );
    await bo.ws.health.query();

    const open = await scrape(app);
    expect(valueOf(open, 'parley_ws_connections')).toBeGreaterThanOrEqual(2);
    expect(valueOf(open, 'parley_http_requests_total', { route: '/ws', status: '101' })).toBe(3);
    expect(valueOf(open, 'parley_trpc_calls_total', { procedure: 'health', code: 'OK' })).toBe(1);
    const health = await bo.api.health.query();
    expect(health.connections).toBeGreaterThanOrEqual(2);

    for (const socket of sockets) socket.close();
    await bo.close();
    const closed = await eventually(
      () => scrape(app),
      (samples) => valueOf(samples, 'parley_ws_connections') === 0,
    );
    expect(valueOf(closed, 'parley_ws_connections')).toBe(0);
  });

  it('reports event-loop lag and process metrics', async () => {
    const samples = await scrape(app);
    for (const name of [
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_eventloop_lag_seconds',
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ]) {
      const value = valueOf(samples, name);
      expect(value, name).toBeDefined();
      expect(Number.isFinite(value), name).toBe(true);
    }
    expect(valueOf(samples, 'process_resident_memory_bytes')).toBeGreaterThan(1024 * 1024);
  });

  it('reports the stream length and worker lag of messages not yet written', async () => {
    const local = await TestDeployment.create();
    try {
      const api = await local.start({ runWorker: false });
      const [al, bo] = await Promise.all([signUp(api.url), signUp(api.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      for (let i = 0; i < 4; i++) await al.api.message.send.mutate({ conversationId: id, content: `m${i}` });
      const samples = await scrape(api);
      expect(valueOf(samples, 'parley_messages_sent_total', { type: 'text' })).toBe(4);
      expect(valueOf(samples, 'parley_stream_length')).toBe(4);
      expect(valueOf(samples, 'parley_worker_lag_entries')).toBe(4);
      // The health query and /readyz report the same lag.
      expect((await al.api.health.query()).worker.lag).toBe(4);
      expect(await (await fetch(`${api.url}/readyz`)).text()).toBe(
        'ready: database up, broker up, worker lag 4',
      );
      // Nothing was written, so there is no batch to report.
      expect(valueOf(samples, 'parley_persist_batch_size_count')).toBe(0);
      await al.close();
      await bo.close();
    } finally {
      await local.cleanup();
    }
  });

  it('counts messages, fan-out, subscriptions, worker batches and dead letters', async () => {
    const local = await TestDeployment.create();
    try {
      const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 1 } });
      const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
      const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
      const events = await tap(bo, target, bo.user.id);
      expect(valueOf(await scrape(target), 'parley_subscriptions')).toBe(1);

      const sent = 6;
      for (let i = 0; i < sent; i++)
        await al.api.message.send.mutate({ conversationId: id, content: `m${i}` });
      // The same clientMessageId twice is one message.
      await al.api.message.send.mutate({ conversationId: id, content: 'once', clientMessageId: 'c-1' });
      await al.api.message.send.mutate({ conversationId: id, content: 'once', clientMessageId: 'c-1' });
      await events.until(
        (received) => received.filter((r) => r.event.type === 'message.created').length === sent + 1,
      );
      // An entry no worker can read is set aside.
      await target.services.broker.inspect.addQueueEntry({ op: 'create', m: '{not json' });

      const samples = await eventually(
        () => scrape(target),
        (s) =>
          valueOf(s, 'parley_worker_lag_entries') === 0 &&
          valueOf(s, 'parley_dead_letters_total') === 1 &&
          valueOf(s, 'parley_persist_batch_size_sum') === sent + 1,
        15_000,
      );
      expect(valueOf(samples, 'parley_messages_sent_total', { type: 'text' })).toBe(sent + 1);
      expect(valueOf(samples, 'parley_events_fanned_out_total', { type: 'message.created' })).toBe(sent + 1);
      expect(valueOf(samples, 'parley_worker_lag_entries')).toBe(0);
      expect(valueOf(samples, 'parley_dead_letters_total')).toBe(1);
      const batches = valueOf(samples, 'parley_persist_batch_size_count') ?? 0;
      expect(batches).toBeGreaterThanOrEqual(1);
      expect(batches).toBeLessThanOrEqual(sent + 1);
      expect(valueOf(samples, 'parley_persist_batch_size_sum')).toBe(sent + 1);
      expect(valueOf(samples, 'parley_persist_latency_seconds_count')).toBe(batches);
      expect(valueOf(samples, 'parley_persist_latency_seconds_sum')).toBeGreaterThan(0);
      expect(valueOf(samples, 'parley_trpc_calls_total', { procedure: 'message.send', code: 'OK' })).toBe(
        sent + 2,
      );
      expect(valueOf(samples, 'parley_trpc_calls_total', { procedure: 'events', type: 'subscription' })).toBe(
        1,
      );

      await events.stop();
      const after = await eventually(
        () => scrape(target),
        (s) => valueOf(s, 'parley_subscriptions') === 0,
      );
      expect(valueOf(after, 'parley_subscriptions')).toBe(0);
      await al.close();
      await bo.close();
    } finally {
      await local.cleanup();
    }
  });

  it('keeps separate counters for two apps in one process', async () => {
    const registered = (samples: Sample[]) =>
      valueOf(samples, 'parley_trpc_calls_total', { procedure: 'auth.register', code: 'OK' });
    const firstBefore = registered(await scrape(app));
    expect(firstBefore).toBeGreaterThan(0);
    const second = await deployment.start();
    expect(registered(await scrape(second))).toBeUndefined();
    await signUp(second.url);
    expect(registered(await scrape(second))).toBe(1);
    expect(registered(await scrape(app))).toBe(firstBefore);
  });
});

describe.skipIf(!engines.redisUrl)(
  `parley dead-letters (${engineLabel}; needs Redis: the command reads the broker of other processes)`,
  () => {
    it('prints what the worker set aside, one JSON object a line', { timeout: 60_000 }, async () => {
      const local = await TestDeployment.create();
      try {
        const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 1 } });
        const queued = await target.services.broker.inspect.addQueueEntry({ op: 'create', m: '{not json' });
        await expect
          .poll(async () => (await deadLetters(target.services.broker)).length, { timeout: 15_000 })
          .toBe(1);

        const listed = await runParley(['dead-letters'], { ...local.redisEnv(), LOG_LEVEL: 'error' });
        expect(listed.stderr).toBe('');
        expect(listed.code).toBe(0);
        const lines = listed.stdout.split('\n').filter(Boolean);
        const printed = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
        expect(printed).toHaveLength(1);
        const { id, ...rest } = printed[0] ?? {};
        expect(id).toMatch(/^\d+-\d+$/);
        expect(rest).toEqual({
          partition: 0,
          entry: queued,
          reason: 'unreadable entry',
          op: 'create',
          m: '{not json',
        });
        const ofPartition = await runParley(['dead-letters', '--partition', '0'], local.redisEnv());
        expect(ofPartition.stdout).toBe(listed.stdout);

        const refused = await runParley(['dead-letters', '--count', '0'], local.redisEnv());
        expect(refused.code).toBe(64);
        expect(refused.stderr).toContain('--count must be a whole number from 1 to 100000');
        const none = await runParley(['dead-letters', '--count', '5'], {});
        expect(none.code).toBe(78);
        expect(none.stderr).toContain('parley dead-letters: needs REDIS_URL');
        const misplaced = await runParley(['migrate', '--requeue'], {});
        expect(misplaced.code).toBe(64);
        expect(misplaced.stderr).toContain('--requeue only applies to "dead-letters"');
        const usage: [string[], string][] = [
          [['dead-letters', '--id', '1-0'], '--id only applies to "dead-letters --requeue"'],
          [['dead-letters', '--requeue', '--id', 'latest'], '--id "latest" is not a dead letter\'s id'],
          [
            ['dead-letters', '--requeue', '--id', '18446744073709551616-0'],
            '--id "18446744073709551616-0" is not a dead letter\'s id',
          ],
          [
            ['dead-letters', '--requeue', '--id', '1-0', '--count', '2'],
            '--id and --count cannot go together',
          ],
          [['dead-letters', '--partition', 'one'], '--partition must be a whole number from 0'],
          [
            ['dead-letters', '--partition', String(engines.redisPartitions)],
            `--partition ${engines.redisPartitions}: this deployment has`,
          ],
        ];
        for (const [args, message] of usage) {
          const answer = await runParley(args, local.redisEnv());
          expect([args, answer.code]).toEqual([args, 64]);
          expect(answer.stderr).toContain(message);
        }
        // Several partitions number their dead letters apart: an id alone names none.
        const partitioned = await runParley(['dead-letters', '--requeue', '--id', '1-0'], {
          ...local.redisEnv(),
          REDIS_PARTITIONS: '3',
        });
        expect(partitioned.code).toBe(64);
        expect(partitioned.stderr).toContain('--id needs --partition: this deployment has 3 partitions');
      } finally {
        await local.cleanup();
      }
    });

    it(
      'moves what PostgreSQL refused back into the queue once the cause is fixed, and the worker writes it',
      { timeout: 60_000 },
      async () => {
        const local = await TestDeployment.create();
        try {
          const target = await local.start({ worker: { blockMs: 50, maxDeliveries: 1 } });
          const db = target.services.db;
          const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
          const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
          // A rule added to the database by mistake refuses a message and an edit: both are
          // accepted, then set aside.
          await db.execute(
            sql`alter table messages add constraint refuses_one check (content not like 'refused%')`,
          );
          const refused = await al.api.message.send.mutate({ conversationId: id, content: 'refused' });
          const kept = await al.api.message.send.mutate({ conversationId: id, content: 'kept' });
          const history = async () =>
            (await bo.api.message.list.query({ conversationId: id, limit: 10 })).items.map((m) => m.content);
          await expect.poll(history, { timeout: 15_000 }).toEqual(['kept']);
          await al.api.message.edit.mutate({ id: kept.id, content: 'refused, then kept' });
          await expect
            .poll(async () => (await deadLetters(target.services.broker)).length, { timeout: 15_000 })
            .toBe(2);
          // Each dead letter says what it was.
          const listed = await runParley(['dead-letters'], { ...local.redisEnv(), LOG_LEVEL: 'error' });
          expect(listed.code).toBe(0);
          const set = listed.stdout
            .split('\n')
            .filter(Boolean)
            .map((line) => JSON.parse(line) as { op: string; m: string });
          expect(set.map(({ op, m }) => [op, (JSON.parse(m) as { content: string }).content])).toEqual([
            ['create', 'refused'],
            ['update', 'refused, then kept'],
          ]);

          // Fixed: moved back, the first by its id, and written.
          await db.execute(sql`alter table messages drop constraint refuses_one`);
          const [first] = JSON.parse(`[${listed.stdout.trim().split('\n').join(',')}]`) as {
            partition: number;
            id: string;
          }[];
          if (!first) throw new Error('no dead letter printed');
          const chosen = ['--id', first.id, '--partition', String(first.partition)];
          const one = await runParley(['dead-letters', '--requeue', ...chosen], {
            ...local.redisEnv(),
            LOG_LEVEL: 'error',
          });
          expect(one.stderr).toBe('');
          expect(one.code).toBe(0);
          const movedOne = JSON.parse(one.stdout) as Record<string, unknown>;
          expect(Object.keys(movedOne)).toEqual(['partition', 'id', 'entry', 'requeued']);
          expect(movedOne).toMatchObject({ partition: first.partition, id: first.id });
          expect(movedOne.requeued).toMatch(/^\d+-\d+$/);
          await expect.poll(history, { timeout: 15_000 }).toEqual(['kept', 'refused']);
          expect(await deadLetters(target.services.broker)).toHaveLength(1);
          const moved = await runParley(['dead-letters', '--requeue'], {
            ...local.redisEnv(),
            LOG_LEVEL: 'error',
          });
          expect(moved.stderr).toBe('');
          expect(moved.code).toBe(0);
          const lines = moved.stdout.split('\n').filter(Boolean);
          expect(lines.map((line) => Object.keys(JSON.parse(line) as object))).toEqual([
            ['partition', 'id', 'entry', 'requeued'],
          ]);
          await expect.poll(history, { timeout: 15_000 }).toEqual(['refused, then kept', 'refused']);
          expect(await deadLetters(target.services.broker)).toEqual([]);
          const [row] = await bo.api.message.list
            .query({ conversationId: id, limit: 10 })
            .then((page) => page.items.filter((m) => m.id === refused.id));
          expect(row).toMatchObject({ id: refused.id, seq: refused.seq, content: 'refused' });
          expect(kept.seq).toBe(refused.seq + 1);
        } finally {
          await local.cleanup();
        }
      },
    );
  },
);
