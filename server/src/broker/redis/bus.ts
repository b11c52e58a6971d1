import type { Cluster, Redis } from 'ioredis';
import { channelName } from '../keyspace.js';
import type { Channel, EventBus, SubscriptionWatcher, Unsubscribe } from '../ports/events.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

type Handler = (message: string) => void;

/** Channels one `publishEach` script publishes on, at most. */
const PUBLISH_SLICE = 500;

/** One message on several channels (of one hash slot, on a cluster). */
const PUBLISH_EACH = defineScript({
  name: 'publishEach',
  keys: [],
  args: ['message', 'publish'],
  keyLists: ['channels'],
  body: `for _, channel in ipairs(channels) do redis.call(publish, channel, message) end`,
});

/**
 * Redis Pub/Sub. Publishing goes over the shared command connection; receiving over a
 * connection of its own (`subscriber`), which keeps its subscriptions across reconnects. On a
 * cluster, sharded Pub/Sub (`SPUBLISH`, `SSUBSCRIBE`): a message goes to the node that holds its
 * channel's hash slot alone, and the subscriber is a cluster client with a connection to each
 * master (ioredis's `shardedSubscribers`).
 */
export class RedisBus implements EventBus {
  /** Per channel name: its one handler, or the list of them when it has several. */
  private readonly handlers = new Map<string, Handler | Handler[]>();
  private readonly watchers = new Set<SubscriptionWatcher>();
  /** The subscriber connection went down after it was first up; not yet restored. */
  private subscriberDown = false;
  /**
   * Losses of a subscriber connection so far: on a cluster there is one per master, and one
   * may go while the others are being restored.
   */
  private losses = 0;
  /** A restore that failed, to be tried again: a later `+subscriber` may never come. */
  private retry: ReturnType<typeof setTimeout> | null = null;
  private retries = 0;
  private closing = false;

  constructor(
    private readonly redis: RedisConnection,
    private readonly subscriber: Redis | Cluster,
  ) {
    const receive = (channel: string, message: string) => {
      const handlers = this.handlers.get(channel);
      if (typeof handlers === 'function') handlers(message);
      // A copy: a handler may unsubscribe, or subscribe another, while the list is run.
      else if (handlers) for (const handler of [...handlers]) handler(message);
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
      if (this.subscriberDown) this.restoreNow();
    });
  }

  async publish(channel: Channel, message: string): Promise<void> {
    await this.publishNamed(this.redis.key(this.nameOf(channel)), message);
  }

  /**
   * One call for all the channels on a single server; on a cluster, one per hash slot (sharded
   * Pub/Sub reaches only the node of the channel's slot, and a script only its own slot).
   */
  async publishEach(channels: readonly Channel[], message: string): Promise<void> {
    // Names without the prefix: the script's call adds it to each.
    const names = channels.map((channel) => this.nameOf(channel));
    const calls: Promise<unknown>[] = [];
    for (const group of this.redis.together(names, (name) => name)) {
      if (group.length === 1) {
        calls.push(this.publishNamed(this.redis.key(group[0] as string), message));
        continue;
      }
      // In slices, so that no one script holds Redis for long (a user with thousands of contacts).
      for (let i = 0; i < group.length; i += PUBLISH_SLICE) {
        calls.push(
          this.redis.eval(PUBLISH_EACH, {
            keys: {},
            args: { message, publish: this.redis.publishCommand },
            keyLists: { channels: group.slice(i, i + PUBLISH_SLICE) },
          }),
        );
      }
    }
    await Promise.all(calls);
  }

  private async publishNamed(name: string, message: string): Promise<void> {
    const { client } = this.redis;
    await this.redis.run(() =>
      this.sharded ? client.spublish(name, message) : client.publish(name, message),
    );
  }

  /**
   * A user's channel is received in every partition (the marks of each partition's
   * conversations are published in it); every other channel is one name.
   */
  async subscribe(channel: Channel, onMessage: Handler): Promise<Unsubscribe> {
    const names =
      'user' in channel && this.redis.partitions.length > 1
        ? this.redis.partitions.map((p) => this.redis.key(channelName(p, channel)))
        : this.redis.key(this.nameOf(channel));
    const fresh: string[] = [];
    for (const name of typeof names === 'string' ? [names] : names) {
      if (this.addHandler(name, onMessage)) fresh.push(name);
    }
    if (fresh.length > 0) await this.listen(fresh);
    let subscribed = true;
    return async () => {
      // Once: a second call must not take another subscription of the same handler.
      if (!subscribed) return;
      subscribed = false;
      const unused: string[] = [];
      for (const name of typeof names === 'string' ? [names] : names) {
        if (this.removeHandler(name, onMessage)) unused.push(name);
      }
      if (unused.length > 0) await this.unlisten(unused).catch(() => undefined);
    };
  }

  /**
   * Adds one subscription of `handler` to the channel `name`: true when it is the channel's
   * first. A channel's one handler is kept as it is, several in a list (a function subscribed
   * twice is there twice, and each unsubscribe removes one): most channels have one, and an
   * instance follows one channel per user it serves.
   */
  private addHandler(name: string, handler: Handler): boolean {
    const current = this.handlers.get(name);
    if (current === undefined) {
      this.handlers.set(name, handler);
      return true;
    }
    if (typeof current === 'function') this.handlers.set(name, [current, handler]);
    else current.push(handler);
    return false;
  }

  /** Removes one subscription of `handler` from the channel `name`: true when it was the last. */
  private removeHandler(name: string, handler: Handler): boolean {
    const current = this.handlers.get(name);
    if (current === undefined) return false;
    if (typeof current === 'function') {
      if (current !== handler) return false;
      this.handlers.delete(name);
      return true;
    }
    const at = current.indexOf(handler);
    if (at < 0) return false;
    current.splice(at, 1);
    if (current.length === 1) this.handlers.set(name, current[0] as Handler);
    return false;
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
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }

  private restoreNow(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    void this.restoreSubscriptions();
  }

  /**
   * ioredis re-subscribes by itself on reconnecting; subscribing once more, on the same
   * connection, answers only after Redis has taken those, so from then on nothing is missed.
   * Until that succeeds the subscriptions stay held; a failed attempt is tried again after a
   * while, since the event that started it may not come again (on a cluster, the connection it
   * was sent on may have gone before the group replaced it).
   */
  private async restoreSubscriptions(): Promise<void> {
    const channels = [...this.handlers.keys()];
    const losses = this.losses;
    try {
      if (channels.length > 0) await this.listen(channels);
    } catch {
      this.restoreLater();
      return;
    }
    if (this.closing || !this.subscriberDown) return;
    if (this.subscriber.status !== 'ready') {
      this.restoreLater();
      return;
    }
    // Another connection went meanwhile: what it missed is only certain once it is back too.
    if (this.losses !== losses) {
      this.restoreNow();
      return;
    }
    this.subscriberDown = false;
    this.retries = 0;
    for (const watcher of [...this.watchers]) watcher.restored();
  }

  /** Tries the restore again, from 100 ms growing to 2 s apart, until it succeeds. */
  private restoreLater(): void {
    if (this.closing || !this.subscriberDown || this.retry) return;
    this.retries += 1;
    this.retry = setTimeout(
      () => {
        this.retry = null;
        if (this.subscriberDown && !this.closing) void this.restoreSubscriptions();
      },
      Math.min(100 * 2 ** (this.retries - 1), 2_000),
    );
    this.retry.unref();
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
