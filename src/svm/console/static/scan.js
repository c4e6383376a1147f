// Scans on demand (docs/scans.md): the "Scan now" buttons (admin tokens only; the API refuses
// viewers with 403 anyway) and the last scan job an agent reported.
import { apiPost } from './api.js';
import { ago, dateTime } from './format.js';
import { html, useState } from './vendor-html.js';

const STATE_WORD = { running: 'running', done: 'done', cancelled: 'cancelled', failed: 'failed', refused: 'refused' };

/** One line for an agent's last scan job, or a dash. */
export function scanText(s) {
  if (!s) return '—';
  const word = STATE_WORD[s.state] ?? String(s.state);
  if (s.state === 'refused') return `refused (${s.code ?? 'no reason'}) ${ago(s.startedAt)}`;
  const when = s.state === 'running' ? `started ${ago(s.startedAt)}` : ago(s.finishedAt ?? s.startedAt);
  return `${word} ${when}: ${s.scanned} scanned, ${s.infected} infected${s.errors ? `, ${s.errors} errors` : ''}`;
}

export function ScanFacts({ scan }) {
  if (!scan) return html`<span class="muted">no scan reported</span>`;
  return html`<span class=${scan.infected ? 'warn-text' : ''} title=${`${scan.id} (${scan.trigger}) from ${dateTime(scan.startedAt)}`}
    >${scanText(scan)} <span class="muted small">(${scan.trigger})</span></span
  >`;
}

/** A button that POSTs one scan request, then says what happened (the page's poll shows the job). */
export function ScanButton({ path, body, label, whoami }) {
  const [state, setState] = useState({ busy: false, message: '', error: false });
  if (whoami && whoami.role !== 'admin') return null;
  const click = async () => {
    setState({ busy: true, message: '', error: false });
    try {
      const r = await apiPost(path, body);
      const n = r.scan ? 1 : r.requested.length;
      const skipped = r.skipped?.length ? `, ${r.skipped.length} skipped (${[...new Set(r.skipped.map((x) => x.code))].join(', ')})` : '';
      setState({ busy: false, message: `Scan asked of ${n} agent${n === 1 ? '' : 's'}${skipped}.`, error: false });
    } catch (e) {
      setState({ busy: false, message: `${e.message}${e.code ? ` (${e.code})` : ''}`, error: true });
    }
  };
  const tone = state.error ? 'bad-text' : 'muted small';
  return html`<span class="scan-action">
    <button type="button" data-test="scan-now" disabled=${state.busy} onClick=${click}>${state.busy ? 'Asking…' : label}</button>
    ${state.message ? html` <span class=${tone} role="status" data-test="scan-message">${state.message}</span>` : null}
  </span>`;
}
