import { Validator } from '@seriousme/openapi-schema-validator';
import type { inferRouterOutputs } from '@trpc/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { App } from '../server/src/app.js';
import { appRouter, type AppRouter } from '../server/src/routers/_app.js';
import { TestDeployment, engineLabel } from './support/env.js';

/**
 * The REST surface (`/api/…`) and its OpenAPI document (`/openapi.json`), driven with plain
 * `fetch` and plain JSON only, as any HTTP client would: no tRPC client, no superjson.
 */

const PASSWORD = 'correct horse battery';
const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  app = await deployment.start();
});
afterAll(async () => {
  await deployment?.cleanup();
});

type Outputs = inferRouterOutputs<AppRouter>;
/** A result as plain JSON carries it: every `Date` an ISO string. */
type Json<T> = T extends Date
  ? string
  : T extends (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

interface ErrorBody {
  error: {
    code: string;
    message: string;
    httpStatus: number;
    path?: string;
    zodError: { formErrors: string[]; fieldErrors: Record<string, string[]> } | null;
    retryAfter?: number;
  };
}

interface Operation {
  operationId: string;
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string; required: boolean }[];
  responses: Record<string, { content?: Record<string, { schema: z.core.JSONSchema.JSONSchema }> }>;
}

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description: string };
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, unknown> };
}

interface Answer<T> {
  status: number;
  headers: Headers;
  /** The body parsed from JSON, typed as what the call expects; the checks below verify it. */
  body: T;
}

/** One call with plain `fetch`: GET with a query string, or POST with a JSON body. */
async function call<T = ErrorBody>(
  target: App,
  method: 'GET' | 'POST',
  path: string,
  options: { token?: string; body?: unknown; query?: Record<string, string> } = {},
): Promise<Answer<T>> {
  const url = new URL(path, target.url);
  for (const [name, value] of Object.entries(options.query ?? {})) url.searchParams.set(name, value);
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: (text ? JSON.parse(text) : undefined) as T,
  };
}

let users = 0;
async function register(target: App = app): Promise<{ id: string; username: string; token: string }> {
  users += 1;
  const username = `rest_${users}_${Math.random().toString(36).slice(2, 8)}`;
  const answer = await call<Json<Outputs['auth']['register']>>(target, 'POST', '/api/auth/register', {
    body: { email: `${username}@example.test`, username, password: PASSWORD },
  });
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return { id: answer.body.user.id, username, token: answer.body.tokens.accessToken };
}

async function openApi(): Promise<OpenApiDocument> {
  const answer = await call<OpenApiDocument>(app, 'GET', '/openapi.json');
  expect(answer.status).toBe(200);
  expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
  return answer.body;
}

/** Every query and mutation of the router, enumerated from it, so a new one is checked too. */
function procedures(): { path: string; type: 'query' | 'mutation' | 'subscription' }[] {
  // Keyed by full path (`message.send`) at runtime, though tRPC types it as the nested record.
  return Object.entries(appRouter._def.procedures as Record<string, unknown>).map(([path, procedure]) => ({
    path,
    type: (procedure as { _def: { type: 'query' | 'mutation' | 'subscription' } })._def.type,
  }));
}

const urlOf = (path: string) => `/api/${path.split('.').join('/')}`;

