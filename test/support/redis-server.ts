import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

/** A `redis-server` of a test file's own, keeping nothing on disk. */
export interface LocalRedis {
  url: string;
  stop(): Promise<void>;
}

/** Whether a `redis-server` binary is on the PATH. */
export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/**
 * Starts a throwaway `redis-server` on a free loopback port, so the embedded run exercises the
 * Redis engine's scripts too; resolves once it answers PING. A port can be taken between
 * finding it free and the server binding it (a cluster node also binds the port 10,000 above,
 * which may be some client's): a server that exits at once is started again on another port.
 */
export async function startRedisServer(
  options: { args?: string[]; cwd?: string } = {},
): Promise<LocalRedis & { port: number }> {
  for (let attempt = 1; ; attempt++) {
    const started = await startOnce(await freePort(), options);
    if (started !== null) return started;
    if (attempt >= 5) throw new Error(`redis-server exited at start ${attempt} times, on as many ports`);
  }
}

/** The server on `port`, or null when it exited before answering (its port was taken). */
async function startOnce(
  port: number,
  options: { args?: string[]; cwd?: string },
): Promise<(LocalRedis & { port: number }) | null> {
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--logfile',
      '',
      ...(options.args ?? []),
    ],
    { stdio: 'ignore', cwd: options.cwd },
  );
  const url = `redis://127.0.0.1:${port}`;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    const up = await probe
      .connect()
      .then(() => probe.ping())
      .then(
        () => true,
        () => false,
      );
    probe.disconnect();
    if (up) break;
    if (child.exitCode !== null) return null;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start on port ${port}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    port,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
