import { z } from 'zod';
import { SUBSCRIPTION_REQUEST, type SubscriptionRequest } from '../realtime/transformer.js';
import { authedProcedure } from '../trpc.js';

export const EventsInput = z
  .object({
    /** The id of the last event received; the stream resumes right after it. */
    lastEventId: z.string().max(128).nullish(),
  })
  .optional();

export const eventsProcedure = authedProcedure
  .input(EventsInput)
  // The JSON-RPC request behind this call, which the WebSocket decoder set on the raw input.
  .use(async ({ getRawInput, next }) => {
    const raw = (await getRawInput()) as { [SUBSCRIPTION_REQUEST]?: SubscriptionRequest } | undefined;
    return next({ ctx: { subscriptionRequest: raw?.[SUBSCRIPTION_REQUEST] ?? null } });
  })
  .subscription(({ ctx, input, signal }) =>
    ctx.app.realtime.stream({
      user: ctx.user,
      lastEventId: input?.lastEventId ?? null,
      signal,
      socket: ctx.socket,
      response: ctx.response,
      connection: ctx.connection,
      request: ctx.subscriptionRequest,
    }),
  );
