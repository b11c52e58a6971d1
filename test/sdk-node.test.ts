import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { createParleyClient, type ParleyClient, type ParleyEvent } from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { TcpProxy } from './support/proxy.js';
import { countingWebSocket, newUser, sdkUser, streamLive, waitFor } from './support/sdk.js';

let deployment: TestDeployment;
let app: App;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
});

describe(`@parley/client in Node with ws (${engineLabel})`, () => {
  it('drives a conversation with the ws package: typed handlers, an iterator and once', async () => {
    const alice = await sdkUser(app, clients, { WebSocket });
    const bob = await sdkUser(app, clients, { WebSocket });
    const group = await alice.api.conversation.createGroup.mutate({ name: 'node', memberIds: [bob.id] });

    const created: string[] = [];
    const stop = bob.events.on('message.created', ({ message }) => created.push(message.content));
    const iterated: ParleyEvent[] = [];
    const iterating = (async () => {
      for await (const event of bob.events) {
        iterated.push(event);
        if (event.type === 'message.deleted') break;
      }
    })();
    await bob.events.ready();
    await streamLive(app, bob.id);

    const edited = bob.events.once('message.updated', (event) => event.message.conversationId === group.id);
    const first = await alice.api.message.send.mutate({ conversationId: group.id, content: 'hello bob' });
    await alice.api.message.edit.mutate({ id: first.id, content: 'hello, bob' });
    expect((await edited).message).toMatchObject({ id: first.id, content: 'hello, bob' });
    expect((await edited).message.editedAt).toBeInstanceOf(Date);

    await waitFor(
      () => created.length === 1,
      () => `created: ${created.join(', ')}`,
    );
    stop();
    await alice.api.message.send.mutate({ conversationId: group.id, content: 'after stop' });
    await alice.api.message.delete.mutate({ id: first.id });
    await iterating;

    // The stopped handler saw only the first message; the iterator saw everything, in order.
    expect(created).toEqual(['hello bob']);
    const messageEvents = iterated.filter((event) => event.type.startsWith('message.'));
    expect(messageEvents.map((event) => event.type)).toEqual([
      'message.created',
      'message.updated',
      'message.created',
      'message.deleted',
    ]);
    expect(bob.events.lastEventId).toBeTruthy();
  });

  it('finds the ws package by itself where Node has no WebSocket', async () => {
    expect((globalThis as { WebSocket?: unknown }).WebSocket).toBeUndefined();
    const carol = await sdkUser(app, clients);
    const group = await carol.api.conversation.createGroup.mutate({ name: 'solo', memberIds: [] });
    const echo = carol.events.once('message.created');
    await streamLive(app, carol.id);
    const sent = await carol.api.message.send.mutate({ conversationId: group.id, content: 'to myself' });
    expect((await echo).message.id).toBe(sent.id);
  });

  it('follows the sign-in: starts on login, stops on logout, and never mixes two users', async () => {
    const dave = await sdkUser(app, clients);
    const erin = await sdkUser(app, clients);
    const group = await dave.api.conversation.createGroup.mutate({ name: 'who', memberIds: [erin.id] });

    // One device, listening before anyone signs in.
    const device = createParleyClient({ url: app.url, WebSocket });
    clients.push(device);
    const seen: string[] = [];
    device.events.on('message.created', ({ message }) => seen.push(message.content));

    expect((await device.login({ username: dave.username, password: dave.password })).id).toBe(dave.id);
    await streamLive(app, dave.id);
    await erin.api.message.send.mutate({ conversationId: group.id, content: 'for dave' });
    await waitFor(
      () => seen.includes('for dave'),
      () => `seen: ${seen.join(', ')}`,
    );

    await device.logout();
    expect(device.events.lastEventId).toBeUndefined();
    await erin.api.message.send.mutate({ conversationId: group.id, content: 'while signed out' });

    // Erin signs in on the same device: her stream starts afresh, with nothing of Dave's.
    expect((await device.login({ username: erin.username, password: erin.password })).id).toBe(erin.id);
    await streamLive(app, erin.id);
    await dave.api.message.send.mutate({ conversationId: group.id, content: 'for erin' });
    // One more after it: anything else on its way would have come before.
    await dave.api.message.send.mutate({ conversationId: group.id, content: 'sentinel' });
    await waitFor(
      () => seen.includes('sentinel'),
      () => `seen: ${seen.join(', ')}`,
    );
    expect(seen).toEqual(['for dave', 'for erin', 'sentinel']);
  });

  it('starts with resync when asked to resume from a position the server cannot fill', async () => {
    const frank = await sdkUser(app, clients);
    const tokens = frank.tokens;
    if (!tokens) throw new Error('expected tokens');
    const device = createParleyClient({ url: app.url, tokens, lastEventId: 'gone.1-0', WebSocket });
    clients.push(device);
    let resyncs = 0;
    device.events.onResync(() => (resyncs += 1));
    await waitFor(
      () => resyncs === 1,
      () => 'no resync',
    );
    // From then on the stream is live and resumable from the position the resync gave.
    expect(device.events.lastEventId).toBeTruthy();
    expect(device.events.lastEventId).not.toBe('gone.1-0');
  });

  it('sends mutations over the socket when asked, and queries over HTTP', async () => {
    const proxy = await TcpProxy.start(app.url);
    try {
      const { WebSocket: Counting, counter } = countingWebSocket();
      const grace = createParleyClient({ url: proxy.url, WebSocket: Counting, mutationsOverSocket: true });
      clients.push(grace);
      await grace.register(newUser('grace'));
      const group = await grace.api.conversation.createGroup.mutate({ name: 'socket', memberIds: [] });
      const sent = await grace.api.message.send.mutate({
        conversationId: group.id,
        content: 'over the socket',
      });
      expect(sent.clientMessageId).toBeTruthy();
      const page = await grace.api.message.list.query({ conversationId: group.id });
      expect(page.items.map((message) => message.id)).toContain(sent.id);

      expect(counter.opened).toBe(1);
      expect(proxy.count('/trpc/message.send')).toBe(0);
      expect(proxy.count('/trpc/conversation.createGroup')).toBe(0);
      expect(proxy.count('/trpc/message.list')).toBe(1);
      await grace.close();
    } finally {
      await proxy.close();
    }
  });
});
