import type { StoredTokens, TokenStorage } from './storage.js';

/** The parts of the Web Storage API (`localStorage`) the token storage uses. */
export interface WebStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface LocalStorageTokenStorageOptions {
  /** The key the tokens are kept under (default `parley.session`); the device token under `<key>.device`. */
  key?: string;
  /** The Web Storage to keep them in (default: the page's `localStorage`). */
  storage?: WebStorage;
  /**
   * Coordinate with the other tabs of the origin that use the same key (default true): one
   * refresh at a time across them (the others take its result), and each follows the others'
   * sign-ins, refreshes and sign-outs.
   */
  crossTab?: boolean;
}

/** The Web Locks API (`navigator.locks`), as far as it is used here. */
interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: () => void): void;
  removeEventListener(type: 'message', listener: () => void): void;
  unref?(): void;
}

interface StorageEventTarget {
  addEventListener(type: 'storage', listener: (event: { key: string | null }) => void): void;
  removeEventListener(type: 'storage', listener: (event: { key: string | null }) => void): void;
}

/** How long a lease taken without Web Locks lasts: a tab that closes while holding it frees it then. */
const LEASE_MS = 10_000;
/** How long a tab waits after writing its lease before reading it back (see `withLease`). */
const LEASE_SETTLE_MS = 30;
const LEASE_POLL_MS = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Keeps the tokens in `localStorage`, so that a reload stays signed in and every tab of the
 * origin shares one session. Tabs refresh one at a time (with the Web Locks API, or a lease in
 * the storage where it is missing), each re-reading the storage first and taking a token another
 * tab just refreshed instead of refreshing again; and every tab follows the others' refreshes,
 * sign-ins and sign-outs (through a `BroadcastChannel`, or `storage` events without one).
 */
export function localStorageTokenStorage(options: LocalStorageTokenStorageOptions = {}): TokenStorage {
  const key = options.key ?? 'parley.session';
  const deviceKey = `${key}.device`;
  const storage = options.storage ?? pageStorage();
  const crossTab = options.crossTab ?? true;
  const listeners = new Set<() => void>();
  let channel: BroadcastChannelLike | null | undefined;

  const notify = () => {
    for (const listener of [...listeners]) listener();
  };

  /** The channel the tabs tell each other of changes on; null where there is none. */
  const channelOf = (): BroadcastChannelLike | null => {
    if (channel !== undefined) return channel;
    const Channel = (globalThis as { BroadcastChannel?: new (name: string) => BroadcastChannelLike })
      .BroadcastChannel;
    channel = crossTab && Channel ? new Channel(`parley:${key}`) : null;
    channel?.addEventListener('message', notify);
    // In Node, an open channel would keep the process alive.
    channel?.unref?.();
    return channel;
  };

  const changed = () => channelOf()?.postMessage('changed');

  return {
    get: () => parseTokens(storage.getItem(key)),
    set: (tokens) => {
      storage.setItem(key, JSON.stringify(tokens));
      changed();
    },
    clear: () => {
      storage.removeItem(key);
      changed();
    },
    getDeviceToken: () => storage.getItem(deviceKey),
    setDeviceToken: (deviceToken) => storage.setItem(deviceKey, deviceToken),
    lock<T>(task: () => Promise<T>): Promise<T> {
      if (!crossTab) return task();
      const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
      if (locks) return locks.request(`parley:${key}:refresh`, task);
      return withLease(storage, `${key}.lock`, task);
    },
    watch(listener) {
      if (!crossTab) return () => {};
      listeners.add(listener);
      if (channelOf()) return () => listeners.delete(listener);
      // Without BroadcastChannel, `storage` events tell a tab of other tabs' writes.
      const target = (globalThis as { window?: StorageEventTarget }).window;
      const onStorage = (event: { key: string | null }) => {
        if (event.key === key || event.key === null) listener();
      };
      target?.addEventListener('storage', onStorage);
      return () => {
        listeners.delete(listener);
        target?.removeEventListener('storage', onStorage);
      };
    },
  };
}

function pageStorage(): WebStorage {
  const storage = (globalThis as { localStorage?: WebStorage }).localStorage;
  if (!storage) {
    throw new Error(
      'localStorage is not available here: pass `storage` to localStorageTokenStorage, or use memoryTokenStorage (or fileTokenStorage in Node)',
    );
  }
  return storage;
}

function parseTokens(text: string | null): StoredTokens | null {
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as Partial<StoredTokens> | null;
    if (
      typeof value?.accessToken !== 'string' ||
      typeof value.refreshToken !== 'string' ||
      typeof value.expiresAt !== 'number'
    ) {
      return null;
    }
    return {
      accessToken: value.accessToken,
      refreshToken: value.refreshToken,
      expiresAt: value.expiresAt,
      ...(typeof value.refreshAt === 'number' ? { refreshAt: value.refreshAt } : {}),
    };
  } catch {
    return null;
  }
}

/**
 * Runs `task` under a lease kept in the storage, for browsers without Web Locks. Two tabs may
 * write their leases at the same moment: each reads its own back after a pause, and only the
 * one whose write landed last goes on. A lease outlives a tab that closes while holding it by
 * at most `LEASE_MS`.
 */
async function withLease<T>(storage: WebStorage, leaseKey: string, task: () => Promise<T>): Promise<T> {
  const owner = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  const holder = () => {
    try {
      const lease = JSON.parse(storage.getItem(leaseKey) ?? 'null') as {
        owner?: unknown;
        until?: unknown;
      } | null;
      return lease && typeof lease.until === 'number' && lease.until > Date.now() ? lease.owner : null;
    } catch {
      return null;
    }
  };
  for (;;) {
    if (holder() === null) {
      storage.setItem(leaseKey, JSON.stringify({ owner, until: Date.now() + LEASE_MS }));
      await sleep(LEASE_SETTLE_MS);
      if (holder() === owner) break;
    }
    await sleep(LEASE_POLL_MS);
  }
  try {
    return await task();
  } finally {
    if (holder() === owner) storage.removeItem(leaseKey);
  }
}
