import { errorCode } from './errors.js';
import {
  isStoredTokens,
  refreshTime,
  type StoredTokens,
  type TokenStorage,
  toStoredTokens,
} from './storage.js';
import type { Me, Tokens } from './types.js';

/** What changed about the client's sign-in; passed to `onAuthChange`. */
export type AuthChange =
  | { type: 'signedIn'; user: Me; tokens: StoredTokens }
  | { type: 'refreshed'; tokens: StoredTokens }
  | { type: 'signedOut'; reason: 'logout' | 'expired' };

export interface SessionOptions {
  storage: TokenStorage;
  initial?: Tokens | StoredTokens;
  /** Exchanges a refresh token for new tokens (`auth.refresh`, sent without an access token). */
  refresh: (refreshToken: string) => Promise<Tokens>;
  onChange: (change: AuthChange) => void;
  /** The user the current tokens belong to (`auth.me`), for a sign-in made by another client. */
  identify: () => Promise<Me>;
}

/** How long to wait before trying again when a scheduled refresh could not reach the server. */
const REFRESH_RETRY_MS = 5_000;

/**
 * Holds the tokens, refreshes them before they expire and after the server refuses one, with at
 * most one refresh in flight however many calls wait on it.
 */
export class Session {
  private tokens: StoredTokens | null = null;
  /** The last device token the server gave this device; survives sign-out. */
  private device: string | null = null;
  private refreshing: Promise<string | null> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Bumped on every sign-in and sign-out, so a refresh that ends after one is dropped. */
  private generation = 0;
  private closed = false;
  private unwatch: (() => void) | null = null;
  readonly ready: Promise<void>;

  constructor(private readonly options: SessionOptions) {
    this.ready = this.load(options.initial).then(() => {
      if (this.closed) return;
      this.unwatch =
        options.storage.watch?.(() => {
          // A failure here (the storage, or `identify` unreachable) leaves this client as it was.
          this.follow().catch(() => undefined);
        }) ?? null;
    });
  }

  private async load(initial: Tokens | StoredTokens | undefined): Promise<void> {
    this.device = (await this.options.storage.getDeviceToken?.()) ?? null;
    if (initial) {
      const tokens = isStoredTokens(initial) ? initial : toStoredTokens(initial);
      await this.options.storage.set(tokens);
      this.adopt(tokens);
      return;
    }
    const stored = await this.options.storage.get();
    if (stored) this.adopt(stored);
  }

  /** The current access token, as it is (see `fresh()` for one that is renewed first). */
  get accessToken(): string | null {
    return this.tokens?.accessToken ?? null;
  }

  get current(): StoredTokens | null {
    return this.tokens;
  }

  get currentDevice(): string | null {
    return this.device;
  }

  /** The access token to send now; refreshed first when it is about to expire. */
  async fresh(): Promise<string | null> {
    await this.ready;
    const tokens = this.tokens;
    if (!tokens) return null;
    if (Date.now() < refreshTime(tokens)) return tokens.accessToken;
    try {
      return await this.refresh();
    } catch {
      // The server is unreachable: the call will fail on its own and say why.
      return this.tokens?.accessToken ?? null;
    }
  }

  /**
   * After the server refused `rejected`: refreshes, unless another call already did. Resolves
   * to whether trying again with the current token makes sense.
   */
  async recover(rejected: string | null): Promise<boolean> {
    await this.ready;
    const tokens = this.tokens;
    if (!tokens) return false;
    if (rejected !== null && tokens.accessToken !== rejected) return true;
    return (await this.refresh()) !== null;
  }

