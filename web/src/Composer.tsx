import { useSendMessage } from '@parley/client/react';
import { type FormEvent, type KeyboardEvent, useState } from 'react';

/** Enter sends, Shift+Enter starts a new line. */
export function Composer({ conversationId, onTyping }: { conversationId: string; onTyping: () => void }) {
  const { send } = useSendMessage(conversationId);
  const [text, setText] = useState('');
  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    const content = text.trim();
    if (!content) return;
    send(content);
    setText('');
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.nativeEvent.isComposing) submit(event);
  };
  return (
    <form className="composer" onSubmit={submit}>
      <label className="visually-hidden" htmlFor="composer">
        Message
      </label>
      <textarea
        id="composer"
        rows={1}
        value={text}
        maxLength={4000}
        placeholder="Write a message"
        onKeyDown={onKeyDown}
        onChange={(event) => {
          setText(event.target.value);
          if (event.target.value) onTyping();
        }}
      />
      <button type="submit" className="primary">
        Send
      </button>
    </form>
  );
}
