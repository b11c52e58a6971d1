import { createParleyClient } from '@parley/client';
import { ParleyProvider } from '@parley/client/react';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.js';
import { browserTokenStorage } from './storage.js';
import './styles.css';

const parley = createParleyClient({ url: window.location.origin, storage: browserTokenStorage() });

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
