import { TRPCClientError } from '@trpc/client';
import { expect } from 'vitest';

/** Awaits a call that must fail, and returns the tRPC error for further checks. */
export interface CallError {
  message: string;
  data: Record<string, unknown> & { code?: string; httpStatus?: number; zodError?: unknown };
}

export async function rejection(promise: Promise<unknown>): Promise<CallError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(TRPCClientError);
    return error as CallError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

export async function expectCode(promise: Promise<unknown>, code: string) {
  const error = await rejection(promise);
  expect(error.data?.code, error.message).toBe(code);
  return error;
}
