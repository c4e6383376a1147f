// Detections: the timeline (SVG bars) and the latest detections.
import { api, usePoll } from '../api.js';
import { TimelineChart } from '../chart.js';
import { agentHref, dateTime, ErrorBox, setQuery } from '../format.js';
import { html } from '../vendor-html.js';

const PERIODS = [
  [24, '24 hours'],
  [72, '3 days'],
  [168, '7 days'],
];

export function Detections({ query }) {
  const hours = Number(query.get('hours')) || 24;
  const agent = query.get('agent') || '';
  const tenant = query.get('tenant') || '';
  const timeline = usePoll(() => api('detections/timeline', { hours }), [hours]);
  const list = usePoll(() => api('detections', { limit: 200, agent, tenant }), [agent, tenant]);
  return html`<h1>Detections</h1>
    <div class="filters">
      <label
        >Period
        <select name="hours" value=${String(hours)} onChange=${(e) => setQuery({ hours: e.currentTarget.value })}>
          ${PERIODS.map(([h, label]) => html`<option value=${String(h)}>${label}</option>`)}
        </select>
      </label>
      <label class="grow"
        >Agent
        <input
          name="agent"
          type="search"
          placeholder="agent id (all agents when empty)"
          value=${agent}
          spellcheck="false"
          onChange=${(e) => setQuery({ agent: e.currentTarget.value.trim(), tenant: '' })}
        />
      </label>
    </div>
    <${ErrorBox} error=${timeline.error} />
    ${timeline.data ? html`<${TimelineChart} buckets=${timeline.data.buckets} bucketSeconds=${timeline.data.bucketSeconds} />` : null}
    <h2>
      Latest${agent ? html` of agent <span class="mono" data-test="agent-filter">${agent}</span> · ` : ''}
      ${agent ? html`<a href="#/detections">all agents</a>` : ''}
    </h2>
    <${ErrorBox} error=${list.error} />
    ${
      list.data
        ? html`<p class="muted small">
              ${
                list.data.total > list.data.detections.length
                  ? `The latest ${list.data.detections.length} of ${list.data.total}.`
                  : `${list.data.total} in all.`
              }
            </p>
            <${DetectionTable} detections=${list.data.detections} showHost=${true} />`
        : null
    }`;
}

export function DetectionTable({ detections, showHost }) {
  if (!detections.length) return html`<p class="empty">No detections.</p>`;
  return html`<div class="scroll">
    <table class="grid detections" data-test="detections">
      <thead>
        <tr>
          <th>Time</th>
          ${showHost ? html`<th>Host</th>` : null}
          <th>Threat</th>
          <th>Path</th>
          <th>Action</th>
          <th>Process</th>
        </tr>
      </thead>
      <tbody>
        ${detections.map(
          (d) =>
            html`<tr>
              <td class="nowrap">${dateTime(d.time)}</td>
              ${
                showHost
                  ? html`<td>
                      <a href=${agentHref(d.tenant, d.agentId)}>${d.host}</a>
                      <div class="small muted">${d.tenant}</div>
                    </td>`
                  : null
              }
              <td class="threat">${d.threat}</td>
              <td class="path mono" title=${d.sha256 ? `SHA-256 ${d.sha256}` : ''}>${d.path}</td>
              <td>${d.action}</td>
              <td class="small">${d.process ? html`<${Proc} p=${d.process} />` : '—'}</td>
            </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

function Proc({ p }) {
  const uid = p.uid !== undefined && p.uid !== null ? `, uid ${p.uid}` : '';
  return html`<span class="mono">${p.exe ?? '?'}</span> (pid ${p.pid}${uid})`;
}
