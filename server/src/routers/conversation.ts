import { z } from 'zod';
import { Conversation, Member, page } from '../contracts/schemas.js';
import {
  AddMembers,
  ConversationId,
  CreateGroup,
  ListConversations,
  ListMembers,
  MarkRead,
  MemberRef,
  OpenDirect,
  Rename,
  SetRole,
} from '../conversations/schemas.js';
import { authedProcedure, router } from '../trpc.js';

const Ok = z.object({ ok: z.literal(true) });

export const conversationRouter = router({
  openDirect: authedProcedure
    .input(OpenDirect)
    .output(Conversation)
    .mutation(({ ctx, input }) => ctx.app.conversations.openDirect(ctx.user, input.userId)),
  createGroup: authedProcedure
    .input(CreateGroup)
    .output(Conversation)
    .mutation(({ ctx, input }) => ctx.app.conversations.createGroup(ctx.user, input)),
  list: authedProcedure
    .input(ListConversations.optional())
    .output(page(Conversation))
    .query(({ ctx, input }) => ctx.app.conversations.list(ctx.user.id, input ?? ListConversations.parse({}))),
  byId: authedProcedure
    .input(ConversationId)
    .output(Conversation)
    .query(({ ctx, input }) => ctx.app.conversations.byId(ctx.user.id, input.id)),
  members: authedProcedure
    .input(ListMembers)
    .output(page(Member))
    .query(({ ctx, input }) => ctx.app.conversations.members(ctx.user.id, input)),
  rename: authedProcedure
    .input(Rename)
    .output(Conversation)
    .mutation(({ ctx, input }) => ctx.app.conversations.rename(ctx.user, input.id, input.name)),
  addMembers: authedProcedure
    .input(AddMembers)
    .output(Conversation)
    .mutation(({ ctx, input }) => ctx.app.conversations.addMembers(ctx.user, input.id, input.userIds)),
  removeMember: authedProcedure
    .input(MemberRef)
    .output(Conversation)
    .mutation(({ ctx, input }) => ctx.app.conversations.removeMember(ctx.user, input.id, input.userId)),
  setRole: authedProcedure
    .input(SetRole)
    .output(Conversation)
    .mutation(({ ctx, input }) =>
      ctx.app.conversations.setRole(ctx.user, input.id, input.userId, input.role),
    ),
  leave: authedProcedure
    .input(ConversationId)
    .output(Ok)
    .mutation(({ ctx, input }) => ctx.app.conversations.leave(ctx.user, input.id)),
  delete: authedProcedure
    .input(ConversationId)
    .output(Ok)
    .mutation(({ ctx, input }) => ctx.app.conversations.delete(ctx.user, input.id)),
  markRead: authedProcedure
    .input(MarkRead)
    .output(z.object({ lastReadSeq: z.number() }))
    .mutation(({ ctx, input }) => ctx.app.conversations.markRead(ctx.user.id, input.id, input.seq)),
  typing: authedProcedure
    .input(ConversationId)
    .output(Ok)
    .mutation(({ ctx, input }) => ctx.app.conversations.typing(ctx.user.id, input.id)),
});
