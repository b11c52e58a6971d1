import { router } from '../trpc.js';
import { authRouter } from './auth.js';
import { conversationRouter } from './conversation.js';
import { eventsProcedure } from './events.js';
import { healthProcedure } from './health.js';
import { messageRouter } from './message.js';
import { userRouter } from './user.js';

export const appRouter = router({
  health: healthProcedure,
  auth: authRouter,
  user: userRouter,
  conversation: conversationRouter,
  message: messageRouter,
  events: eventsProcedure,
});

export type AppRouter = typeof appRouter;
