import type { QueryClient } from '@tanstack/react-query';
import type { TRPCOptionsProxy } from '@trpc/tanstack-react-query';
import type { ParleyClient } from '../client.js';
import type { AppRouter } from '../router.js';
import type { Conversation, Message, ParleyEvent, ParleyEventOf, RouterOutputs } from '../types.js';
import type { TypingStore } from './typing.js';

export type ParleyQueryProxy = TRPCOptionsProxy<AppRouter>;

type Page<T> = { items: T[]; nextCursor: string | null };
type Pages<T> = { pages: Page<T>[]; pageParams: unknown[] };
type MessagePages = Pages<Message>;
type ConversationPages = Pages<Conversation>;

/** A message as the bindings show it: a server message, or one of ours still on its way. */
export type ChatMessage = Message & {
  /** `sending` until the server answers; `failed` when it could not be sent. */
  delivery?: 'sending' | 'failed';
};

export const PENDING_PREFIX = 'pending:';
export const isPending = (message: Message): boolean => message.id.startsWith(PENDING_PREFIX);

/** How many messages a page of history holds. */
export const MESSAGE_PAGE = 30;
/** How many conversations a page of the list holds. */
export const CONVERSATION_PAGE = 50;

/** When a conversation last saw activity, for "newest activity first". */
export function activityOf(conversation: Conversation): number {
  return Math.max(conversation.lastMessage?.sentAt.getTime() ?? 0, conversation.createdAt.getTime());
}

/**
 * Puts a server message into a conversation's history: in place of the same message, or of
 * our optimistic entry with the same `clientMessageId`, or else in seq order among the newest.
 */
export function upsertMessage(data: MessagePages, message: Message): MessagePages {
  let replaced = false;
  const pages = data.pages.map((page) => {
    const items: Message[] = [];
    for (const item of page.items) {
      if (item.id === message.id) {
        if (!replaced) items.push(newer(item, message));
        replaced = true;
      } else if (
        isPending(item) &&
        message.clientMessageId !== null &&
        item.clientMessageId === message.clientMessageId &&
        item.senderId === message.senderId
      ) {
        // Our optimistic entry: the server's message takes its place below, in seq order.
      } else {
        items.push(item);
      }
    }
    return { ...page, items };
  });
  if (!replaced) {
    const first = pages[0] ?? { items: [], nextCursor: null };
    const items = [...first.items];
    // Newest first, with our pending entries ahead of every server message.
    let at = items.findIndex((item) => !isPending(item) && item.seq < message.seq);
    if (at === -1) at = items.length;
    items.splice(at, 0, message);
    pages[0] = { ...first, items };
  }
  return { ...data, pages };
}

/** Of two versions of a message, the one that is further along: a deletion is never undone. */
function newer(current: Message, incoming: Message): Message {
  if (current.deletedAt && !incoming.deletedAt) return current;
  return incoming;
}

export function mapMessages(data: MessagePages, map: (message: Message) => Message | null): MessagePages {
  return {
    ...data,
    pages: data.pages.map((page) => ({
      ...page,
      items: page.items.flatMap((item) => {
        const next = map(item);
        return next ? [next] : [];
      }),
    })),
  };
}

export function addPending(data: MessagePages, message: ChatMessage): MessagePages {
  const [first, ...rest] = data.pages;
  return {
    ...data,
    pages: [{ items: [message, ...(first?.items ?? [])], nextCursor: first?.nextCursor ?? null }, ...rest],
  };
}

function mapConversations(
  data: ConversationPages,
  map: (conversation: Conversation) => Conversation | null,
): ConversationPages {
  return {
    ...data,
    pages: data.pages.map((page) => ({
      ...page,
      items: page.items.flatMap((item) => {
        const next = map(item);
        return next ? [next] : [];
      }),
    })),
  };
}

function hasConversation(data: ConversationPages, id: string): boolean {
  return data.pages.some((page) => page.items.some((item) => item.id === id));
}

export function upsertConversation(data: ConversationPages, conversation: Conversation): ConversationPages {
  if (hasConversation(data, conversation.id)) {
    return mapConversations(data, (item) => (item.id === conversation.id ? conversation : item));
  }
  const [first, ...rest] = data.pages;
  return {
    ...data,
    pages: [
      { items: [conversation, ...(first?.items ?? [])], nextCursor: first?.nextCursor ?? null },
      ...rest,
    ],
  };
}

