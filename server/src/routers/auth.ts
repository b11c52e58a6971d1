import { Logout, Refresh, Login, Session } from '../auth/schemas.js';
import { Tokens } from '../credentials/schemas.js';
import { Me, Register } from '../users/schemas.js';
import { z } from 'zod';
import { authedProcedure, publicProcedure, router } from '../trpc.js';

export const authRouter = router({
  register: publicProcedure
    .input(Register)
    .output(Session)
    .mutation(({ ctx, input }) => ctx.app.auth.register(input)),
  login: publicProcedure
    .input(Login)
    .output(Session)
    .mutation(({ ctx, input }) => ctx.app.auth.login(input, ctx.ip)),
  refresh: publicProcedure
    .input(Refresh)
    .output(z.object({ tokens: Tokens }))
    .mutation(({ ctx, input }) => ctx.app.auth.refresh(input.refreshToken)),
  logout: authedProcedure
    .input(Logout.optional())
    .output(z.object({ ok: z.literal(true) }))
    .mutation(({ ctx, input }) => ctx.app.auth.logout(ctx.user, input ?? {})),
  me: authedProcedure.output(Me).query(({ ctx }) => ctx.app.users.me(ctx.user.id)),
});
