import { type ChatMessage, useMessages, useParley, useSendMessage } from '@parley/client/react';
import type { Conversation, Me } from '@parley/client';
import { type FormEvent, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { displayName, errorText, field, shortTime } from './names.js';

export function MessageList({ conversation, me }: { conversation: Conversation; me: Me }) {
  const { messages, isLoading, hasOlder, isLoadingOlder, loadOlder } = useMessages(conversation.id);
  const { retry } = useSendMessage(conversation.id);
  const list = useRef<HTMLOListElement>(null);
  const top = useRef<HTMLLIElement>(null);
  const position = useRef({ first: '', last: '', fromBottom: 0 });

  // Keeps the view where the reader is: at the bottom for new messages (when they were at the
  // bottom), and on the same message when older ones come in above.
  useLayoutEffect(() => {
    const element = list.current;
    if (!element) return;
    const previous = position.current;
    const first = messages[0]?.id ?? '';
    const last = messages.at(-1)?.id ?? '';
    if (previous.first !== first && previous.last === last) {
      element.scrollTop = element.scrollHeight - element.clientHeight - previous.fromBottom;
    } else if (previous.fromBottom < 80 || messages.at(-1)?.senderId === me.id) {
      element.scrollTop = element.scrollHeight;
    }
    position.current = {
      first,
      last,
      fromBottom: element.scrollHeight - element.scrollTop - element.clientHeight,
    };
  }, [messages, me.id]);

  // Pages back through history when the top of the list comes into view.
  useEffect(() => {
    const sentinel = top.current;
    if (!sentinel || !hasOlder) return;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadOlder();
    });
    observer.observe(sentinel);
    return () => observer.disconnect();
  }, [hasOlder, loadOlder]);

  const lastOwn = [...messages]
    .reverse()
    .find((m) => m.senderId === me.id && m.type === 'text' && !m.delivery);
  const seenBy = lastOwn
    ? conversation.members.filter((member) => member.userId !== me.id && member.lastReadSeq >= lastOwn.seq)
    : [];

  return (
    <ol
      ref={list}
      className="messages"
      role="log"
      aria-label="Messages"
      aria-busy={isLoading || isLoadingOlder}
      tabIndex={0}
      onScroll={(event) => {
        const element = event.currentTarget;
        position.current.fromBottom = element.scrollHeight - element.scrollTop - element.clientHeight;
      }}
    >
      <li ref={top} className="history-edge">
        {hasOlder ? (
          <button type="button" className="link" onClick={loadOlder} disabled={isLoadingOlder}>
            {isLoadingOlder ? 'Loading older messages…' : 'Load older messages'}
          </button>
        ) : isLoading ? (
          <span className="muted">Loading…</span>
        ) : (
          <span className="muted">Beginning of the conversation</span>
        )}
      </li>
      {messages.map((message, index) => (
        <MessageItem
          key={message.clientMessageId && message.senderId === me.id ? message.clientMessageId : message.id}
          message={message}
          conversation={conversation}
          me={me}
          showSender={
            messages[index - 1]?.senderId !== message.senderId || messages[index - 1]?.type === 'system'
          }
          onRetry={() => retry(message)}
          seenBy={message === lastOwn ? seenBy.map((member) => member.displayName) : null}
        />
      ))}
    </ol>
  );
}

interface ItemProps {
  message: ChatMessage;
  conversation: Conversation;
  me: Me;
  showSender: boolean;
  onRetry: () => void;
  seenBy: string[] | null;
}

function MessageItem({ message, conversation, me, showSender, onRetry, seenBy }: ItemProps) {
  const parley = useParley();
  const [editing, setEditing] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const mine = message.senderId === me.id;
  const moderator = conversation.members.some(
    (member) => member.userId === me.id && member.role !== 'member' && conversation.type === 'group',
  );

  if (message.type === 'system') {
    return (
      <li className="system" data-seq={message.seq}>
        {message.content}
      </li>
    );
  }
  const sender = mine ? 'You' : displayName(conversation, message.senderId, message.senderUsername);
  const remove = () => {
    if (!window.confirm('Delete this message for everyone?')) return;
    parley.api.message.delete.mutate({ id: message.id }).catch(setError);
  };
  const save = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const content = field(new FormData(event.currentTarget), 'content').trim();
    if (!content || content === message.content) return setEditing(false);
    parley.api.message.edit.mutate({ id: message.id, content }).then(
      () => setEditing(false),
      (caught: unknown) => setError(caught),
    );
  };

  return (
    <li className={`message ${mine ? 'mine' : ''}`} data-seq={message.delivery ? undefined : message.seq}>
      {showSender ? <span className="sender">{sender}</span> : null}
      {message.deletedAt ? (
        <p className="body deleted">This message was deleted</p>
      ) : editing ? (
        <form onSubmit={save} className="edit">
          <label className="visually-hidden" htmlFor={`edit-${message.id}`}>
            Edit message
          </label>
          <textarea id={`edit-${message.id}`} name="content" defaultValue={message.content} autoFocus />
          <button type="submit">Save</button>
          <button type="button" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <p className="body">{message.content}</p>
      )}
      <span className="info muted">
        <time dateTime={message.sentAt.toISOString()}>{shortTime(message.sentAt)}</time>
        {message.editedAt && !message.deletedAt ? ' · edited' : null}
        {message.delivery === 'sending' ? ' · Sending…' : null}
      </span>
      {message.delivery === 'failed' ? (
        <span className="error">
          Not sent.{' '}
          <button type="button" className="link" onClick={onRetry}>
            Retry
          </button>
        </span>
      ) : null}
      {!message.delivery && !message.deletedAt && !editing && (mine || moderator) ? (
        <span className="actions">
          {mine ? (
            <button
              type="button"
              onClick={() => setEditing(true)}
              aria-label={`Edit message: ${message.content}`}
            >
              Edit
            </button>
          ) : null}
          <button type="button" onClick={remove} aria-label={`Delete message: ${message.content}`}>
            Delete
          </button>
        </span>
      ) : null}
      {error ? (
        <span role="alert" className="error">
          {errorText(error)}
        </span>
      ) : null}
      {seenBy && seenBy.length > 0 ? (
        <span className="seen muted">
          {conversation.type === 'direct' ? 'Seen' : `Seen by ${seenBy.join(', ')}`}
        </span>
      ) : null}
    </li>
  );
}