describe(`REST and OpenAPI (${engineLabel})`, () => {
  it('registers, signs in, creates a group, sends and reads the history as plain JSON with ISO dates, as the document describes', async () => {
    const document = await openApi();
    /** Checks a successful answer against the document's schema of that operation's result. */
    const described = <T>(answer: Answer<T>, method: 'get' | 'post', path: string): T => {
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      const schema = document.paths[path]?.[method]?.responses['200']?.content?.['application/json']?.schema;
      expect(schema, `${method} ${path}`).toBeDefined();
      const parsed = z.fromJSONSchema(schema ?? false).safeParse(answer.body);
      expect(parsed.error?.issues ?? [], `${method} ${path}`).toEqual([]);
      // Plain JSON: no superjson envelope around the result.
      expect(answer.body).not.toHaveProperty('json');
      return answer.body;
    };

    const username = `rest_flow_${Math.random().toString(36).slice(2, 8)}`;
    const registered = described(
      await call<Json<Outputs['auth']['register']>>(app, 'POST', '/api/auth/register', {
        body: { email: `${username}@example.test`, username, password: PASSWORD, displayName: 'Flo' },
      }),
      'post',
      '/api/auth/register',
    );
    expect(registered.user).toMatchObject({ username, displayName: 'Flo' });
    expect(registered.user.createdAt).toMatch(ISO_DATE);

    const session = described(
      await call<Json<Outputs['auth']['login']>>(app, 'POST', '/api/auth/login', {
        body: { username, password: PASSWORD },
      }),
      'post',
      '/api/auth/login',
    );
    const token = session.tokens.accessToken;
    expect(session.user.id).toBe(registered.user.id);

    const friend = await register();
    const group = described(
      await call<Json<Outputs['conversation']['createGroup']>>(app, 'POST', '/api/conversation/createGroup', {
        token,
        body: { name: 'REST people', memberIds: [friend.id] },
      }),
      'post',
      '/api/conversation/createGroup',
    );
    expect(group).toMatchObject({ type: 'group', name: 'REST people' });
    expect(group.createdAt).toMatch(ISO_DATE);
    expect(group.members.map((member) => member.username).sort()).toEqual([username, friend.username].sort());

    const sent = described(
      await call<Json<Outputs['message']['send']>>(app, 'POST', '/api/message/send', {
        token,
        body: { conversationId: group.id, content: '  hello over REST  ', clientMessageId: 'rest-1' },
      }),
      'post',
      '/api/message/send',
    );
    expect(sent).toMatchObject({ content: 'hello over REST', senderId: registered.user.id, editedAt: null });
    expect(sent.sentAt).toMatch(ISO_DATE);
    expect(new Date(sent.sentAt).toISOString()).toBe(sent.sentAt);
    expect(Math.abs(Date.parse(sent.sentAt) - Date.now())).toBeLessThan(60_000);

    // The friend reads it, with a query string whose numbers arrive as numbers.
    const history = described(
      await call<Json<Outputs['message']['list']>>(app, 'GET', '/api/message/list', {
        token: friend.token,
        query: { conversationId: group.id, limit: '1' },
      }),
      'get',
      '/api/message/list',
    );
    expect(history.items).toEqual([sent]);
    expect(history.nextCursor).toEqual(expect.any(String));
    const older = described(
      await call<Json<Outputs['message']['list']>>(app, 'GET', '/api/message/list', {
        token: friend.token,
        query: { conversationId: group.id, limit: '1', cursor: history.nextCursor ?? '' },
      }),
      'get',
      '/api/message/list',
    );
    expect(older.items).toHaveLength(1);
    expect(older.items[0]).toMatchObject({ type: 'system', seq: sent.seq - 1 });

    const conversations = described(
      await call<Json<Outputs['conversation']['list']>>(app, 'GET', '/api/conversation/list', {
        token: friend.token,
      }),
      'get',
      '/api/conversation/list',
    );
    expect(conversations.items[0]).toMatchObject({ id: group.id, lastMessage: sent, unreadCount: 2 });

    const read = described(
      await call<Json<Outputs['conversation']['markRead']>>(app, 'POST', '/api/conversation/markRead', {
        token: friend.token,
        body: { id: group.id, seq: sent.seq },
      }),
      'post',
      '/api/conversation/markRead',
    );
    expect(read).toEqual({ lastReadSeq: sent.seq });
    const touched = described(
      await call<Json<Outputs['user']['touch']>>(app, 'POST', '/api/user/touch', { token }),
      'post',
      '/api/user/touch',
    );
    expect(touched.lastSeenAt).toMatch(ISO_DATE);
  });

  it('refuses an invalid input with 400 and the field errors, from a JSON body and from a query string', async () => {
    const bad = await call(app, 'POST', '/api/auth/register', {
      body: { email: 'not an email', username: 'x', password: 'short' },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400, path: 'auth.register' });
    expect(Object.keys(bad.body.error.zodError?.fieldErrors ?? {}).sort()).toEqual([
      'email',
      'password',
      'username',
    ]);
    expect(bad.body.error.zodError?.fieldErrors.username).toEqual(['must be at least 3 characters']);

    const user = await register();
    const query = await call(app, 'GET', '/api/message/list', {
      token: user.token,
      query: { conversationId: 'not-a-uuid', limit: 'many' },
    });
    expect(query.status).toBe(400);
    expect(query.body.error.code).toBe('BAD_REQUEST');
    expect(query.body.error.zodError?.fieldErrors).toMatchObject({
      conversationId: ['must be a UUID'],
      limit: [expect.stringContaining('expected number')],
    });
    // A number is a number, in range or not; a field given twice is refused, not guessed at.
    const tooMany = await call(app, 'GET', '/api/user/list', { token: user.token, query: { limit: '1000' } });
    expect(tooMany.status).toBe(400);
    expect(Object.keys(tooMany.body.error.zodError?.fieldErrors ?? {})).toEqual(['limit']);
    const twice = await call(app, 'GET', `/api/user/list?limit=1&limit=2`, { token: user.token });
    expect(twice.status).toBe(400);
    expect(twice.body.error.zodError?.fieldErrors).toEqual({ limit: ['must be given once'] });

    const missing = await call(app, 'POST', '/api/message/send', { token: user.token });
    expect(missing.status).toBe(400);
    expect(missing.body.error.code).toBe('BAD_REQUEST');
  });

  it('answers 401 without a token, or with one that is not a valid access token', async () => {
    const none = await call(app, 'GET', '/api/auth/me');
    expect(none.status).toBe(401);
    expect(none.body.error).toMatchObject({ code: 'UNAUTHORIZED', httpStatus: 401 });
    const forged = await call(app, 'POST', '/api/message/send', {
      token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl',
      body: { conversationId: '00000000-0000-4000-8000-000000000000', content: 'hi' },
    });
    expect(forged.status).toBe(401);

    // A token ended by logout stops working at once over REST too.
    const user = await register();
    expect((await call(app, 'GET', '/api/auth/me', { token: user.token })).status).toBe(200);
    expect((await call(app, 'POST', '/api/auth/logout', { token: user.token })).status).toBe(200);
    expect((await call(app, 'GET', '/api/auth/me', { token: user.token })).status).toBe(401);
  });

  it('answers 404 for a conversation or a message of which the caller is not a member, as for one that does not exist', async () => {
    const owner = await register();
    const stranger = await register();
    const group = await call<Json<Outputs['conversation']['createGroup']>>(
      app,
      'POST',
      '/api/conversation/createGroup',
      { token: owner.token, body: { name: 'private', memberIds: [] } },
    );
    const message = await call<Json<Outputs['message']['send']>>(app, 'POST', '/api/message/send', {
      token: owner.token,
      body: { conversationId: group.body.id, content: 'members only' },
    });
    expect(message.status).toBe(200);

    const attempts = [
      await call(app, 'GET', '/api/conversation/byId', {
        token: stranger.token,
        query: { id: group.body.id },
      }),
      await call(app, 'GET', '/api/message/list', {
        token: stranger.token,
        query: { conversationId: group.body.id },
      }),
      await call(app, 'GET', '/api/message/byId', { token: stranger.token, query: { id: message.body.id } }),
      await call(app, 'POST', '/api/message/send', {
        token: stranger.token,
        body: { conversationId: group.body.id, content: 'let me in' },
      }),
    ];
    const unknown = await call(app, 'GET', '/api/conversation/byId', {
      token: stranger.token,
      query: { id: '00000000-0000-4000-8000-000000000000' },
    });
    for (const attempt of [...attempts, unknown]) {
      expect(attempt.status).toBe(404);
      expect(attempt.body.error.code).toBe('NOT_FOUND');
    }
    expect(attempts[0]?.body.error.message).toBe(unknown.body.error.message);
  });

  it('counts REST calls against the same budgets: past one, 429 with Retry-After', async () => {
    const limited = await deployment.start({
      limits: { budgets: { reads: { per: 'user', max: 3, windowSeconds: 60 } } },
    });
    const user = await register(limited);
    for (let i = 0; i < 3; i++) {
      expect((await call(limited, 'GET', '/api/auth/me', { token: user.token })).status).toBe(200);
    }
    // Another procedure of the same budget, called another way, draws from the same count.
    const refused = await call(limited, 'GET', '/api/conversation/list', { token: user.token });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('TOO_MANY_REQUESTS');
    const wait = Number(refused.headers.get('retry-after'));
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(60);
    expect(refused.body.error.retryAfter).toBe(wait);
    // Another user's budget is their own.
    const other = await register(limited);
    expect((await call(limited, 'GET', '/api/auth/me', { token: other.token })).status).toBe(200);
  });

  it('refuses a call with the wrong method, a body that is not JSON or is too large, and a path that names no procedure', async () => {
    const user = await register();
    const wrongMethod = await call(app, 'GET', '/api/message/send', { token: user.token });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');

    const form = await fetch(new URL('/api/auth/login', app.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `username=${user.username}&password=${encodeURIComponent(PASSWORD)}`,
    });
    expect(form.status).toBe(415);
    const broken = await fetch(new URL('/api/auth/login', app.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"username":',
    });
    expect(broken.status).toBe(400);
    const huge = await fetch(new URL('/api/message/send', app.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` },
      body: JSON.stringify({ content: 'x'.repeat(deployment.config().limits.maxBodyBytes) }),
    });
    expect(huge.status).toBe(413);

    for (const path of ['/api/events', '/api/message', '/api/nothing/here']) {
      const answer = await call(app, 'GET', path, { token: user.token });
      expect(answer.status, path).toBe(404);
      expect(answer.body.error.code).toBe('NOT_FOUND');
    }
  });

  it('serves a valid OpenAPI 3.1 document with an operation for every query and mutation, and none for events', async () => {
    const document = await openApi();
    const result = await new Validator().validate(document as unknown as Record<string, unknown>);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(document.openapi).toMatch(/^3\.1\./);
    expect(document.components.securitySchemes.bearerAuth).toEqual({
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT',
    });
    expect(document.info.description).toContain('`events` subscription is not served here');

    const all = procedures();
    const served = all.filter((procedure) => procedure.type !== 'subscription');
    expect(all.map((procedure) => procedure.path)).toContain('events');
    expect(served.length).toBeGreaterThanOrEqual(28);
    // Exactly one operation per query and mutation, and no other.
    const operations = Object.entries(document.paths).flatMap(([url, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({ url, method, operation })),
    );
    expect(operations.map(({ operation }) => operation.operationId).sort()).toEqual(
      served.map((procedure) => procedure.path).sort(),
    );
    expect(Object.keys(document.paths).some((url) => url.includes('events'))).toBe(false);

    for (const procedure of served) {
      const found = operations.find(({ operation }) => operation.operationId === procedure.path);
      expect(found?.url, procedure.path).toBe(urlOf(procedure.path));
      if (!found) continue;
      if (procedure.type === 'mutation') expect(found.method, procedure.path).toBe('post');
      expect(
        found.operation.responses['200']?.content?.['application/json']?.schema,
        procedure.path,
      ).toBeTypeOf('object');
      // The document's security says which calls need a token; a call without one shows it.
      const answer = await call(app, found.method === 'get' ? 'GET' : 'POST', found.url);
      const secured = (found.operation.security ?? []).some((scheme) => 'bearerAuth' in scheme);
      expect(answer.status === 401, `${procedure.path} answered ${answer.status}`).toBe(secured);
    }
    // Dates are described as what they are on the wire; a query's fields as its parameters.
    const message = document.paths['/api/message/send']?.post?.responses['200']?.content?.['application/json']
      ?.schema as { properties?: Record<string, unknown> } | undefined;
    expect(message?.properties?.sentAt).toEqual({ type: 'string', format: 'date-time' });
    expect(document.paths['/api/message/list']?.get?.parameters?.map((parameter) => parameter.name)).toEqual([
      'conversationId',
      'limit',
      'cursor',
      'afterSeq',
    ]);
  });
});
