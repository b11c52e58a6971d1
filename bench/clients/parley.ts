/**
 * The Parley client adapter: each benchmark client is a `@parley/client` client, as an
 * application would use it. Sends go through its `message.send` (with the `clientMessageId`
 * it adds, so the server's idempotency check is part of the cost), over the WebSocket or over
 * HTTP; events arrive through its shared event stream.
 */
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { createParleyClient } from '@parley/client';
import type { Child } from '../lib/children.js';
import type { ClientAdapter, ClientSpec } from './types.js';

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
    if (!spec.refreshToken || spec.expiresIn === undefined)
      throw new Error('a Parley client needs its tokens');
    const parley = createParleyClient({
      url,
      tokens: { accessToken: spec.token, refreshToken: spec.refreshToken, expiresIn: spec.expiresIn },
      WebSocket,
      mutationsOverSocket: transport === 'ws',
      // A benchmark counts a failed send as an error instead of retrying it later.
      sendRetry: { attempts: 1 },
    });
    parley.events.on('message.created', (event) => onMessage(event.message.content));
    try {
      // Resolves once the server has started the subscription, so no send can precede it.
      await parley.events.ready();
    } catch (error) {
      await parley.close();
      throw error;
    }
    return {
      async send(conversationId, content) {
        const message = await parley.api.message.send.mutate({ conversationId, content });
        return message.id;
      },
      close: () => parley.close(),
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
