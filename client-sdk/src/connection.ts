/** How a quiet socket is checked: see `watchSocket`. */
export interface KeepAlive {
  /**
   * A socket that received nothing for a whole interval of this length is sent `PING` (20 s by
   * default; checked once an interval, so the quiet before it is one to two intervals).
   */
  intervalMs?: number;
  /** A socket that then receives nothing for this long is closed, and reconnects (5 s by default). */
  pongTimeoutMs?: number;
}

/** The keep-alive's timings, defaults filled in; a clear error for any that is not a positive duration. */
export function keepAliveTimings(given: KeepAlive = {}): Required<KeepAlive> {
  return {
    intervalMs: positiveMs('keepAlive.intervalMs', given.intervalMs ?? 20_000),
    pongTimeoutMs: positiveMs('keepAlive.pongTimeoutMs', given.pongTimeoutMs ?? 5_000),
  };
}

function positiveMs(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number of milliseconds, not ${String(value)}`);
  }
  return value;
}

type Listener = (this: unknown, event: unknown) => void;

/** The parts of a WebSocket (the browser's, or the `ws` package's) this module uses. */
interface WatchedSocket {
  readonly readyState: number;
  send(data: string): void;
  close(): void;
  terminate?: () => void;
  addEventListener(type: string, listener: Listener, options?: unknown): void;
  removeEventListener(type: string, listener: Listener, options?: unknown): void;
}

const OPEN = 1;

/** Rethrown outside the dispatch, so that one listener's throw does not skip the others. */
function rethrowLater(error: unknown) {
  setTimeout(() => {
    throw error;
  });
}

/**
 * Readies a socket the client just made, before tRPC's WebSocket client adds its listeners:
 *
 * - **One message event per frame.** tRPC adds three `message` listeners to a socket. The `ws`
 *   package decodes the frame's text and builds an event for each of them; here they are given
 *   one event, decoded once (a browser's socket shares its event already).
 * - **The keep-alive** counts frames instead of resetting a timer on each: one interval timer
 *   per socket sends `PING` after an interval with nothing received, and closes the socket if
 *   nothing arrives in the next `pongTimeoutMs` (tRPC's WebSocket client then reconnects). Any
 *   frame counts as an answer, the server's own `PING` included.
 */
export function watchSocket(socket: object, keepAlive: Required<KeepAlive>): void {
  const watched = socket as WatchedSocket;
  const add = watched.addEventListener.bind(watched);
  const remove = watched.removeEventListener.bind(watched);
  // Replaced, never changed in place: an event goes to the listeners there were when it came.
  let listeners: readonly Listener[] = [];
  let received = 0;

  add('message', (event: unknown) => {
    received += 1;
    for (const listener of listeners) {
      try {
        listener.call(socket, event);
      } catch (error) {
        rethrowLater(error);
      }
    }
  });
  Object.defineProperties(watched, {
    addEventListener: {
      value: (type: string, listener: Listener, options?: unknown) => {
        if (type === 'message' && typeof listener === 'function' && options === undefined) {
          if (!listeners.includes(listener)) listeners = [...listeners, listener];
        } else add(type, listener, options);
      },
    },
    removeEventListener: {
      value: (type: string, listener: Listener, options?: unknown) => {
        if (type === 'message' && options === undefined && listeners.includes(listener)) {
          listeners = listeners.filter((kept) => kept !== listener);
        } else remove(type, listener, options);
      },
    },
  });

  let interval: ReturnType<typeof setInterval> | undefined;
  let answer: ReturnType<typeof setTimeout> | undefined;
  let checked = 0;
  const stop = () => {
    clearInterval(interval);
    clearTimeout(answer);
  };
  add('open', () => {
    checked = received;
    interval = setInterval(() => {
      if (received !== checked || watched.readyState !== OPEN) {
        checked = received;
        return;
      }
      watched.send('PING');
      clearTimeout(answer);
      answer = setTimeout(() => {
        if (received !== checked || watched.readyState !== OPEN) return;
        // A peer that stopped answering does not answer a close either: `ws` would wait for it.
        if (typeof watched.terminate === 'function') watched.terminate();
        else watched.close();
      }, keepAlive.pongTimeoutMs);
    }, keepAlive.intervalMs);
  });
  add('close', stop);
}
