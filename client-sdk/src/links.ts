import { type Operation, retryLink, TRPCClientError, type TRPCLink } from '@trpc/client';
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
  newId: () => string;
}

/** Calls that authenticate by themselves: their UNAUTHORIZED is an answer, not a stale token. */
const SELF_AUTHENTICATING = new Set(['auth.login', 'auth.register', 'auth.refresh']);
/** Mutations safe to repeat: the server returns the first result for a repeated `clientMessageId`. */
const IDEMPOTENT_SENDS = new Set(['message.send']);

/**
 * Makes every call carry a fresh token, retries a call once after a refresh when the server
 * says its token is no longer valid, and gives `message.send` a `clientMessageId` so that
 * `sendRetryLink` can repeat it after a network failure without posting twice. A send whose
 * id it made goes out the first time with `firstAttempt`: no earlier message can have that id,
 * so the server does not look for one. Every later attempt goes without it.
 */
export function sessionLink(options: SessionLinkOptions): TRPCLink<AppRouter> {
  return () =>
    ({ op, next }) => {
      // The event stream reconnects and resumes by itself (see events.ts).
      if (op.type === 'subscription') return next(op);
      return observable((observer) => {
        const prepared = isIdempotentSend(op) ? withClientMessageId(op, options.newId) : op;
        let runs = 0;
        let recovered = false;
        let disposed = false;
        let current: { unsubscribe(): void } | null = null;

        const run = () => {
          options.fresh().then(
            () => {
              if (disposed) return;
              const attempt = ++runs === 1 ? prepared : withoutFirstAttempt(prepared);
              const sent: Operation = { ...attempt, context: { ...attempt.context } };
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
          observer.error(error);
        };

        run();
        return () => {
          disposed = true;
          current?.unsubscribe();
        };
      });
    };
}

function isIdempotentSend(op: Operation): boolean {
  return op.type === 'mutation' && IDEMPOTENT_SENDS.has(op.path);
}

/**
 * Repeats `message.send` after a network failure (tRPC's `retryLink`), with the
 * `clientMessageId` `sessionLink` gave it, `attempts` times in all, waiting `baseDelayMs`
 * (doubling, at most `maxDelayMs`, with jitter) in between, each repeat without
 * `firstAttempt`. Nothing else is repeated.
 */
export function sendRetryLink(retry: Required<SendRetry>): TRPCLink<AppRouter> {
  const retrying = retryLink<AppRouter>({
    retry: ({ op, error, attempts }) =>
      isIdempotentSend(op) && isNetworkFailure(error) && attempts < retry.attempts && !op.signal?.aborted,
    retryDelayMs: (attempts) => {
      const delay = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempts - 1));
      return delay / 2 + (Math.random() * delay) / 2;
    },
  });
  return (runtime) => {
    const link = retrying(runtime);
    return ({ op, next }) => {
      // Nothing else is repeated, so nothing else goes through `retryLink`'s observables (the
      // event stream's every event would).
      if (!isIdempotentSend(op)) return next(op);
      // `retryLink` hands each attempt of this operation to `next`: only the first is one.
      let attempts = 0;
      return link({ op, next: (attempt) => next(++attempts === 1 ? attempt : withoutFirstAttempt(attempt)) });
    };
  };
}

function withClientMessageId(op: Operation, newId: () => string): Operation {
  const input: unknown = op.input;
  if (typeof input !== 'object' || input === null) return op;
  if ('clientMessageId' in input && input.clientMessageId) return op;
  return { ...op, input: { ...input, clientMessageId: newId(), firstAttempt: true } };
}

/** The operation as a repeat sends it: an id it went out with before is not a first attempt. */
function withoutFirstAttempt(op: Operation): Operation {
  const input: unknown = op.input;
  if (typeof input !== 'object' || input === null || !('firstAttempt' in input)) return op;
  const { firstAttempt: _firstAttempt, ...rest } = input;
  return { ...op, input: rest };
}
