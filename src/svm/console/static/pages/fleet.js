// Fleet overview: totals and per tenant, each count a link to the filtered agents table.
import { api, usePoll } from '../api.js';
import { Badge, dateTime, duration, ErrorBox } from '../format.js';
import { html } from '../vendor-html.js';

const STATES = ['protected', 'degraded', 'off', 'silent'];

const agentsLink = (tenant, state) => {
  const q = new URLSearchParams();
  if (tenant) q.set('tenant', tenant);
  if (state) q.set('state', state);
  const s = q.toString();
  return `#/agents${s ? `?${s}` : ''}`;
};

function Bar({ counts }) {
  const total = Math.max(1, counts.agents);
  let x = 0;
  return html`<svg class="stack" viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">
    ${STATES.map((s) => {
      const w = (counts[s] / total) * 100;
      const r = html`<rect class=${`fill-${s}`} x=${x} y="0" width=${w} height="8" />`;
      x += w;
      return r;
    })}
  </svg>`;
}

export function Fleet() {
  const { data, error } = usePoll(() => api('fleet'), []);
  if (!data)
    return html`<h1>Fleet</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<p class="muted">Loading…</p>`}`;
  const t = data.totals;
  const unknown = t.agents - STATES.reduce((n, st) => n + t[st], 0);
  return html`<h1>Fleet</h1>
    <${ErrorBox} error=${error} />
    <section class="cards" data-test="totals">
      <a class="card stat" href="#/agents" data-state="agents"><span class="n">${t.agents}</span><span class="label">agents</span></a>
      ${STATES.map(
        (s) =>
          html`<a class=${`card stat s-${s}${t[s] && s !== 'protected' ? ' alert' : ''}`} href=${agentsLink('', s)} data-state=${s}>
            <span class="n">${t[s]}</span><${Badge} state=${s} />
          </a>`,
      )}
    </section>
    <p class="muted small" data-test="fleet-note">
      Silent: not heard from for more than ${duration(data.silentAfterSeconds)}. Counted at ${dateTime(data.generatedAt)}.
      ${unknown > 0 ? ` ${unknown} ${unknown === 1 ? 'agent does' : 'agents do'} not report a state (older versions).` : ''}
    </p>
    <h2>Per tenant</h2>
    ${
      data.tenants.length === 0
        ? html`<p class="empty">No agent has connected yet.</p>`
        : html`<table class="grid" data-test="tenants">
            <thead>
              <tr>
                <th>Tenant</th>
                <th class="num">Agents</th>
                ${STATES.map((s) => html`<th class="num">${s}</th>`)}
                <th class="barcol">Share</th>
              </tr>
            </thead>
            <tbody>
              ${data.tenants.map(
                (r) =>
                  html`<tr data-tenant=${r.tenant}>
                    <td><a href=${agentsLink(r.tenant, '')}>${r.tenant}</a></td>
                    <td class="num">${r.agents}</td>
                    ${STATES.map(
                      (s) =>
                        html`<td class=${`num ${r[s] && s !== 'protected' ? `hot-${s}` : ''}`} data-state=${s}>
                          ${r[s] ? html`<a href=${agentsLink(r.tenant, s)}>${r[s]}</a>` : '0'}
                        </td>`,
                    )}
                    <td class="barcol"><${Bar} counts=${r} /></td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}
