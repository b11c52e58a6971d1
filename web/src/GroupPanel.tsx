import { useMembers, useParley } from '@parley/client/react';
import type { Conversation, Me } from '@parley/client';
import { type FormEvent, useState } from 'react';
import { errorText } from './names.js';
import { PresenceDot } from './PresenceDot.js';
import { UserSearch } from './UserSearch.js';

/**
 * A group's members and what the signed-in user may do to it: rename and add people (admins and
 * the owner), remove members (admins remove members; the owner anyone), set roles (the owner),
 * leave, delete (the owner). Changes come back through the event stream.
 */
export function GroupPanel({
  conversation,
  me,
  onLeft,
}: {
  conversation: Conversation;
  me: Me;
  onLeft: () => void;
}) {
  const parley = useParley();
  const { members, memberCount, hasMore, loadMore } = useMembers(conversation);
  const [error, setError] = useState<unknown>(null);
  const role = members.find((member) => member.userId === me.id)?.role ?? 'member';
  const manages = role !== 'member';
  const id = conversation.id;

  const run = (call: Promise<unknown>, then?: () => void) => {
    setError(null);
    call.then(then, setError);
  };

  return (
    <section className="panel" aria-label="Group details">
      {manages ? (
        // Keyed by the name, so a rename by someone else shows in the field too.
        <RenameForm
          key={conversation.name}
          current={conversation.name ?? ''}
          onRename={(name) => run(parley.api.conversation.rename.mutate({ id, name }))}
        />
      ) : null}
      <h3>{memberCount} members</h3>
      <ul className="members" aria-label="Members">
        {members.map((member) => {
          const self = member.userId === me.id;
          const removable = !self && (role === 'owner' || (role === 'admin' && member.role === 'member'));
          return (
            <li key={member.userId}>
              <PresenceDot userId={member.userId} />
              <span className="grow">
                {member.displayName}
                {self ? ' (you)' : ''} <span className="muted">{member.role}</span>
              </span>
              {role === 'owner' && !self && member.role !== 'owner' ? (
                <label>
                  <span className="visually-hidden">Role of {member.displayName}</span>
                  <select
                    value={member.role}
                    onChange={(event) =>
                      run(
                        parley.api.conversation.setRole.mutate({
                          id,
                          userId: member.userId,
                          role: event.target.value === 'admin' ? 'admin' : 'member',
                        }),
                      )
                    }
                  >
                    <option value="member">member</option>
                    <option value="admin">admin</option>
                  </select>
                </label>
              ) : null}
              {removable ? (
                <button
                  type="button"
                  onClick={() =>
                    run(parley.api.conversation.removeMember.mutate({ id, userId: member.userId }))
                  }
                >
                  Remove {member.displayName}
                </button>
              ) : null}
            </li>
          );
        })}
      </ul>
      {hasMore ? (
        <button type="button" onClick={loadMore}>
          More members
        </button>
      ) : null}
      {manages ? (
        <UserSearch
          label="Add people to the group"
          exclude={members.map((member) => member.userId)}
          action={(user) => `Add ${user.displayName}`}
          onPick={(user) => run(parley.api.conversation.addMembers.mutate({ id, userIds: [user.id] }))}
        />
      ) : null}
      {error ? (
        <p role="alert" className="error">
          {errorText(error)}
        </p>
      ) : null}
      <div className="row">
        <button type="button" onClick={() => run(parley.api.conversation.leave.mutate({ id }), onLeft)}>
          Leave group
        </button>
        {role === 'owner' ? (
          <button
            type="button"
            className="danger"
            onClick={() => {
              if (window.confirm(`Delete "${conversation.name ?? 'this group'}" for everyone?`))
                run(parley.api.conversation.delete.mutate({ id }), onLeft);
            }}
          >
            Delete group
          </button>
        ) : null}
      </div>
    </section>
  );
}

function RenameForm({ current, onRename }: { current: string; onRename: (name: string) => void }) {
  const [name, setName] = useState(current);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    onRename(name);
  };
  return (
    <form onSubmit={submit} className="row">
      <label className="grow">
        Group name
        <input value={name} onChange={(event) => setName(event.target.value)} required maxLength={100} />
      </label>
      <button type="submit">Rename</button>
    </form>
  );
}
