import { initTRPC, TRPCError } from '@trpc/server';
import { z } from 'zod';
import { BrokerUnavailableError } from './broker/types.js';
import type { Context } from './context.js';
import { DomainError, RateLimited, toTRPCError } from './errors.js';
import { spendBudget } from './limits/spend.js';
import { transformer } from './realtime/transformer.js';
import { NOT_STORABLE, unstorableStringIn } from './text.js';

export interface ProcedureMeta {
  /**
   * The procedure refuses a revoked session itself, in the same atomic step as its write (the
   * message log's `session` guard), so `requireUser` leaves that check to it.
   */
  checksRevocation?: boolean;
}

const builder = initTRPC.context<Context>().meta<ProcedureMeta>();
const t = builder.create({
  transformer,
  errorFormatter({ shape, error }) {
    const cause = error.cause;
    const zodError = cause instanceof z.ZodError ? z.flattenError(cause) : null;
    const field = cause instanceof DomainError && cause.field ? cause.field : null;
    // No stack trace in any mode: it names files and lines of the server; the log has it.
    const { stack: _stack, ...data } = shape.data;
    return {
      ...shape,
      // A readable summary ("username: must be at least 3 characters") instead of raw JSON.
      message: cause instanceof z.ZodError ? z.prettifyError(cause) : shape.message,
      data: {
        ...data,
        zodError: zodError ?? (field ? { formErrors: [], fieldErrors: { [field]: [error.message] } } : null),
        // TOO_MANY_REQUESTS: the seconds to wait before trying again (`Retry-After` over HTTP).
        ...(cause instanceof RateLimited ? { retryAfter: cause.retryAfterSeconds } : {}),
      },
    };
  },
});

/**
 * Around every call, in one middleware (tRPC copies the call's options at each level): maps
 * the domain error family to tRPC codes in one place (anything else stays a 500), then counts
 * and times the call per procedure and outcome and writes the request log line (request id,
 * user id, never the input: it may hold passwords or tokens).
 */
const instrument = t.middleware(async ({ ctx, path, type, next }) => {
  const started = performance.now();
  const result = await next();
  const failure =
    !result.ok && result.error.code === 'INTERNAL_SERVER_ERROR' && result.error.cause
      ? toTRPCError(result.error.cause)
      : null;
  const seconds = (performance.now() - started) / 1000;
  const code = result.ok ? 'OK' : (failure ?? result.error).code;
  const labels = { procedure: path, type, code };
  ctx.app.metrics.trpcCalls.inc(labels);
  ctx.app.metrics.trpcDuration.observe(labels, seconds);
  // Checked first: at a quieter level the line's fields would be built for nothing, per call.
  if (ctx.app.log.isLevelEnabled('info')) {
    ctx.app.log.info(
      {
        requestId: ctx.requestId,
        connectionId: ctx.connectionId ?? undefined,
        userId: ctx.user?.id,
        procedure: path,
        type,
        code,
        ms: Math.round(seconds * 10_000) / 10,
      },
      'call',
    );
  }
  if (failure) throw failure;
  // A subscription's stream is returned as it is: it fails after this middleware returned, and
  // maps the error it ends with itself (`EventStream`).
  return result;
});

/**
 * A safety net under every schema: a string PostgreSQL cannot store (a lone surrogate, NUL)
 * anywhere in the raw input is refused before any procedure sees it, as the schemas' own text
 * rules (`text.ts`) would, so a schema that forgets them still lets nothing through that the
 * persistence worker would later fail to write.
 */
const storableInput = t.middleware(async ({ getRawInput, next }) => {
  // An input that cannot even be read fails where the procedure reads it, as it did before.
  const found = unstorableStringIn(await getRawInput().catch(() => undefined));
  if (found) {
    // Named up to a key that must never become a property of the error's `fieldErrors`.
    const unsafe = found.findIndex(
      (key) => key === '__proto__' || key === 'constructor' || key === 'prototype',
    );
    const path = unsafe < 0 ? found : found.slice(0, unsafe);
    throw new TRPCError({
      code: 'BAD_REQUEST',
      message: NOT_STORABLE,
      // The Error flavour of ZodError: tRPC keeps only an Error as the cause.
      cause: new z.ZodRealError([{ code: 'custom', path, message: NOT_STORABLE, input: undefined }]),
    });
  }
  return next();
});

const requireUser = t.middleware(async ({ ctx, meta, next }) => {
  const user = ctx.user;
  if (!user) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'Not authenticated' });
  // A WebSocket context lives as long as its connection; its token may expire meanwhile.
  if (user.expiresAt <= Date.now()) {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'Access token expired' });
  }
  // ...and its session may be revoked meanwhile (logout, password change, refresh-token reuse).
  // HTTP calls were checked when their context was built.
  if (ctx.connectionId !== null && !meta?.checksRevocation && (await ctx.app.sessions.isRevoked(user))) {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'Session ended' });
  }
  // tRPC merges this into the context; spreading it here would copy it once more per call.
  return next({ ctx: { user } });
});

/**
 * Every call spends from its procedure's budget (`server/src/limits/budgets.ts`), counted per
 * user or per address in one atomic broker step that all instances share; after `requireUser`,
 * so that a per-user budget knows its user. Before the input is parsed: a refused input costs
 * a call too.
 */
const spend = t.middleware(async ({ ctx, path, next }) => {
  try {
    await spendBudget(ctx.app.broker.limits, ctx.app.config.limits.budgets, path, {
      userId: ctx.user?.id ?? null,
      ip: ctx.ip,
    });
  } catch (error) {
    // While the broker is unreachable nothing can be counted, and the call goes ahead as it
    // would have: what needs the broker fails by itself, and `health` can still say it is down.
    // (Password guesses are not let through: their throttle refuses without the broker.)
    if (!(error instanceof BrokerUnavailableError)) throw error;
  }
  return next();
});

const instrumented = t.procedure.use(instrument);

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;
export const publicProcedure = instrumented.use(spend).use(storableInput);
export const authedProcedure = instrumented.use(requireUser).use(spend).use(storableInput);

/**
 * Whether a procedure refuses calls without a signed-in user: whether `requireUser` is among its
 * middlewares. The REST adapter's OpenAPI document marks those with the bearer scheme.
 */
export function requiresUser(procedure: { _def: object }): boolean {
  // Built procedures keep their middleware functions at runtime; tRPC's types do not declare them.
  const middlewares = (procedure._def as { middlewares?: unknown[] }).middlewares ?? [];
  return requireUser._middlewares.some((fn) => middlewares.includes(fn));
}
