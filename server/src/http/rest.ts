import type http from 'node:http';
import {
  type AnyTRPCRouter,
  callTRPCProcedure,
  getTRPCErrorShape,
  TRPCError,
  type TRPCErrorShape,
} from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { type Context, createContext } from '../context.js';
import { Invalid, RateLimited, toTRPCError } from '../errors.js';
import type { Services } from '../services.js';
import { openApiDocument, type RestRoute, restRoutes } from './openapi.js';

export interface RestApi {
  /** Serves `/openapi.json` and `/api/…`; returns false for any other path. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

type OnError = (opts: {
  error: TRPCError;
  path?: string;
  ctx?: { requestId: string; user: { id: string } | null };
}) => void;

/**
 * Every query and mutation of `router` as plain JSON over HTTP (`message.send` at
 * `POST /api/message/send`), and the OpenAPI document of them at `/openapi.json`, both built
 * once from the router's own schemas. A call runs the procedure itself, with the context an
 * HTTP call to `/trpc` gets, so it passes through the same middlewares: authentication, budgets,
 * validation, the error mapping and the call log and metrics. Only the encoding differs: plain
 * JSON instead of superjson, so a `Date` leaves as its ISO string.
 */
export function createRestApi(
  app: Services,
  options: { router: AnyTRPCRouter; maxBodyBytes: number; onError: OnError },
): RestApi {
  const { router, maxBodyBytes, onError } = options;
  const list = restRoutes(router);
  const routes = new Map(list.map((route) => [route.url, route]));
  // Serialized once: the document is the same for every request.
  const document = JSON.stringify(openApiDocument(list, app.config.version));

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const route = routes.get(url.pathname);
    let input: unknown;
    let ctx: Context | undefined;
    try {
      if (!route) throw new TRPCError({ code: 'NOT_FOUND', message: `No procedure at ${url.pathname}` });
      if (req.method !== route.method) {
        res.setHeader('allow', route.method);
        throw new TRPCError({
          code: 'METHOD_NOT_SUPPORTED',
          message: `${route.procedure} is called with ${route.method}`,
        });
      }
      input =
        route.method === 'GET' ? queryInput(route, url.searchParams) : await bodyInput(req, maxBodyBytes);
      ctx = await createContext(app, { req, info: { connectionParams: null } }, 'http');
      const data: unknown = await callTRPCProcedure({
        router,
        path: route.procedure,
        getRawInput: () => Promise.resolve(input),
        ctx,
        type: route.type,
        signal: undefined,
        batchIndex: 0,
      });
      send(res, 200, {}, `${JSON.stringify(data ?? null)}\n`);
    } catch (cause) {
      const error = toTRPCError(cause);
      onError({ error, path: route?.procedure, ctx });
      // The one error formatter of the router (`server/src/trpc.ts`): field errors and retryAfter.
      const shape = getTRPCErrorShape({
        config: router._def._config,
        error,
        type: route?.type ?? 'unknown',
        path: route?.procedure,
        input,
        ctx,
      }) as TRPCErrorShape;
      const headers: http.OutgoingHttpHeaders = {};
      if (error.cause instanceof RateLimited) headers['retry-after'] = String(error.cause.retryAfterSeconds);
      // The rest of a body too large to read is not read: the connection cannot be reused.
      if (error.code === 'PAYLOAD_TOO_LARGE') headers.connection = 'close';
      const body = { error: { message: shape.message, ...shape.data } };
      send(res, getHTTPStatusCodeFromError(error), headers, `${JSON.stringify(body)}\n`);
    }
  }

  return {
    handle(req, res) {
      const url = parseUrl(req.url ?? '/');
      // A request target no URL can be made of (`//[`) names nothing here.
      if (!url) return false;
      if (url.pathname === '/openapi.json') {
        if (req.method === 'GET' || req.method === 'HEAD') {
          send(res, 200, { 'cache-control': 'no-cache' }, document);
        } else {
          res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed');
        }
        return true;
      }
      if (url.pathname !== '/api' && !url.pathname.startsWith('/api/')) return false;
      void serve(req, res, url);
      return true;
    },
  };
}

function parseUrl(target: string): URL | null {
  try {
    return new URL(target, 'http://localhost');
  } catch {
    return null;
  }
}

/** Answers with JSON; API answers end with a newline, so that each `curl` answer is a line of its own. */
function send(res: http.ServerResponse, status: number, headers: http.OutgoingHttpHeaders, body: string) {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...headers, 'content-type': 'application/json' }).end(body);
}

/**
 * A GET call's input from its query string: each field once, as a string, or as a number or a
 * boolean where the input schema wants one and the text is one (otherwise the string goes on
 * to the schema, which says what is wrong with it).
 */
function queryInput(route: RestRoute, params: URLSearchParams): unknown {
  if (!route.hasInput) return undefined;
  const entries: [string, unknown][] = [];
  for (const name of new Set(params.keys())) {
    const values = params.getAll(name);
    if (values.length > 1) throw new Invalid('must be given once', name);
    const text = values[0] ?? '';
    entries.push([name, readQueryValue(text, route.queryTypes[name])]);
  }
  // Like `JSON.parse`, `fromEntries` makes even `__proto__` an own property, never the prototype.
  return Object.fromEntries(entries);
}

const NUMBER = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function readQueryValue(text: string, type: 'number' | 'boolean' | undefined): unknown {
  if (type === 'number' && NUMBER.test(text)) return Number(text);
  if (type === 'boolean' && (text === 'true' || text === 'false')) return text === 'true';
  return text;
}

/** A POST call's input: its JSON body, none when the body is empty, at most `maxBytes`. */
async function bodyInput(req: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  const tooLarge = () =>
    new TRPCError({ code: 'PAYLOAD_TOO_LARGE', message: `The body is larger than ${maxBytes} bytes` });
  if (Number(req.headers['content-length']) > maxBytes) throw tooLarge();
  const contentType = req.headers['content-type'];
  const isJson = contentType !== undefined && /^application\/json\s*(;|$)/i.test(contentType);
  // Refused before reading: only JSON is accepted, and a form or text/plain body, which a page
  // on another origin could send without asking, never reaches a procedure.
  if (contentType !== undefined && !isJson) {
    throw new TRPCError({ code: 'UNSUPPORTED_MEDIA_TYPE', message: 'The body must be application/json' });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof TRPCError) throw error;
    // The client went away mid-body: its fault, and there is no one left to answer.
    throw new TRPCError({ code: 'BAD_REQUEST', message: 'The body was cut off', cause: error });
  }
  if (size === 0) return undefined;
  if (!isJson) {
    throw new TRPCError({ code: 'UNSUPPORTED_MEDIA_TYPE', message: 'The body must be application/json' });
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new TRPCError({ code: 'PARSE_ERROR', message: 'The body is not valid JSON' });
  }
}
