import { describe, expect, it } from 'vitest';
import { loadConfig } from '../server/src/config/index.js';

describe('REDIS_COMMAND_TIMEOUT', () => {
  it('defaults to 2 s, reads durations, and refuses less than 100ms or more than a minute', () => {
    expect(loadConfig({}).redisCommandTimeoutMs).toBe(2_000);
    expect(loadConfig({ REDIS_COMMAND_TIMEOUT: '500ms' }).redisCommandTimeoutMs).toBe(500);
    expect(loadConfig({ REDIS_COMMAND_TIMEOUT: '5' }).redisCommandTimeoutMs).toBe(5_000);
    expect(loadConfig({ REDIS_COMMAND_TIMEOUT: '1m' }).redisCommandTimeoutMs).toBe(60_000);
    expect(() => loadConfig({ REDIS_COMMAND_TIMEOUT: '50ms' })).toThrow(
      /REDIS_COMMAND_TIMEOUT: must be at least 100ms/,
    );
    expect(() => loadConfig({ REDIS_COMMAND_TIMEOUT: '2m' })).toThrow(
      /REDIS_COMMAND_TIMEOUT: must be at most 1m/,
    );
    expect(() => loadConfig({ REDIS_COMMAND_TIMEOUT: 'slow' })).toThrow(
      /REDIS_COMMAND_TIMEOUT: must be a duration/,
    );
  });
});

describe('PARLEY_WORKER_LINGER', () => {
  it('defaults to 100 ms, reads durations from 0 to a second, and refuses anything else', () => {
    expect(loadConfig({}).worker.lingerMs).toBe(100);
    expect(loadConfig({ PARLEY_WORKER_LINGER: '0' }).worker.lingerMs).toBe(0);
    expect(loadConfig({ PARLEY_WORKER_LINGER: '20ms' }).worker.lingerMs).toBe(20);
    expect(loadConfig({ PARLEY_WORKER_LINGER: '1s' }).worker.lingerMs).toBe(1_000);
    expect(() => loadConfig({ PARLEY_WORKER_LINGER: '2s' })).toThrow(
      /PARLEY_WORKER_LINGER: must be at most 1s/,
    );
    expect(() => loadConfig({ PARLEY_WORKER_LINGER: '-5ms' })).toThrow(
      /PARLEY_WORKER_LINGER: must be a duration/,
    );
  });
});
