import type { AnyTRPCRouter } from '@trpc/server';
import { z } from 'zod';
import { requiresUser } from '../trpc.js';

type JsonSchema = z.core.JSONSchema.BaseSchema;

/** One query or mutation of the router as a plain-JSON HTTP route. */
export interface RestRoute {
  /** The procedure's path in the router, such as `message.send`. */
  procedure: string;
  type: 'query' | 'mutation';
  /** Queries whose input fits a query string are GET; the others, and every mutation, POST. */
  method: 'GET' | 'POST';
  /** `/api/message/send` for `message.send`. */
  url: string;
  /** Whether the procedure takes an input at all. */
  hasInput: boolean;
  /** Whether the input may be left out. */
  inputOptional: boolean;
  /** For GET: the query-string fields read as a number or a boolean; any other stays a string. */
  queryTypes: Record<string, 'number' | 'boolean'>;
  authenticated: boolean;
  input: JsonSchema | null;
  output: JsonSchema;
}

interface ProcedureDef {
  type: 'query' | 'mutation' | 'subscription';
  inputs: unknown[];
  output?: unknown;
}

/**
 * Every query and mutation of `router`, in the router's order, with the JSON Schemas of its
 * input and output taken from its own zod schemas (zod's `toJSONSchema`). Subscriptions are left
 * out: their events need a stream (the WebSocket), which a request and its response are not.
 */
export function restRoutes(router: AnyTRPCRouter): RestRoute[] {
  const procedures = router._def.procedures as Record<string, { _def: object }>;
  const routes: RestRoute[] = [];
  for (const [path, procedure] of Object.entries(procedures)) {
    // Built procedures keep their parsers at runtime; tRPC's types declare only `inputs`.
    const def = procedure._def as ProcedureDef;
    if (def.type === 'subscription') continue;
    if (def.inputs.length > 1) throw new Error(`${path}: more than one input schema`);
    const inputSchema = def.inputs[0] === undefined ? null : zodSchema(path, def.inputs[0]);
    const input = inputSchema ? jsonSchemaOf(path, inputSchema, 'input') : null;
    const fields = input ? queryFields(input) : {};
    const method = def.type === 'query' && fields ? 'GET' : 'POST';
    routes.push({
      procedure: path,
      type: def.type,
      method,
      url: `/api/${path.split('.').join('/')}`,
      hasInput: inputSchema !== null,
      inputOptional: inputSchema === null || inputSchema.safeParse(undefined).success,
      queryTypes: method === 'GET' && fields ? fields : {},
      authenticated: requiresUser(procedure),
      input,
      output: def.output === undefined ? {} : jsonSchemaOf(path, zodSchema(path, def.output), 'output'),
    });
  }
  return routes;
}

function zodSchema(path: string, parser: unknown): z.ZodType {
  if (parser instanceof z.ZodType) return parser;
  throw new Error(`${path}: its input and output must be zod schemas to be described`);
}

/**
 * A `Date` travels as an ISO 8601 string. Out, it is one already (`JSON.stringify`); in, a
 * string becomes a `Date` only through `z.coerce.date()`, so a plain `z.date()` input could
 * never be given over REST and is refused here, at start, rather than on every call.
 */
function jsonSchemaOf(path: string, schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, {
    io,
    target: 'draft-2020-12',
    unrepresentable: ({ zodSchema: inner }) => {
      if (inner._zod.def.type !== 'date') return 'throw';
      if (io === 'input' && !(inner._zod.def as { coerce?: boolean }).coerce) {
        throw new Error(`${path}: a date input must be z.coerce.date() to arrive as an ISO string`);
      }
      return { type: 'string', format: 'date-time' };
    },
  });
  // Each schema sits inside the OpenAPI 3.1 document, whose dialect is already JSON Schema 2020-12.
  delete json.$schema;
  return json;
}

/**
 * How the fields of an input are read from a query string, or null when the input does not fit
 * one: it is not an object, or one of its fields is not a string, number, boolean or enum.
 */
function queryFields(input: JsonSchema): Record<string, 'number' | 'boolean'> | null {
  if (input.type !== 'object' || !input.properties) return null;
  const types: Record<string, 'number' | 'boolean'> = {};
  for (const [name, field] of Object.entries(input.properties)) {
    const kind = typeof field === 'object' ? scalarKind(field) : null;
    if (kind === null) return null;
    if (kind !== 'string') types[name] = kind;
  }
  return types;
}

