import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../server/src/app.js';
import { appRouter } from '../server/src/routers/_app.js';
import WebSocket from 'ws';
import { signUp, wsUrl } from './support/client.js';
import { TestDeployment, engineLabel } from './support/env.js';

/**
 * Property-based fuzzing of every procedure's input over real HTTP: whatever a client sends,
 * the answer is never an INTERNAL_SERVER_ERROR, and an input the procedure's own schema refuses
 * is a BAD_REQUEST (or a 4xx from the transport when it is too big to be read at all).
 * Procedures are enumerated from the router, so new ones are fuzzed without touching this file.
 */

let deployment: TestDeployment;
let app: App;

beforeAll(async () => {
  deployment = await TestDeployment.create();
  // Limits that a burst of fuzzed subscriptions would otherwise reach first.
  app = await deployment.start({
    limits: { maxSubscriptionsPerConnection: 1000, maxConnectionsPerUser: 1000 },
  });
});
afterAll(async () => {
  await deployment?.cleanup();
});

interface ZodLike {
  safeParse(value: unknown): { success: boolean };
}
interface ProcedureInfo {
  path: string;
  type: 'query' | 'mutation' | 'subscription';
  inputs: ZodLike[];
}

function procedures(): ProcedureInfo[] {
  return Object.entries(appRouter._def.procedures as Record<string, unknown>).map(([path, procedure]) => {
    const def = (procedure as { _def: { type: ProcedureInfo['type']; inputs: ZodLike[] } })._def;
    return { path, type: def.type, inputs: def.inputs };
  });
}

/** The property names a zod schema knows about, at any depth, so fuzzing reaches the fields. */
function knownKeys(schema: unknown, seen = new Set<unknown>()): string[] {
  const def = (schema as { _zod?: { def?: Record<string, unknown> } } | null)?._zod?.def;
  if (!def || seen.has(schema)) return [];
  seen.add(schema);
  const inner = (value: unknown) => knownKeys(value, seen);
  switch (def.type) {
    case 'object': {
      const shape = def.shape as Record<string, unknown>;
      return [...Object.keys(shape), ...Object.values(shape).flatMap(inner)];
    }
    case 'union':
      return (def.options as unknown[]).flatMap(inner);
    case 'pipe':
      return [...inner(def.in), ...inner(def.out)];
    case 'array':
      return inner(def.element);
    default:
      return 'innerType' in def ? inner(def.innerType) : [];
  }
}

/** Characters that have broken real systems: NUL, lone surrogates, bidi and zero-width marks. */
const hostileChar = fc.constantFrom(
  '\u0000',
  '\u0000',
  '\u0000',
  '\ud800',
  '\udfff',
  '\u202e',
  '\u200b',
  '\ufeff',
  '\u0301',
  '\u0007',
  '\n',
  '%',
  '_',
  '\\',
  "'",
);

const edgeString = fc.oneof(
  // Ordinary text with something nasty inside: gets past length checks into services and SQL.
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.string({ maxLength: 12 }), hostileChar, fc.string({ maxLength: 12 }))
      .map(([before, char, after]) => `${before}${char}${after}`),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '💩'.repeat(50),
      'e\u0301',
      "'; drop table users; --",
      '${process.env}',
      '<script>alert(1)</script>',
      '../../etc/passwd',
      'a'.repeat(129),
      '00000000-0000-0000-0000-000000000000',
    ),
  },
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.uuid(),
  fc.emailAddress(),
);

const plausible = fc.oneof(
  { weight: 5, arbitrary: edgeString },
  fc.integer(),
  fc.double(),
  fc.constantFrom(-1, 0, 2 ** 31, 2 ** 53 + 1, -(2 ** 63), 1e308),
  fc.boolean(),
  fc.constant(null),
  fc.array(edgeString, { maxLength: 4 }),
  fc.array(fc.uuid(), { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 5 }), edgeString, { maxKeys: 3 }),
);

const hugeString = fc
  .tuple(fc.constantFrom('a', 'é', '💩', '\u0000', ' '), fc.integer({ min: 5_000, max: 60_000 }))
  .map(([unit, length]) => unit.repeat(length));

/** Nesting a few thousand levels deep: parsers and validators must not recurse without bound. */
const deep = fc
  .tuple(fc.integer({ min: 100, max: 3_000 }), fc.boolean(), fc.constantFrom('id', 'email', 'a'))
  .map(([depth, asArray, key]) => {
    let value: unknown = 'bottom';
    for (let i = 0; i < depth; i++) value = asArray ? [value] : { [key]: value };
    return value;
  });

