import { z } from 'zod';
import { authedProcedure } from '../trpc.js';

export const EventsInput = z
  .object({
    /** The id of the last event received; the stream resumes right after it. */
    lastEventId: z.string().max(1024).nullish(),
  })
  .optional();

export const eventsProcedure = authedProcedure.input(EventsInput).subscription(({ ctx, input, signal }) =>
  ctx.app.realtime.stream({
    user: ctx.user,
    lastEventId: input?.lastEventId ?? null,
    signal,
    response: ctx.response,
    connection: ctx.connection,
  }),
);
