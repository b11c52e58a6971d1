import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import type { AuthChange } from '../session.js';
import type { StreamStatus } from '../events.js';
import type { Conversation, Me, Message } from '../types.js';
import {
  activityOf,
  addPending,
  type ChatMessage,
  CONVERSATION_PAGE,
  isPending,
  MESSAGE_PAGE,
  mapMessages,
  PENDING_PREFIX,
  upsertMessage,
} from './cache.js';
import { useParley, useTRPC, useTypingStore } from './provider.js';

export interface AuthState {
  /** `loading` while stored tokens are read and checked. */
  status: 'loading' | 'signedIn' | 'signedOut';
  user: Me | null;
}

/**
 * Who is signed in, following every sign-in and sign-out (also a session that expired). The
 * user is `auth.me` from the query cache, so a profile change written there shows at once.
 */
export function useAuth(): AuthState {
  const parley = useParley();
  const trpc = useTRPC();
  const [signedIn, setSignedIn] = useState<{ status: AuthState['status']; user: Me | null }>(() =>
    parley.user ? { status: 'signedIn', user: parley.user } : { status: 'loading', user: null },
  );
  useEffect(() => {
    let live = true;
    const stop = parley.onAuthChange((change: AuthChange) => {
      if (change.type === 'signedIn') setSignedIn({ status: 'signedIn', user: change.user });
      if (change.type === 'signedOut') setSignedIn({ status: 'signedOut', user: null });
    });
    parley.currentUser().then(
      (user) => {
        if (live) setSignedIn(user ? { status: 'signedIn', user } : { status: 'signedOut', user: null });
      },
      () => {
        if (live) setSignedIn({ status: 'signedOut', user: null });
      },
    );
    return () => {
      live = false;
      stop();
    };
  }, [parley]);
  const me = useQuery({ ...trpc.auth.me.queryOptions(), enabled: signedIn.status === 'signedIn' });
  if (signedIn.status !== 'signedIn') return signedIn;
  return { status: 'signedIn', user: me.data && me.data.id === signedIn.user?.id ? me.data : signedIn.user };
}

export type ConnectionStatus = StreamStatus | 'offline';

interface OnlineTarget {
  navigator?: { onLine?: boolean };
  addEventListener?: (type: string, listener: () => void) => void;
  removeEventListener?: (type: string, listener: () => void) => void;
}
const host = globalThis as OnlineTarget;
const subscribeOnline = (listener: () => void) => {
  host.addEventListener?.('online', listener);
  host.addEventListener?.('offline', listener);
  return () => {
    host.removeEventListener?.('online', listener);
    host.removeEventListener?.('offline', listener);
  };
};
const isOnline = () => host.navigator?.onLine !== false;

/**
 * The event stream's state for a connection banner: `connecting`, `live`, `reconnecting`, or
 * `offline` while the browser says it has no network. After a reconnect the stream resumes
 * from its last event, so nothing shown goes missing.
 */
export function useConnection(): ConnectionStatus {
  const parley = useParley();
  const status = useSyncExternalStore(
    useCallback((listener: () => void) => parley.events.onStatus(listener), [parley]),
    () => parley.events.status,
  );
  const online = useSyncExternalStore(subscribeOnline, isOnline, () => true);
  return online ? status : 'offline';
}

/**
 * Your conversations, newest activity first, with `unreadCount` and `lastMessage`, kept live by
 * the event stream. `loadMore()` fetches the next page for users with many conversations.
 */
