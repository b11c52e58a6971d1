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

/** A dependency (Redis, PostgreSQL) is down: the caller may retry; nothing was accepted. */
export class Unavailable extends Error {
  override name = 'Unavailable';
}

export function toTRPCError(error: unknown): TRPCError {
  if (error instanceof TRPCError) return error;
  if (error instanceof DomainError) {
    return new TRPCError({ code: error.code, message: error.message, cause: error });
  }
  if (error instanceof BrokerUnavailableError || error instanceof Unavailable) {
    return new TRPCError({
      code: 'SERVICE_UNAVAILABLE',
      message: 'Temporarily unavailable; nothing was accepted. Retry shortly.',
      cause: error,
    });
  }
  return new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error', cause: error });
}
