import { useAuth } from '@parley/client/react';
import { AuthScreen } from './AuthScreen.js';
import { ConnectionBanner } from './ConnectionBanner.js';
import { ConversationList } from './ConversationList.js';
import { ConversationView } from './ConversationView.js';
import { useOpenConversation } from './route.js';

export function App() {
  const auth = useAuth();
  const [openId, open] = useOpenConversation();

  if (auth.status === 'loading') return <p className="center">Loading…</p>;
  if (!auth.user) return <AuthScreen />;

  return (
    <div className={`app ${openId ? 'has-open' : ''}`}>
      <ConnectionBanner />
      <ConversationList me={auth.user} openId={openId} onOpen={open} />
      <main className="pane" aria-label="Conversation">
        {openId ? (
          <ConversationView key={openId} id={openId} me={auth.user} onClose={() => open(null)} />
        ) : (
          <p className="center muted">Pick a conversation, or find someone to talk to.</p>
        )}
      </main>
    </div>
  );
}
