/**
 * The Parley client adapter: everything the benchmark does as a Parley user goes through this
 * file, so moving from the bare tRPC client to `@parley/client` is a change here only.
 */
import { randomBytes } from 'node:crypto';
import { createTRPCClient, createWSClient, httpBatchLink, type TRPCClient, wsLink } from '@trpc/client';
import superjson from 'superjson';
import WebSocket from 'ws';
import type { AppRouter } from '../../server/src/routers/_app.js';
import type { Child } from '../lib/children.js';
import type { ClientAdapter, ClientSpec } from './types.js';

type Api = TRPCClient<AppRouter>;

function httpApi(url: string, token: string | null): Api {
  return createTRPCClient<AppRouter>({
    links: [
      httpBatchLink({
        url: `${url}/trpc`,
        transformer: superjson,
        maxItems: 50,
        headers: () => (token ? { authorization: `Bearer ${token}` } : {}),
      }),
    ],
  });
}

export const parleyClient: ClientAdapter = {
  async prepare({ count, groupSize, server }) {
    // Accounts come from the server's own services (see `createAccounts` in
    // bench/servers/parley.ts): registering 10,000 users over HTTP would take minutes.
    return server.call<ClientSpec[]>('createAccounts', {
      count,
      groupSize,
      tag: randomBytes(3).toString('hex'),
    });
  },

  async connect(url, spec, transport, onMessage) {
    const wsClient = createWSClient({
      url: `${url.replace(/^http/, 'ws')}/ws`,
      WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
      connectionParams: { token: spec.token },
    });
    const overSocket = createTRPCClient<AppRouter>({
      links: [wsLink({ client: wsClient, transformer: superjson })],
    });
    const sender = transport === 'http' ? httpApi(url, spec.token) : overSocket;
    let subscription: { unsubscribe(): void } | null = null;
    try {
      // Resolves once the server has started the subscription, so no send can precede it.
      await new Promise<void>((resolve, reject) => {
        subscription = overSocket.events.subscribe(
          {},
          {
            onStarted: () => resolve(),
            onData: (tracked) => {
              const event = tracked.data;
              if (event.type === 'message.created') onMessage(event.message.content);
            },
            onError: (error) => reject(error),
          },
        );
      });
    } catch (error) {
      await wsClient.close();
      throw error;
    }
    return {
      async send(conversationId, content) {
        const message = await sender.message.send.mutate({ conversationId, content });
        return message.id;
      },
      async close() {
        subscription?.unsubscribe();
        await wsClient.close();
      },
    };
  },
};

/**
 * Appends `count` messages to the stream with no worker running, through the server's own send
 * path, spread over conversations of ten.
 */
export async function fillBacklog(server: Child & { url: string }, count: number): Promise<void> {
  const senders = await parleyClient.prepare({
    url: server.url,
    count: 100,
    groupSize: 10,
    jwtSecret: '',
    server,
  });
  await server.call('fillBacklog', { count, senders }, 600_000);
}
