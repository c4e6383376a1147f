// The admin API client: the token lives in sessionStorage only (gone with the tab), goes out as
// the Bearer header, never in a URL. Every failure becomes an ApiError with a plain message.
import { apiEvents } from './format.js';
import { useEffect, useState } from './vendor-html.js';

const TOKEN_KEY = 'lightagent.console.token';
const REFRESH_KEY = 'lightagent.console.refreshMs';

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
  /** Auto-refresh period: 10 s unless this tab set another (tests), never under 1 s. */
  refreshMs: () => Math.max(1000, Number(sessionStorage.getItem(REFRESH_KEY)) || 10_000),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const PLAIN = {
  0: 'The SVM cannot be reached (network down, or the SVM stopped).',
  401: 'This token was not accepted: it is unknown, expired or revoked.',
  403: 'This token may not see this: agent tokens cannot open the console, and a viewer sees only its tenant.',
  404: 'Not found: it may have been removed.',
  429: 'The SVM is busy; the page will try again.',
};

/** GET /api/<path>?<params> as JSON. Throws ApiError; tells apiEvents about auth loss and the network. */
export async function api(path, params = {}) {
  const token = session.token();
  if (!token) throw lost(new ApiError(401, 'LA_ERR_ADMIN_AUTH', 'Sign in with an admin or viewer token.'));
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 15_000);
  let res;
  try {
    res = await fetch(`../api/${path}${qs.size ? `?${qs}` : ''}`, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      signal: ctl.signal,
    });
  } catch {
    apiEvents.dispatchEvent(new Event('offline'));
    throw new ApiError(0, 'NETWORK', PLAIN[0]);
  } finally {
    clearTimeout(timer);
  }
  apiEvents.dispatchEvent(new Event('online'));
  const body = await res.json().catch(() => null);
  if (res.ok && body) return body;
  const err = body && typeof body.error === 'object' ? body.error : {};
  const code = typeof err.code === 'string' ? err.code : `HTTP ${res.status}`;
  const detail = typeof err.message === 'string' ? err.message : '';
  const plain = PLAIN[res.status] ?? `The SVM answered ${res.status}.`;
  const e = new ApiError(res.status, code, detail ? `${plain} (${detail})` : plain);
  if (res.status === 401) throw lost(e);
  throw e;
}

/** POST /api/<path> with a JSON body (starting scans: admin tokens only). Throws ApiError. */
export async function apiPost(path, body) {
  const token = session.token();
  if (!token) throw lost(new ApiError(401, 'LA_ERR_ADMIN_AUTH', 'Sign in with an admin or viewer token.'));
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 15_000);
  let res;
  try {
    res = await fetch(`../api/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, accept: 'application/json', 'content-type': 'application/json' },
      body: JSON.stringify(body ?? {}),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      signal: ctl.signal,
    });
  } catch {
    throw new ApiError(0, 'NETWORK', PLAIN[0]);
  } finally {
    clearTimeout(timer);
  }
  const out = await res.json().catch(() => null);
  if (res.ok && out) return out;
  const err = out && typeof out.error === 'object' ? out.error : {};
  const code = typeof err.code === 'string' ? err.code : `HTTP ${res.status}`;
  const detail = typeof err.message === 'string' ? err.message : `The SVM answered ${res.status}.`;
  if (res.status === 401) throw lost(new ApiError(401, code, PLAIN[401]));
  throw new ApiError(res.status, code, detail);
}

function lost(e) {
  session.signOut();
  apiEvents.dispatchEvent(new CustomEvent('auth-lost', { detail: e.message }));
  return e;
}

/**
 * Load now and every refreshMs while the page is shown; `deps` restart it (another agent, a filter
 * changed). A failed refresh keeps the last data and sets `error`. Data loaded for other `deps`
 * is never returned (one agent's page must not show another's facts while loading), unless
 * `keep` (a table whose filter changed may show its old rows, marked as refreshing).
 */
export function usePoll(load, deps, keep = false) {
  const key = JSON.stringify(deps);
  const [state, setState] = useState({ key, data: null, error: null });
  useEffect(() => {
    let alive = true;
    let timer;
    const run = async () => {
      try {
        const data = await load();
        if (alive) setState({ key, data, error: null });
      } catch (e) {
        if (alive) setState((s) => ({ key, data: s.key === key ? s.data : null, error: e }));
      } finally {
        if (alive) timer = setTimeout(run, session.refreshMs());
      }
    };
    void run();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [key]);
  const current = state.key === key;
  return {
    data: current || keep ? state.data : null,
    error: current ? state.error : null,
    loading: !current,
  };
}
