import type { Cluster, Redis } from 'ioredis';
import { channelName } from '../keyspace.js';
import type { Channel, EventBus, SubscriptionWatcher, Unsubscribe } from '../ports/events.js';
import type { RedisConnection } from './connection.js';

/**
 * Redis Pub/Sub. Publishing goes over the shared command connection; receiving over a
 * connection of its own (`subscriber`), which keeps its subscriptions across reconnects. On a
 * cluster, sharded Pub/Sub (`SPUBLISH`, `SSUBSCRIBE`): a message goes to the node that holds its
 * channel's hash slot alone, and the subscriber is a cluster client with a connection to each
 * master (ioredis's `shardedSubscribers`).
 */
export class RedisBus implements EventBus {
  private readonly handlers = new Map<string, Set<(message: string) => void>>();
  private readonly watchers = new Set<SubscriptionWatcher>();
  /** The subscriber connection went down after it was first up; not yet restored. */
  private subscriberDown = false;
  /**
   * Losses of a subscriber connection so far: on a cluster there is one per master, and one
   * may go while the others are being restored.
   */
  private losses = 0;
  private closing = false;

  constructor(
    private readonly redis: RedisConnection,
    private readonly subscriber: Redis | Cluster,
  ) {
    const receive = (channel: string, message: string) => {
      const set = this.handlers.get(channel);
      if (set) for (const handler of [...set]) handler(message);
    };
    this.subscriber.on(this.sharded ? 'smessage' : 'message', receive);
  }

  private get sharded(): boolean {
    return this.subscriber.isCluster;
  }

  /** Once the subscriber connection is up: from then on its losses are reported to watchers. */
  watchConnection(): void {
    this.subscriber.on(this.sharded ? '-subscriber' : 'close', () => {
      if (this.closing) return;
      this.losses += 1;
      if (this.subscriberDown) return;
      this.subscriberDown = true;
      for (const watcher of [...this.watchers]) watcher.interrupted();
    });
    this.subscriber.on(this.sharded ? '+subscriber' : 'ready', () => {
      if (this.subscriberDown) void this.restoreSubscriptions();
    });
  }

  async publish(channel: Channel, message: string): Promise<void> {
    const name = this.redis.key(this.nameOf(channel));
    const { client } = this.redis;
    await this.redis.run(() =>
      this.sharded ? client.spublish(name, message) : client.publish(name, message),
    );
  }

  /**
   * A user's channel is received in every partition (the marks of each partition's
   * conversations are published in it); every other channel is one name.
   */
  async subscribe(channel: Channel, onMessage: (message: string) => void): Promise<Unsubscribe> {
    const names =
      'user' in channel
        ? this.redis.partitions.map((p) => this.redis.key(channelName(p, channel)))
        : [this.redis.key(this.nameOf(channel))];
    // Wrapped, so the same function can be subscribed twice and removed once per subscription.
    const handler = (message: string) => onMessage(message);
    const fresh: string[] = [];
    for (const name of names) {
      let set = this.handlers.get(name);
      if (!set) {
        set = new Set();
        this.handlers.set(name, set);
        fresh.push(name);
      }
      set.add(handler);
    }
    if (fresh.length > 0) await this.listen(fresh);
    return async () => {
      const unused: string[] = [];
      for (const name of names) {
        const current = this.handlers.get(name);
        if (!current) continue;
        current.delete(handler);
        if (current.size === 0) {
          this.handlers.delete(name);
          unused.push(name);
        }
      }
      if (unused.length > 0) await this.unlisten(unused).catch(() => undefined);
    };
  }

  /**
   * Where a channel is published: a conversation's in its partition, a user's in their own, an
   * instance's in the partition it is for, revocations in the first.
   */
  private nameOf(channel: Channel): string {
    const { redis } = this;
    if ('conversation' in channel) return channelName(redis.partitionFor(channel.conversation), channel);
    if ('user' in channel) return channelName(redis.partitionFor(channel.user), channel);
    if ('instance' in channel) return channelName(redis.partition(channel.partition), channel);
    return channelName(redis.partition(0), channel);
  }

  watchSubscriptions(watcher: SubscriptionWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  close(): void {
    this.closing = true;
    this.handlers.clear();
  }

  /**
   * ioredis re-subscribes by itself on reconnecting; subscribing once more, on the same
   * connection, answers only after Redis has taken those, so from then on nothing is missed.
   */
  private async restoreSubscriptions(): Promise<void> {
    const channels = [...this.handlers.keys()];
    const losses = this.losses;
    try {
      if (channels.length > 0) await this.listen(channels);
    } catch {
      return; // down again: the next reconnect tries again
    }
    if (this.closing || !this.subscriberDown || this.subscriber.status !== 'ready') return;
    // Another connection went meanwhile: what it missed is only certain once it is back too.
    if (this.losses !== losses) {
      void this.restoreSubscriptions();
      return;
    }
    this.subscriberDown = false;
    for (const watcher of [...this.watchers]) watcher.restored();
  }

  /** Subscribes to `channels`; sharded, once per hash slot (one `SSUBSCRIBE` may not span two). */
  private listen(channels: readonly string[]): Promise<void> {
    return this.bySlot(channels, (group) =>
      this.sharded ? this.subscriber.ssubscribe(...group) : this.subscriber.subscribe(...group),
    );
  }

  private unlisten(channels: readonly string[]): Promise<void> {
    return this.bySlot(channels, (group) =>
      this.sharded ? this.subscriber.sunsubscribe(...group) : this.subscriber.unsubscribe(...group),
    );
  }

  /** Runs `command` on `channels`: at once on a single server, once per hash slot on a cluster. */
  private async bySlot(channels: readonly string[], command: (group: string[]) => Promise<unknown>) {
    await Promise.all(this.redis.together(channels, (name) => name).map(command));
  }
}
