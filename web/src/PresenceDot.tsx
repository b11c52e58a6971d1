import { usePresence } from '@parley/client/react';
import { lastSeen } from './names.js';

export function PresenceDot({ userId }: { userId: string }) {
  const { online, lastSeenAt } = usePresence(userId);
  const label = online ? 'online' : lastSeen(lastSeenAt);
  return <span className={`dot ${online ? 'on' : ''}`} role="img" aria-label={label} title={label} />;
}

export function PresenceText({ userId }: { userId: string }) {
  const { online, lastSeenAt } = usePresence(userId);
  return <span className="muted">{online ? 'online' : lastSeen(lastSeenAt)}</span>;
}
