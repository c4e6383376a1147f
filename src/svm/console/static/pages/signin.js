// Sign-in: the token is kept in this tab's sessionStorage only and sent as a Bearer header.
import { api, session } from '../api.js';
import { html, useState } from '../vendor-html.js';

export function SignIn({ message, onSignedIn }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError('Paste an admin or viewer token.');
    setBusy(true);
    setError('');
    session.signIn(t);
    try {
      const w = await api('whoami');
      setToken('');
      onSignedIn(w);
    } catch (err) {
      session.signOut();
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <form class="card" onSubmit=${submit} autocomplete="off">
      <h1>Sign in</h1>
      <p class="muted">Use an admin token (every tenant) or a viewer token (one tenant). Agent tokens cannot open the console.</p>
      ${message ? html`<p class="notice" role="status" data-test="signin-message">${message}</p>` : null}
      <label for="token">Token</label>
      <input
        id="token"
        name="token"
        type="password"
        value=${token}
        onInput=${(e) => setToken(e.currentTarget.value)}
        spellcheck="false"
        autofocus
      />
      ${error ? html`<p class="error" role="alert" data-test="signin-error">${error}</p>` : null}
      <button type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <p class="muted small">The token stays in this browser tab only (sessionStorage) and is never put in a URL.</p>
    </form>
  </main>`;
}
