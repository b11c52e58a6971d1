import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { createTRPCOptionsProxy } from '@trpc/tanstack-react-query';
import { createContext, createElement, type ReactNode, useContext, useEffect, useState } from 'react';
import type { ParleyClient } from '../client.js';
import type { AppRouter } from '../router.js';
import { type ParleyQueryProxy, syncEventsToCache } from './cache.js';
import { TypingStore } from './typing.js';

interface ParleyContextValue {
  parley: ParleyClient;
  trpc: ParleyQueryProxy;
  queryClient: QueryClient;
  typing: TypingStore;
}

const ParleyContext = createContext<ParleyContextValue | null>(null);

export interface ParleyProviderProps {
  /** The client from `createParleyClient`. */
  client: ParleyClient;
  /** Your QueryClient, if the app has one; otherwise the provider makes its own. */
  queryClient?: QueryClient;
  children?: ReactNode;
}

/**
 * Gives the components below it the Parley client, typed query options for every procedure
 * (`useTRPC()`) and a query cache that the event stream keeps up to date.
 */
export function ParleyProvider({ client, queryClient: given, children }: ParleyProviderProps) {
  const [value] = useState<ParleyContextValue>(() => {
    const queryClient =
      given ??
      new QueryClient({
        // Live data arrives through the event stream: nothing goes stale by itself.
        defaultOptions: { queries: { staleTime: Infinity, refetchOnWindowFocus: false, retry: 1 } },
      });
    return {
      parley: client,
      queryClient,
      trpc: createTRPCOptionsProxy<AppRouter>({ client: client.api, queryClient }),
      typing: new TypingStore(),
    };
  });

  useEffect(() => {
    const stopSync = syncEventsToCache(value);
    // Another user's data must not survive a sign-out.
    const stopAuth = value.parley.onAuthChange((change) => {
      if (change.type === 'refreshed') return;
      value.typing.clear();
      value.queryClient.clear();
    });
    return () => {
      stopSync();
      stopAuth();
    };
  }, [value]);

  return createElement(
    QueryClientProvider,
    { client: value.queryClient },
    createElement(ParleyContext.Provider, { value }, children),
  );
}

function useParleyContext(): ParleyContextValue {
  const value = useContext(ParleyContext);
  if (!value) throw new Error('Parley hooks must be used inside <ParleyProvider>');
  return value;
}

/** The Parley client of the nearest `ParleyProvider`. */
export function useParley(): ParleyClient {
  return useParleyContext().parley;
}

/**
 * Typed TanStack Query options for every procedure:
 * `useQuery(useTRPC().user.byId.queryOptions({ id }))`, `useMutation(trpc.conversation.rename.mutationOptions())`.
 */
export function useTRPC(): ParleyQueryProxy {
  return useParleyContext().trpc;
}

/** @internal for the hooks in this package. */
export function useTypingStore(): TypingStore {
  return useParleyContext().typing;
}
