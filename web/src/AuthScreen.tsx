import { useParley } from '@parley/client/react';
import { type FormEvent, useState } from 'react';
import { errorText, field } from './names.js';

export function AuthScreen() {
  const parley = useParley();
  const [mode, setMode] = useState<'signIn' | 'register'>('signIn');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const text = (name: string) => field(form, name).trim();
    setBusy(true);
    setError(null);
    try {
      if (mode === 'register') {
        const displayName = text('displayName');
        await parley.register({
          email: text('email'),
          username: text('username'),
          password: field(form, 'password'),
          ...(displayName ? { displayName } : {}),
        });
      } else {
        const login = text('login');
        const password = field(form, 'password');
        await parley.login(login.includes('@') ? { email: login, password } : { username: login, password });
      }
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  };

  return (
    <main className="auth">
      <h1>Parley</h1>
      <form
        onSubmit={(event) => void submit(event)}
        aria-label={mode === 'register' ? 'Create account' : 'Sign in'}
      >
        {mode === 'register' ? (
          <>
            <label>
              Email
              <input name="email" type="email" autoComplete="email" required />
            </label>
            <label>
              Username
              <input name="username" autoComplete="username" required minLength={3} maxLength={32} />
            </label>
            <label>
              Display name <span className="muted">(optional)</span>
              <input name="displayName" autoComplete="nickname" maxLength={64} />
            </label>
          </>
        ) : (
          <label>
            Username or email
            <input name="login" autoComplete="username" required />
          </label>
        )}
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete={mode === 'register' ? 'new-password' : 'current-password'}
            required
            minLength={mode === 'register' ? 8 : 1}
          />
        </label>
        {error ? (
          <p role="alert" className="error">
            {errorText(error)}
          </p>
        ) : null}
        <button type="submit" className="primary" disabled={busy}>
          {mode === 'register' ? 'Create account' : 'Sign in'}
        </button>
      </form>
      <p>
        {mode === 'register' ? 'Have an account?' : 'New here?'}{' '}
        <button
          type="button"
          className="link"
          onClick={() => {
            setMode(mode === 'register' ? 'signIn' : 'register');
            setError(null);
          }}
        >
          {mode === 'register' ? 'Sign in' : 'Create an account'}
        </button>
      </p>
    </main>
  );
}
