import type { Tokens } from './types.js';

/** Tokens as the client keeps them: with absolute times, so they survive a restart. */
export interface StoredTokens {
  accessToken: string;
  refreshToken: string;
  /** When the access token expires, in milliseconds since the epoch (this machine's clock). */
  expiresAt: number;
  /** When to refresh it; defaults to shortly before `expiresAt`. */
  refreshAt?: number;
}

type MaybePromise<T> = T | Promise<T>;

/**
 * Where the client keeps its tokens between calls (and, for persistent storage, between
 * runs). Each method may be synchronous or return a promise.
 */
export interface TokenStorage {
  get(): MaybePromise<StoredTokens | null | undefined>;
  set(tokens: StoredTokens): MaybePromise<void>;
  /** Forgets the tokens, but not the device token: it outlives a sign-out. */
  clear(): MaybePromise<void>;
  /**
   * The device token the last sign-in on this device answered with. The client sends it with
   * every `login`, so that the server counts failed attempts on this account from this device
   * apart from everyone else's, whose failures then never hold this device's sign-in up.
   * Optional: without these two, the client keeps it for as long as it lives.
   */
  getDeviceToken?(): MaybePromise<string | null | undefined>;
  setDeviceToken?(deviceToken: string): MaybePromise<void>;
  /**
   * Runs `task` while no other client sharing this storage runs one. The client refreshes its
   * tokens inside it, after reading the storage again: when another client refreshed meanwhile,
   * it takes those tokens instead of refreshing too. Optional: without it, clients sharing the
   * storage may refresh at the same moment, which the server's reuse grace covers.
   */
  lock?<T>(task: () => Promise<T>): Promise<T>;
  /**
   * Calls `listener` when another client sharing this storage changed what it holds; returns a
   * function that stops it. The client then reads the storage and follows: a refresh, a sign-in
   * or a sign-out made elsewhere. Optional.
   */
  watch?(listener: () => void): () => void;
}

/** The default: tokens live as long as the client object. */
export function memoryTokenStorage(initial: StoredTokens | null = null): TokenStorage {
  let tokens = initial;
  let deviceToken: string | null = null;
  return {
    get: () => tokens,
    set: (next) => {
      tokens = next;
    },
    clear: () => {
      tokens = null;
    },
    getDeviceToken: () => deviceToken,
    setDeviceToken: (next) => {
      deviceToken = next;
    },
  };
}

/**
 * Token expiry is counted in whole seconds, so a token may expire up to a second before
 * `expiresIn` says: that second is taken off. The refresh comes a quarter of the rest early, at
 * most a minute and, for short-lived tokens, up to five seconds but never before halfway: a
 * 15-minute token is renewed after 14 minutes, a 2-second one after half a second.
 */
export function toStoredTokens(tokens: Tokens, now = Date.now()): StoredTokens {
  const lifetime = Math.max(0, tokens.expiresIn * 1000 - 1000);
  const early = Math.min(60_000, Math.max(lifetime / 4, Math.min(lifetime / 2, 5_000)));
  return {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    expiresAt: now + lifetime,
    refreshAt: now + lifetime - early,
  };
}

export function isStoredTokens(value: Tokens | StoredTokens): value is StoredTokens {
  return 'expiresAt' in value && typeof value.expiresAt === 'number';
}

export function refreshTime(tokens: StoredTokens): number {
  return tokens.refreshAt ?? tokens.expiresAt - 30_000;
}
