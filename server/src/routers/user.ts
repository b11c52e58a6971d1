import { z } from 'zod';
import { Id, page } from '../contracts/schemas.js';
import { DeleteUser, ListUsers, Me, PublicUser, UpdateUser } from '../users/schemas.js';
import { authedProcedure, router } from '../trpc.js';

export const userRouter = router({
  list: authedProcedure
    .input(ListUsers.optional())
    .output(page(PublicUser))
    .query(({ ctx, input }) => ctx.app.users.list(ctx.user.id, input ?? ListUsers.parse({}))),
  byId: authedProcedure
    .input(z.object({ id: Id }))
    .output(PublicUser)
    .query(({ ctx, input }) => ctx.app.users.byId(ctx.user.id, input.id)),
  update: authedProcedure
    .input(UpdateUser)
    .output(Me)
    .mutation(({ ctx, input }) => ctx.app.users.update(ctx.user, input)),
  delete: authedProcedure
    .input(DeleteUser)
    .output(z.object({ ok: z.literal(true) }))
    .mutation(({ ctx, input }) => ctx.app.users.delete(ctx.user, input.password)),
  touch: authedProcedure
    .output(z.object({ lastSeenAt: z.date() }))
    .mutation(({ ctx }) => ctx.app.users.touch(ctx.user.id)),
});