/** Prototype-pollution attempts, built from JSON text so `__proto__` is an own property. */
function protoPayloads(keys: string[]) {
  return fc
    .tuple(
      fc.constantFrom('__proto__', 'constructor', 'prototype'),
      fc.constantFrom(...keys, 'x'),
      edgeString,
    )
    .map(
      ([evil, key, value]) =>
        JSON.parse(
          `{${JSON.stringify(key)}:${JSON.stringify(value)},"${evil}":{"polluted":true,"isAdmin":true,"prototype":{"polluted":true}}}`,
        ) as unknown,
    );
}

/**
 * Inputs shaped like the schema (right keys, mostly right types) but carrying hostile values, so
 * fuzzing gets past the first type check and into the services and the database.
 */
function shapedLike(schema: unknown, depth = 0): fc.Arbitrary<unknown> {
  const def = (schema as { _zod?: { def?: Record<string, unknown> } } | null)?._zod?.def;
  if (!def || depth > 6) return plausible;
  const inner = (value: unknown) => shapedLike(value, depth + 1);
  switch (def.type) {
    case 'object': {
      const shape = def.shape as Record<string, unknown>;
      const fields = Object.fromEntries(Object.entries(shape).map(([key, value]) => [key, inner(value)]));
      return fc.oneof(fc.record(fields), fc.record(fields, { requiredKeys: [] }));
    }
    case 'union':
      return fc.oneof(...(def.options as unknown[]).map(inner));
    case 'optional':
    case 'nullable':
    case 'default':
    case 'readonly':
    case 'catch':
      return fc.oneof(inner(def.innerType), fc.constantFrom(undefined, null));
    case 'pipe':
      return inner(def.in);
    case 'array':
      return fc.array(inner(def.element), { maxLength: 5 });
    case 'string':
      switch (def.format) {
        case 'uuid':
          return fc.oneof(fc.uuid(), edgeString);
        case 'email':
          return fc.oneof(
            fc.emailAddress(),
            edgeString.map((local) => `${local}@example.test`),
            edgeString,
          );
        default:
          return fc.oneof({ weight: 3, arbitrary: edgeString }, plausible);
      }
    case 'number':
      return fc.oneof(
        fc.integer({ min: -2, max: 200 }),
        fc.constantFrom(0, 1, 100, 101, 2 ** 31, 2 ** 53 + 1, -1, 0.5, 1e308),
        plausible,
      );
    case 'boolean':
      return fc.oneof(fc.boolean(), plausible);
    case 'enum':
      return fc.oneof(fc.constantFrom(...Object.values(def.entries as Record<string, unknown>)), plausible);
    case 'literal':
      return fc.oneof(fc.constantFrom(...(def.values as unknown[])), plausible);
    default:
      return plausible;
  }
}

function inputFor(procedure: ProcedureInfo) {
  const keys = [...new Set(procedure.inputs.flatMap((schema) => knownKeys(schema)))];
  const shaped = fc.dictionary(fc.constantFrom(...keys, 'x', '__proto__', 'constructor'), plausible, {
    maxKeys: keys.length + 2,
  });
  const [schema] = procedure.inputs;
  return fc.oneof(
    { weight: schema ? 6 : 0, arbitrary: shapedLike(schema) },
    { weight: 3, arbitrary: shaped },
    { weight: 1, arbitrary: fc.anything({ maxDepth: 3 }) },
    { weight: 1, arbitrary: plausible },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: hugeString },
    { weight: 1, arbitrary: protoPayloads(keys) },
  );
}

interface Outcome {
  status: number;
  /** The tRPC error code, or null for a success or a non-tRPC response. */
  code: string | null;
  body: string;
}

async function callRaw(procedure: ProcedureInfo, bodyText: string | null, token: string): Promise<Outcome> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let response: Response;
  if (procedure.type === 'query') {
    const query = bodyText === null ? '' : `?input=${encodeURIComponent(bodyText)}`;
    response = await fetch(`${app.url}/trpc/${procedure.path}${query}`, { headers });
  } else {
    response = await fetch(`${app.url}/trpc/${procedure.path}`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: bodyText ?? '',
    });
  }
  const body = await response.text();
  let code: string | null = null;
  try {
    const parsed = JSON.parse(body) as { error?: { json?: { data?: { code?: string } } } };
    code = parsed.error?.json?.data?.code ?? null;
  } catch {
    code = null;
  }
  return { status: response.status, code, body };
}

