import { useTRPC } from '@parley/client/react';
import type { Me, PublicUser } from '@parley/client';
import { useMutation } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { errorText } from './names.js';
import { UserSearch } from './UserSearch.js';

export function NewGroup({ me, onCreated }: { me: Me; onCreated: (id: string) => void }) {
  const trpc = useTRPC();
  const [name, setName] = useState('');
  const [picked, setPicked] = useState<PublicUser[]>([]);
  const create = useMutation({
    ...trpc.conversation.createGroup.mutationOptions(),
    onSuccess: (conversation) => onCreated(conversation.id),
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate({ name, memberIds: picked.map((user) => user.id) });
  };

  return (
    <form className="panel" aria-label="New group" onSubmit={submit}>
      <label>
        Group name
        <input value={name} onChange={(event) => setName(event.target.value)} required maxLength={100} />
      </label>
      <UserSearch
        label="Add people"
        exclude={[me.id, ...picked.map((user) => user.id)]}
        action={(user) => `Add ${user.displayName}`}
        onPick={(user) => setPicked([...picked, user])}
      />
      {picked.length > 0 ? (
        <ul aria-label="Members to add" className="chips">
          {picked.map((user) => (
            <li key={user.id}>
              {user.displayName}
              <button
                type="button"
                aria-label={`Don't add ${user.displayName}`}
                onClick={() => setPicked(picked.filter((other) => other.id !== user.id))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      ) : null}
      {create.error ? (
        <p role="alert" className="error">
          {errorText(create.error)}
        </p>
      ) : null}
      <button type="submit" className="primary" disabled={create.isPending}>
        Create group
      </button>
    </form>
  );
}
