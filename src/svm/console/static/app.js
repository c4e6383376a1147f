// The console's shell: sign-in state, the header and navigation, hash routing, the banners.
import { api, session } from './api.js';
import { apiEvents, currentRoute, ErrorBox } from './format.js';
import { html, render, useEffect, useState } from './vendor-html.js';
import { SignIn } from './pages/signin.js';
import { Fleet } from './pages/fleet.js';
import { Agents } from './pages/agents.js';
import { Agent } from './pages/agent.js';
import { Detections } from './pages/detections.js';
import { Svm } from './pages/svm.js';

const PAGES = [
  ['fleet', 'Fleet'],
  ['agents', 'Agents'],
  ['detections', 'Detections'],
  ['svm', 'SVM health'],
];

function App() {
  const [route, setRoute] = useState(currentRoute());
  const [whoami, setWhoami] = useState(null);
  const [signInMessage, setSignInMessage] = useState('');
  const [offline, setOffline] = useState(false);
  const [whoError, setWhoError] = useState(null);

  useEffect(() => {
    const onRoute = () => setRoute(currentRoute());
    const onLost = (e) => {
      setWhoami(null);
      setSignInMessage(e.detail || 'Your session ended. Sign in again.');
      if (!location.hash.startsWith('#/signin')) location.hash = '#/signin';
    };
    const onOffline = () => setOffline(true);
    const onOnline = () => setOffline(false);
    addEventListener('hashchange', onRoute);
    apiEvents.addEventListener('route', onRoute);
    apiEvents.addEventListener('auth-lost', onLost);
    apiEvents.addEventListener('offline', onOffline);
    apiEvents.addEventListener('online', onOnline);
    return () => {
      removeEventListener('hashchange', onRoute);
      apiEvents.removeEventListener('route', onRoute);
      apiEvents.removeEventListener('auth-lost', onLost);
      apiEvents.removeEventListener('offline', onOffline);
      apiEvents.removeEventListener('online', onOnline);
    };
  }, []);

  const signedIn = !!session.token();
  useEffect(() => {
    if (!signedIn || whoami) return;
    api('whoami').then(
      (w) => {
        setWhoami(w);
        setWhoError(null);
      },
      (e) => setWhoError(e),
    );
  }, [signedIn, whoami, route]);

  const page = route.parts[0] || (signedIn ? 'fleet' : 'signin');
  if (!signedIn || page === 'signin') {
    const done = (w) => {
      setWhoami(w);
      setSignInMessage('');
      location.hash = '#/fleet';
    };
    return html`<${Shell} offline=${offline}><${SignIn} message=${signInMessage} onSignedIn=${done} /><//>`;
  }
  const signOut = () => {
    session.signOut();
    setWhoami(null);
    setSignInMessage('You signed out.');
    location.hash = '#/signin';
  };
  let body;
  if (page === 'fleet') body = html`<${Fleet} whoami=${whoami} />`;
  else if (page === 'agents') body = html`<${Agents} query=${route.query} whoami=${whoami} />`;
  else if (page === 'agent') body = html`<${Agent} tenant=${route.parts[1]} agentId=${route.parts[2]} whoami=${whoami} />`;
  else if (page === 'detections') body = html`<${Detections} query=${route.query} whoami=${whoami} />`;
  else if (page === 'svm') body = html`<${Svm} />`;
  else body = html`<p class="empty">There is no page “${page}”. <a href="#/fleet">Go to the fleet.</a></p>`;
  const current = page === 'agent' ? 'agents' : page;
  return html`<${Shell} offline=${offline}>
    <nav class="nav" aria-label="Pages">
      ${PAGES.map(
        ([id, label]) =>
          html`<a href=${`#/${id}`} class=${id === current ? 'active' : ''} aria-current=${id === current ? 'page' : undefined}>
            ${label}
          </a>`,
      )}
      <span class="spacer"></span>
      <span class="who" data-test="whoami">
        ${whoami ? (whoami.role === 'admin' ? 'admin, all tenants' : `viewer of tenant ${whoami.tenant}`) : ''}
      </span>
      <button type="button" class="link" onClick=${signOut}>Sign out</button>
    </nav>
    <${ErrorBox} error=${whoError && whoError.status !== 0 ? whoError : null} />
    <main>${body}</main>
  <//>`;
}

function Shell({ offline, children }) {
  return html`<div class="shell">
    <header class="top">
      <a class="brand" href="#/fleet"><img src="favicon.svg" alt="" width="20" height="20" /> lightagent console</a>
    </header>
    ${
      offline
        ? html`<div class="banner" role="status" data-test="offline">
            The SVM cannot be reached. The pages show the last data received and try again every few seconds.
          </div>`
        : null
    }
    ${children}
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
