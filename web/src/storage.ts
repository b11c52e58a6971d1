import type { StoredTokens, TokenStorage } from '@parley/client';

const TOKENS = 'parley.tokens';
const DEVICE = 'parley.device';

/** Keeps the session in localStorage, so a reload stays signed in. */
export function browserTokenStorage(): TokenStorage {
  return {
    get: () => {
      const text = localStorage.getItem(TOKENS);
      return text ? (JSON.parse(text) as StoredTokens) : null;
    },
    set: (tokens) => localStorage.setItem(TOKENS, JSON.stringify(tokens)),
    clear: () => localStorage.removeItem(TOKENS),
    getDeviceToken: () => localStorage.getItem(DEVICE),
    setDeviceToken: (token) => localStorage.setItem(DEVICE, token),
  };
}
