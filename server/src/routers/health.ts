import { z } from 'zod';
import { publicProcedure } from '../trpc.js';

export const Health = z.object({
  status: z.enum(['ok', 'degraded']),
  db: z.boolean(),
  redis: z.boolean(),
  worker: z.object({ lag: z.number().nullable() }),
  connections: z.number(),
  version: z.string(),
});

export const healthProcedure = publicProcedure.output(Health).query(({ ctx }) => ctx.app.health.report());
