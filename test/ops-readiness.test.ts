import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from './support/client.js';
import { TestDeployment, engineLabel, engines } from './support/env.js';

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

/** Polls `/readyz` until it answers `status`, for up to `ms`. */
async function readyzBecomes(url: string, status: number, ms = 15_000) {
  const deadline = Date.now() + ms;
  let last = await readyz(url);
  while (last.status !== status && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    last = await readyz(url);
  }
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

/**
 * A TCP relay in front of the real PostgreSQL: `cut` drops every connection and refuses new
 * ones, as a dead or unreachable server would; `restore` listens again on the same port.
 */
class Relay {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async listen(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, this.targetHost);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

describe(`readiness (${engineLabel})`, () => {
  it.skipIf(!hasRedisServer)(
    'turns not-ready when Redis dies and ready again when it returns (needs the redis-server binary, to run a Redis it may kill)',
    async () => {
      const redis = await OwnRedis.start();
      try {
        const app = await deployment.start({ redisUrl: `redis://127.0.0.1:${redis.port}` });
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
      const target = new URL(deployment.databaseUrl ?? '');
      const relay = new Relay(target.hostname, Number(target.port || 5432));
      await relay.listen();
      try {
        const viaRelay = new URL(target);
        viaRelay.hostname = '127.0.0.1';
        viaRelay.port = String(relay.port);
        const app = await deployment.start({ databaseUrl: viaRelay.toString() });
        const anonymous = connect(app.url);
        expect(await readyz(app.url)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });

        await relay.cut();
        const down = await readyzBecomes(app.url, 503);
        expect(down.status).toBe(503);
        expect(down.body).toContain('database down');
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'degraded', db: false });

        await relay.listen();
        expect(await readyzBecomes(app.url, 200)).toEqual({
          status: 200,
          body: 'ready: database up, broker up, worker lag 0',
        });
        expect(await anonymous.api.health.query()).toMatchObject({ status: 'ok', db: true });
        await anonymous.close();
        await app.close();
      } finally {
        await relay.cut();
      }
    },
    60_000,
  );
});