  /** One refresh at a time: every caller that arrives meanwhile shares its result. */
  refresh(): Promise<string | null> {
    this.refreshing ??= this.runRefresh(this.tokens).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /**
   * Refreshes `requested`, the tokens held when the refresh was asked for; under the storage's
   * lock, when it has one, so that of the clients sharing it only one refreshes at a time.
   */
  private async runRefresh(requested: StoredTokens | null): Promise<string | null> {
    if (!requested) return null;
    const storage = this.options.storage;
    return storage.lock ? storage.lock(() => this.refreshOnce(requested)) : this.refreshOnce(requested);
  }

  private async refreshOnce(requested: StoredTokens): Promise<string | null> {
    const generation = this.generation;
    // Another tab or process sharing this storage may have rotated the tokens already; sending our
    // older refresh token would count as reuse and revoke the whole session.
    const stored = await this.options.storage.get();
    if (generation !== this.generation) return this.accessToken;
    if (stored && stored.refreshToken !== requested.refreshToken && Date.now() < refreshTime(stored)) {
      this.take(stored);
      return stored.accessToken;
    }
    const base = stored && stored.refreshToken !== requested.refreshToken ? stored : requested;
    let next: Tokens;
    try {
      next = await this.options.refresh(base.refreshToken);
    } catch (error) {
      if (errorCode(error) === 'UNAUTHORIZED' && generation === this.generation) {
        // Refused, but a client sharing the storage may have moved the session on meanwhile.
        const latest = await this.options.storage.get();
        if (generation !== this.generation) return this.accessToken;
        if (latest && latest.refreshToken !== base.refreshToken) {
          this.take(latest);
          return latest.accessToken;
        }
        await this.signOut('expired');
        return null;
      }
      throw error;
    }
    if (generation !== this.generation) return this.accessToken;
    const tokens = toStoredTokens(next);
    await this.options.storage.set(tokens);
    this.adopt(tokens);
    this.options.onChange({ type: 'refreshed', tokens });
    return tokens.accessToken;
  }

  /** Takes tokens another client stored for this session, unless they are already ours. */
  private take(tokens: StoredTokens): void {
    if (this.tokens?.refreshToken === tokens.refreshToken) return;
    this.adopt(tokens);
    this.options.onChange({ type: 'refreshed', tokens });
  }

  /**
   * After another client sharing the storage changed it: follows its refresh, its sign-out, or
   * its sign-in (as someone else, this client signs out first).
   */
  private async follow(): Promise<void> {
    await this.ready;
    const generation = this.generation;
    const stored = (await this.options.storage.get()) ?? null;
    if (this.closed || generation !== this.generation) return;
    const ours = this.tokens;
    if (stored?.refreshToken === ours?.refreshToken) return;
    if (ours && stored && subjectOf(stored.accessToken) === subjectOf(ours.accessToken)) {
      this.take(stored);
      return;
    }
    if (ours) {
      this.generation += 1;
      this.tokens = null;
      this.clearTimer();
      this.options.onChange({ type: 'signedOut', reason: 'logout' });
    }
    if (!stored) return;
    this.generation += 1;
    const signedIn = this.generation;
    this.adopt(stored);
    const user = await this.options.identify();
    if (signedIn === this.generation && !this.closed) {
      this.options.onChange({ type: 'signedIn', user, tokens: stored });
    }
  }

  /** The device token to send with the next sign-in, if this device has one. */
  async deviceToken(): Promise<string | null> {
    await this.ready;
    return this.device;
  }

  async signIn(tokens: Tokens, user: Me, deviceToken?: string): Promise<StoredTokens> {
    await this.ready;
    this.generation += 1;
    const stored = toStoredTokens(tokens);
    if (deviceToken && deviceToken !== this.device) {
      this.device = deviceToken;
      await this.options.storage.setDeviceToken?.(deviceToken);
    }
    await this.options.storage.set(stored);
    this.adopt(stored);
    this.options.onChange({ type: 'signedIn', user, tokens: stored });
    return stored;
  }

  async signOut(reason: 'logout' | 'expired'): Promise<void> {
    this.generation += 1;
    const wasSignedIn = this.tokens !== null;
    this.tokens = null;
    this.clearTimer();
    await this.options.storage.clear();
    if (wasSignedIn) this.options.onChange({ type: 'signedOut', reason });
  }

  close(): void {
    this.closed = true;
    this.clearTimer();
    this.unwatch?.();
    this.unwatch = null;
  }

  private adopt(tokens: StoredTokens): void {
    this.tokens = tokens;
    this.schedule(refreshTime(tokens) - Date.now());
  }

  /** A refresh ahead of expiry keeps an open event stream authorised even when no call is made. */
  private schedule(delayMs: number): void {
    this.clearTimer();
    if (this.closed || !this.tokens) return;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch(() => this.schedule(REFRESH_RETRY_MS));
      },
      Math.max(0, delayMs),
    );
    // A pending refresh alone must not keep a Node process alive.
    if (typeof this.timer === 'object' && 'unref' in this.timer) this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** The user an access token was issued to (its `sub` claim), read without verifying it. */
function subjectOf(accessToken: string): string | null {
  try {
    const payload = accessToken.split('.')[1] ?? '';
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='))) as {
      sub?: unknown;
    };
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}
