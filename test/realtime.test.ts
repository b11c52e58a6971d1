import superjson from 'superjson';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { IncomingMessage } from 'node:http';
import type { App } from '../server/src/app.js';
import { subscriberName } from '../server/src/broker/redis/engine.js';
import { createContext } from '../server/src/context.js';
import { appRouter } from '../server/src/routers/_app.js';
import { createCallerFactory } from '../server/src/trpc.js';
import type { EventPublisher, ParleyEvent } from '../server/src/contracts/events.js';
import { connect, signUp, wsUrl } from './support/client.js';
import { TestDeployment, engineLabel, engines, onRealEngines, openRedis, serversOf } from './support/env.js';
import { expectCode } from './support/errors.js';
import { tap } from './support/events.js';
import { Presence } from '../server/src/realtime/presence.js';
import { LastSeen } from '../server/src/users/service.js';

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ worker: { blockMs: 100 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

async function pair(target: App = app) {
  const [al, bo] = await Promise.all([signUp(target.url), signUp(target.url)]);
  const conversation = await al.api.conversation.openDirect.mutate({ userId: bo.user.id });
  return { al, bo, conversation };
}

describe(`events (${engineLabel})`, () => {
  it('delivers every event a user may see to each of their devices, once', async () => {
    const { al, bo, conversation } = await pair();
    const phone = connect(app.url, bo.token);
    const [laptop, mobile, sender] = await Promise.all([
      tap(bo, app, bo.user.id),
      tap(phone, app, bo.user.id),
      tap(al, app, al.user.id),
    ]);
    const sent = [];
    for (let i = 0; i < 5; i++) {
      sent.push(await al.api.message.send.mutate({ conversationId: conversation.id, content: `hello ${i}` }));
    }
    const expected = sent.map((m) => m.id);
    for (const device of [laptop, mobile, sender]) {
      await device.until(() => device.of('message.created').length >= 5);
      expect(device.of('message.created').map((e) => e.message.id)).toEqual(expected);
    }
    // Tracked ids grow, so a client can resume from any of them.
    const ids = laptop.received.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const device of [laptop, mobile, sender]) await device.stop();
    await phone.close();
  });

  it('carries edits, deletions, membership and conversation changes', async () => {
    const [owner, member, newcomer] = await Promise.all([signUp(app.url), signUp(app.url), signUp(app.url)]);
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Events',
      memberIds: [member.user.id],
    });
    const [memberEvents, newcomerEvents] = await Promise.all([
      tap(member, app, member.user.id),
      tap(newcomer, app, newcomer.user.id),
    ]);
    const message = await owner.api.message.send.mutate({ conversationId: group.id, content: 'first' });
    await owner.api.message.edit.mutate({ id: message.id, content: 'first, edited' });
    await owner.api.message.delete.mutate({ id: message.id });
    await owner.api.conversation.addMembers.mutate({ id: group.id, userIds: [newcomer.user.id] });
    await owner.api.conversation.rename.mutate({ id: group.id, name: 'Renamed' });
    // The newcomer gets the conversation at once, then its events; every member gets the rename.
    const renamed = (r: { event: ParleyEvent }[]) =>
      r.some((x) => x.event.type === 'conversation.updated' && x.event.name === 'Renamed');
    await newcomerEvents.until(renamed);
    expect(newcomerEvents.received[0]?.event).toMatchObject({
      type: 'conversation.upserted',
      conversation: { id: group.id },
    });
    expect(newcomerEvents.of('message.created').map((e) => e.message.content)).not.toContain('first');
    await memberEvents.until((r) => r.some((x) => x.event.type === 'member.joined'));
    await memberEvents.until(renamed);
    expect(memberEvents.of('conversation.updated')).toMatchObject([
      {
        type: 'conversation.updated',
        conversationId: group.id,
        name: 'Renamed',
        memberCount: 3,
        by: owner.user.id,
      },
    ]);
    expect(memberEvents.of('conversation.updated')).toHaveLength(1);
    expect(memberEvents.of('message.updated').map((e) => e.message.content)).toEqual(['first, edited']);
    expect(memberEvents.of('message.deleted')).toEqual([
      { type: 'message.deleted', conversationId: group.id, messageId: message.id },
    ]);
    expect(memberEvents.of('member.joined')).toEqual([
      { type: 'member.joined', conversationId: group.id, userIds: [newcomer.user.id], by: owner.user.id },
    ]);
    await memberEvents.stop();
    await newcomerEvents.stop();
  });

  it('resumes after a disconnect with exactly the events missed, in order', async () => {
    const { al, bo, conversation } = await pair();
    const first = await tap(bo, app, bo.user.id);
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'before' });
    await first.until(() => first.of('message.created').length === 1);
    const lastEventId = first.lastId();
    await first.stop();
    await bo.close();

    const missed = [];
    for (let i = 0; i < 50; i++) {
      missed.push(
        await al.api.message.send.mutate({ conversationId: conversation.id, content: `missed ${i}` }),
      );
    }
    const resumed = await tap(connect(app.url, bo.token), app, bo.user.id, { lastEventId });
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'live' });
    await resumed.until(() => resumed.of('message.created').some((e) => e.message.content === 'live'));
    // A repeat of a backfilled event would come before a message sent after 'live' arrived.
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'sentinel' });
    await resumed.until(() => resumed.of('message.created').some((e) => e.message.content === 'sentinel'));
    expect(resumed.of('message.created').map((e) => e.message.content)).toEqual([
      ...missed.map((m) => m.content),
      'live',
      'sentinel',
    ]);
    await resumed.stop();
  });

  it('answers an unknown or too old lastEventId with resync first', async () => {
    const local = await TestDeployment.create();
    try {
      const small = await local.start({ limits: { eventLogLength: 10 } });
      const { al, bo, conversation } = await pair(small);
      const first = await tap(bo, small, bo.user.id);
      await al.api.message.send.mutate({ conversationId: conversation.id, content: 'seen' });
      await first.until(() => first.of('message.created').length === 1);
      const old = first.lastId();
      await first.stop();
      for (let i = 0; i < 15; i++)
        await al.api.message.send.mutate({ conversationId: conversation.id, content: `${i}` });

      const stale = await tap(connect(small.url, bo.token), small, bo.user.id, { lastEventId: old });
      await stale.until((r) => r.length >= 1);
      expect(stale.received[0]?.event).toEqual({ type: 'resync' });
      expect(stale.of('message.created')).toEqual([]);
      await stale.stop();

      for (const lastEventId of ['garbage', 'other-epoch.1-0', `${old?.split('.')[0]}.99999999999999-0`]) {
        const unknown = await tap(connect(small.url, bo.token), small, bo.user.id, { lastEventId });
        await unknown.until((r) => r.length >= 1);
        expect(unknown.received[0]?.event).toEqual({ type: 'resync' });
        await unknown.stop();
      }
    } finally {
      await local.cleanup();
    }
  });

  it('sends typing to the other members with an expiry, kept in the broker only', async () => {
    const { al, bo, conversation } = await pair();
    const events = await tap(bo, app, bo.user.id);
    const mine = await tap(al, app, al.user.id);
    await al.api.conversation.typing.mutate({ id: conversation.id });
    await events.until(() => events.of('typing').length === 1);
    const [typing] = events.of('typing');
    expect(typing).toMatchObject({ conversationId: conversation.id, userId: al.user.id });
    const remaining = (typing?.until.getTime() ?? 0) - Date.now();
    expect(remaining).toBeGreaterThan(3_000);
    expect(remaining).toBeLessThanOrEqual(5_000);
    // The claim that sent it is held: another call now sends nothing.
    expect(await app.services.broker.typing.claim(conversation.id, al.user.id, 1_000)).toBe(false);
    // The typist does not get their own typing: their message, sent after it on the same
    // channel, comes with no typing before it.
    const sentinel = await al.api.message.send.mutate({
      conversationId: conversation.id,
      content: 'sentinel',
    });
    await mine.until((received) =>
      received.some((r) => r.event.type === 'message.created' && r.event.message.id === sentinel.id),
    );
    expect(mine.of('typing')).toEqual([]);
    await events.stop();
    await mine.stop();
  });

  it('sends read receipts to the other members', async () => {
    const { al, bo, conversation } = await pair();
    const events = await tap(al, app, al.user.id);
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'read me' });
    await bo.api.conversation.markRead.mutate({ id: conversation.id, seq: 1 });
    await events.until(() => events.of('read').length === 1);
    expect(events.of('read')).toEqual([
      { type: 'read', conversationId: conversation.id, userId: bo.user.id, seq: 1 },
    ]);
    await events.stop();
  });

  it('reports presence to contacts: online while any device is connected, then last seen', async () => {
    const { al, bo, conversation } = await pair();
    const watcher = await tap(al, app, al.user.id);
    expect((await al.api.user.byId.query({ id: bo.user.id })).online).toBe(false);
    const laptop = await tap(bo, app, bo.user.id);
    const phoneClient = connect(app.url, bo.token);
    const phone = await tap(phoneClient, app, bo.user.id);
    await watcher.until(() => watcher.of('presence').some((p) => p.userId === bo.user.id && p.online));
    expect((await al.api.user.byId.query({ id: bo.user.id })).online).toBe(true);
    await laptop.stop();
    // Still online on the phone: a message bo sends from it now comes with no offline before it.
    const sentinel = await bo.api.message.send.mutate({
      conversationId: conversation.id,
      content: 'sentinel',
    });
    await watcher.until((received) =>
      received.some((r) => r.event.type === 'message.created' && r.event.message.id === sentinel.id),
    );
    expect(watcher.of('presence').filter((p) => !p.online)).toEqual([]);
    await phone.stop();
    await phoneClient.close();
    await watcher.until(() => watcher.of('presence').some((p) => p.userId === bo.user.id && !p.online));
    const offline = watcher.of('presence').find((p) => !p.online);
    expect(offline?.lastSeenAt).toBeInstanceOf(Date);
    const seen = await al.api.user.byId.query({ id: bo.user.id });
    expect(seen).toMatchObject({ online: false });
    expect(seen.lastSeenAt?.getTime()).toBe(offline?.lastSeenAt?.getTime());
    await watcher.stop();
  });

  it('starts a stream before its contacts are told, and never tells them offline before online', async () => {
    const { al, bo } = await pair();
    const { broker, memberships, db, config, log } = app.services;
    // The announcements are recorded, and the first is held until released: the stand-in is
    // for the realtime layer only; the store, the memberships and last-seen are the app's own.
    const told: { online: boolean; to: readonly string[] }[] = [];
    let calls = 0;
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    const events = {
      async signalUsers(userIds: readonly string[], event: ParleyEvent) {
        if (event.type !== 'presence') throw new Error(`unexpected ${event.type}`);
        calls += 1;
        if (calls === 1) await held;
        told.push({ online: event.online, to: userIds });
      },
    } satisfies Pick<EventPublisher, 'signalUsers'> as unknown as EventPublisher;
    // Last-seen is written just before the offline announcement is made.
    let touched = () => {};
    const lastSeenWritten = new Promise<void>((resolve) => (touched = resolve));
    const lastSeen = new (class extends LastSeen {
      override async touch(userId: string) {
        const result = await super.touch(userId);
        touched();
        return result;
      }
    })(db);
    const presence = new Presence(
      broker.presence,
      memberships,
      lastSeen,
      events,
      config.presence,
      log,
      config.limits.largeGroup,
    );
    const key = `presence-order:${bo.user.id}`;
    // Counted at once, with the announcement still held.
    expect(await presence.connect(bo.user.id, key, 5)).toBe(true);
    expect(await presence.onlineAmong([bo.user.id])).toEqual(new Set([bo.user.id]));
    // Gone again before the contacts heard of it: the offline announcement waits its turn.
    const gone = presence.disconnected(bo.user.id, key);
    await lastSeenWritten;
    // Time for an announcement that did not wait (a lookup and a publish) to be made.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(told).toEqual([]);
    release();
    await gone;
    expect(told).toEqual([
      { online: true, to: [al.user.id] },
      { online: false, to: [al.user.id] },
    ]);
  });

  it('keeps every connection of every user alive for as long as its instance runs', async () => {
    const local = await TestDeployment.create();
    try {
      const settings = { presence: { ttlMs: 600, heartbeatMs: 150 } };
      const instance = await local.start(settings);
      const [cy, di] = await Promise.all([signUp(instance.url), signUp(instance.url)]);
      const laptop = connect(instance.url, cy.token);
      const taps = [await tap(cy, instance, cy.user.id), await tap(laptop, instance, cy.user.id)];
      taps.push(await tap(di, instance, di.user.id));
      // Three lifetimes of a connection entry: only the heartbeat can have kept them.
      await new Promise((resolve) => setTimeout(resolve, 1_800));
      const { presence } = instance.services.realtime;
      expect(await instance.services.broker.inspect.connections(cy.user.id, Date.now())).toBe(2);
      expect(await instance.services.broker.inspect.connections(di.user.id, Date.now())).toBe(1);
      expect(await presence.onlineAmong([cy.user.id, di.user.id])).toEqual(new Set([cy.user.id, di.user.id]));
      for (const events of taps) await events.stop();
      await laptop.close();
    } finally {
      await local.cleanup();
    }
  });

  it('stops a removed member at once', async () => {
    const [owner, member] = await Promise.all([signUp(app.url), signUp(app.url)]);
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Out',
      memberIds: [member.user.id],
    });
    const events = await tap(member, app, member.user.id);
    await owner.api.message.send.mutate({ conversationId: group.id, content: 'while inside' });
    await owner.api.conversation.removeMember.mutate({ id: group.id, userId: member.user.id });
    await owner.api.message.send.mutate({ conversationId: group.id, content: 'after removal' });
    await owner.api.conversation.typing.mutate({ id: group.id });
    await events.until(() => events.of('conversation.removed').length === 1);
    // A message in another conversation, sent after all that: anything of the group's meant
    // for the removed member would have come before it.
    const direct = await owner.api.conversation.openDirect.mutate({ userId: member.user.id });
    const sentinel = await owner.api.message.send.mutate({ conversationId: direct.id, content: 'sentinel' });
    await events.until(() => events.of('message.created').some((e) => e.message.id === sentinel.id));
    const inGroup = events.of('message.created').filter((e) => e.message.conversationId === group.id);
    expect(inGroup.map((e) => e.message.content)).toEqual(['while inside']);
    expect(events.of('typing')).toEqual([]);
    await expectCode(member.api.message.list.query({ conversationId: group.id }), 'NOT_FOUND');
    await events.stop();
  });

  it('ends the subscription when the access token expires', async () => {
    const local = await TestDeployment.create();
    try {
      const shortLived = await local.start({ jwt: { accessTtlSeconds: 2 } });
      const bo = await signUp(shortLived.url);
      const events = await tap(bo, shortLived, bo.user.id);
      const started = Date.now();
      await expect(events.until(() => false, 8_000)).rejects.toThrow(/Access token expired/);
      expect(Date.now() - started).toBeLessThan(4_000);
    } finally {
      await local.cleanup();
    }
  });

  it('ends the subscription when the session is logged out', async () => {
    const bo = await signUp(app.url);
    const events = await tap(bo, app, bo.user.id);
    await bo.api.auth.logout.mutate({});
    await expect(events.until(() => false, 5_000)).rejects.toThrow(/Session ended/);
  });

  it('caps subscriptions per connection', async () => {
    const local = await TestDeployment.create();
    try {
      const capped = await local.start({ limits: { maxSubscriptionsPerConnection: 2 } });
      const bo = await signUp(capped.url);
      await tap(bo, capped, bo.user.id);
      await tap(bo, capped, bo.user.id);
      const errors: unknown[] = [];
      bo.api.events.subscribe({}, { onError: (error) => errors.push(error) });
      await vi.waitFor(() => expect(String(errors[0])).toMatch(/Too many subscriptions/), 5_000);
      await bo.close();
    } finally {
      await local.cleanup();
    }
  });

  it('keeps each subscription on a connection apart: its own JSON-RPC id on every frame, until it stops', async () => {
    const { al, bo, conversation } = await pair();
    const socket = new WebSocket(`${wsUrl(app.url)}?token=${bo.tokens.accessToken}`);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    const frames: {
      id: unknown;
      jsonrpc?: unknown;
      result?: { type: string; id?: string; data?: unknown };
    }[] = [];
    socket.on('message', (raw: Buffer) => frames.push(JSON.parse(raw.toString()) as (typeof frames)[number]));
    const dataOf = (id: unknown) =>
      frames
        .filter((f) => f.id === id && f.result?.type === 'data')
        .map((f) => superjson.deserialize<{ id: string; data: ParleyEvent }>(f.result?.data as never));
    const first = await al.api.message.send.mutate({ conversationId: conversation.id, content: 'before' });
    // One subscription as wsLink sends it, one as a plain JSON-RPC 2.0 client might, resuming.
    socket.send(
      JSON.stringify({ id: 7, method: 'subscription', params: { path: 'events', input: { json: {} } } }),
    );
    await vi.waitFor(
      () => expect(frames.some((f) => f.id === 7 && f.result?.type === 'started')).toBe(true),
      10_000,
    );
    socket.send(
      JSON.stringify([
        {
          id: 'b',
          jsonrpc: '2.0',
          method: 'subscription',
          params: { path: 'events', lastEventId: 'none.0-0' },
        },
      ]),
    );
    await vi.waitFor(
      () => expect(frames.some((f) => f.id === 'b' && f.result?.type === 'started')).toBe(true),
      10_000,
    );
    const sent = [];
    for (let i = 0; i < 3; i++) {
      sent.push(await al.api.message.send.mutate({ conversationId: conversation.id, content: `live ${i}` }));
    }
    const created = (id: unknown) =>
      dataOf(id)
        .map((e) => e.data)
        .filter((e): e is Extract<ParleyEvent, { type: 'message.created' }> => e.type === 'message.created');
    await vi.waitFor(() => {
      expect(created(7).length).toBeGreaterThanOrEqual(3);
      expect(created('b').length).toBeGreaterThanOrEqual(3);
    }, 10_000);
    expect(created(7).map((e) => e.message.id)).toEqual(sent.map((m) => m.id));
    // The resumed one started with `resync` (its id is from no epoch), then went live.
    expect(dataOf('b')[0]?.data.type).toBe('resync');
    expect(created('b').map((e) => e.message.id)).toEqual(sent.map((m) => m.id));
    expect(created(7).every((e) => e.message.sentAt instanceof Date)).toBe(true);
    expect(frames.filter((f) => f.id === 'b').every((f) => f.jsonrpc === '2.0')).toBe(true);
    expect(frames.filter((f) => f.id === 7).every((f) => f.jsonrpc === undefined)).toBe(true);
    for (const frame of frames.filter((f) => f.result?.type === 'data')) {
      expect(frame.result?.id).toBe((frame.result?.data as { json: { id: string } }).json.id);
    }
    expect(created(7).some((e) => e.message.id === first.id)).toBe(false);

    socket.send(JSON.stringify({ id: 7, method: 'subscription.stop' }));
    await vi.waitFor(
      () => expect(frames.some((f) => f.id === 7 && f.result?.type === 'stopped')).toBe(true),
      10_000,
    );
    const last = await al.api.message.send.mutate({ conversationId: conversation.id, content: 'after stop' });
    await vi.waitFor(() => expect(created('b').map((e) => e.message.id)).toContain(last.id), 10_000);
    expect(created(7).some((e) => e.message.id === last.id)).toBe(false);
    expect(frames.filter((f) => f.id === 7 && f.result?.type === 'stopped')).toHaveLength(1);
    socket.close();
  });

  it('serves a consumer that iterates the stream (a server-side caller): resume, live events, stop on abort', async () => {
    const { al, bo, conversation } = await pair();
    const ctx = await createContext(
      app.services,
      {
        req: { headers: { authorization: `Bearer ${bo.token}` }, socket: {} } as IncomingMessage,
        info: { connectionParams: null },
      },
      'http',
    );
    const open = async (signal: AbortSignal, lastEventId?: string) => {
      const caller = createCallerFactory(appRouter)(ctx, { signal });
      const stream = await caller.events(lastEventId ? { lastEventId } : undefined);
      return stream[Symbol.asyncIterator]();
    };
    const take = async (iterator: Awaited<ReturnType<typeof open>>) => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) throw new Error('stream ended');
        // A server-side caller gets tRPC's tracked envelopes as they are: [id, event].
        const [id, event] = next.value as unknown as [string, ParleyEvent];
        if (event.type === 'message.created') return { id, event };
      }
    };
    const streams = () => app.services.realtime.hub.subscribers().length;
    const before = streams();
    const first = new AbortController();
    const live = await open(first.signal);
    expect(streams()).toBe(before + 1);
    const sent = await al.api.message.send.mutate({ conversationId: conversation.id, content: 'one' });
    const one = await take(live);
    expect(one.event).toMatchObject({ message: { id: sent.id } });
    first.abort();
    await expect(live.next()).resolves.toMatchObject({ done: true });
    await vi.waitFor(() => expect(streams()).toBe(before), 5_000);

    // Resumed after the first event: exactly what came after it.
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'two' });
    const second = new AbortController();
    const resumed = await open(second.signal, one.id);
    expect((await take(resumed)).event).toMatchObject({ message: { content: 'two' } });
    second.abort();
    await vi.waitFor(() => expect(streams()).toBe(before), 5_000);
    await Promise.all([al.close(), bo.close()]);
  });

  it('disconnects a client that never reads its socket, keeping server memory bounded', async () => {
    const local = await TestDeployment.create();
    try {
      const strict = await local.start({
        limits: { maxSocketBufferBytes: 64 * 1024, maxQueuedEvents: 200, sendsPerUser: 100_000 },
      });
      const { al, bo, conversation } = await pair(strict);
      // A raw client that subscribes and then stops reading.
      const socket = new WebSocket(`${wsUrl(strict.url)}?token=${bo.tokens.accessToken}`);
      await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
      socket.send(
        JSON.stringify({ id: 1, method: 'subscription', params: { path: 'events', input: { json: {} } } }),
      );
      await expect
        .poll(() => strict.services.broker.inspect.connections(bo.user.id, Date.now()), { timeout: 5_000 })
        .toBeGreaterThan(0);
      const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
      (socket as unknown as { _socket: { pause(): void } })._socket.pause();
      const big = 'x'.repeat(3_990);
      let i = 0;
      // Enough to fill the kernel's socket buffers, after which the server's own buffer grows.
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          while (i < 3000 && strict.services.realtime.hub.count() > 0) {
            i++;
            await al.api.message.send.mutate({ conversationId: conversation.id, content: `${i} ${big}` });
          }
        }),
      );
      // The server gave up on the subscription instead of buffering without bound.
      expect(strict.services.realtime.hub.count()).toBe(0);
      (socket as unknown as { _socket: { resume(): void } })._socket.resume();
      expect(await closed).toBe(1013);
    } finally {
      await local.cleanup();
    }
  });
});

