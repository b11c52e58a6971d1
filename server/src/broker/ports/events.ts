import { randomBytes } from 'node:crypto';
import type { Mark } from '../../contracts/events.js';

/**
 * The durable side of the event bus: one log of events per conversation, inboxes per user, and
 * the id streams that hand every durable event its id. Each write also publishes
 * `<id>\n<payload>` on the log's channel (`EventBus`) in the same atomic step, so a follower
 * that reads the log after it subscribed misses nothing.
 *
 * Events fall into `partitions` independent orders (`eventPartition` in `keyspace.ts`): a
 * conversation's events and its members' marks in the conversation's, a user's own inbox events
 * in the user's. Each order has its own id stream, and a user an inbox in each; ids compare
 * within one order only, so a reader's position is one id per order.
 *
 * Ids are stream ids (`<ms>-<n>`, see `compareStreamIds`). Each log keeps at least its engine's
 * `eventLogLength` newest entries; older ones are trimmed, and a reader after a trimmed position
 * must resync (`trimmedAfter`).
 */
export interface EventLog {
  /** How many independent orders the events fall into (at least 1). */
  readonly partitions: number;
  /** A durable event of the conversation: into its log, and published on its channel. */
  toConversation(conversationId: string, payload: string): Promise<string>;
  /** A durable event for one user's own devices: into their inbox of their own order, and on their channel. */
  toInbox(userId: string, payload: string): Promise<string>;
  /**
   * The same membership change into each user's inbox of the conversation's order, under one
   * id of that order, in one step.
   */
  mark(userIds: readonly string[], mark: Mark): Promise<string>;
  /** A page of the conversation's log after `after` (strictly), oldest first. */
  conversationAfter(conversationId: string, after: string, count: number): Promise<LogEntry[]>;
  /** A page of the user's inbox of one order after `after` (strictly), oldest first. */
  inboxAfter(userId: string, partition: number, after: string, count: number): Promise<LogEntry[]>;
  /** Whether the log lost, to trimming, an entry it held after `after`. */
  trimmedAfter(log: LogName, after: string): Promise<boolean>;
  /** The newest id each order handed out (`0-0` before its first), by partition. */
  newestIds(): Promise<string[]>;
  /**
   * The deployment's epoch, claimed by the first caller when there is none: it changes whenever
   * the broker loses its data, so that ids from before are never resumed from.
   */
  epoch(): Promise<string>;
}

/** One entry of a log: an event's payload, or (in an inbox) a membership change. */
export type LogEntry =
  | { readonly id: string; readonly payload: string; readonly mark?: undefined }
  | { readonly id: string; readonly mark: Mark; readonly payload?: undefined };

/** Which log: a conversation's, or a user's inbox of one order. */
export type LogName =
  { readonly conversation: string } | { readonly inbox: string; readonly partition: number };

/**
 * The live side: at-most-once messages to every current subscriber of a channel, on any
 * instance. Durable events reach it through `EventLog`; ephemeral ones (typing, presence) and the
 * hub's barriers are published here directly.
 */
export interface EventBus {
  publish(channel: Channel, message: string): Promise<void>;
  /** `publish` of one message on each of `channels`, in as few calls as the engine can. */
  publishEach(channels: readonly Channel[], message: string): Promise<void>;
  subscribe(channel: Channel, onMessage: (message: string) => void): Promise<Unsubscribe>;
  /**
   * While the connection that receives this instance's messages is down, whatever is published
   * is lost to it. `interrupted` is called when that connection goes down, and `restored` once
   * every subscription is in place again, so a subscriber can fetch what it missed from the logs.
   * The in-process engine never loses its subscriptions.
   */
  watchSubscriptions(watcher: SubscriptionWatcher): () => void;
}

/**
 * A channel: a conversation's (its log's events), a user's (their inbox, their contacts'
 * presence), one instance's own (a message it sends itself arrives after everything before it),
 * or the revocations every instance hears.
 */
export type Channel =
  | { readonly conversation: string }
  | { readonly user: string }
  /** In one partition: a message on it arrives after everything published before it there. */
  | { readonly instance: string; readonly partition: number }
  | { readonly revocations: true };

export type Unsubscribe = () => Promise<void>;

export interface SubscriptionWatcher {
  interrupted(): void;
  restored(): void;
}

/** How many entries each log keeps unless the engine is told otherwise. */
export const EVENT_LOG_LENGTH = 2_000;

/**
 * A membership change as it travels on a channel: `!in <conversation>`, `!out <conversation>`.
 * An event's payload is superjson, which never starts with `!`.
 */
export function markText(mark: Mark): string {
  return `!${mark.change} ${mark.conversationId}`;
}

/** The mark a payload holds, or null when it is an event. */
export function readMark(payload: string): Mark | null {
  if (!payload.startsWith('!')) return null;
  const space = payload.indexOf(' ');
  const change = payload.slice(1, space);
  if (space < 0 || (change !== 'in' && change !== 'out')) return null;
  return { change, conversationId: payload.slice(space + 1) };
}

/** A fresh epoch, for the first caller of `epoch` to claim. */
export function newEpoch(): string {
  return randomBytes(6).toString('base64url');
}
