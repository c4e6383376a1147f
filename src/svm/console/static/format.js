// Small helpers shared by the pages: the app's event target, hash routing, time formatting.
import { html } from './vendor-html.js';

/** 'offline' / 'online' (network), 'auth-lost' (401: back to sign-in), 'route' (filters changed). */
export const apiEvents = new EventTarget();

/** The current route from location.hash: `#/agents?state=silent` -> { parts: ['agents'], query }. */
export function currentRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const [p, q] = h.split('?', 2);
  const parts = (p || '')
    .split('/')
    .filter(Boolean)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
  return { parts, query: new URLSearchParams(q || '') };
}

export const agentHref = (tenant, agentId) => `#/agent/${encodeURIComponent(tenant)}/${encodeURIComponent(agentId)}`;

/** Change the query of the current page (filters) without a new history entry per keystroke. */
export function setQuery(changes) {
  const { parts, query } = currentRoute();
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === '') query.delete(k);
    else query.set(k, String(v));
  }
  const qs = query.toString();
  history.replaceState(null, '', `#/${parts.map(encodeURIComponent).join('/')}${qs ? `?${qs}` : ''}`);
  apiEvents.dispatchEvent(new Event('route'));
}

const pad = (n) => String(n).padStart(2, '0');

/** 2026-12-05 10:41:07 in the browser's time zone, or an em dash. */
export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** 3 h 12 min, 45 s, 2 d 4 h. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ''}`.trim();
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "4 min ago" */
export function ago(iso) {
  if (!iso) return '—';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  return `${duration((Date.now() - t) / 1000)} ago`;
}

export const percent = (x) => (x === null || x === undefined || !Number.isFinite(x) ? '—' : `${Math.round(x * 1000) / 10} %`);

const STATE_TEXT = {
  protected: ['✓', 'protected'],
  degraded: ['!', 'degraded'],
  off: ['✕', 'off'],
  silent: ['?', 'silent'],
  unknown: ['?', 'unknown'],
  ok: ['✓', 'ok'],
  unhealthy: ['✕', 'unhealthy'],
};

/** A state as a symbol AND a word, coloured by class (never colour alone). */
export function Badge({ state }) {
  const [sym, word] = STATE_TEXT[state] ?? ['?', String(state)];
  const cls = STATE_TEXT[state] ? state : 'unknown';
  return html`<span class=${`badge st-${cls}`}><span class="sym" aria-hidden="true">${sym}</span> ${word}</span>`;
}

/** An API error in plain words (the page keeps the last data it had). */
export function ErrorBox({ error }) {
  // A network failure is the banner's job (one message, not one per panel).
  if (!error || error.status === 0) return null;
  return html`<p class="error" role="alert">${error.message}${error.code && error.status ? html` <code>${error.code}</code>` : ''}</p>`;
}
