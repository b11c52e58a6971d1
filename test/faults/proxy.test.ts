import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { TcpProxy } from '../support/proxy.js';
import { faultEngines, probe, settlesWithin } from './support.js';

const { databaseUrl, redisUrl } = faultEngines();
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('the fault proxy', () => {
  it('forwards, holds data while paused, refuses while cut, and heals a Redis connection', async () => {
    const proxy = await TcpProxy.start(redisUrl);
    cleanups.push(() => proxy.close());
    const redis = new Redis(proxy.rewrite(redisUrl), {
      lazyConnect: true,
      retryStrategy: () => 50,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
    });
    redis.on('error', () => undefined);
    await redis.connect();
    cleanups.push(() => Promise.resolve(redis.disconnect()));
    const key = `test:proxy:${Date.now()}`;
    const direct = new Redis(redisUrl);
    cleanups.push(async () => {
      await direct.del(key);
      direct.disconnect();
    });

    await redis.set(key, 'through the proxy');
    expect(await direct.get(key)).toBe('through the proxy');
    expect(await probe(proxy.port, 'PING\r\n')).toEqual({ data: '+PONG\r\n', error: null });

    // Paused: the command is sent but neither reaches Redis nor comes back, until restore.
    proxy.pause();
    const write = redis.set(key, 'sent while paused');
    expect(await settlesWithin(write, 400)).toBe(false);
    expect(await direct.get(key)).toBe('through the proxy');
    expect((await probe(proxy.port, 'PING\r\n', 300)).data).toBe('');
    proxy.restore();
    expect(await write).toBe('OK');
    expect(await direct.get(key)).toBe('sent while paused');

    // Cut: the open connection is reset, new ones are refused, commands fail at once.
    // Not events.once: it would reject on the 'error' the reset also emits.
    const closed = new Promise((resolve) => redis.once('close', resolve));
    proxy.cut();
    await closed;
    expect(proxy.connections).toBe(0);
    const refused = await probe(proxy.port, 'PING\r\n');
    expect(refused.data).toBe('');
    expect(refused.error).toBe('ECONNRESET');
    await expect(redis.get(key)).rejects.toThrow();

    // Restored: the client reconnects by itself and works again.
    const acceptedBefore = proxy.accepted;
    proxy.restore();
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
    expect(await redis.get(key)).toBe('sent while paused');
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
  });

  it('forwards, holds data while paused, refuses while cut, and heals a PostgreSQL connection', async () => {
    const proxy = await TcpProxy.start(databaseUrl);
    cleanups.push(() => proxy.close());
    const sql = postgres(proxy.rewrite(databaseUrl), { max: 1, connect_timeout: 2, onnotice: () => {} });
    cleanups.push(() => sql.end({ timeout: 1 }));

    const [first] = await sql<{ one: number }[]>`select 1 as one`;
    expect(first?.one).toBe(1);

    proxy.pause();
    const held = sql<{ two: number }[]>`select 2 as two`.execute();
    expect(await settlesWithin(held, 400)).toBe(false);
    proxy.restore();
    const [second] = await held;
    expect(second?.two).toBe(2);

    proxy.cut();
    await expect(sql`select 3`.execute()).rejects.toThrow();
    const refused = await probe(proxy.port, 'x');
    expect(refused).toEqual({ data: '', error: 'ECONNRESET' });

    proxy.restore();
    const [fourth] = await sql<{ four: number }[]>`select 4 as four`;
    expect(fourth?.four).toBe(4);
    expect(proxy.accepted).toBeGreaterThanOrEqual(2);
  });
});
