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
  readonly ready: Promise<void>;

  constructor(private readonly options: SessionOptions) {
    this.ready = this.load(options.initial);
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
    this.refreshing ??= this.runRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async runRefresh(): Promise<string | null> {
    const generation = this.generation;
    const ours = this.tokens;
    if (!ours) return null;
    // Another tab or process sharing this storage may have rotated the tokens already; sending our
    // older refresh token would count as reuse and revoke the whole session.
    const stored = await this.options.storage.get();
    if (generation !== this.generation) return this.accessToken;
    if (stored && stored.refreshToken !== ours.refreshToken && Date.now() < refreshTime(stored)) {
      this.adopt(stored);
      this.options.onChange({ type: 'refreshed', tokens: stored });
      return stored.accessToken;
    }
    const base = stored && stored.refreshToken !== ours.refreshToken ? stored : ours;
    let next: Tokens;
    try {
      next = await this.options.refresh(base.refreshToken);
    } catch (error) {
      if (errorCode(error) === 'UNAUTHORIZED' && generation === this.generation) {
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
