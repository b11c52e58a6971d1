import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import type { ParleyEvent } from '../server/src/contracts/events.js';
import { type TestClient, connect, signUp } from './support/client.js';
import { TestDeployment, engineLabel, onRealEngines } from './support/env.js';
import { type EventTap, tap } from './support/events.js';

/**
 * The event stream against a reference model. Random interleavings of sends, edits, deletes,
 * joins, leaves, removals and reconnects, across several conversations and devices (on two
 * instances where the engines are shared); at the end every device must have received, for
 * each conversation, exactly the message events of the times its user was a member, each once
 * and in order, whatever it missed while disconnected.
 */

const USERS = 3;
const DEVICES_PER_USER = 2;
const GROUPS = 2;

/**
 * A deployment under test: one instance, or two where the engines are shared; with
 * `eventPartitions`, split into that many partitions (by default, as the run's engines are).
 */
function deploymentOf(eventPartitions?: number): { apps: App[] } {
  const under = { apps: [] as App[] };
  let deployment: TestDeployment | undefined;
  beforeAll(async () => {
    deployment = await TestDeployment.create();
    const overrides = eventPartitions === undefined ? {} : { eventPartitions };
    under.apps.push(await deployment.start(overrides));
    if (onRealEngines) under.apps.push(await deployment.start(overrides));
  });
  afterAll(async () => {
    await deployment?.cleanup();
  });
  return under;
}

type Action =
  | { kind: 'send'; user: number; group: number }
  | { kind: 'edit'; pick: number }
  | { kind: 'delete'; pick: number; byOwner: boolean }
  | { kind: 'add'; user: number; group: number }
  | { kind: 'remove'; user: number; group: number }
  | { kind: 'leave'; user: number; group: number }
  | { kind: 'disconnect'; device: number }
  | { kind: 'reconnect'; device: number };

const user = fc.integer({ min: 0, max: USERS - 1 });
const member = fc.integer({ min: 1, max: USERS - 1 });
const group = fc.integer({ min: 0, max: GROUPS - 1 });
const device = fc.integer({ min: 0, max: USERS * DEVICES_PER_USER - 1 });
const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('send' as const), user, group }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('edit' as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat(), byOwner: fc.boolean() }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('add' as const), user: member, group }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), user: member, group }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('leave' as const), user: member, group }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('disconnect' as const), device }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('reconnect' as const), device }) },
);

interface SentMessage {
  id: string;
  group: number;
  sender: number;
  deleted: boolean;
}

interface Device {
  user: number;
  client: TestClient;
  app: App;
  tap: EventTap | null;
  /** Everything received, across every connection of this device, in arrival order. */
  received: ParleyEvent[];
  lastEventId: string | undefined;
}

/** The key of a message event in a conversation, or null for events the model does not follow. */
function keyOf(
  event: ParleyEvent,
  followed: Map<string, SentMessage>,
): { conversationId: string; key: string } | null {
  if (event.type === 'message.created' || event.type === 'message.updated') {
    if (!followed.has(event.message.id)) return null;
    return { conversationId: event.message.conversationId, key: `${event.type} ${event.message.id}` };
  }
  if (event.type === 'message.deleted') {
    if (!followed.has(event.messageId)) return null;
    return { conversationId: event.conversationId, key: `${event.type} ${event.messageId}` };
  }
  return null;
}

