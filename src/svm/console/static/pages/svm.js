// The SVM's own health: engine, signatures and their age, cache, load, agents.
import { api, usePoll } from '../api.js';
import { Badge, duration, ErrorBox } from '../format.js';
import { html } from '../vendor-html.js';

export function Svm() {
  const { data, error } = usePoll(() => api('svm'), []);
  if (!data)
    return html`<h1>SVM health</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<p class="muted">Loading…</p>`}`;
  const s = data;
  return html`<h1>SVM health <${Badge} state=${s.status} /></h1>
    <${ErrorBox} error=${error} />
    <dl class="facts" data-test="svm">
      <dt>SVM</dt>
      <dd class="mono">${s.svmId}</dd>
      <dt>Version</dt>
      <dd>${s.version}</dd>
      <dt>Engine</dt>
      <dd data-test="engine">${s.engine} <${Healthy} ok=${s.engineHealthy} /></dd>
      <dt>Signature generation</dt>
      <dd class="mono">${s.generation}</dd>
      <dt>Signature age</dt>
      <dd data-test="age">
        ${s.signatureAgeSeconds === null ? 'unknown' : duration(s.signatureAgeSeconds)}
        ${s.signaturesStale ? html`${' '}<span class="badge st-degraded"><span class="sym" aria-hidden="true">!</span> stale</span>` : null}
      </dd>
      <dt>Verdict cache</dt>
      <dd data-test="cache">
        ${s.cache.kind}, ${s.cache.entries} entries
        <${Healthy} ok=${s.cache.healthy} />
      </dd>
      <dt>Load</dt>
      <dd data-test="load">${Math.round(s.load * 100)} %</dd>
      <dt>Scan queue</dt>
      <dd>${s.queue}</dd>
      <dt>Agents connected</dt>
      <dd data-test="agents-connected">${s.agentsConnected}</dd>
      <dt>Uptime</dt>
      <dd>${duration(s.uptimeSeconds)}</dd>
    </dl>`;
}

/** " (healthy)" in green or " (not healthy)" in red: the space is explicit (htm drops whitespace around line breaks). */
function Healthy({ ok }) {
  return html`${' '}<span class=${ok ? 'ok-text' : 'bad-text'}>${ok ? '(healthy)' : '(not healthy)'}</span>`;
}