function scalarKind(schema: JsonSchema): 'string' | 'number' | 'boolean' | null {
  const members = schema.anyOf ?? schema.oneOf;
  if (members) {
    const kinds = new Set(
      members.filter((member) => typeof member === 'object' && member.type !== 'null').map(scalarKind),
    );
    const [only] = kinds;
    return kinds.size === 1 && only !== undefined ? only : null;
  }
  if (schema.enum) return schema.enum.every((value) => typeof value === 'string') ? 'string' : null;
  if (typeof schema.const === 'string') return 'string';
  const types = (Array.isArray(schema.type) ? schema.type : [schema.type]).filter((type) => type !== 'null');
  const [type] = types;
  return types.length === 1 && type !== undefined ? (SCALAR_KINDS[type] ?? null) : null;
}

const SCALAR_KINDS: Partial<Record<string, 'string' | 'number' | 'boolean'>> = {
  string: 'string',
  number: 'number',
  integer: 'number',
  boolean: 'boolean',
};

const errorResponse = (description: string) => ({
  description,
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
});

/** The OpenAPI 3.1 document of `routes`, as `/openapi.json` serves it. */
export function openApiDocument(routes: RestRoute[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const operation: Record<string, unknown> = {
      operationId: route.procedure,
      summary: `The ${route.type} \`${route.procedure}\``,
      tags: [route.procedure.split('.')[0]],
    };
    if (route.authenticated) operation.security = [{ bearerAuth: [] }];
    if (route.method === 'GET' && route.input?.properties) {
      const required = new Set(route.input.required ?? []);
      operation.parameters = Object.entries(route.input.properties).map(([name, schema]) => ({
        name,
        in: 'query',
        required: required.has(name),
        schema,
      }));
    } else if (route.input) {
      operation.requestBody = {
        required: !route.inputOptional,
        content: { 'application/json': { schema: route.input } },
      };
    }
    operation.responses = {
      '200': {
        description: 'The result, as plain JSON; dates are ISO 8601 strings',
        content: { 'application/json': { schema: route.output } },
      },
      '400': { $ref: '#/components/responses/BadRequest' },
      ...(route.authenticated ? { '401': { $ref: '#/components/responses/Unauthorized' } } : {}),
      '429': { $ref: '#/components/responses/TooManyRequests' },
      default: { $ref: '#/components/responses/Error' },
    };
    paths[route.url] = { [route.method.toLowerCase()]: operation };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Parley',
      version,
      description: [
        'Every query and mutation of the tRPC router `AppRouter`, as plain JSON over HTTP: the procedure',
        '`message.send` is `POST /api/message/send`. Queries whose input fits a query string are GET',
        '(`GET /api/message/list?conversationId=…&limit=20`); every other call is POST with a JSON body.',
        'Dates are ISO 8601 strings. Authenticate with `Authorization: Bearer <accessToken>`, the token',
        'that `/api/auth/register` and `/api/auth/login` answer with. Calls are validated, refused and rate-limited exactly',
        'as over tRPC; an error answers with the HTTP status tRPC gives its code and',
        '`{ error: { code, message, httpStatus, path, zodError, retryAfter? } }`.',
        '',
        'The `events` subscription is not served here: events stream over the WebSocket at `/ws`, or as server-sent events at `GET /trpc/events`.',
      ].join('\n'),
    },
    paths,
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message', 'httpStatus'],
              properties: {
                code: { type: 'string', description: 'The tRPC error code, such as `BAD_REQUEST`' },
                message: { type: 'string' },
                httpStatus: { type: 'integer' },
                path: { type: ['string', 'null'], description: 'The procedure called' },
                zodError: {
                  description: 'For an invalid input: the messages about each field',
                  anyOf: [
                    {
                      type: 'object',
                      properties: {
                        formErrors: { type: 'array', items: { type: 'string' } },
                        fieldErrors: {
                          type: 'object',
                          additionalProperties: { type: 'array', items: { type: 'string' } },
                        },
                      },
                    },
                    { type: 'null' },
                  ],
                },
                retryAfter: {
                  type: 'integer',
                  description: 'For `TOO_MANY_REQUESTS`: the seconds to wait (also in `Retry-After`)',
                },
              },
            },
          },
        },
      },
      responses: {
        BadRequest: errorResponse('The input is invalid (`BAD_REQUEST`); `zodError.fieldErrors` says why'),
        Unauthorized: errorResponse('No, an invalid, an expired or a revoked access token'),
        TooManyRequests: {
          ...errorResponse('Too many calls (`TOO_MANY_REQUESTS`)'),
          headers: {
            'Retry-After': {
              description: 'The seconds to wait before trying again',
              schema: { type: 'integer' },
            },
          },
        },
        Error: errorResponse(
          '`FORBIDDEN` 403, `NOT_FOUND` 404 (also for what you are not a member of), `CONFLICT` 409, `PAYLOAD_TOO_LARGE` 413, `SERVICE_UNAVAILABLE` 503, …',
        ),
      },
    },
  };
}
