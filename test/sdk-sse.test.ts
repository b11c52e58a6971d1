import { createTRPCClient, httpBatchLink, httpSubscriptionLink, splitLink } from '@trpc/client';
import { EventSource } from 'eventsource';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import type { AppRouter } from '../server/src/routers/_app.js';
import {
  type AuthChange,
  createParleyClient,
  type EventSourceConstructor,
  type Message,
  type ParleyClient,
} from '../client-sdk/src/index.js';
import { connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode } from './support/errors.js';
import { sdkUser, sleep, streamLive, waitFor } from './support/sdk.js';

/**
 * The `events` subscription as server-sent events, authenticated through tRPC's
 * `connectionParams` (an EventSource cannot set headers): with the real `httpSubscriptionLink`,
 * and with the SDK's `transport: 'sse'`. Node 20 has no EventSource: the `eventsource` package
 * stands in for the browser's.
 */

let deployment: TestDeployment;
/** Responses end after 1.5 s, so the EventSource reconnects and resumes within a test. */
let app: App;
/** Access tokens live two seconds. */
let shortLived: App;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  deployment = await TestDeployment.create();
  // Trace level: whatever is logged about these requests, `cleanup` checks it holds no token.
  app = await deployment.start({ logLevel: 'trace', limits: { sseMaxDurationMs: 1_500, ssePingMs: 500 } });
  shortLived = await deployment.start({ logLevel: 'trace', jwt: { accessTtlSeconds: 2 } });
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
});

/** A plain tRPC client whose subscriptions go over SSE with `token` in `connectionParams`. */
function sseClient(url: string, token: string | null) {
  const opened: string[] = [];
  class CountingEventSource extends EventSource {
    constructor(...args: ConstructorParameters<typeof EventSource>) {
      super(...args);
      opened.push(String(args[0]));
    }
  }
  const client = createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        true: httpSubscriptionLink({
          url: `${url}/trpc`,
          transformer: superjson,
          EventSource: CountingEventSource,
          connectionParams: () => (token ? { token } : {}),
        }),
        false: httpBatchLink({ url: `${url}/trpc`, transformer: superjson }),
      }),
    ],
  });
  return { client, opened };
}

async function pair(target: App) {
  const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
  const conversation = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
  return { al, bo, conversation };
}

