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

/** Runs `task` over `items` with at most `lanes` in flight. */
async function inLanes<T, R>(
  items: T[],
  lanes: number,
  task: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < items.length) {
        const index = next++;
        out[index] = await task(items[index] as T, index);
      }
    }),
  );
  return out;
}

export const parleyClient: ClientAdapter = {
  async prepare({ url, count, groupSize }) {
    const anonymous = httpApi(url, null);
    const tag = randomBytes(3).toString('hex');
    const accounts = await inLanes(
      Array.from({ length: count }, (_, i) => i),
      100,
      async (i) => {
        const { user, tokens } = await anonymous.auth.register.mutate({
          email: `bench_${tag}_${i}@bench.test`,
          username: `b${tag}_${i}`,
          password: 'bench password',
        });
        return { userId: user.id, token: tokens.accessToken };
      },
    );
    const groups = Array.from({ length: Math.ceil(count / groupSize) }, (_, g) =>
      accounts.slice(g * groupSize, (g + 1) * groupSize),
    );
    const conversationIds = await inLanes(groups, 20, async (members, g) => {
      const [owner, ...others] = members;
      if (!owner) throw new Error('empty group');
      const conversation = await httpApi(url, owner.token).conversation.createGroup.mutate({
        name: `bench ${g}`,
        memberIds: others.map((member) => member.userId),
      });
      return conversation.id;
    });
    return accounts.map((account, index): ClientSpec => ({
      index,
      conversationId: conversationIds[Math.floor(index / groupSize)] ?? '',
      token: account.token,
    }));
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
        (subscription as { unsubscribe(): void } | null)?.unsubscribe();
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
  const senders = await parleyClient.prepare({ url: server.url, count: 100, groupSize: 10, jwtSecret: '' });
  await server.call('fillBacklog', { count, senders }, 600_000);
}
