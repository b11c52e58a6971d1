import { createParleyClient, localStorageTokenStorage } from '@parley/client';
import { ParleyProvider } from '@parley/client/react';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.js';
import './styles.css';

// One session for every tab of the app: kept in localStorage, refreshed by one tab at a time,
// and a sign-in or sign-out in one tab is followed by the others.
const parley = createParleyClient({ url: window.location.origin, storage: localStorageTokenStorage() });

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <ParleyProvider client={parley}>
        <App />
      </ParleyProvider>
    </StrictMode>,
  );
}