describe.skipIf(!onRealEngines)(`events channel loss (${engineLabel}; needs Redis)`, () => {
  it('delivers what was published while the instance’s subscriber connection was down, once and in order', async () => {
    const { al, bo, conversation } = await pair();
    const events = await tap(bo, app, bo.user.id);
    const sent = [await al.api.message.send.mutate({ conversationId: conversation.id, content: 'before' })];
    await events.until(() => events.of('message.created').length === 1);

    // Only this instance's Pub/Sub connection goes; sends (another connection) carry on, and
    // what they publish until ioredis has reconnected and re-subscribed reaches nobody here.
    // On a cluster, the instance's sharded subscriber connection to the node of its channels.
    const redis = openRedis(engines.redisUrl ?? '', { lazyConnect: true });
    await redis.connect();
    try {
      const name = subscriberName(app.services.config.redisPrefix);
      // A cluster client names its sharded subscribers `ioredis-cluster(ssubscriber):<name>`.
      const ours = (client: string | undefined) => client === name || client?.endsWith(`):${name}`);
      let killed = 0;
      for (const server of serversOf(redis)) {
        const clients = String(await server.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
        const id = /id=(\d+) .*name=(\S+)/g;
        for (const match of [...clients.matchAll(id)].filter((m) => ours(m[2]))) {
          await server.call('CLIENT', 'KILL', 'ID', match[1] ?? '');
          killed++;
        }
      }
      // On a cluster, one per master that holds the channels of a partition this instance
      // receives: one master with one partition, several with several.
      expect(killed).toBeGreaterThanOrEqual(1);
      if (!engines.redisCluster || engines.redisPartitions === 1) expect(killed).toBe(1);
    } finally {
      redis.disconnect();
    }
    for (let i = 0; i < 20; i++) {
      sent.push(
        await al.api.message.send.mutate({ conversationId: conversation.id, content: `during ${i}` }),
      );
    }
    // Whether the instance still holds live events, as operators see it.
    const held = async () => (await app.services.metrics.held.get()).values[0]?.value;
    await events
      .until(() => events.of('message.created').length >= sent.length, 15_000)
      .catch(async (error: unknown) => {
        const received = events.of('message.created').map((e) => e.message.content);
        throw new Error(`${String(error)}: received ${received.join(', ')}; held: ${await held()}`);
      });
    // Anything repeated would arrive before a message sent after all of them had.
    sent.push(await al.api.message.send.mutate({ conversationId: conversation.id, content: 'sentinel' }));
    await events.until(() => events.of('message.created').some((e) => e.message.content === 'sentinel'));
    expect(events.of('message.created').map((e) => e.message.id)).toEqual(sent.map((m) => m.id));
    const ids = events.received.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(await held()).toBe(0);
    await events.stop();
  });
});

describe.skipIf(!onRealEngines)(`events across instances (${engineLabel}; needs PostgreSQL + Redis)`, () => {
  it('delivers a message sent through instance A to a subscriber on instance B', async () => {
    const b = await deployment.start();
    const { al, bo, conversation } = await pair();
    const onB = connect(b.url, bo.token);
    const events = await tap(onB, b, bo.user.id);
    const sent = await al.api.message.send.mutate({ conversationId: conversation.id, content: 'across' });
    await events.until(() => events.of('message.created').length === 1);
    expect(events.of('message.created')[0]?.message.id).toBe(sent.id);
    await events.stop();
    await onB.close();
  });

  it('resumes on another instance without gap or duplicate', async () => {
    const b = await deployment.start();
    const { al, bo, conversation } = await pair();
    const first = await tap(bo, app, bo.user.id);
    await al.api.message.send.mutate({ conversationId: conversation.id, content: 'on A' });
    await first.until(() => first.of('message.created').length === 1);
    const lastEventId = first.lastId();
    await first.stop();
    const missed = [];
    for (let i = 0; i < 50; i++) {
      missed.push(
        (await al.api.message.send.mutate({ conversationId: conversation.id, content: `m${i}` })).id,
      );
    }
    const onB = connect(b.url, bo.token);
    const resumed = await tap(onB, b, bo.user.id, { lastEventId });
    await resumed.until(() => resumed.of('message.created').length >= 50);
    // Anything repeated would arrive before a message sent after all of them had.
    missed.push(
      (await al.api.message.send.mutate({ conversationId: conversation.id, content: 'sentinel' })).id,
    );
    await resumed.until(() => resumed.of('message.created').some((e) => e.message.content === 'sentinel'));
    expect(resumed.of('message.created').map((e) => e.message.id)).toEqual(missed);
    await resumed.stop();
    await onB.close();
  });

  it('keeps a user online across instances until their last device leaves', async () => {
    const b = await deployment.start();
    const { al, bo, conversation } = await pair();
    const watcher = await tap(al, app, al.user.id);
    const onA = await tap(bo, app, bo.user.id);
    const clientB = connect(b.url, bo.token);
    const onB = await tap(clientB, b, bo.user.id);
    await onA.stop();
    // Still online on instance B: a message bo sends from there comes with no offline before it.
    const sentinel = await clientB.api.message.send.mutate({
      conversationId: conversation.id,
      content: 'sentinel',
    });
    await watcher.until((received) =>
      received.some((r) => r.event.type === 'message.created' && r.event.message.id === sentinel.id),
    );
    expect(watcher.of('presence').filter((p) => p.userId === bo.user.id && !p.online)).toEqual([]);
    expect((await al.api.user.byId.query({ id: bo.user.id })).online).toBe(true);
    await onB.stop();
    await clientB.close();
    await watcher.until(() => watcher.of('presence').some((p) => p.userId === bo.user.id && !p.online));
    expect((await al.api.user.byId.query({ id: bo.user.id })).online).toBe(false);
    await watcher.stop();
  });

  it('marks the users of a dead instance offline once their connections expire', async () => {
    const local = await TestDeployment.create();
    try {
      const settings = { presence: { ttlMs: 600, heartbeatMs: 150 } };
      const survivor = await local.start(settings);
      const doomed = await local.start(settings);
      const { al, bo } = await pair(survivor);
      const watcher = await tap(al, survivor, al.user.id);
      const clientOnDoomed = connect(doomed.url, bo.token);
      await tap(clientOnDoomed, doomed, bo.user.id);
      await watcher.until(() => watcher.of('presence').some((p) => p.userId === bo.user.id && p.online));
      // The instance stops refreshing without saying goodbye (as if killed).
      doomed.services.realtime.presence.stop();
      await doomed.services.realtime.hub.stop();
      await watcher.until(
        () => watcher.of('presence').some((p) => p.userId === bo.user.id && !p.online),
        5_000,
      );
      await watcher.stop();
      await clientOnDoomed.close();
    } finally {
      await local.cleanup();
    }
  });
});
