// One agent: its state and reasons, what it runs, its state history and its detections.
import { api, usePoll } from '../api.js';
import { ago, Badge, dateTime, ErrorBox, percent } from '../format.js';
import { html } from '../vendor-html.js';
import { DetectionTable } from './detections.js';
import { ScanButton, ScanFacts } from '../scan.js';

const detectionsOf = (a) => `#/detections?tenant=${encodeURIComponent(a.tenant)}&agent=${encodeURIComponent(a.agentId)}`;

export function Agent({ tenant, agentId, whoami }) {
  const { data, error } = usePoll(
    () => api(`agents/${encodeURIComponent(tenant ?? '')}/${encodeURIComponent(agentId ?? '')}`),
    [tenant, agentId],
  );
  const back = html`<p class="small"><a href="#/agents">← All agents</a></p>`;
  if (!data)
    return html`${back}
      <h1>Agent</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<p class="muted">Loading…</p>`}`;
  const a = data.agent;
  const c = a.cache ?? { entries: 0, hitRate: null };
  return html`${back}
    <h1 class="agent-title">
      <span data-test="agent-host">${a.host}</span> <${Badge} state=${a.state} />${a.silent ? html` <${Badge} state="silent" />` : null}
    </h1>
    <${ErrorBox} error=${error} />
    ${
      a.silent
        ? html`<p class="notice">Not heard from since ${dateTime(a.lastSeen)} (${ago(a.lastSeen)}): its state below may be out of date.</p>`
        : null
    }
    ${
      a.reasons.length
        ? html`<ul class="reasons-list" data-test="reasons">
            ${a.reasons.map((r) => html`<li>${r}</li>`)}
          </ul>`
        : a.state === 'protected'
          ? null
          : html`<p class="muted">No reason reported.</p>`
    }
    <dl class="facts" data-test="facts">
      <dt>Agent id</dt>
      <dd class="mono">${a.agentId}</dd>
      <dt>Tenant</dt>
      <dd>${a.tenant}</dd>
      <dt>OS</dt>
      <dd>${a.os}</dd>
      <dt>Agent version</dt>
      <dd>${a.agentVersion}</dd>
      <dt>Connection</dt>
      <dd>${a.connected ? `connected to ${a.svmId ?? 'an SVM'}` : 'not connected'}</dd>
      <dt>First seen</dt>
      <dd>${dateTime(a.firstSeen)}</dd>
      <dt>Last seen</dt>
      <dd>${dateTime(a.lastSeen)} (${ago(a.lastSeen)})</dd>
      <dt>Mode</dt>
      <dd>${a.mode ?? '—'}</dd>
      <dt>Signatures</dt>
      <dd data-test="generation">
        ${a.generation ?? '—'}
        ${
          a.generation === null
            ? null
            : a.generationCurrent
              ? html`${' '}<span class="ok-text">(current)</span>`
              : html`${' '}<span class="warn-text">(behind the SVM)</span>`
        }
      </dd>
      <dt>Local cache</dt>
      <dd data-test="cache">${c.entries} entries, hit rate ${percent(c.hitRate)}</dd>
      <dt>Deferred scans</dt>
      <dd data-test="deferred">${a.deferred}${a.deferred ? ' waiting for an SVM' : ''}</dd>
      <dt>Policy</dt>
      <dd data-test="policy">
        ${a.policy ? `${a.policy.name} v${a.policy.version}` : 'none: local settings'}
        ${
          a.policyExpected === undefined || (a.policyExpected === null && a.policyCurrent)
            ? null
            : a.policyCurrent
              ? html`${' '}<span class="ok-text">(current)</span>`
              : html`${' '}<span class="warn-text" data-test="policy-expected">(${expectedText(a.policyExpected)})</span>`
        }
      </dd>
      <dt>Detections</dt>
      <dd>${a.detections}${a.detections ? html` · <a href=${detectionsOf(a)}>show them all</a>` : null}</dd>
      <dt>Last scan</dt>
      <dd data-test="scan"><${ScanFacts} scan=${a.scan} /></dd>
    </dl>
    <p>
      <${ScanButton}
        whoami=${whoami}
        label="Scan now"
        path=${`agents/${encodeURIComponent(a.tenant)}/${encodeURIComponent(a.agentId)}/scan`}
        body=${{}}
      />
    </p>
    <h2>State history</h2>
    ${
      data.history.length === 0
        ? html`<p class="empty">No state change recorded.</p>`
        : html`<table class="grid" data-test="history">
            <thead>
              <tr>
                <th>Time</th>
                <th>State</th>
                <th>Reasons</th>
              </tr>
            </thead>
            <tbody>
              ${data.history.map(
                (h) =>
                  html`<tr>
                    <td class="nowrap">${dateTime(h.time)}</td>
                    <td><${Badge} state=${h.state} /></td>
                    <td>${h.reasons.join(', ') || '—'}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
    <h2>Detections</h2>
    <${DetectionTable} detections=${data.detections} showHost=${false} />`;
}

/** What the SVM would send this agent now, when it runs something else. */
function expectedText(p) {
  return p ? `the current one is ${p.name} v${p.version}` : 'no policy now';
}