describe(`events over server-sent events with connectionParams (${engineLabel})`, () => {
  it('delivers events to httpSubscriptionLink authenticated by connectionParams, and resumes after the response ends', async () => {
    const { al, bo, conversation } = await pair(app);
    const { client, opened } = sseClient(app.url, bo.tokens.accessToken);
    const contents: string[] = [];
    const errors: unknown[] = [];
    const subscription = client.events.subscribe(
      {},
      {
        onData: ({ data }) => {
          if (data.type === 'message.created') contents.push(data.message.content);
        },
        onError: (error) => errors.push(error),
      },
    );
    try {
      await streamLive(app, bo.user.id);
      await al.api.message.send.mutate({ conversationId: conversation.id, content: 'one' });
      await waitFor(
        () => contents.includes('one'),
        () => `received ${JSON.stringify(contents)}`,
      );
      // The server ends each response after 1.5 s; the EventSource opens the same URL again with
      // Last-Event-ID by itself, and what is sent from then on arrives once.
      await sleep(1_600);
      await al.api.message.send.mutate({ conversationId: conversation.id, content: 'two' });
      await waitFor(
        () => contents.includes('two'),
        () => `received ${JSON.stringify(contents)}`,
      );
      await al.api.message.send.mutate({ conversationId: conversation.id, content: 'three' });
      await waitFor(
        () => contents.includes('three'),
        () => `received ${JSON.stringify(contents)}`,
      );
      expect(contents).toEqual(['one', 'two', 'three']);
      expect(errors).toEqual([]);
      expect(opened[0]).toContain('connectionParams=');
    } finally {
      subscription.unsubscribe();
    }
    expect(deployment.logLines.filter((line) => line.includes(bo.tokens.accessToken))).toEqual([]);
  });

  it('refuses a stream without a valid token in connectionParams', async () => {
    for (const token of [null, 'not-a-token']) {
      const { client } = sseClient(app.url, token);
      const failed = new Promise<Error>((resolve) => {
        const subscription = client.events.subscribe(
          {},
          {
            onError: (error) => {
              subscription.unsubscribe();
              resolve(error);
            },
          },
        );
      });
      await expectCode(Promise.reject(await failed), 'UNAUTHORIZED');
    }
  });

  it('a server shutting down ends its event streams, so the EventSource goes to reconnect', async () => {
    // Its own instance: this one is shut down. Responses would otherwise last ten minutes.
    const closing = await deployment.start();
    const { bo } = await pair(closing);
    const { client } = sseClient(closing.url, bo.tokens.accessToken);
    const states: string[] = [];
    const subscription = client.events.subscribe(
      {},
      { onConnectionStateChange: (state) => states.push(state.state), onError: () => {} },
    );
    try {
      await streamLive(closing, bo.user.id);
      const before = states.length;
      await closing.close();
      await waitFor(
        () => states.slice(before).includes('connecting'),
        () => `states ${JSON.stringify(states)}`,
      );
    } finally {
      subscription.unsubscribe();
    }
  });

  it('reads a token from connectionParams only for a subscription, never for a query', async () => {
    const cy = await signUp(app.url);
    const params = encodeURIComponent(JSON.stringify({ token: cy.tokens.accessToken }));
    const response = await fetch(`${app.url}/trpc/auth.me?connectionParams=${params}`);
    expect(response.status).toBe(401);
    await expect(connect(app.url, cy.tokens.accessToken).api.auth.me.query()).resolves.toMatchObject({
      id: cy.user.id,
    });
  });
});

describe(`@parley/client with transport: 'sse' (${engineLabel})`, () => {
  it('refuses to start without an EventSource where the runtime has none', () => {
    expect(() => createParleyClient({ url: app.url, transport: 'sse' })).toThrow(/needs an EventSource/);
  });

  it('streams events across token refreshes without losing or repeating one', async () => {
    const changes: AuthChange[] = [];
    const opened: string[] = [];
    class CountingEventSource extends EventSource {
      constructor(...args: ConstructorParameters<typeof EventSource>) {
        super(...args);
        opened.push(String(args[0]));
      }
    }
    const reader = await sdkUser(shortLived, clients, {
      transport: 'sse',
      EventSource: CountingEventSource as unknown as EventSourceConstructor,
      onAuthChange: (change) => changes.push(change),
    });
    const writer = await sdkUser(shortLived, clients);
    const group = await writer.api.conversation.createGroup.mutate({ name: 'sse', memberIds: [reader.id] });
    const received: Message[] = [];
    const errors: unknown[] = [];
    reader.events.on('message.created', ({ message }) => {
      if (message.conversationId === group.id) received.push(message);
    });
    reader.events.onError((error) => errors.push(error));
    await reader.events.ready();
    await streamLive(shortLived, reader.id);

    const sent: Message[] = [];
    for (const end = Date.now() + 4_500; Date.now() < end;) {
      sent.push(
        await writer.api.message.send.mutate({ conversationId: group.id, content: `m${sent.length}` }),
      );
      await sleep(100);
    }
    // One more after them: a repeated event would have come before it.
    const sentinel = await writer.api.message.send.mutate({ conversationId: group.id, content: 'sentinel' });
    sent.push(sentinel);
    await waitFor(
      () => received.some((message) => message.id === sentinel.id),
      () => `received ${received.length} of ${sent.length}`,
    );
    expect(received.map((message) => message.id)).toEqual(sent.map((message) => message.id));
    const refreshes = changes.filter((change) => change.type === 'refreshed').length;
    expect(refreshes).toBeGreaterThanOrEqual(3);
    // Each refresh opened the stream again with the new token in its URL, ahead of expiry.
    expect(opened.length).toBeGreaterThanOrEqual(refreshes);
    expect(errors).toEqual([]);
  });
});
