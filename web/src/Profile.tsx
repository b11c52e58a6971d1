import { useParley, useTRPC } from '@parley/client/react';
import type { Me } from '@parley/client';
import { useMutation, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { errorText } from './names.js';

export function Profile({ me, onDone }: { me: Me; onDone: () => void }) {
  const parley = useParley();
  const trpc = useTRPC();
  const [displayName, setDisplayName] = useState(me.displayName);
  const queryClient = useQueryClient();
  const update = useMutation({
    ...trpc.user.update.mutationOptions(),
    onSuccess: (updated) => {
      queryClient.setQueryData(trpc.auth.me.queryKey(), updated);
      onDone();
    },
  });
  const save = (event: FormEvent) => {
    event.preventDefault();
    update.mutate({ displayName });
  };
  return (
    <section className="panel" aria-label="Profile">
      <p>
        Signed in as <strong>@{me.username}</strong> <span className="muted">({me.email})</span>
      </p>
      <form onSubmit={save}>
        <label>
          Display name
          <input
            value={displayName}
            onChange={(event) => setDisplayName(event.target.value)}
            required
            maxLength={64}
          />
        </label>
        {update.error ? (
          <p role="alert" className="error">
            {errorText(update.error)}
          </p>
        ) : null}
        <button type="submit" disabled={update.isPending}>
          Save
        </button>
      </form>
      <div className="row">
        <button type="button" onClick={() => void parley.logout()}>
          Sign out
        </button>
        <button type="button" onClick={() => void parley.logout({ everywhere: true })}>
          Sign out everywhere
        </button>
      </div>
    </section>
  );
}
