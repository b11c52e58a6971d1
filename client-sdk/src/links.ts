import { type Operation, TRPCClientError, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import { errorCode, isNetworkFailure } from './errors.js';
import type { AppRouter } from './router.js';

export interface SendRetry {
  /** Attempts in all, the first included (default 5). */
  attempts?: number;
  /** Delay before the first retry; doubles each time, with jitter (default 250 ms). */
  baseDelayMs?: number;
  /** Longest delay between two attempts (default 5 s). */
  maxDelayMs?: number;
}

export interface SessionLinkOptions {
  /** The access token to send now (renewed first when close to expiry). */
  fresh: () => Promise<string | null>;
  /** After the server refused `rejected`: resolves to whether to try once more. */
  recover: (rejected: string | null, op: Operation) => Promise<boolean>;
  /** The token an operation goes out with, to tell a stale token from a refused one. */
  tokenFor: (op: Operation) => string | null;
  sendRetry: Required<SendRetry>;
  newId: () => string;
}

/** Calls that authenticate by themselves: their UNAUTHORIZED is an answer, not a stale token. */
const SELF_AUTHENTICATING = new Set(['auth.login', 'auth.register', 'auth.refresh']);
/** Mutations safe to repeat: the server returns the first result for a repeated `clientMessageId`. */
const IDEMPOTENT_SENDS = new Set(['message.send']);

/**
 * Makes every call carry a fresh token, retries a call once after a refresh when the server
 * says its token is no longer valid, and gives `message.send` a `clientMessageId` so that it can
 * be repeated after a network failure without posting twice.
 */
export function sessionLink(options: SessionLinkOptions): TRPCLink<AppRouter> {
  return () =>
    ({ op, next }) => {
      // The event stream reconnects and resumes by itself (see events.ts).
      if (op.type === 'subscription') return next(op);
      return observable((observer) => {
        const idempotent = op.type === 'mutation' && IDEMPOTENT_SENDS.has(op.path);
        const prepared = idempotent ? withClientMessageId(op, options.newId) : op;
        let attempt = 0;
        let recovered = false;
        let disposed = false;
        let current: { unsubscribe(): void } | null = null;
        let timer: ReturnType<typeof setTimeout> | null = null;

        const run = () => {
          attempt += 1;
          options.fresh().then(
            () => {
              if (disposed) return;
              const sent: Operation = { ...prepared, context: { ...prepared.context } };
              const token = options.tokenFor(sent);
              current = next(sent).subscribe({
                next: (value) => observer.next(value),
                complete: () => observer.complete(),
                error: (error) => {
                  current = null;
                  if (!disposed) handle(error, token, sent);
                },
              });
            },
            (error: unknown) =>
              observer.error(TRPCClientError.from(error instanceof Error ? error : new Error(String(error)))),
          );
        };

        const handle = (
          error: Parameters<typeof observer.error>[0],
          token: string | null,
          sent: Operation,
        ) => {
          if (
            errorCode(error) === 'UNAUTHORIZED' &&
            !recovered &&
            token !== null &&
            !SELF_AUTHENTICATING.has(op.path)
          ) {
            recovered = true;
            options.recover(token, sent).then(
              (retry) => (disposed ? undefined : retry ? run() : observer.error(error)),
              () => observer.error(error),
            );
            return;
          }
          if (
            idempotent &&
            isNetworkFailure(error) &&
            attempt < options.sendRetry.attempts &&
            !op.signal?.aborted
          ) {
            const { baseDelayMs, maxDelayMs } = options.sendRetry;
            const delay = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
            timer = setTimeout(run, delay / 2 + (Math.random() * delay) / 2);
            return;
          }
          observer.error(error);
        };

        run();
        return () => {
          disposed = true;
          if (timer) clearTimeout(timer);
          current?.unsubscribe();
        };
      });
    };
}

function withClientMessageId(op: Operation, newId: () => string): Operation {
  const input: unknown = op.input;
  if (typeof input !== 'object' || input === null) return op;
  if ('clientMessageId' in input && input.clientMessageId) return op;
  return { ...op, input: { ...input, clientMessageId: newId() } };
}
