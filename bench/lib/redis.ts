/**
 * What the runner reads from, and removes in, the Redis every server shares: its memory and CPU
 * figures, and the keys of one run or one phase (found by their prefix).
 */
import type { Redis } from 'ioredis';

function infoField(info: string, field: string): number {
  const match = new RegExp(`^${field}:(\\d+)`, 'm').exec(info);
  if (!match) throw new Error(`INFO has no ${field}`);
  return Number(match[1]);
}

/** `used_memory` of `INFO memory`: bytes Redis has allocated, whoever the keys belong to. */
export async function usedMemory(redis: Redis): Promise<number> {
  return infoField(await redis.info('memory'), 'used_memory');
}

/**
 * The `usec` of every command in `INFO commandstats`, summed: CPU time Redis has spent running
 * commands since its start (or its last `CONFIG RESETSTAT`). `INFO` itself is left out, so that
 * reading the figure twice does not count the first reading.
 */
export async function commandMicros(redis: Redis): Promise<number> {
  const text = await redis.info('commandstats');
  let total = 0;
  for (const line of text.split('\n')) {
    const match = /^cmdstat_([^:]+):.*?\busec=(\d+)/.exec(line);
    if (match && match[1] !== 'info') total += Number(match[2]);
  }
  return total;
}

async function eachKeys(redis: Redis, pattern: string, task: (keys: string[]) => Promise<void>) {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await task(keys);
  } while (cursor !== '0');
}

/** Bytes held by the keys matching `pattern`, each measured exactly (`MEMORY USAGE … SAMPLES 0`). */
export async function keyBytes(redis: Redis, pattern: string): Promise<number> {
  let total = 0;
  await eachKeys(redis, pattern, async (keys) => {
    const pipeline = redis.pipeline();
    for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
    for (const [error, bytes] of (await pipeline.exec()) ?? []) {
      // A key that expired between SCAN and MEMORY USAGE answers nil.
      if (!error && typeof bytes === 'number') total += bytes;
    }
  });
  return total;
}

/** Deletes every key matching `pattern`; returns how many there were. */
export async function deleteKeys(redis: Redis, pattern: string): Promise<number> {
  let deleted = 0;
  await eachKeys(redis, pattern, async (keys) => {
    deleted += await redis.unlink(...keys);
  });
  return deleted;
}
