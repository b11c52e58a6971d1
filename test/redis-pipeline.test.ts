import { Redis } from 'ioredis';
import { setFlagsFromString } from 'node:v8';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * ioredis's pipelines as patched (patches/ioredis+6.0.0.patch): the engine's commands go out
 * through auto-pipelining, one pipeline per turn of the event loop, so a pipeline must not cost
 * a hidden class of its own. No server is needed: a pipeline that is never executed sends nothing.
 */
setFlagsFromString('--allow-natives-syntax');
// Compiled after the flag is set, so V8 accepts its intrinsic.
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
setFlagsFromString('--no-allow-natives-syntax');

const redis = new Redis({ lazyConnect: true });
afterAll(() => redis.disconnect());

describe('a Redis pipeline', () => {
  it('shares its hidden class with every other pipeline', () => {
    const first = redis.pipeline().get('a');
    const second = redis.pipeline().get('b').get('c');
    expect(haveSameMap(first, second)).toBe(true);
  });

  it('counts its commands through its class, not through a property of its own', () => {
    const pipeline = redis.pipeline().get('a').set('b', '1');
    expect(Object.getOwnPropertyDescriptor(pipeline, 'length')).toBeUndefined();
    expect(pipeline.length).toBe(2);
  });
});
