import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../server/src/app.js';
import {
  type AuthChange,
  createParleyClient,
  errorCode,
  type Message,
  type ParleyClient,
} from '../client-sdk/src/index.js';
import { connect } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { countingWebSocket, newUser, sdkUser, sleep, streamLive } from './support/sdk.js';

let deployment: TestDeployment;
/** Access tokens live two seconds: each test spans several of them. */
let app: App;
const clients: ParleyClient[] = [];

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ jwt: { accessTtlSeconds: 2 } });
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await deployment?.cleanup();
});

/** Sends numbered messages for `durationMs`, one at a time, and returns what the server stored. */
async function sendFor(sender: ParleyClient, conversationId: string, durationMs: number): Promise<Message[]> {
  const sent: Message[] = [];
  const end = Date.now() + durationMs;
  for (let i = 0; Date.now() < end; i++) {
    sent.push(await sender.api.message.send.mutate({ conversationId, content: `message ${i}` }));
    await sleep(100);
  }
  return sent;
}

/**
 * Waits until every message of `sent` has arrived, then sends one more (added to `sent`) and
 * waits for it: a repeated event would arrive before it.
 */
async function allArrived(
  sender: ParleyClient,
  conversationId: string,
  sent: Message[],
  received: Message[],
) {
  await vi.waitFor(() => expect(received.length).toBeGreaterThanOrEqual(sent.length), 10_000);
  const sentinel = await sender.api.message.send.mutate({ conversationId, content: 'sentinel' });
  sent.push(sentinel);
  await vi.waitFor(() => expect(received.map((message) => message.id)).toContain(sentinel.id), 10_000);
}

describe(`@parley/client event stream across token refreshes (${engineLabel})`, () => {
  it('refreshes before expiry while a subscription is open, without losing or repeating an event', async () => {
    const { WebSocket, counter } = countingWebSocket();
    const changes: AuthChange[] = [];
    const reader = await sdkUser(app, clients, { WebSocket, onAuthChange: (change) => changes.push(change) });
    const writer = await sdkUser(app, clients);
    const group = await writer.api.conversation.createGroup.mutate({
      name: 'refresh',
      memberIds: [reader.id],
    });

    const received: Message[] = [];
    const errors: unknown[] = [];
    reader.events.on('message.created', ({ message }) => {
      if (message.conversationId === group.id) received.push(message);
    });
    reader.events.onError((error) => errors.push(error));
    await streamLive(app, reader.id);

    // Seven seconds: three or four two-second tokens, for the reader and the writer alike.
    const sent = await sendFor(writer, group.id, 7_000);
    await allArrived(writer, group.id, sent, received);

    expect(received.map((message) => message.id)).toEqual(sent.map((message) => message.id));
    const refreshes = changes.filter((change) => change.type === 'refreshed').length;
    expect(refreshes).toBeGreaterThanOrEqual(3);
    // Each refresh moved the stream to a new connection authenticated with the new token.
    expect(counter.opened).toBeGreaterThanOrEqual(refreshes);
    // Renewed ahead of expiry, the stream was never cut for an expired token.
    expect(errors).toEqual([]);
    // The stream's position is the last event it delivered.
    expect(reader.events.lastEventId).toBeTruthy();
  });

  it('gives each listener every event once, and one added during an event the events after it', async () => {
    const reader = await sdkUser(app, clients);
    const writer = await sdkUser(app, clients);
    const group = await writer.api.conversation.createGroup.mutate({
      name: 'listeners',
      memberIds: [reader.id],
    });
    const seen: Record<string, string[]> = { first: [], added: [], anyOne: [], anyTwo: [] };
    let added = false;
    // Alone on its type: the one listener is called without copying the set.
    reader.events.on('message.created', ({ message }) => {
      seen.first?.push(message.content);
      if (added) return;
      added = true;
      reader.events.on('message.created', ({ message: later }) => seen.added?.push(later.content));
    });
    reader.events.onAny((event) => {
      if (event.type === 'message.created') seen.anyOne?.push(event.message.content);
    });
    reader.events.onAny((event) => {
      if (event.type === 'message.created') seen.anyTwo?.push(event.message.content);
    });
    await streamLive(app, reader.id);

    await writer.api.message.send.mutate({ conversationId: group.id, content: 'one' });
    await writer.api.message.send.mutate({ conversationId: group.id, content: 'two' });
    await vi.waitFor(() => expect(seen.anyTwo).toEqual(['one', 'two']), 10_000);
    expect(seen).toEqual({
      first: ['one', 'two'],
      added: ['two'],
      anyOne: ['one', 'two'],
      anyTwo: ['one', 'two'],
    });
  });

  it('recovers when the server ends the stream for an expired token, resuming from the last event', async () => {
    // The client is told its token lasts an hour, so it does not refresh ahead: the server ends the
    // stream with UNAUTHORIZED when the token really expires, and the client must recover.
    const anonymous = connect(app.url);
    const registered = await anonymous.api.auth.register.mutate(newUser('unaware'));
    await anonymous.close();
    const changes: AuthChange[] = [];
    const reader = createParleyClient({
      url: app.url,
      tokens: { ...registered.tokens, expiresIn: 3600 },
      onAuthChange: (change) => changes.push(change),
    });
    clients.push(reader);
    const writer = await sdkUser(app, clients);
    const group = await writer.api.conversation.createGroup.mutate({
      name: 'expiry',
      memberIds: [registered.user.id],
    });

    const received: Message[] = [];
    const errors: unknown[] = [];
    reader.events.on('message.created', ({ message }) => {
      if (message.conversationId === group.id) received.push(message);
    });
    reader.events.onError((error) => errors.push(error));
    await streamLive(app, registered.user.id);

    const sent = await sendFor(writer, group.id, 5_000);
    await allArrived(writer, group.id, sent, received);

    expect(received.map((message) => message.id)).toEqual(sent.map((message) => message.id));
    // The server cut the stream when the token expired; the client renewed the token and resumed
    // (and, knowing the new token's lifetime, refreshed ahead of expiry from then on).
    const cuts = errors.filter((error) => errorCode(error) === 'UNAUTHORIZED').length;
    expect(cuts).toBeGreaterThanOrEqual(1);
    expect(errors).toHaveLength(cuts);
    expect(changes.filter((change) => change.type === 'refreshed').length).toBeGreaterThanOrEqual(cuts);
    expect(changes.some((change) => change.type === 'signedOut')).toBe(false);
  });
});
