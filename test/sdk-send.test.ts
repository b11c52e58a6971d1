import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { createParleyClient, isNetworkFailure, type ParleyClient } from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { TcpProxy } from './support/proxy.js';
import { newUser, sleep } from './support/sdk.js';

let deployment: TestDeployment;
let app: App;
let proxy: TcpProxy;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
  proxy = await TcpProxy.start(app.url);
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await proxy?.close();
  await deployment?.cleanup();
});

/** A user whose calls go through the proxy, in a group of their own. */
async function sender(options: { attempts?: number } = {}) {
  const client = createParleyClient({
    url: proxy.url,
    sendRetry: { attempts: options.attempts ?? 5, baseDelayMs: 20, maxDelayMs: 200 },
  });
  clients.push(client);
  const me = await client.register(newUser('sender'));
  const group = await client.api.conversation.createGroup.mutate({ name: 'retries', memberIds: [] });
  return { client, me, group };
}

describe(`@parley/client sends (${engineLabel})`, () => {
  it('gives every send a clientMessageId', async () => {
    const { client, group } = await sender();
    const first = await client.api.message.send.mutate({ conversationId: group.id, content: 'one' });
    const second = await client.api.message.send.mutate({ conversationId: group.id, content: 'two' });
    expect(first.clientMessageId).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    expect(second.clientMessageId).not.toBe(first.clientMessageId);
    // One given by the caller is kept, and not said to be new: the caller may be repeating it.
    const marked = proxy.count('"firstAttempt":true');
    const own = await client.api.message.send.mutate({
      conversationId: group.id,
      content: 'three',
      clientMessageId: 'mine-1',
    });
    expect(own.clientMessageId).toBe('mine-1');
    expect(proxy.count('"firstAttempt":true')).toBe(marked);
  });

  it('retries a send whose answer was lost with the connection, and the message is stored once', async () => {
    const { client, group } = await sender();
    proxy.drop('/trpc/message.send', 'after-server');
    const before = proxy.count('/trpc/message.send');
    const marked = proxy.count('"firstAttempt":true');
    const sent = await client.api.message.send.mutate({ conversationId: group.id, content: 'exactly once' });

    // The server got the send twice (the first answer never arrived) with one clientMessageId,
    // the first time as a first attempt, the second time not: PostgreSQL is asked for it then.
    expect(proxy.count('/trpc/message.send') - before).toBe(2);
    expect(proxy.count(`"clientMessageId":"${sent.clientMessageId}"`)).toBe(2);
    expect(proxy.count('"firstAttempt":true') - marked).toBe(1);
    const { items } = await client.api.message.list.query({ conversationId: group.id });
    const copies = items.filter((message) => message.content === 'exactly once');
    expect(copies).toHaveLength(1);
    expect(copies[0]?.id).toBe(sent.id);
  });

  it('retries a send whose connection dropped before it reached the server', async () => {
    const { client, group } = await sender();
    proxy.drop('/trpc/message.send', 'before-server', 2);
    const sent = await client.api.message.send.mutate({ conversationId: group.id, content: 'third time' });
    const { items } = await client.api.message.list.query({ conversationId: group.id });
    expect(items.filter((message) => message.content === 'third time').map((m) => m.id)).toEqual([sent.id]);
  });

  it('gives up after the configured attempts, having stored the message at most once', async () => {
    const { client, group } = await sender({ attempts: 3 });
    proxy.drop('/trpc/message.send', 'after-server', 3);
    const before = proxy.count('/trpc/message.send');
    const marked = proxy.count('"firstAttempt":true');
    const error = await client.api.message.send
      .mutate({ conversationId: group.id, content: 'never answered' })
      .catch((e: unknown) => e);
    expect(isNetworkFailure(error)).toBe(true);
    expect(proxy.count('/trpc/message.send') - before).toBe(3);
    expect(proxy.count('"firstAttempt":true') - marked).toBe(1);
    const { items } = await client.api.message.list.query({ conversationId: group.id });
    expect(items.filter((message) => message.content === 'never answered')).toHaveLength(1);
  });

  it('sends again without firstAttempt after a refresh, when the server refused the token', async () => {
    const { client, group } = await sender();
    const tokens = client.tokens;
    if (!tokens) throw new Error('not signed in');
    await client.close();
    // The same session, with an access token the server refuses (its signature no longer fits).
    const again = createParleyClient({
      url: proxy.url,
      tokens: { ...tokens, accessToken: `${tokens.accessToken.slice(0, -2)}AA` },
    });
    clients.push(again);
    const before = proxy.count('/trpc/message.send');
    const marked = proxy.count('"firstAttempt":true');
    const sent = await again.api.message.send.mutate({ conversationId: group.id, content: 'after refresh' });
    expect(proxy.count('/trpc/message.send') - before).toBe(2);
    expect(proxy.count('"firstAttempt":true') - marked).toBe(1);
    const { items } = await again.api.message.list.query({ conversationId: group.id });
    expect(items.filter((message) => message.content === 'after refresh').map((m) => m.id)).toEqual([
      sent.id,
    ]);
  });

  it('does not repeat other mutations after a network failure', async () => {
    const { client } = await sender();
    proxy.drop('/trpc/conversation.createGroup', 'after-server');
    const before = proxy.count('/trpc/conversation.createGroup');
    const error = await client.api.conversation.createGroup
      .mutate({ name: 'not twice', memberIds: [] })
      .catch((e: unknown) => e);
    expect(isNetworkFailure(error)).toBe(true);
    expect(proxy.count('/trpc/conversation.createGroup') - before).toBe(1);
  });

  it('over the WebSocket, sends cut off with the connection are retried and stored once each', async () => {
    const client = createParleyClient({
      url: proxy.url,
      mutationsOverSocket: true,
      sendRetry: { attempts: 8, baseDelayMs: 20, maxDelayMs: 200 },
    });
    clients.push(client);
    await client.register(newUser('socket_sender'));
    const group = await client.api.conversation.createGroup.mutate({ name: 'cuts', memberIds: [] });
    const sent = [];
    // Cut every connection at a slightly different moment of each send: before it goes out,
    // while it is on the wire, or after the server has stored it.
    for (let i = 0; i < 6; i++) {
      const sending = client.api.message.send.mutate({ conversationId: group.id, content: `cut ${i}` });
      await sleep(i * 3);
      proxy.reset();
      sent.push(await sending);
    }
    const { items } = await client.api.message.list.query({ conversationId: group.id, limit: 100 });
    const stored = items.filter((message) => message.content.startsWith('cut '));
    expect(stored.map((message) => message.id).sort()).toEqual(sent.map((message) => message.id).sort());
    expect(new Set(stored.map((message) => message.content)).size).toBe(6);
  });

  it('does not retry a send the server refused', async () => {
    const { client } = await sender();
    const before = proxy.count('/trpc/message.send');
    const error = await client.api.message.send
      .mutate({ conversationId: '00000000-0000-4000-8000-000000000000', content: 'nowhere' })
      .catch((e: unknown) => e);
    expect(isNetworkFailure(error)).toBe(false);
    expect(proxy.count('/trpc/message.send') - before).toBe(1);
  });
});
