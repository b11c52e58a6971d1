import net from 'node:net';
import { vi } from 'vitest';
import { engines } from '../support/env.js';

/** The engines a fault scenario runs on; `require-engines.ts` has made sure both are set. */
export function faultEngines(): { databaseUrl: string; redisUrl: string } {
  const { databaseUrl, redisUrl } = engines;
  if (!databaseUrl || !redisUrl) throw new Error('TEST_DATABASE_URL and TEST_REDIS_URL are required');
  return { databaseUrl, redisUrl };
}

/** Whether `promise` settles within `ms`; it keeps running either way. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = promise.then(
    () => true,
    () => true,
  );
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `check` holds; fails with `what` after `timeoutMs`. */
export async function waitUntil(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000) {
  await vi.waitFor(
    async () => {
      if (!(await check())) throw new Error(`timed out waiting until ${what}`);
    },
    { timeout: timeoutMs, interval: 50 },
  );
}

/**
 * Opens a raw TCP connection, writes `send`, and reports what came back before the connection
 * ended (or `timeoutMs` passed): the plainest way to see whether a port forwards or refuses.
 */
export function probe(
  port: number,
  send: string,
  timeoutMs = 1000,
): Promise<{ data: string; error: string | null }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let data = '';
    let error: string | null = null;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ data, error });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('connect', () => socket.write(send));
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('utf8');
      if (data.includes('\r\n')) finish();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    socket.on('close', finish);
  });
}