/**
 * Applies the event stream to the query cache, so that the conversation list, each history and
 * each profile follow the server without refetching; on `resync` (the server could not fill a
 * gap) every query is refetched instead. Returns a function that stops it.
 */
export function syncEventsToCache(options: {
  parley: ParleyClient;
  queryClient: QueryClient;
  trpc: ParleyQueryProxy;
  typing: TypingStore;
}): () => void {
  const { parley, queryClient, trpc, typing } = options;
  const me = () => parley.user?.id ?? null;
  const conversationLists = trpc.conversation.list.infiniteQueryFilter();
  const historyOf = (conversationId: string) => trpc.message.list.infiniteQueryFilter({ conversationId });
  const conversationKey = (id: string) => trpc.conversation.byId.queryKey({ id });
  const membersOf = (id: string) => trpc.conversation.members.infiniteQueryFilter({ id });

  /**
   * A change to a query that is still on its first fetch: the fetch may have read the server
   * before the change, so it is started again rather than missing it.
   */
  const refetchIfLoading = (filter: { queryKey: readonly unknown[] }) => {
    for (const query of queryClient.getQueryCache().findAll(filter)) {
      if (query.state.data === undefined && query.state.fetchStatus === 'fetching') {
        void queryClient.invalidateQueries({ queryKey: query.queryKey, exact: true });
      }
    }
  };

  const updateConversation = (id: string, update: (conversation: Conversation) => Conversation) => {
    queryClient.setQueriesData<ConversationPages>(conversationLists, (data) =>
      data ? mapConversations(data, (item) => (item.id === id ? update(item) : item)) : data,
    );
    queryClient.setQueryData(conversationKey(id), (data: Conversation | undefined) =>
      data ? update(data) : data,
    );
  };

  const knownConversation = (id: string) =>
    queryClient
      .getQueriesData<ConversationPages>(conversationLists)
      .some(([, data]) => data !== undefined && hasConversation(data, id));

  const putConversation = (conversation: Conversation) => {
    if (!knownConversation(conversation.id)) {
      // Sharing a conversation is what lets us see someone's presence: ask again for what was
      // fetched before we shared one.
      for (const member of conversation.members) {
        if (member.userId !== me())
          void queryClient.invalidateQueries({ queryKey: trpc.user.byId.queryKey({ id: member.userId }) });
      }
    }
    queryClient.setQueriesData<ConversationPages>(conversationLists, (data) =>
      data ? upsertConversation(data, conversation) : data,
    );
    queryClient.setQueryData(conversationKey(conversation.id), conversation);
    refetchIfLoading(conversationLists);
  };

  const onMessage = (event: ParleyEventOf<'message.created' | 'message.updated'>) => {
    const { message } = event;
    queryClient.setQueriesData<MessagePages>(historyOf(message.conversationId), (data) =>
      data ? upsertMessage(data, message) : data,
    );
    refetchIfLoading(historyOf(message.conversationId));
    if (event.type === 'message.created') {
      typing.stop(message.conversationId, message.senderId);
      if (!knownConversation(message.conversationId)) {
        // A conversation we have not seen yet (someone opened a direct one with us): fetch it alone.
        void parley.api.conversation.byId
          .query({ id: message.conversationId })
          .then(putConversation, () => {});
        return;
      }
      const fromOthers = message.senderId !== me() && message.type === 'text';
      updateConversation(message.conversationId, (conversation) =>
        message.seq <= conversation.lastSeq
          ? conversation
          : {
              ...conversation,
              lastMessage: message,
              lastSeq: message.seq,
              unreadCount: conversation.unreadCount + (fromOthers ? 1 : 0),
              // Our own message means we have read everything before it.
              members: fromOthers
                ? conversation.members
                : conversation.members.map((member) =>
                    member.userId === message.senderId
                      ? { ...member, lastReadSeq: Math.max(member.lastReadSeq, message.seq) }
                      : member,
                  ),
            },
      );
    } else {
      updateConversation(message.conversationId, (conversation) =>
        conversation.lastMessage?.id === message.id
          ? { ...conversation, lastMessage: message }
          : conversation,
      );
    }
  };

  const onDeleted = (conversationId: string, messageId: string) => {
    const tombstone = (message: Message): Message =>
      message.id === messageId && !message.deletedAt
        ? { ...message, content: '', deletedAt: new Date() }
        : message;
    queryClient.setQueriesData<MessagePages>(historyOf(conversationId), (data) =>
      data ? mapMessages(data, tombstone) : data,
    );
    updateConversation(conversationId, (conversation) =>
      conversation.lastMessage
        ? { ...conversation, lastMessage: tombstone(conversation.lastMessage) }
        : conversation,
    );
  };

  const onRead = (event: ParleyEventOf<'read'>) => {
    updateConversation(event.conversationId, (conversation) => ({
      ...conversation,
      members: conversation.members.map((member) =>
        member.userId === event.userId
          ? { ...member, lastReadSeq: Math.max(member.lastReadSeq, event.seq) }
          : member,
      ),
      unreadCount: event.userId === me() && event.seq >= conversation.lastSeq ? 0 : conversation.unreadCount,
    }));
  };

  const onPresence = (event: ParleyEventOf<'presence'>) => {
    queryClient.setQueryData(
      trpc.user.byId.queryKey({ id: event.userId }),
      (user: RouterOutputs['user']['byId'] | undefined) =>
        user ? { ...user, online: event.online, lastSeenAt: event.lastSeenAt } : user,
    );
  };

  const apply = (event: ParleyEvent) => {
    switch (event.type) {
      case 'message.created':
      case 'message.updated':
        onMessage(event);
        break;
      case 'message.deleted':
        onDeleted(event.conversationId, event.messageId);
        break;
      case 'conversation.upserted':
        putConversation(event.conversation);
        break;
      case 'conversation.removed':
        queryClient.setQueriesData<ConversationPages>(conversationLists, (data) =>
          data ? mapConversations(data, (item) => (item.id === event.conversationId ? null : item)) : data,
        );
        queryClient.removeQueries({ queryKey: conversationKey(event.conversationId) });
        queryClient.removeQueries(historyOf(event.conversationId));
        break;
      case 'conversation.updated':
        updateConversation(event.conversationId, (conversation) => ({
          ...conversation,
          name: event.name,
          memberCount: event.memberCount,
          updatedAt: event.updatedAt,
        }));
        break;
      case 'member.joined':
        // The event names the newcomers only: the conversation is fetched for who they are.
        if (event.userIds.includes(me() ?? '')) break; // `conversation.upserted` brings it to us.
        void parley.api.conversation.byId.query({ id: event.conversationId }).then(
          (conversation) => updateConversation(conversation.id, () => conversation),
          () => {},
        );
        void queryClient.invalidateQueries(membersOf(event.conversationId));
        break;
      case 'member.left':
        updateConversation(event.conversationId, (conversation) => {
          const members = conversation.members.filter((member) => !event.userIds.includes(member.userId));
          const gone = event.userIds.length;
          return {
            ...conversation,
            members,
            memberCount: Math.max(members.length, conversation.memberCount - gone),
          };
        });
        void queryClient.invalidateQueries(membersOf(event.conversationId));
        break;
      case 'member.updated':
        updateConversation(event.conversationId, (conversation) => ({
          ...conversation,
          members: conversation.members.map((member) =>
            member.userId === event.userId ? { ...member, role: event.role } : member,
          ),
        }));
        void queryClient.invalidateQueries(membersOf(event.conversationId));
        break;
      case 'typing':
        if (event.userId !== me()) typing.start(event.conversationId, event.userId, event.until);
        break;
      case 'read':
        onRead(event);
        break;
      case 'presence':
        onPresence(event);
        break;
      case 'resync':
        // Handled by onResync below.
        break;
    }
  };

  const stops = [
    parley.events.onAny((event) => apply(event)),
    parley.events.onResync(() => {
      typing.clear();
      void queryClient.invalidateQueries();
    }),
  ];
  return () => {
    for (const stop of stops) stop();
  };
}
