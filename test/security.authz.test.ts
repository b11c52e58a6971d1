import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { appRouter } from '../server/src/routers/_app.js';
import { signUp } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';
import { tap } from './support/events.js';

/**
 * The authorization matrix: every procedure that takes the id of a conversation or a message,
 * called by users who may not see it (never a member, or removed), with the id of a real one.
 * They must learn nothing: the same answer as for an id that does not exist, no data in it, and
 * nothing changed. Procedures are enumerated from the router, so a new one is covered or the
 * first test fails and says what to add.
 */

interface ZodLike {
  safeParse(value: unknown): { success: boolean };
  _zod?: { def?: Record<string, unknown> };
}
interface ProcedureInfo {
  path: string;
  type: 'query' | 'mutation' | 'subscription';
  schema: ZodLike | undefined;
}

const procedures: ProcedureInfo[] = Object.entries(appRouter._def.procedures as Record<string, unknown>).map(
  ([path, procedure]) => {
    const def = (procedure as { _def: { type: ProcedureInfo['type']; inputs: ZodLike[] } })._def;
    return { path, type: def.type, schema: def.inputs[0] };
  },
);

/** Top-level fields of an object schema (under optional/default wrappers), with whether required. */
function fieldsOf(schema: ZodLike | undefined): Map<string, { optional: boolean }> {
  let def = schema?._zod?.def;
  while (def && def.type !== 'object' && 'innerType' in def) {
    def = (def.innerType as ZodLike)._zod?.def;
  }
  const out = new Map<string, { optional: boolean }>();
  if (def?.type !== 'object') return out;
  for (const [key, field] of Object.entries(def.shape as Record<string, ZodLike>)) {
    const type = field._zod?.def?.type;
    out.set(key, { optional: type === 'optional' || type === 'default' || type === 'nullable' });
  }
  return out;
}

/** Users are a public directory (any signed-in user may look one up), so no secret id there. */
const PUBLIC_BY_DESIGN: Record<string, string> = {
  'user.byId': 'users are visible to every signed-in user; deleted ones are NOT_FOUND (auth.test.ts)',
  'conversation.openDirect': 'takes a user id: anyone may open a direct conversation with anyone',
};

type Kind = 'conversation' | 'message';
/** Which kind of object the id in a procedure's input names. */
function targetOf(procedure: ProcedureInfo): { key: string; kind: Kind } | null {
  const fields = fieldsOf(procedure.schema);
  if (fields.has('conversationId')) return { key: 'conversationId', kind: 'conversation' };
  if (fields.has('id')) {
    if (procedure.path.startsWith('message.')) return { key: 'id', kind: 'message' };
    if (procedure.path.startsWith('conversation.')) return { key: 'id', kind: 'conversation' };
    return { key: 'id', kind: 'conversation' };
  }
  return null;
}

const takesAnId = procedures.filter((p) => targetOf(p) !== null || fieldsOf(p.schema).has('userId'));

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start({ worker: { blockMs: 100 } });
});
afterAll(async () => {
  await deployment?.cleanup();
});

interface Outcome {
  status: number;
  code: string | null;
  message: string | null;
  body: string;
}

async function callAs(token: string, procedure: ProcedureInfo, input: unknown): Promise<Outcome> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  const text = JSON.stringify({ json: input });
  const response =
    procedure.type === 'query'
      ? await fetch(`${app.url}/trpc/${procedure.path}?input=${encodeURIComponent(text)}`, { headers })
      : await fetch(`${app.url}/trpc/${procedure.path}`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: text,
        });
  const body = await response.text();
  const parsed = JSON.parse(body) as { error?: { json?: { message?: string; data?: { code?: string } } } };
  return {
    status: response.status,
    code: parsed.error?.json?.data?.code ?? null,
    message: parsed.error?.json?.message ?? null,
    body,
  };
}

