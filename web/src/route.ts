import { useCallback, useSyncExternalStore } from 'react';

/** The open conversation lives in the path, `/c/<id>`, so a reload or a link opens it again. */
const subscribe = (listener: () => void) => {
  window.addEventListener('popstate', listener);
  return () => window.removeEventListener('popstate', listener);
};
const current = () => /^\/c\/([0-9a-f-]{36})$/.exec(window.location.pathname)?.[1] ?? null;

export function useOpenConversation(): [string | null, (id: string | null) => void] {
  const id = useSyncExternalStore(subscribe, current);
  const open = useCallback((next: string | null) => {
    const path = next ? `/c/${next}` : '/';
    if (window.location.pathname !== path) window.history.pushState(null, '', path);
    window.dispatchEvent(new PopStateEvent('popstate'));
  }, []);
  return [id, open];
}
