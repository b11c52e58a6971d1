import { z } from 'zod';
import { Id, Message, page } from '../contracts/schemas.js';
import { EditMessage, ListMessages, SendMessage } from '../messages/schemas.js';
import { authedProcedure, router } from '../trpc.js';

export const messageRouter = router({
  send: authedProcedure
    .meta({ checksRevocation: true })
    .input(SendMessage)
    .output(Message)
    .mutation(({ ctx, input }) => ctx.app.messages.send(ctx.user, input)),
  list: authedProcedure
    .input(ListMessages)
    .output(page(Message))
    .query(({ ctx, input }) => ctx.app.messages.list(ctx.user.id, input)),
  byId: authedProcedure
    .input(z.object({ id: Id }))
    .output(Message)
    .query(({ ctx, input }) => ctx.app.messages.byId(ctx.user.id, input.id)),
  edit: authedProcedure
    .input(EditMessage)
    .output(Message)
    .mutation(({ ctx, input }) => ctx.app.messages.edit(ctx.user.id, input)),
  delete: authedProcedure
    .input(z.object({ id: Id }))
    .output(z.object({ ok: z.literal(true) }))
    .mutation(({ ctx, input }) => ctx.app.messages.delete(ctx.user.id, input.id)),
});
