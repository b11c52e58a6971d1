import {
  createTRPCClient,
  createWSClient,
  httpBatchLink,
  splitLink,
  wsLink,
  type TRPCClient,
} from '@trpc/client';
import superjson from 'superjson';
import WebSocket from 'ws';
import type { AppRouter } from '../../server/src/routers/_app.js';

export type Client = TRPCClient<AppRouter>;

export interface TestClient {
  /** Queries and mutations over HTTP (batched), the subscription over the WebSocket. */
  api: Client;
  /** Every call over the WebSocket. */
  ws: Client;
  token: string | null;
  close(): Promise<void>;
}

export function wsUrl(httpUrl: string): string {
  return `${httpUrl.replace(/^http/, 'ws')}/ws`;
}

/** The real `@trpc/client` against a running app, authenticated with `token` when given. */
export function connect(url: string, token: string | null = null): TestClient {
  const state = { token };
  const wsClient = createWSClient({
    url: wsUrl(url),
    WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    lazy: { enabled: true, closeMs: 0 },
    connectionParams: () => (state.token ? { token: state.token } : {}),
    retryDelayMs: () => 200,
  });
  const http = httpBatchLink({
    url: `${url}/trpc`,
    transformer: superjson,
    headers: () => (state.token ? { authorization: `Bearer ${state.token}` } : {}),
  });
  const ws = wsLink<AppRouter>({ client: wsClient, transformer: superjson });
  return {
    api: createTRPCClient<AppRouter>({
      links: [splitLink({ condition: (op) => op.type === 'subscription', true: ws, false: http })],
    }),
    ws: createTRPCClient<AppRouter>({ links: [ws] }),
    get token() {
      return state.token;
    },
    set token(value) {
      state.token = value;
    },
    async close() {
      await wsClient.close();
    },
  };
}

let counter = 0;

/** Registers a fresh user and returns a client signed in as them. */
export async function signUp(url: string, name?: string) {
  counter += 1;
  const username = name ?? `user${counter}_${Math.random().toString(36).slice(2, 8)}`;
  const anonymous = connect(url);
  const { user, tokens } = await anonymous.api.auth.register.mutate({
    email: `${username}@example.test`,
    username,
    password: 'correct horse battery',
  });
  await anonymous.close();
  const client = connect(url, tokens.accessToken);
  return { ...client, user, tokens, password: 'correct horse battery' };
}
