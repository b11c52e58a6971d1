import { TRPCError } from '@trpc/server';
import { BrokerUnavailableError } from './broker/types.js';

/** The small family of errors services throw; `toTRPCError` maps them once, at the edge. */
export class DomainError extends Error {
  constructor(
    readonly code:
      | 'NOT_FOUND'
      | 'FORBIDDEN'
      | 'CONFLICT'
      | 'BAD_REQUEST'
      | 'UNAUTHORIZED'
      | 'TOO_MANY_REQUESTS'
      | 'PAYLOAD_TOO_LARGE',
    message: string,
    /** For `Invalid`: the input field the message is about. */
    readonly field?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class NotFound extends DomainError {
  constructor(what: string) {
    super('NOT_FOUND', `${what} not found`);
  }
}

export class Forbidden extends DomainError {
  constructor(message: string) {
    super('FORBIDDEN', message);
  }
}

export class Conflict extends DomainError {
  constructor(message: string, field?: string) {
    super('CONFLICT', message, field);
  }
}

export class Invalid extends DomainError {
  constructor(message: string, field?: string) {
    super('BAD_REQUEST', message, field);
  }
}

export class Unauthorized extends DomainError {
  constructor(message = 'Not authenticated') {
    super('UNAUTHORIZED', message);
  }
}

export class RateLimited extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('TOO_MANY_REQUESTS', message);
  }
}

/**
 * A dependency (Redis, PostgreSQL) is down: the caller may retry. Nothing was accepted, unless
 * `outcomeUnknown` says the change went out and may yet be applied.
 */
export class Unavailable extends Error {
  override name = 'Unavailable';
  readonly outcomeUnknown: boolean;

  constructor(message: string, options?: ErrorOptions & { outcomeUnknown?: boolean }) {
    super(message, options);
    this.outcomeUnknown = options?.outcomeUnknown ?? false;
  }
}

/**
 * A PostgreSQL "data exception" (SQLSTATE class 22): a value the database refused to store or
 * compare, such as a NUL byte or a malformed UUID inside a forged cursor. The caller's data
 * caused it, so it is their BAD_REQUEST, not the server's failure.
 */
function isDataException(error: unknown): boolean {
  return codesOf(error).some((code) => /^22[0-9A-Z]{3}$/.test(code));
}

/** The database connection failed (down, unreachable, reset): nothing was done, retry later. */
const CONNECTION_FAILURES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  // PostgreSQL shutting down or refusing connections (SQLSTATE 57P01-57P03, 08xxx).
  '57P01',
  '57P02',
  '57P03',
]);

function codesOf(error: unknown): string[] {
  const codes: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    current = current.cause;
  }
  return codes;
}

export function isConnectionFailure(error: unknown): boolean {
  return codesOf(error).some((code) => CONNECTION_FAILURES.has(code) || /^08[0-9A-Z]{3}$/.test(code));
}

export function toTRPCError(error: unknown): TRPCError {
  if (error instanceof TRPCError) return error;
  if (isDataException(error)) {
    return new TRPCError({
      code: 'BAD_REQUEST',
      message: 'The input holds a value that cannot be stored or compared',
      cause: error,
    });
  }
  if (error instanceof DomainError) {
    return new TRPCError({ code: error.code, message: error.message, cause: error });
  }
  if ((error instanceof BrokerUnavailableError || error instanceof Unavailable) && error.outcomeUnknown) {
    // The command was sent and may have run (a timeout, a connection cut mid-call).
    return new TRPCError({
      code: 'SERVICE_UNAVAILABLE',
      message:
        'Temporarily unavailable; the change may or may not have been applied. Retry shortly (a message.send retried with its clientMessageId is stored once).',
      cause: error,
    });
  }
  if (error instanceof BrokerUnavailableError || error instanceof Unavailable) {
    return new TRPCError({
      code: 'SERVICE_UNAVAILABLE',
      message: 'Temporarily unavailable; nothing was accepted. Retry shortly.',
      cause: error,
    });
  }
  if (isConnectionFailure(error)) {
    // A write may or may not have landed when its connection broke; retries must be idempotent.
    return new TRPCError({
      code: 'SERVICE_UNAVAILABLE',
      message: 'Temporarily unavailable. Retry shortly.',
      cause: error,
    });
  }
  return new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error', cause: error });
}
