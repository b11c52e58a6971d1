import { MemoryBroker } from './memory/engine.js';
import { RedisBroker } from './redis/engine.js';
import type { Broker } from './types.js';

export type { Broker } from './types.js';

export async function openBroker(options: { url: string | undefined; prefix: string }): Promise<Broker> {
  return options.url ? RedisBroker.connect({ url: options.url, prefix: options.prefix }) : new MemoryBroker();
}
