import { TRPCClientError } from '@trpc/client';

/** The tRPC error code (`UNAUTHORIZED`, `NOT_FOUND`, …) of a failed call, if the server sent one. */
export function errorCode(error: unknown): string | null {
  if (!(error instanceof TRPCClientError)) return null;
  const data: unknown = error.data;
  if (typeof data === 'object' && data !== null && 'code' in data && typeof data.code === 'string') {
    return data.code;
  }
  return null;
}

/**
 * A call that failed without an answer from Parley (connection refused or dropped, socket
 * closed, a proxy's error page): the server may or may not have run it.
 */
export function isNetworkFailure(error: unknown): boolean {
  return error instanceof TRPCClientError && error.shape === undefined && error.data === undefined;
}