describe(`authorization matrix (${engineLabel})`, () => {
  it('knows how to aim every procedure that takes an id', () => {
    const unaimed = takesAnId
      .filter((p) => p.type !== 'subscription')
      .filter((p) => !(p.path in PUBLIC_BY_DESIGN) && targetOf(p) === null)
      .map((p) => p.path);
    expect(unaimed, 'add these to targetOf or PUBLIC_BY_DESIGN with a reason').toEqual([]);
    expect(takesAnId.map((p) => p.path)).toEqual(
      expect.arrayContaining(['conversation.byId', 'message.byId', 'message.list', 'message.send']),
    );
  });

  it('a user who may not see a conversation or message learns nothing and changes nothing', async () => {
    const [owner, member, outsider, removed] = await Promise.all([
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
    ]);
    const secretName = `Hidden ${randomUUID().slice(0, 8)}`;
    const secretText = `classified ${randomUUID()}`;
    const group = await owner.api.conversation.createGroup.mutate({
      name: secretName,
      memberIds: [member.user.id, removed.user.id],
    });
    const message = await owner.api.message.send.mutate({ conversationId: group.id, content: secretText });
    await owner.api.conversation.removeMember.mutate({ id: group.id, userId: removed.user.id });
    const before = await owner.api.conversation.byId.query({ id: group.id });
    const historyBefore = await owner.api.message.list.query({ conversationId: group.id });

    // Values for the other fields, so each call is valid and reaches the permission check.
    const samples = (viewer: typeof outsider): Record<string, unknown> => ({
      userId: member.user.id,
      userIds: [viewer.user.id],
      name: 'Taken over',
      content: 'I was here',
      seq: 1,
      role: 'admin',
    });
    const idOf = (kind: Kind) => (kind === 'conversation' ? group.id : message.id);
    const secrets = [secretName, secretText, member.user.username, owner.user.username];

    const checked: string[] = [];
    for (const viewer of [outsider, removed]) {
      for (const procedure of takesAnId) {
        const target = targetOf(procedure);
        if (!target || procedure.type === 'subscription' || procedure.path in PUBLIC_BY_DESIGN) continue;
        const input: Record<string, unknown> = {};
        for (const [key, { optional }] of fieldsOf(procedure.schema)) {
          if (key === target.key) continue;
          const sample = samples(viewer)[key];
          if (sample !== undefined) input[key] = sample;
          else if (!optional) throw new Error(`${procedure.path}: add a sample value for "${key}"`);
        }
        const real = { ...input, [target.key]: idOf(target.kind) };
        const missing = { ...input, [target.key]: randomUUID() };
        expect(procedure.schema?.safeParse(real).success, `${procedure.path} sample input is valid`).toBe(
          true,
        );

        const onReal = await callAs(viewer.tokens.accessToken, procedure, real);
        const onMissing = await callAs(viewer.tokens.accessToken, procedure, missing);
        const label = `${procedure.path} as ${viewer === outsider ? 'outsider' : 'removed member'}`;
        expect(['NOT_FOUND', 'FORBIDDEN'], `${label}: ${onReal.body.slice(0, 200)}`).toContain(onReal.code);
        // Indistinguishable from an id that does not exist: same status, code and message.
        expect([onReal.status, onReal.code, onReal.message], label).toEqual([
          onMissing.status,
          onMissing.code,
          onMissing.message,
        ]);
        for (const secret of secrets) expect(onReal.body.includes(secret), `${label} leaks`).toBe(false);
        checked.push(label);
      }
    }
    expect(checked.length).toBeGreaterThanOrEqual(2 * 10);

    // Nothing they tried took effect.
    const after = await owner.api.conversation.byId.query({ id: group.id });
    expect(after.name).toBe(secretName);
    expect(after.members.map((m) => [m.userId, m.role]).sort()).toEqual(
      before.members.map((m) => [m.userId, m.role]).sort(),
    );
    const historyAfter = await owner.api.message.list.query({ conversationId: group.id });
    expect(historyAfter.items.map((m) => [m.id, m.content, m.deletedAt])).toEqual(
      historyBefore.items.map((m) => [m.id, m.content, m.deletedAt]),
    );
    const outsiderLists = await outsider.api.conversation.list.query({});
    expect(outsiderLists.items.map((c) => c.id)).not.toContain(group.id);
    await Promise.all([owner, member, outsider, removed].map((client) => client.close()));
  });

  it('events about a conversation reach its members only, and stop for a removed member', async () => {
    const [owner, member, outsider, leaving] = await Promise.all([
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
      signUp(app.url),
    ]);
    const group = await owner.api.conversation.createGroup.mutate({
      name: 'Members only',
      memberIds: [member.user.id, leaving.user.id],
    });
    const [memberTap, outsiderTap, leavingTap] = await Promise.all([
      tap(member, app, member.user.id),
      tap(outsider, app, outsider.user.id),
      tap(leaving, app, leaving.user.id),
    ]);
    await owner.api.message.send.mutate({ conversationId: group.id, content: 'before removal' });
    await owner.api.conversation.removeMember.mutate({ id: group.id, userId: leaving.user.id });
    await leavingTap.until((r) => r.some((x) => x.event.type === 'conversation.removed'));
    await owner.api.message.send.mutate({ conversationId: group.id, content: 'after removal' });
    await owner.api.conversation.rename.mutate({ id: group.id, name: 'Renamed' });
    await owner.api.conversation.typing.mutate({ id: group.id });
    // The member saw everything, so anything meant for the others has been sent by now.
    await memberTap.until(
      (r) =>
        r.some((x) => x.event.type === 'typing') &&
        r.some((x) => x.event.type === 'message.created' && x.event.message.content === 'after removal'),
    );
    // A message to each of the others in a conversation of their own, sent after all that:
    // anything about the group that reached them came before it.
    for (const [user, events] of [
      [outsider, outsiderTap],
      [leaving, leavingTap],
    ] as const) {
      const direct = await owner.api.conversation.openDirect.mutate({ userId: user.user.id });
      const sentinel = await owner.api.message.send.mutate({
        conversationId: direct.id,
        content: 'sentinel',
      });
      await events.until(() => events.of('message.created').some((e) => e.message.id === sentinel.id));
    }
    const mentions = (events: typeof outsiderTap.received) =>
      events.filter((r) => JSON.stringify(r.event).includes(group.id));
    expect(mentions(outsiderTap.received)).toEqual([]);
    const afterRemoval = leavingTap.received.slice(
      leavingTap.received.findIndex((r) => r.event.type === 'conversation.removed') + 1,
    );
    expect(mentions(afterRemoval)).toEqual([]);
    const inGroup = leavingTap.of('message.created').filter((e) => e.message.conversationId === group.id);
    expect(inGroup.map((e) => e.message.content)).toEqual(['before removal']);
    await Promise.all([memberTap, outsiderTap, leavingTap].map((t) => t.stop()));
    await Promise.all([owner, member, outsider, leaving].map((client) => client.close()));
  });
});
