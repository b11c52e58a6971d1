import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { expectCode, rejection } from './support/errors.js';
import { tap } from './support/events.js';

/**
 * What a stranger may learn: presence only between people who share a conversation, no server
 * internals in error bodies, forged cursors refused as the caller's mistake, metrics only for
 * the operator.
 */

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
});
afterAll(async () => {
  await deployment?.cleanup();
});

const forged = (position: unknown) => Buffer.from(JSON.stringify(position)).toString('base64url');

describe(`privacy and internals (${engineLabel})`, () => {
  it('shows online and last seen only to people who share a conversation', async () => {
    const al = await signUp(app.url);
    const bo = await signUp(app.url);
    const stranger = await signUp(app.url);
    await bo.api.user.touch.mutate();
    const boOnline = await tap(bo, app, bo.user.id);
    await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    try {
      await expect.poll(async () => (await al.api.user.byId.query({ id: bo.user.id })).online).toBe(true);
      const asContact = await al.api.user.byId.query({ id: bo.user.id });
      expect(asContact.lastSeenAt).toBeInstanceOf(Date);

      const asStranger = await stranger.api.user.byId.query({ id: bo.user.id });
      expect(asStranger).toMatchObject({ id: bo.user.id, username: bo.user.username, online: false });
      expect(asStranger.lastSeenAt).toBeNull();
      const listed = await stranger.api.user.list.query({ query: bo.user.username });
      const found = listed.items.find((user) => user.id === bo.user.id);
      expect(found).toMatchObject({ online: false, lastSeenAt: null });
      const listedByContact = await al.api.user.list.query({ query: bo.user.username });
      expect(listedByContact.items.find((user) => user.id === bo.user.id)).toMatchObject({ online: true });
      // One's own presence is one's own to see.
      expect((await bo.api.user.byId.query({ id: bo.user.id })).online).toBe(true);
    } finally {
      await boOnline.stop();
      await Promise.all([al.close(), bo.close(), stranger.close()]);
    }
  });

  it('answers a forged cursor with BAD_REQUEST on the cursor field, for every paged query', async () => {
    const al = await signUp(app.url);
    const bo = await signUp(app.url);
    const { id } = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
    const calls = [
      () => al.api.conversation.list.query({ cursor: forged({ at: 'garbage', id: bo.user.id }) }),
      () => al.api.conversation.list.query({ cursor: forged({ at: new Date().toISOString(), id: 'x' }) }),
      () => al.api.user.list.query({ cursor: forged({ username: 'a', id: 'not-a-uuid' }) }),
      () => al.api.message.list.query({ conversationId: id, cursor: forged({ seq: 'NaN', order: 'asc' }) }),
      () => al.api.message.list.query({ conversationId: id, cursor: forged({ seq: 1, order: 'sideways' }) }),
      () => al.api.message.list.query({ conversationId: id, cursor: 'not base64 json at all' }),
    ];
    for (const call of calls) {
      const error = await expectCode(call(), 'BAD_REQUEST');
      expect(error.data.zodError).toMatchObject({ fieldErrors: { cursor: [expect.any(String)] } });
    }
    // Nothing of it was logged as a server error.
    expect(deployment.logLines.filter((line) => line.includes('"level":50'))).toEqual([]);
    await Promise.all([al.close(), bo.close()]);
  });

  it('sends no stack trace in any mode, development included', async () => {
    const dev = await deployment.start({ env: 'development' });
    const client = connect(dev.url);
    const error = await rejection(client.api.auth.me.query());
    expect(error.data).not.toHaveProperty('stack');
    const bad = await rejection(
      client.api.auth.login.mutate({ username: 'x', password: 1 as unknown as string }),
    );
    expect(bad.data).not.toHaveProperty('stack');
    expect(JSON.stringify(bad)).not.toContain('/server/src/');
    await client.close();
  });

  it('serves /metrics to this machine or with METRICS_TOKEN, and to no one else', async () => {
    // Every body is read: one left unread keeps its connection busy, and the server's close
    // waits for it.
    const status = async (response: Response) => {
      await response.text();
      return response.status;
    };
    expect(await status(await fetch(`${app.url}/metrics`))).toBe(200);

    // Behind a trusted proxy, a scrape forwarded for an outside address is refused.
    const proxied = await deployment.start({ trustProxy: true });
    const outside = await fetch(`${proxied.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(outside.status).toBe(403);
    expect(await outside.text()).not.toContain('parley_');
    const local = await fetch(`${proxied.url}/metrics`, { headers: { 'x-forwarded-for': '127.0.0.1' } });
    expect(await status(local)).toBe(200);

    const token = 'metrics-token-0123456789';
    const guarded = await deployment.start({ metricsToken: token });
    expect(await status(await fetch(`${guarded.url}/metrics`))).toBe(403);
    const wrong = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}x` } });
    expect(await status(wrong)).toBe(403);
    const right = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(right.status).toBe(200);
    expect(await right.text()).toContain('parley_');
  });
});