export function useConversations() {
  const trpc = useTRPC();
  const query = useInfiniteQuery(
    trpc.conversation.list.infiniteQueryOptions(
      { limit: CONVERSATION_PAGE },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  const conversations = useMemo(() => {
    const seen = new Set<string>();
    const all: Conversation[] = [];
    for (const page of query.data?.pages ?? []) {
      for (const item of page.items) {
        if (seen.has(item.id)) continue;
        seen.add(item.id);
        all.push(item);
      }
    }
    return all.sort((a, b) => activityOf(b) - activityOf(a));
  }, [query.data]);
  return {
    conversations,
    isLoading: query.isPending,
    error: query.error,
    hasMore: query.hasNextPage,
    loadMore: () => void query.fetchNextPage(),
  };
}

/**
 * One conversation: from the list when it is there, otherwise fetched. `missing` once it is gone
 * (deleted, or we left or were removed) or was never ours.
 */
export function useConversation(id: string | null): {
  conversation: Conversation | null;
  status: 'loading' | 'ready' | 'missing';
} {
  const { conversations, isLoading } = useConversations();
  const trpc = useTRPC();
  const listed = conversations.find((conversation) => conversation.id === id) ?? null;
  const fetched = useQuery({
    ...trpc.conversation.byId.queryOptions({ id: id ?? '' }),
    enabled: id !== null && !isLoading && !listed,
    retry: false,
  });
  const conversation = listed ?? (id !== null ? (fetched.data ?? null) : null);
  if (conversation) return { conversation, status: 'ready' };
  return { conversation: null, status: id === null || fetched.isError ? 'missing' : 'loading' };
}

/**
 * A conversation's members, with how many there are. The conversation carries the first ones
 * (all of them in a small group); a larger group's are paged in from `conversation.members`,
 * `loadMore()` fetching the next page.
 */
export function useMembers(conversation: Conversation | null) {
  const trpc = useTRPC();
  const preview = conversation?.members;
  const memberCount = conversation?.memberCount ?? 0;
  const paged = preview !== undefined && memberCount > preview.length;
  const query = useInfiniteQuery({
    ...trpc.conversation.members.infiniteQueryOptions(
      { id: conversation?.id ?? '', limit: 100 },
      { getNextPageParam: (page) => page.nextCursor },
    ),
    enabled: paged,
  });
  const members = useMemo(() => {
    if (!paged || !query.data) return preview ?? [];
    const seen = new Set<string>();
    return query.data.pages
      .flatMap((page) => page.items)
      .filter((member) => !seen.has(member.userId) && seen.add(member.userId));
  }, [paged, preview, query.data]);
  return {
    members,
    memberCount,
    hasMore: paged && (query.hasNextPage || !query.data),
    loadMore: () => {
      if (query.hasNextPage && !query.isFetchingNextPage) void query.fetchNextPage();
    },
  };
}

/**
 * A conversation's history, oldest first, with our messages still on their way at the end.
 * New messages, edits and deletions arrive live; `loadOlder()` pages back through history.
 */
export function useMessages(conversationId: string) {
  const trpc = useTRPC();
  const query = useInfiniteQuery(
    trpc.message.list.infiniteQueryOptions(
      { conversationId, limit: MESSAGE_PAGE },
      { getNextPageParam: (page) => page.nextCursor },
    ),
  );
  const messages = useMemo(() => {
    const sent: Message[] = [];
    const pending: ChatMessage[] = [];
    const seen = new Set<string>();
    for (const page of query.data?.pages ?? []) {
      for (const item of page.items) {
        if (seen.has(item.id)) continue;
        seen.add(item.id);
        (isPending(item) ? pending : sent).push(item);
      }
    }
    sent.sort((a, b) => a.seq - b.seq);
    return [...sent, ...pending.reverse()] as ChatMessage[];
  }, [query.data]);
  return {
    messages,
    isLoading: query.isPending,
    error: query.error,
    hasOlder: query.hasNextPage,
    isLoadingOlder: query.isFetchingNextPage,
    loadOlder: () => {
      if (query.hasNextPage && !query.isFetchingNextPage) void query.fetchNextPage();
    },
  };
}

/**
 * Sends a message with an optimistic entry (`delivery: 'sending'`) that the server's message
 * replaces when it arrives, by its `clientMessageId`; a failed send stays, marked `failed`,
 * and `retry` sends it again under the same id (not as a first attempt), so it is never posted
 * twice.
 */
export function useSendMessage(conversationId: string) {
  const parley = useParley();
  const trpc = useTRPC();
  const queryClient = useQueryClient();
  const history = trpc.message.list.infiniteQueryFilter({ conversationId });

  const mutation = useMutation({
    mutationFn: (input: { content: string; clientMessageId: string; firstAttempt?: true }) =>
      parley.api.message.send.mutate({ conversationId, ...input }),
    onMutate: (input) => {
      const me = parley.user;
      const draft: ChatMessage = {
        id: `${PENDING_PREFIX}${input.clientMessageId}`,
        conversationId,
        seq: Number.MAX_SAFE_INTEGER,
        senderId: me?.id ?? '',
        senderUsername: me?.username ?? '',
        content: input.content,
        type: 'text',
        clientMessageId: input.clientMessageId,
        sentAt: new Date(),
        editedAt: null,
        deletedAt: null,
        delivery: 'sending',
      };
      queryClient.setQueriesData<Parameters<typeof addPending>[0]>(history, (data) => {
        if (!data) return data;
        const without = mapMessages(data, (item) => (item.id === draft.id ? null : item));
        return addPending(without, draft);
      });
    },
    onSuccess: (message) => {
      queryClient.setQueriesData<Parameters<typeof upsertMessage>[0]>(history, (data) =>
        data ? upsertMessage(data, message) : data,
      );
    },
    onError: (_error, input) => {
      queryClient.setQueriesData<Parameters<typeof mapMessages>[0]>(history, (data) =>
        data
          ? mapMessages(data, (item) =>
              item.id === `${PENDING_PREFIX}${input.clientMessageId}`
                ? ({ ...item, delivery: 'failed' } as ChatMessage)
                : item,
            )
          : data,
      );
    },
  });

  return {
    // A new id has never been sent: the server need not look for an earlier message with it.
    send: (content: string) =>
      mutation.mutate({ content, clientMessageId: newClientMessageId(), firstAttempt: true }),
    retry: (message: ChatMessage) => {
      if (message.clientMessageId)
        mutation.mutate({ content: message.content, clientMessageId: message.clientMessageId });
    },
    error: mutation.error,
  };
}

/**
 * Who else is typing in a conversation (user ids), and `notifyTyping()` to call as the user
 * types: it tells the others at most once every three seconds.
 */
export function useTyping(conversationId: string) {
  const parley = useParley();
  const store = useTypingStore();
  const typing = useSyncExternalStore(store.subscribe, () => store.typing(conversationId));
  const lastSent = useRef(0);
  const notifyTyping = useCallback(() => {
    const now = Date.now();
    if (now - lastSent.current < 3_000) return;
    lastSent.current = now;
    parley.api.conversation.typing.mutate({ id: conversationId }).catch(() => {
      lastSent.current = 0;
    });
  }, [parley, conversationId]);
  return { typing, notifyTyping };
}

/** Whether a user is online and when they were last seen, kept live by `presence` events. */
export function usePresence(userId: string | null) {
  const trpc = useTRPC();
  const query = useQuery({ ...trpc.user.byId.queryOptions({ id: userId ?? '' }), enabled: userId !== null });
  return {
    online: query.data?.online ?? false,
    lastSeenAt: query.data?.lastSeenAt ?? null,
    user: query.data,
  };
}

/**
 * Marks a conversation read up to `seq` while `active` (the conversation is on screen and the
 * page is visible), once per new position.
 */
export function useMarkRead(conversation: Conversation | null, active: boolean) {
  const parley = useParley();
  const me = parley.user?.id;
  const sent = useRef(new Map<string, number>());
  const own = conversation?.members.find((member) => member.userId === me)?.lastReadSeq ?? 0;
  const id = conversation?.id;
  const lastSeq = conversation?.lastSeq ?? 0;
  const unread = conversation?.unreadCount ?? 0;
  useEffect(() => {
    if (!active || !id || (lastSeq <= own && unread === 0)) return;
    if ((sent.current.get(id) ?? -1) >= lastSeq) return;
    sent.current.set(id, lastSeq);
    parley.api.conversation.markRead.mutate({ id, seq: lastSeq }).catch(() => sent.current.delete(id));
  }, [active, id, lastSeq, own, unread, parley]);
}

function newClientMessageId(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(12));
  return `web-${[...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}
