import { useConnection } from '@parley/client/react';

const TEXT = {
  offline: 'You are offline. Messages will arrive when the connection is back.',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
} as const;

/** Says so while the event stream is not live; it resumes from where it stopped. */
export function ConnectionBanner() {
  const status = useConnection();
  const text = status === 'live' || status === 'idle' ? null : TEXT[status];
  return (
    <div role="status" className={text ? `banner ${status}` : 'banner hidden'} data-connection={status}>
      {text}
    </div>
  );
}
