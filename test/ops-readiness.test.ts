import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from './support/client.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';
import { TcpProxy } from './support/proxy.js';

const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

let deployment: TestDeployment;

beforeAll(async () => {
  deployment = await TestDeployment.create();
});
afterAll(async () => {
  await deployment?.cleanup();
});

async function readyz(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${url}/readyz`);
  return { status: response.status, body: await response.text() };
}

/** Asks `/readyz` until it answers `status` (for up to 15 s), and returns that answer. */
async function readyzBecomes(url: string, status: number) {
  let last = await readyz(url);
  await expect
    .poll(
      async () => {
        last = await readyz(url);
        return last.status;
      },
      { timeout: 15_000, interval: 100 },
    )
    .toBe(status);
  return last;
}

/** A private redis-server on a free port, which this test may kill and restart. */
class OwnRedis {
  private child: ChildProcess | null = null;
  constructor(readonly port: number) {}

  static async start(): Promise<OwnRedis> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const redis = new OwnRedis(20_000 + Math.floor(Math.random() * 40_000));
      if (await redis.start()) return redis;
    }
    throw new Error('could not start redis-server on a free port');
  }

  /** Resolves true once the server accepts connections, false if it exited (port taken). */
  start(): Promise<boolean> {
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    return new Promise((resolve) => {
      let output = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) resolve(true);
      });
      child.once('exit', () => resolve(false));
    });
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise((resolve) => {
      child.once('exit', resolve);
      child.kill('SIGKILL');
    });
  }
}

describe(`readiness (${engineLabel})`, () => {
  it.skipIf(!hasRedisServer)(
    'turns not-ready when Redis dies and ready again when it returns (needs the redis-server binary, to run a Redis it may kill)',
    async () => {
      const redis = await OwnRedis.start();
      try {
        const app = await deployment.start({
          redisUrl: `redis://127.0.0.1:${redis.port}`,
          redisCluster: false,
        });
        const anonymous = connect(app.url);
        expect(await readyz(app.url)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'ok', db: true, redis: true });

        await redis.kill();
        const down = await readyzBecomes(app.url, 503);
        expect(down).toEqual({
          status: 503,
          body: 'not ready: database up, broker down, worker lag unknown',
        });
        expect(await anonymous.api.health.query()).toMatchObject({
          status: 'degraded',
          db: true,
          redis: false,
          worker: { lag: null },
        });

        expect(await redis.start()).toBe(true);
        expect(await readyzBecomes(app.url, 200)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'ok', redis: true });
        await anonymous.close();
        await app.close();
      } finally {
        await redis.kill();
      }
    },
    60_000,
  );

  it.skipIf(!engines.databaseUrl)(
    'turns not-ready when PostgreSQL is unreachable and ready again when it returns (needs TEST_DATABASE_URL: the embedded database cannot be lost)',
    async () => {
      const proxy = await TcpProxy.start(deployment.databaseUrl ?? '');
      try {
        const app = await deployment.start({ databaseUrl: proxy.rewrite(deployment.databaseUrl ?? '') });
        const anonymous = connect(app.url);
        expect(await readyz(app.url)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });

        proxy.cut();
        const down = await readyzBecomes(app.url, 503);
        expect(down.status).toBe(503);
        expect(down.body).toContain('database down');
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'degraded', db: false });

        proxy.restore();
        expect(await readyzBecomes(app.url, 200)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'ok', db: true });
        await anonymous.close();
        await app.close();
      } finally {
        await proxy.close();
      }
    },
    60_000,
  );
});
