import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { type AuthChange, type ParleyClient, type StreamStatus } from '../client-sdk/src/index.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { TcpProxy } from './support/proxy.js';
import { sdkUser } from './support/sdk.js';

/**
 * What a connection banner and a sign-in screen follow: the event stream's status through a
 * dropped connection, and the client's sign-ins and sign-outs to any number of listeners.
 */
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

describe(`@parley/client stream status and auth listeners (${engineLabel})`, () => {
  it('reports connecting, live, reconnecting after a dropped connection and live again, missing nothing', async () => {
    const ann = await sdkUser(app, clients, { url: proxy.url, reconnectDelayMs: () => 50 });
    const bob = await sdkUser(app, clients);
    const statuses: StreamStatus[] = [];
    expect(ann.events.status).toBe('idle');
    ann.events.onStatus((status) => statuses.push(status));
    const received: string[] = [];
    ann.events.on('message.created', (event) => received.push(event.message.content));
    await ann.events.ready();
    expect(ann.events.status).toBe('live');
    expect(statuses).toEqual(['connecting', 'live']);

    const room = await bob.api.conversation.openDirect.mutate({ userId: ann.id });
    await bob.api.message.send.mutate({ conversationId: room.id, content: 'one' });
    await expect.poll(() => received).toEqual(['one']);

    proxy.reset();
    await expect.poll(() => statuses.at(-1)).toBe('reconnecting');
    await bob.api.message.send.mutate({ conversationId: room.id, content: 'two' });
    await expect.poll(() => ann.events.status, { timeout: 10_000 }).toBe('live');
    await expect.poll(() => received).toEqual(['one', 'two']);
    expect(statuses.slice(2)).toEqual(['reconnecting', 'live']);
  });

  it('tells every auth listener of a sign-out, and stops the stream', async () => {
    const cy = await sdkUser(app, clients);
    const first: AuthChange['type'][] = [];
    const second: AuthChange['type'][] = [];
    cy.onAuthChange((change) => first.push(change.type));
    const stop = cy.onAuthChange((change) => second.push(change.type));
    await cy.events.ready();
    stop();
    await cy.logout();
    expect(first).toEqual(['signedOut']);
    expect(second).toEqual([]);
    expect(cy.events.status).toBe('idle');
    await cy.login({ username: cy.username, password: cy.password });
    expect(first).toEqual(['signedOut', 'signedIn']);
  });
});