/** Calls that would end the fuzzing user's own session when given a valid input. */
const SESSION_ENDING = new Set(['auth.logout', 'user.delete']);
/** Transport-level refusals of a request too big to be read: body, URL, headers. */
const TRANSPORT_REFUSALS = new Set([413, 414, 431]);

const fuzzed = procedures().filter((p) => p.type !== 'subscription');

describe(`fuzzing every procedure's input over HTTP (${engineLabel})`, () => {
  it('enumerates the router, so every new procedure is fuzzed', () => {
    const paths = fuzzed.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining(['auth.register', 'auth.login', 'user.byId', 'user.update']),
    );
  });

  it.each(fuzzed.map((p) => [p.path, p] as const))(
    '%s: never INTERNAL_SERVER_ERROR; an invalid input is BAD_REQUEST',
    async (_path, procedure) => {
      // A fresh user per procedure: validation is reached, and nothing one procedure does to its
      // session affects another's run.
      const user = await signUp(app.url);
      const token = user.tokens.accessToken;
      await user.close();
      let invalidSeen = 0;
      await fc.assert(
        fc.asyncProperty(inputFor(procedure), async (input) => {
          const bodyText = input === undefined ? null : JSON.stringify({ json: input });
          // What the server will see: the value after a JSON round trip.
          const seen = bodyText === null ? undefined : (JSON.parse(bodyText) as { json?: unknown }).json;
          const valid = procedure.inputs.every((schema) => schema.safeParse(seen).success);
          fc.pre(!(valid && SESSION_ENDING.has(procedure.path)));
          const outcome = await callRaw(procedure, bodyText, token);
          const detail = `${procedure.path} ${outcome.status} ${outcome.body.slice(0, 300)}`;
          expect(outcome.status, detail).toBeLessThan(500);
          expect(outcome.code, detail).not.toBe('INTERNAL_SERVER_ERROR');
          if (!valid) {
            invalidSeen++;
            if (TRANSPORT_REFUSALS.has(outcome.status)) return;
            expect(outcome.status, detail).toBe(400);
            expect(outcome.code, detail).toBe('BAD_REQUEST');
          }
        }),
        { numRuns: 50, endOnFailure: true },
      );
      // Procedures without input accept anything; every other one must have been fed invalid input.
      if (procedure.inputs.length > 0) expect(invalidSeen).toBeGreaterThan(0);
      expect(Object.prototype).not.toHaveProperty('polluted');
      expect(Object.prototype).not.toHaveProperty('isAdmin');
    },
  );

  it.each(
    procedures()
      .filter((p) => p.type === 'subscription')
      .map((p) => [p.path, p] as const),
  )(
    '%s (over the WebSocket): never INTERNAL_SERVER_ERROR; an invalid input is BAD_REQUEST',
    async (_path, procedure) => {
      const user = await signUp(app.url);
      const socket = new WebSocket(`${wsUrl(app.url)}?token=${user.tokens.accessToken}`);
      await new Promise((resolve, reject) => {
        socket.once('open', resolve);
        socket.once('error', reject);
      });
      const answers = new Map<
        number,
        { error?: { json?: { data?: { code?: string } } }; result?: unknown }
      >();
      let changed: () => void = () => undefined;
      socket.on('message', (data: Buffer) => {
        const message = JSON.parse(data.toString('utf8')) as {
          id: number;
          error?: { json?: { data?: { code?: string } } };
        };
        if (!answers.has(message.id)) answers.set(message.id, message);
        changed();
      });
      const answerTo = (id: number) =>
        new Promise<{ error?: { json?: { data?: { code?: string } } } }>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no answer to ${id}`)), 5000);
          const check = () => {
            const answer = answers.get(id);
            if (!answer) return;
            clearTimeout(timer);
            resolve(answer);
          };
          changed = check;
          check();
        });
      let id = 0;
      let invalidSeen = 0;
      try {
        await fc.assert(
          fc.asyncProperty(inputFor(procedure), async (input) => {
            const text = JSON.stringify({ json: input });
            const seen = (JSON.parse(text) as { json?: unknown }).json;
            const valid = procedure.inputs.every((schema) => schema.safeParse(seen).success);
            // A frame over the payload limit closes the connection (1009); security.test.ts covers it.
            fc.pre(Buffer.byteLength(text) < app.services.config.limits.maxWsPayloadBytes - 1024);
            id += 1;
            socket.send(
              JSON.stringify({
                id,
                method: 'subscription',
                params: { path: procedure.path, input: JSON.parse(text) as unknown },
              }),
            );
            const answer = await answerTo(id);
            const detail = `${procedure.path} ${text.slice(0, 200)} → ${JSON.stringify(answer).slice(0, 300)}`;
            expect(answer.error?.json?.data?.code, detail).not.toBe('INTERNAL_SERVER_ERROR');
            if (!valid) {
              invalidSeen++;
              expect(answer.error?.json?.data?.code, detail).toBe('BAD_REQUEST');
            }
            socket.send(JSON.stringify({ id, method: 'subscription.stop' }));
          }),
          { numRuns: 40, endOnFailure: true },
        );
      } finally {
        socket.close();
        await user.close();
      }
      expect(invalidSeen).toBeGreaterThan(0);
    },
  );

  it('refuses malformed envelopes and hostile superjson metadata with a 4xx, polluting nothing', async () => {
    const user = await signUp(app.url);
    const headers = {
      authorization: `Bearer ${user.tokens.accessToken}`,
      'content-type': 'application/json',
    };
    const bodies = [
      '',
      'not json',
      '{',
      '[]',
      'null',
      '"string"',
      '{"json":',
      JSON.stringify({
        json: { displayName: 'x' },
        meta: { values: { '__proto__.polluted': ['undefined'] } },
      }),
      JSON.stringify({ json: { displayName: 'x' }, meta: { values: { displayName: ['class', 'Foo'] } } }),
      JSON.stringify({ json: { displayName: 'x' }, meta: { values: ['Date'] } }),
      JSON.stringify({
        json: { displayName: 'x' },
        meta: { referentialEqualities: { displayName: ['__proto__'] } },
      }),
      JSON.stringify({
        json: { displayName: 'x' },
        meta: { referentialEqualities: { displayName: ['constructor.prototype.polluted'] } },
      }),
      JSON.stringify({ json: 1, meta: 'nonsense' }),
    ];
    for (const body of bodies) {
      const response = await fetch(`${app.url}/trpc/user.update`, { method: 'POST', headers, body });
      const text = await response.text();
      expect(response.status, `${body} → ${response.status} ${text.slice(0, 200)}`).toBeGreaterThanOrEqual(
        200,
      );
      expect(response.status, `${body} → ${text.slice(0, 200)}`).toBeLessThan(500);
      expect(text).not.toContain('INTERNAL_SERVER_ERROR');
    }
    expect(Object.prototype).not.toHaveProperty('polluted');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // Still the same user, with no strange display name.
    await expect(user.api.auth.me.query()).resolves.toMatchObject({ id: user.user.id });
    await user.close();
  });

  it('refuses values the database cannot store or compare (NUL bytes, forged cursors) with BAD_REQUEST', async () => {
    const user = await signUp(app.url);
    const cursor = (position: object) => Buffer.from(JSON.stringify(position)).toString('base64url');
    // Every string must be storable text, even one that is only hashed (a password): a NUL or
    // a lone surrogate anywhere is refused as the caller's mistake.
    const cases: [string, unknown, string | null][] = [
      ['auth.login', { username: 'a\u0000b', password: 'whatever1' }, 'BAD_REQUEST'],
      ['auth.login', { email: 'a@example.test', password: 'pass\u0000word' }, 'BAD_REQUEST'],
      ['user.list', { query: 'a\u0000' }, 'BAD_REQUEST'],
      [
        'user.list',
        { cursor: cursor({ username: 'a\u0000', id: '00000000-0000-4000-8000-000000000000' }) },
        'BAD_REQUEST',
      ],
      ['user.list', { cursor: cursor({ username: 'a', id: 'not-a-uuid' }) }, 'BAD_REQUEST'],
      ['user.list', { cursor: cursor({ username: 'a', id: 42 }) }, 'BAD_REQUEST'],
      ['user.update', { displayName: 'x\ud800y' }, 'BAD_REQUEST'],
    ];
    for (const [path, input, expected] of cases) {
      const procedure = fuzzed.find((p) => p.path === path);
      if (!procedure) throw new Error(`no procedure ${path}`);
      const outcome = await callRaw(procedure, JSON.stringify({ json: input }), user.tokens.accessToken);
      const detail = `${path} ${JSON.stringify(input)} → ${outcome.status} ${outcome.body.slice(0, 200)}`;
      expect(outcome.status, detail).toBeLessThan(500);
      expect(outcome.code, detail).toBe(expected);
    }
    await user.close();
  });

  it('logged no procedure failure while being fuzzed', () => {
    const failures = deployment.logLines.filter((line) => line.includes('procedure failed'));
    expect(failures).toEqual([]);
  });
});
