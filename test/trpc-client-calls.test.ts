import { createTRPCClient, TRPCClientError, type TRPCLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { observable } from '@trpc/server/observable';
import { afterEach, describe, expect, it, vi } from 'vitest';

/**
 * How a tRPC client's call is answered, with `observableToPromise` as patched
 * (patches/@trpc+server+11.25.2.patch): an answered call makes no abort of its own, and a call
 * whose link completes without an answer still fails as aborted.
 */
const t = initTRPC.create();
const router = t.router({ ping: t.procedure.mutation(() => 'pong') });
const caller = t.createCallerFactory(router)({});

/** A client whose one link ends each call as `end` says: with the procedure's answer, or not. */
function clientEnding(end: 'answer' | 'complete' | 'error') {
  const link: TRPCLink<typeof router> = () => () =>
    observable((observer) => {
      if (end === 'error') {
        observer.error(TRPCClientError.from(new Error('refused')));
        return;
      }
      if (end === 'complete') {
        observer.complete();
        return;
      }
      void caller.ping().then((data) => {
        observer.next({ result: { type: 'data', data } });
        observer.complete();
      });
    });
  return createTRPCClient<typeof router>({ links: [link] });
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('a tRPC client call', () => {
  it('resolves with its answer without making an AbortController', async () => {
    const made = vi.spyOn(globalThis, 'AbortController');
    expect(await clientEnding('answer').ping.mutate()).toBe('pong');
    expect(made).not.toHaveBeenCalled();
  });

  it('fails as aborted when its link completes without an answer', async () => {
    const failure = await clientEnding('complete')
      .ping.mutate()
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(failure).toBeInstanceOf(TRPCClientError);
    expect((failure as TRPCClientError<typeof router>).cause).toMatchObject({ name: 'AbortError' });
  });

  it("fails with its link's error", async () => {
    await expect(clientEnding('error').ping.mutate()).rejects.toThrow('refused');
  });
});
