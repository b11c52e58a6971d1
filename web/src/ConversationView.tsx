import { useConversation, useMarkRead, useMembers, useTyping } from '@parley/client/react';
import type { Me } from '@parley/client';
import { useState, useSyncExternalStore } from 'react';
import { Composer } from './Composer.js';
import { GroupPanel } from './GroupPanel.js';
import { MessageList } from './MessageList.js';
import { conversationTitle, otherMember } from './names.js';
import { PresenceDot, PresenceText } from './PresenceDot.js';

const subscribeVisibility = (listener: () => void) => {
  document.addEventListener('visibilitychange', listener);
  return () => document.removeEventListener('visibilitychange', listener);
};
const isVisible = () => document.visibilityState === 'visible';

export function ConversationView({ id, me, onClose }: { id: string; me: Me; onClose: () => void }) {
  const { conversation, status } = useConversation(id);
  const { members, memberCount } = useMembers(conversation);
  const { typing, notifyTyping } = useTyping(id);
  const visible = useSyncExternalStore(subscribeVisibility, isVisible);
  const [details, setDetails] = useState(false);
  useMarkRead(conversation, visible);

  if (!conversation) {
    return status === 'missing' ? (
      <p className="center muted" role="alert">
        This conversation is not yours any more: it was deleted, or you are no longer a member.
      </p>
    ) : (
      <p className="center muted">Loading…</p>
    );
  }
  const other = otherMember(conversation, me.id);
  const title = conversationTitle(conversation, me.id);
  const typingNames = typing.map(
    (userId) => members.find((member) => member.userId === userId)?.displayName ?? 'Someone',
  );

  return (
    <section className="conversation-view" aria-label={title}>
      <header className="bar">
        <button type="button" className="back" onClick={onClose} aria-label="Back to conversations">
          ←
        </button>
        {other ? <PresenceDot userId={other.userId} /> : null}
        <div className="grow">
          <h2>{title}</h2>
          {other ? (
            <PresenceText userId={other.userId} />
          ) : (
            <span className="muted">{memberCount} members</span>
          )}
        </div>
        {conversation.type === 'group' ? (
          <button type="button" aria-expanded={details} onClick={() => setDetails(!details)}>
            Group details
          </button>
        ) : null}
      </header>
      {details && conversation.type === 'group' ? (
        <GroupPanel conversation={conversation} me={me} onLeft={onClose} />
      ) : null}
      <MessageList conversation={conversation} me={me} />
      <p className="typing muted" aria-live="polite">
        {typingNames.length === 0
          ? ''
          : typingNames.length === 1
            ? `${typingNames[0]} is typing…`
            : `${typingNames.join(', ')} are typing…`}
      </p>
      <Composer conversationId={id} onTyping={notifyTyping} />
    </section>
  );
}
