import { useConversations, useParley, useTRPC } from '@parley/client/react';
import type { Me } from '@parley/client';
import { useMutation } from '@tanstack/react-query';
import { useState } from 'react';
import { NewGroup } from './NewGroup.js';
import { conversationTitle, displayName, errorText, otherMember, shortTime } from './names.js';
import { PresenceDot } from './PresenceDot.js';
import { Profile } from './Profile.js';
import { UserSearch } from './UserSearch.js';

interface Props {
  me: Me;
  openId: string | null;
  onOpen: (id: string) => void;
}

export function ConversationList({ me, openId, onOpen }: Props) {
  const parley = useParley();
  const trpc = useTRPC();
  const { conversations, isLoading, hasMore, loadMore } = useConversations();
  const [panel, setPanel] = useState<'none' | 'group' | 'profile'>('none');
  const openDirect = useMutation({
    ...trpc.conversation.openDirect.mutationOptions(),
    onSuccess: (conversation) => onOpen(conversation.id),
  });

  return (
    <nav className="sidebar" aria-label="Conversations">
      <header className="bar">
        <strong className="grow">{me.displayName}</strong>
        <button
          type="button"
          aria-expanded={panel === 'profile'}
          onClick={() => setPanel(panel === 'profile' ? 'none' : 'profile')}
        >
          Profile
        </button>
        <button
          type="button"
          aria-expanded={panel === 'group'}
          onClick={() => setPanel(panel === 'group' ? 'none' : 'group')}
        >
          New group
        </button>
      </header>
      {panel === 'profile' ? <Profile me={me} onDone={() => setPanel('none')} /> : null}
      {panel === 'group' ? (
        <NewGroup
          me={me}
          onCreated={(id) => {
            setPanel('none');
            onOpen(id);
          }}
        />
      ) : null}
      <UserSearch
        label="Find people"
        exclude={[me.id]}
        action={(user) => `Message ${user.displayName}`}
        onPick={(user) => openDirect.mutate({ userId: user.id })}
      />
      {openDirect.error ? (
        <p role="alert" className="error">
          {errorText(openDirect.error)}
        </p>
      ) : null}
      {isLoading ? <p className="muted pad">Loading…</p> : null}
      <ul className="conversations">
        {conversations.map((conversation) => {
          const title = conversationTitle(conversation, parley.user?.id ?? me.id);
          const other = otherMember(conversation, me.id);
          const last = conversation.lastMessage;
          const preview = !last
            ? 'No messages yet'
            : last.deletedAt
              ? 'Message deleted'
              : `${last.type === 'system' ? '' : last.senderId === me.id ? 'You: ' : `${displayName(conversation, last.senderId, last.senderUsername)}: `}${last.content}`;
          return (
            <li key={conversation.id}>
              <button
                type="button"
                className={`conversation ${conversation.id === openId ? 'open' : ''}`}
                aria-current={conversation.id === openId ? 'page' : undefined}
                onClick={() => onOpen(conversation.id)}
              >
                {other ? <PresenceDot userId={other.userId} /> : <span className="dot group" aria-hidden />}
                <span className="grow text">
                  <span className="title">{title}</span>
                  <span className="preview muted">{preview}</span>
                </span>
                <span className="meta">
                  {last ? <time className="muted">{shortTime(last.sentAt)}</time> : null}
                  {conversation.unreadCount > 0 ? (
                    <span className="badge" aria-label={`${conversation.unreadCount} unread`}>
                      {conversation.unreadCount}
                    </span>
                  ) : null}
                </span>
              </button>
            </li>
          );
        })}
      </ul>
      {hasMore ? (
        <button type="button" className="pad" onClick={loadMore}>
          More conversations
        </button>
      ) : null}
    </nav>
  );
}