async function run(apps: App[], actions: Action[]): Promise<void> {
  const appOf = (index: number) => apps[index % apps.length] as App;
  const people = await Promise.all(Array.from({ length: USERS }, () => signUp(appOf(0).url)));
  const owner = people[0] as (typeof people)[number];
  const groups: { id: string; members: Set<number> }[] = [];
  for (let g = 0; g < GROUPS; g++) {
    const created = await owner.api.conversation.createGroup.mutate({
      name: `model ${g}`,
      memberIds: [(people[1] as (typeof people)[number]).user.id],
    });
    groups.push({ id: created.id, members: new Set([0, 1]) });
  }
  const groupIndex = new Map(groups.map((g, i) => [g.id, i]));

  const devices: Device[] = [];
  for (let d = 0; d < USERS * DEVICES_PER_USER; d++) {
    const u = Math.floor(d / DEVICES_PER_USER);
    const person = people[u] as (typeof people)[number];
    const app = appOf(d);
    const client = connect(app.url, person.token);
    devices.push({ user: u, client, app, tap: null, received: [], lastEventId: undefined });
  }
  const open = async (dev: Device) => {
    const person = people[dev.user] as (typeof people)[number];
    dev.tap = await tap(dev.client, dev.app, person.user.id, { lastEventId: dev.lastEventId ?? null });
  };
  const close = async (dev: Device) => {
    const current = dev.tap;
    if (!current) return;
    dev.tap = null;
    await current.stop();
    dev.received.push(...current.received.map((r) => r.event));
    dev.lastEventId = current.lastId() ?? dev.lastEventId;
  };
  for (const dev of devices) await open(dev);
  // A first message that every device receives gives each one a position to resume from.
  const lobby = await owner.api.conversation.createGroup.mutate({
    name: 'lobby',
    memberIds: people.slice(1).map((p) => p.user.id),
  });
  const first = await owner.api.message.send.mutate({ conversationId: lobby.id, content: 'first' });
  for (const dev of devices) {
    await (dev.tap as EventTap).until((received) =>
      received.some((r) => r.event.type === 'message.created' && r.event.message.id === first.id),
    );
  }

  const sent: SentMessage[] = [];
  const followed = new Map<string, SentMessage>();
  /** For each user, the message event keys of each conversation they must receive, in order. */
  const expected = Array.from({ length: USERS }, () => new Map<string, string[]>());
  const emit = (g: number, key: string) => {
    const { id, members } = groups[g] as { id: string; members: Set<number> };
    for (const u of members) {
      const perConversation = expected[u] as Map<string, string[]>;
      perConversation.set(id, [...(perConversation.get(id) ?? []), key]);
    }
  };
  const clientOf = (u: number) => (people[u] as (typeof people)[number]).api;

  for (const step of actions) {
    switch (step.kind) {
      case 'send': {
        const g = groups[step.group] as { id: string; members: Set<number> };
        if (!g.members.has(step.user)) break;
        const message = await clientOf(step.user).message.send.mutate({
          conversationId: g.id,
          content: `m${sent.length}`,
        });
        const record = { id: message.id, group: step.group, sender: step.user, deleted: false };
        sent.push(record);
        followed.set(message.id, record);
        emit(step.group, `message.created ${message.id}`);
        break;
      }
      case 'edit': {
        const editable = sent.filter((m) => !m.deleted && groups[m.group]?.members.has(m.sender));
        const target = editable[step.pick % Math.max(1, editable.length)];
        if (!target) break;
        await clientOf(target.sender).message.edit.mutate({ id: target.id, content: `edited ${target.id}` });
        emit(target.group, `message.updated ${target.id}`);
        break;
      }
      case 'delete': {
        const deletable = sent.filter(
          (m) => !m.deleted && (step.byOwner || groups[m.group]?.members.has(m.sender)),
        );
        const target = deletable[step.pick % Math.max(1, deletable.length)];
        if (!target) break;
        await clientOf(step.byOwner ? 0 : target.sender).message.delete.mutate({ id: target.id });
        target.deleted = true;
        emit(target.group, `message.deleted ${target.id}`);
        break;
      }
      case 'add': {
        const g = groups[step.group] as { id: string; members: Set<number> };
        if (g.members.has(step.user)) break;
        await owner.api.conversation.addMembers.mutate({
          id: g.id,
          userIds: [(people[step.user] as (typeof people)[number]).user.id],
        });
        g.members.add(step.user);
        break;
      }
      case 'remove':
      case 'leave': {
        const g = groups[step.group] as { id: string; members: Set<number> };
        if (!g.members.has(step.user)) break;
        const target = (people[step.user] as (typeof people)[number]).user.id;
        if (step.kind === 'remove')
          await owner.api.conversation.removeMember.mutate({ id: g.id, userId: target });
        else await clientOf(step.user).conversation.leave.mutate({ id: g.id });
        g.members.delete(step.user);
        break;
      }
      case 'disconnect':
        await close(devices[step.device] as Device);
        break;
      case 'reconnect': {
        const dev = devices[step.device] as Device;
        if (!dev.tap) await open(dev);
        break;
      }
    }
  }

  // Everyone comes back, then a last message in every group tells each member's devices that
  // everything before it has arrived.
  for (const dev of devices) if (!dev.tap) await open(dev);
  const sentinels: { group: number; id: string }[] = [];
  for (let g = 0; g < GROUPS; g++) {
    const { id } = await owner.api.message.send.mutate({
      conversationId: (groups[g] as { id: string }).id,
      content: 'sentinel',
    });
    sentinels.push({ group: g, id });
  }
  const last = await owner.api.message.send.mutate({ conversationId: lobby.id, content: 'last' });
  for (const dev of devices) {
    const mine = sentinels.filter((s) => groups[s.group]?.members.has(dev.user)).map((s) => s.id);
    await (dev.tap as EventTap).until((received) => {
      const ids = new Set(
        received.flatMap((r) => (r.event.type === 'message.created' ? [r.event.message.id] : [])),
      );
      return ids.has(last.id) && mine.every((id) => ids.has(id));
    });
  }
  for (const dev of devices) await close(dev);

  for (const [d, dev] of devices.entries()) {
    const got = new Map<string, string[]>();
    for (const event of dev.received) {
      const key = keyOf(event, followed);
      if (!key) continue;
      got.set(key.conversationId, [...(got.get(key.conversationId) ?? []), key.key]);
    }
    const want = expected[dev.user] as Map<string, string[]>;
    for (const id of new Set([...got.keys(), ...want.keys()])) {
      expect(got.get(id) ?? [], `device ${d} (user ${dev.user}), group ${groupIndex.get(id)}`).toEqual(
        want.get(id) ?? [],
      );
    }
  }
  await Promise.all(devices.map((dev) => dev.client.close()));
  await Promise.all(people.map((p) => p.close()));
}

describe(`the event stream against its model (${engineLabel})`, () => {
  const { apps } = deploymentOf();
  it('gives every device exactly the message events of its memberships, once and in order, across reconnects', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 5, maxLength: 40 }), (actions) => run(apps, actions)),
      { numRuns: 25, endOnFailure: true },
    );
  }, 240_000);
});

// Three partitions, each its own order of events: the lobby, the groups and each user's own inbox
// events fall into them at random (by their ids), so runs cover conversations in one partition
// and in several.
describe(`the event stream against its model, in three partitions (${engineLabel})`, () => {
  const { apps } = deploymentOf(3);
  it('gives every device exactly the message events of its memberships, once and in order, across reconnects', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 5, maxLength: 40 }), (actions) => run(apps, actions)),
      { numRuns: 25, endOnFailure: true },
    );
  }, 240_000);
});
