/**
 * What tRPC itself costs a call and an event, apart from Parley's own work: a procedure called
 * through four middlewares (one adding to the context, as `requireUser` does) with input and
 * output parsers; `transformResult`, which a client runs on every event it receives; and a
 * client's call, from `mutate` to its answer, through a link that answers at once.
 *
 *   npx tsx bench/trpc-calls.ts
 *
 * patches/@trpc+server+*.patch changes both; `npx patch-package --reverse` removes the patches
 * and `npx patch-package` puts them back, so the two can be compared one after the other.
 */
import { createTRPCClient } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { observable } from '@trpc/server/observable';
import { transformResult } from '@trpc/server/unstable-core-do-not-import';
import superjson from 'superjson';

interface Context {
  app: object;
  user: { id: string } | null;
  ip: string;
  requestId: string;
  connectionId: string | null;
  response: null;
  connection: object | null;
}

const t = initTRPC.context<Context>().create({ transformer: superjson });
const procedure = t.procedure
  .use(async ({ next }) => next())
  .use(async ({ next }) => next({ ctx: { user: { id: 'user' } } }))
  .use(async ({ next }) => next())
  .use(async ({ getRawInput, next }) => {
    await getRawInput();
    return next();
  })
  .input((value) => value as { conversationId: string; content: string })
  .output((value) => value as { id: number; conversationId: string; content: string });
const router = t.router({ send: procedure.mutation(({ input }) => ({ id: 1, ...input })) });
const caller = t.createCallerFactory(router)({
  app: {},
  user: null,
  ip: '127.0.0.1',
  requestId: 'request',
  connectionId: 'connection',
  response: null,
  connection: {},
});

async function perCall(count: number): Promise<number> {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) await caller.send({ conversationId: 'conversation', content: 'hi' });
  return Number(process.hrtime.bigint() - started) / count / 1000;
}

/** A data frame of the `events` subscription as the client's WebSocket link has parsed it. */
function eventResponse() {
  return {
    id: 1,
    jsonrpc: '2.0' as const,
    result: {
      type: 'data' as const,
      id: '1-0',
      data: { json: { id: '1-0', data: { type: 'message.created', seq: 1 } } },
    },
  };
}

const output = {
  serialize: (value: unknown) => superjson.serialize(value),
  deserialize: (value: unknown) =>
    superjson.deserialize(value as Parameters<typeof superjson.deserialize>[0], { inPlace: true }),
};

function perEvent(count: number): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) transformResult(eventResponse(), output);
  return Number(process.hrtime.bigint() - started) / count / 1000;
}

/** A client whose one link answers every call at once, as a socket's answer would. */
const client = createTRPCClient<typeof router>({
  links: [
    () => () =>
      observable((observer) => {
        observer.next({ result: { type: 'data', data: { id: 1, conversationId: 'c', content: 'hi' } } });
        observer.complete();
      }),
  ],
});

async function perClientCall(count: number): Promise<number> {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) await client.send.mutate({ conversationId: 'conversation', content: 'hi' });
  return Number(process.hrtime.bigint() - started) / count / 1000;
}

await perCall(20_000);
await perClientCall(20_000);
perEvent(100_000);
const calls = [await perCall(100_000), await perCall(100_000), await perCall(100_000)];
const events = [perEvent(500_000), perEvent(500_000), perEvent(500_000)];
const clientCalls = [
  await perClientCall(100_000),
  await perClientCall(100_000),
  await perClientCall(100_000),
];
const median = (values: number[]) => [...values].sort((a, b) => a - b)[1] ?? Number.NaN;
console.log(`a call through four middlewares: ${median(calls).toFixed(1)} µs (median of three runs)`);
console.log(`transformResult for one event:    ${median(events).toFixed(2)} µs (median of three runs)`);
console.log(`a client's call and its answer:   ${median(clientCalls).toFixed(1)} µs (median of three runs)`);
