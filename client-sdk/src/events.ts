import { errorCode } from './errors.js';
import type { EventEnvelope, ParleyEvent, ParleyEventOf, ParleyEventType } from './types.js';

type Listener = (event: ParleyEvent, id: string | undefined) => void;

/**
 * Where the event stream stands: `idle` (not started, or signed out), `connecting` (first
 * connection), `live` (the server accepted the subscription), `reconnecting` (the connection
 * dropped or the server refused it; it resumes from the last event by itself).
 */
export type StreamStatus = 'idle' | 'connecting' | 'live' | 'reconnecting';

interface Sink {
  push(event: ParleyEvent): void;
  end(): void;
}

/** What the stream hears from its subscription, as tRPC's subscription callbacks tell it. */
export interface StreamCallbacks {
  onConnectionStateChange(state: { state: string }): void;
  onStarted(): void;
  onData(envelope: EventEnvelope): void;
  onError(error: unknown): void;
  onComplete(): void;
}

/** Opens the `events` subscription with `input`. */
export type OpenStream = (
  input: { lastEventId?: string },
  callbacks: StreamCallbacks,
) => { unsubscribe(): void };

export interface EventStreamOptions {
  open: OpenStream;
  /** Whether the client is signed in; the stream runs only then. */
  signedIn: () => boolean;
  /** Settles once stored tokens have been read, so that `signedIn()` is meaningful. */
  loaded: Promise<void>;
  /** Called when the server refuses the stream's token; resolves to whether to try again. */
  recover: () => Promise<boolean>;
  retryDelayMs: (attempt: number) => number;
  /** Where to resume from, e.g. an id saved by an earlier run. */
  lastEventId?: string;
}

/** The event stream as an app sees it (`client.events`). */
export interface ParleyEvents extends AsyncIterable<ParleyEvent> {
  /** The id of the last event delivered; the stream resumes after it. */
  readonly lastEventId: string | undefined;
  /** Calls `handler` for every event of `type`; returns a function that stops it. */
  on<T extends ParleyEventType>(type: T, handler: (event: ParleyEventOf<T>) => void): () => void;
  /** Calls `handler` for every event, with its id. */
  onAny(handler: (event: ParleyEvent, id: string | undefined) => void): () => void;
  /** Called when the server could not fill a gap: refetch what you show with queries. */
  onResync(handler: () => void): () => void;
  /** Errors the stream recovered from by itself, for logging. */
  onError(handler: (error: unknown) => void): () => void;
  /** The next event of `type` (and matching `filter`, if given). */
  once<T extends ParleyEventType>(
    type: T,
    filter?: (event: ParleyEventOf<T>) => boolean,
  ): Promise<ParleyEventOf<T>>;
  /** Resolves once the server has accepted the subscription, starting it if needed. */
  ready(): Promise<void>;
  /** Where the stream stands now. */
  readonly status: StreamStatus;
  /** Called with each change of `status`; returns a function that stops it. */
  onStatus(handler: (status: StreamStatus) => void): () => void;
}

/**
 * The one `events` subscription of a client, shared by every listener and iterator. It starts
 * on first use, follows the sign-in and resumes from the last event id after any reconnect, so
 * that nothing is missed or repeated. (An event id is a position in the user's stream, which
 * ephemeral events share with the durable event before them, so ids are not used to drop
 * events here: the server's resume does not repeat any.)
 */
export class EventStream implements ParleyEvents {
  private readonly listeners = new Map<ParleyEventType | '*', Set<Listener>>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly errorListeners = new Set<(error: unknown) => void>();
  private readonly statusListeners = new Set<(status: StreamStatus) => void>();
  private currentStatus: StreamStatus = 'idle';
  /** Whether the stream has been live since the last sign-in, to tell a reconnect from a first connect. */
  private wasLive = false;
  private readonly sinks = new Set<Sink>();
  private lastId: string | undefined;
  private subscription: { unsubscribe(): void } | null = null;
  private wanted = false;
  private closed = false;
  private failures = 0;
  /** Set after renewing the token for the stream, until the server accepts it again. */
  private renewedForStream = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private readyWaiters: (() => void)[] = [];
  private isStarted = false;
  private loaded = false;

  constructor(private readonly options: EventStreamOptions) {
    this.lastId = options.lastEventId;
    // Listeners may come before the stored tokens are read: start then if someone is waiting.
    options.loaded.then(
      () => {
        this.loaded = true;
        if (this.wanted) this.start();
      },
      (error: unknown) => this.report(error),
    );
  }

