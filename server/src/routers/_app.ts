import { router } from '../trpc.js';
import { authRouter } from './auth.js';
import { healthProcedure } from './health.js';
import { userRouter } from './user.js';

export const appRouter = router({
  health: healthProcedure,
  auth: authRouter,
  user: userRouter,
});

export type AppRouter = typeof appRouter;
