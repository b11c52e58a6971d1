import { useTRPC } from '@parley/client/react';
import type { PublicUser } from '@parley/client';
import { useQuery } from '@tanstack/react-query';
import { useEffect, useId, useState } from 'react';

interface UserSearchProps {
  label: string;
  /** The button's text for a found user, e.g. `Message ${name}`. */
  action: (user: PublicUser) => string;
  onPick: (user: PublicUser) => void;
  exclude?: readonly string[];
}

/** Finds users by the start of their username or display name (`user.list`). */
export function UserSearch({ label, action, onPick, exclude = [] }: UserSearchProps) {
  const trpc = useTRPC();
  const id = useId();
  const [text, setText] = useState('');
  const [query, setQuery] = useState('');
  useEffect(() => {
    // Searches are budgeted per minute: one per pause in typing, not one per key.
    const timer = setTimeout(() => setQuery(text.trim()), 250);
    return () => clearTimeout(timer);
  }, [text]);
  const found = useQuery({
    ...trpc.user.list.queryOptions({ query, limit: 8 }),
    enabled: query.length > 0,
    staleTime: 10_000,
  });
  const users = (found.data?.items ?? []).filter((user) => !exclude.includes(user.id));

  return (
    <div className="search">
      <label htmlFor={id}>{label}</label>
      <input
        id={id}
        type="search"
        value={text}
        placeholder="Name or username"
        autoComplete="off"
        onChange={(event) => setText(event.target.value)}
      />
      {query && found.data ? (
        <ul aria-label={`${label}: results`} className="results">
          {users.length === 0 ? <li className="muted">Nobody found</li> : null}
          {users.map((user) => (
            <li key={user.id}>
              <span className="grow">
                {user.displayName} <span className="muted">@{user.username}</span>
              </span>
              <button
                type="button"
                onClick={() => {
                  onPick(user);
                  setText('');
                  setQuery('');
                }}
              >
                {action(user)}
              </button>
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}