  /** The id of the last event delivered; the stream resumes after it. */
  get lastEventId(): string | undefined {
    return this.lastId;
  }

  /** Calls `handler` for every event of `type`; returns a function that stops it. */
  on<T extends ParleyEventType>(type: T, handler: (event: ParleyEventOf<T>) => void): () => void {
    return this.listen(type, (event) => {
      if (event.type === type) handler(event as ParleyEventOf<T>);
    });
  }

  /** Calls `handler` for every event, with its id when the server tracks it. */
  onAny(handler: (event: ParleyEvent, id: string | undefined) => void): () => void {
    return this.listen('*', handler);
  }

  /**
   * Called when the server could not fill a gap (the client was away too long): local state may
   * miss events, so refetch it with queries.
   */
  onResync(handler: () => void): () => void {
    this.resyncListeners.add(handler);
    this.start();
    return () => this.resyncListeners.delete(handler);
  }

  get status(): StreamStatus {
    return this.currentStatus;
  }

  onStatus(handler: (status: StreamStatus) => void): () => void {
    this.statusListeners.add(handler);
    return () => this.statusListeners.delete(handler);
  }

  /**
   * Errors the stream recovers from by itself, for logging: an expired token (renewed, then the
   * stream resumes), a refused or failed subscription (tried again with a growing delay).
   */
  onError(handler: (error: unknown) => void): () => void {
    this.errorListeners.add(handler);
    return () => this.errorListeners.delete(handler);
  }

  /** The next event of `type` (and matching `filter`, if given). */
  once<T extends ParleyEventType>(
    type: T,
    filter: (event: ParleyEventOf<T>) => boolean = () => true,
  ): Promise<ParleyEventOf<T>> {
    return new Promise((resolve) => {
      const stop = this.on(type, (event) => {
        if (!filter(event)) return;
        stop();
        resolve(event);
      });
    });
  }

  /**
   * Resolves once the server has accepted the subscription (its `started` answer), starting it
   * if needed. After a reconnect nothing is missed, since the stream resumes from `lastEventId`.
   */
  ready(): Promise<void> {
    this.start();
    if (this.isStarted) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  [Symbol.asyncIterator](): AsyncIterator<ParleyEvent> {
    const buffer: ParleyEvent[] = [];
    let waiting: ((result: IteratorResult<ParleyEvent>) => void) | null = null;
    let done = false;
    const finish = (): IteratorResult<ParleyEvent> => {
      done = true;
      this.sinks.delete(sink);
      return { done: true, value: undefined };
    };
    const sink: Sink = {
      push(event) {
        if (waiting) {
          const resolve = waiting;
          waiting = null;
          resolve({ done: false, value: event });
        } else {
          buffer.push(event);
        }
      },
      end() {
        const result = finish();
        if (waiting) {
          const resolve = waiting;
          waiting = null;
          resolve(result);
        }
      },
    };
    this.sinks.add(sink);
    this.start();
    return {
      next: () => {
        const event = buffer.shift();
        if (event) return Promise.resolve({ done: false, value: event });
        if (done) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => {
          waiting = resolve;
        });
      },
      return: () => Promise.resolve(finish()),
    };
  }

  /** (Re)starts the subscription when someone listens and the client is signed in. */
  start(): void {
    this.wanted = true;
    if (this.closed || !this.loaded || this.subscription || this.retryTimer || !this.options.signedIn())
      return;
    const input = this.lastId === undefined ? {} : { lastEventId: this.lastId };
    this.isStarted = false;
    this.setStatus(this.wasLive ? 'reconnecting' : 'connecting');
    this.subscription = this.options.open(input, {
      // The socket dropped: tRPC reconnects and sends the subscription again, from the last id.
      onConnectionStateChange: (state) => {
        if (state.state === 'connecting' && this.isStarted) {
          this.isStarted = false;
          this.setStatus('reconnecting');
        }
      },
      onStarted: () => {
        this.isStarted = true;
        this.wasLive = true;
        this.setStatus('live');
        this.failures = 0;
        this.renewedForStream = false;
        for (const resolve of this.readyWaiters.splice(0)) resolve();
      },
      onData: (envelope) => this.deliver(envelope),
      onError: (error) => this.failed(error),
      onComplete: () => {
        // The server ended the stream (it is shutting down): carry on from where it stopped.
        this.subscription = null;
        this.isStarted = false;
        if (!this.closed) this.setStatus('reconnecting');
        this.retryLater();
      },
    });
  }

