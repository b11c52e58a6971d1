import { channelName } from '../keyspace.js';
import type { Channel, EventBus, Unsubscribe } from '../ports/events.js';

/**
 * Channels of the in-process engine. Handlers run on a later tick, as they would after a network
 * hop, so no caller can come to rely on synchronous delivery.
 */
export class MemoryBus implements EventBus {
  private readonly channels = new Map<string, Set<(message: string) => void>>();

  publish(channel: Channel, message: string): Promise<void> {
    this.deliver(channelName('', channel), message);
    return Promise.resolve();
  }

  publishEach(channels: readonly Channel[], message: string): Promise<void> {
    for (const channel of channels) this.deliver(channelName('', channel), message);
    return Promise.resolve();
  }

  /** `publish`, at once: for a write that publishes in the same step. */
  deliver(name: string, message: string): void {
    const handlers = this.channels.get(name);
    if (handlers) for (const handler of [...handlers]) setImmediate(() => handler(message));
  }

  subscribe(channel: Channel, onMessage: (message: string) => void): Promise<Unsubscribe> {
    const name = channelName('', channel);
    let handlers = this.channels.get(name);
    if (!handlers) {
      handlers = new Set();
      this.channels.set(name, handlers);
    }
    // Wrapped, so the same function can be subscribed twice and removed once per subscription.
    const handler = (message: string) => onMessage(message);
    handlers.add(handler);
    const set = handlers;
    return Promise.resolve(() => {
      set.delete(handler);
      if (set.size === 0 && this.channels.get(name) === set) this.channels.delete(name);
      return Promise.resolve();
    });
  }

  watchSubscriptions(): () => void {
    // Delivery is in-process: there is no connection to lose.
    return () => undefined;
  }

  close(): void {
    this.channels.clear();
  }
}