  /** Stops the subscription, keeping listeners; `start()` resumes it. */
  pause(): void {
    this.subscription?.unsubscribe();
    this.subscription = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.isStarted = false;
    this.setStatus('idle');
  }

  /** Opens the subscription again (resuming from the last event), if one is open or wanted. */
  restart(): void {
    if (!this.subscription && !this.retryTimer) return;
    this.pause();
    this.start();
  }

  /** Forgets the position, for another user's stream. */
  reset(): void {
    this.lastId = undefined;
    this.wasLive = false;
  }

  /** Stops for good and ends every iterator. */
  close(): void {
    this.closed = true;
    this.pause();
    for (const sink of [...this.sinks]) sink.end();
  }

  /** Whether anything has asked for events (so a sign-in should start the stream). */
  get isWanted(): boolean {
    return this.wanted;
  }

  private listen(key: ParleyEventType | '*', listener: Listener): () => void {
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(listener);
    this.start();
    return () => {
      set.delete(listener);
    };
  }

  private deliver(envelope: EventEnvelope): void {
    const { id, event } = unwrap(envelope);
    if (id !== undefined) this.lastId = id;
    if (event.type === 'resync') for (const listener of [...this.resyncListeners]) safely(listener);
    const typed = this.listeners.get(event.type);
    if (typed !== undefined && typed.size > 0) notify(typed, event, id);
    const any = this.listeners.get('*');
    if (any !== undefined && any.size > 0) notify(any, event, id);
    for (const sink of this.sinks) sink.push(event);
  }

  private failed(error: unknown): void {
    this.subscription = null;
    this.isStarted = false;
    if (this.closed) return;
    this.setStatus('reconnecting');
    this.report(error);
    if (errorCode(error) === 'UNAUTHORIZED' && !this.renewedForStream) {
      // The token expired under the stream: renew it once and carry on from the last event.
      // Refused again straight after, the stream waits like after any other error.
      this.renewedForStream = true;
      this.options.recover().then(
        (ok) => {
          if (ok) this.start();
        },
        (cause: unknown) => {
          this.report(cause);
          this.retryLater();
        },
      );
      return;
    }
    if (errorCode(error) === 'BAD_REQUEST' && this.lastId !== undefined) {
      // The server cannot resume from our position: start afresh and tell the app to refetch.
      this.reset();
      for (const listener of [...this.resyncListeners]) safely(listener);
    }
    this.retryLater();
  }

  private retryLater(): void {
    if (this.closed || this.retryTimer) return;
    this.failures += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted) this.start();
    }, this.options.retryDelayMs(this.failures));
  }

  private setStatus(status: StreamStatus): void {
    if (status === this.currentStatus) return;
    this.currentStatus = status;
    for (const listener of [...this.statusListeners]) safely(() => listener(status));
  }

  private report(error: unknown): void {
    for (const listener of [...this.errorListeners]) safely(() => listener(error));
  }
}

function unwrap(envelope: EventEnvelope): { id: string | undefined; event: ParleyEvent } {
  const value: unknown = envelope;
  if (
    typeof value === 'object' &&
    value !== null &&
    'id' in value &&
    'data' in value &&
    typeof value.id === 'string'
  ) {
    return { id: value.id, event: value.data as ParleyEvent };
  }
  return { id: undefined, event: value as ParleyEvent };
}

/**
 * Calls each listener of `set` as it was when the event arrived (one added meanwhile waits for
 * the next event). One listener's exception does not stop the others or the stream.
 */
function notify(set: Set<Listener>, event: ParleyEvent, id: string | undefined): void {
  if (set.size === 1) {
    callListener(set.values().next().value as Listener, event, id);
    return;
  }
  for (const listener of [...set]) callListener(listener, event, id);
}

function callListener(listener: Listener, event: ParleyEvent, id: string | undefined): void {
  try {
    listener(event, id);
  } catch (error) {
    setTimeout(() => {
      throw error;
    });
  }
}

/** One listener's exception must not stop the others or the stream. */
function safely(call: () => void): void {
  try {
    call();
  } catch (error) {
    setTimeout(() => {
      throw error;
    });
  }
}
