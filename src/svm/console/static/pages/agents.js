// The agents table: filters, search and sort live in the URL's hash, so a refresh (automatic or
// the browser's) keeps them.
import { api, usePoll } from '../api.js';
import { agentHref, ago, Badge, ErrorBox, setQuery } from '../format.js';
import { html, useEffect, useRef, useState } from '../vendor-html.js';
import { ScanButton, scanText } from '../scan.js';

const PAGE = 50;
const STATES = ['protected', 'degraded', 'off', 'silent'];
const COLUMNS = [
  ['host', 'Host', true],
  ['tenant', 'Tenant', true],
  ['state', 'State', true],
  ['lastSeen', 'Last seen', true],
  [null, 'Version', false],
  [null, 'Signatures', false],
  ['detections', 'Detections', true],
  [null, 'Policy', false],
  [null, 'Last scan', false],
];

export function Agents({ query, whoami }) {
  const tenant = query.get('tenant') || '';
  const state = query.get('state') || '';
  const q = query.get('q') || '';
  const sort = query.get('sort') || 'host';
  const order = query.get('order') === 'desc' ? 'desc' : 'asc';
  const offset = Math.max(0, Number(query.get('offset')) || 0);
  const [search, setSearch] = useState(q);
  const debounce = useRef(0);
  useEffect(() => setSearch(q), [q]);

  const fleet = usePoll(() => api('fleet'), []);
  const { data, error, loading } = usePoll(
    () => api('agents', { tenant, state, q, sort, order, limit: PAGE, offset }),
    [tenant, state, q, sort, order, offset],
    true,
  );
  const tenants = fleet.data ? fleet.data.tenants.map((t) => t.tenant) : whoami?.tenant ? [whoami.tenant] : [];

  const onSearch = (e) => {
    const v = e.currentTarget.value;
    setSearch(v);
    clearTimeout(debounce.current);
    debounce.current = setTimeout(() => setQuery({ q: v.trim(), offset: '' }), 300);
  };
  const sortBy = (key) => setQuery({ sort: key, order: sort === key && order === 'asc' ? 'desc' : 'asc', offset: '' });

  return html`<h1>Agents</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()} role="search">
      <label
        >Tenant
        <select name="tenant" value=${tenant} onChange=${(e) => setQuery({ tenant: e.currentTarget.value, offset: '' })}>
          <option value="">all tenants</option>
          ${tenants.map((t) => html`<option value=${t}>${t}</option>`)}
        </select>
      </label>
      <label
        >State
        <select name="state" value=${state} onChange=${(e) => setQuery({ state: e.currentTarget.value, offset: '' })}>
          <option value="">any state</option>
          ${STATES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select>
      </label>
      <label class="grow"
        >Search
        <input name="q" type="search" placeholder="host name or agent id" value=${search} onInput=${onSearch} spellcheck="false" />
      </label>
    </form>
    ${
      tenant
        ? html`<p>
            <${ScanButton} whoami=${whoami} label=${`Scan every connected agent of ${tenant}`} path="scans" body=${{ tenant }} />
          </p>`
        : null
    }
    <${ErrorBox} error=${error} />
    ${
      !data
        ? error
          ? null
          : html`<p class="muted">Loading…</p>`
        : html`<p class="muted small" data-test="count">
              ${data.total === 0 ? 'No agent matches.' : `${offset + 1}–${offset + data.agents.length} of ${data.total} agents`}
              ${loading ? ' · refreshing…' : ''}
            </p>
            <div class="scroll">
              <table class="grid agents" data-test="agents">
                <thead>
                  <tr>
                    ${COLUMNS.map(([key, label, sortable]) =>
                      sortable
                        ? html`<th aria-sort=${sort === key ? (order === 'asc' ? 'ascending' : 'descending') : 'none'}>
                            <button type="button" class="sort" data-sort=${key} onClick=${() => sortBy(key)}>
                              ${label} <span aria-hidden="true">${sort === key ? (order === 'asc' ? '▲' : '▼') : '↕'}</span>
                            </button>
                          </th>`
                        : html`<th>${label}</th>`,
                    )}
                  </tr>
                </thead>
                <tbody>
                  ${
                    data.agents.length === 0
                      ? html`<tr>
                          <td colspan=${COLUMNS.length} class="empty">No agent matches these filters.</td>
                        </tr>`
                      : data.agents.map((a) => html`<${Row} a=${a} />`)
                  }
                </tbody>
              </table>
            </div>
            <div class="pager">
              <button type="button" disabled=${offset === 0} onClick=${() => setQuery({ offset: Math.max(0, offset - PAGE) || '' })}>
                ← Previous
              </button>
              <button
                type="button"
                disabled=${offset + data.agents.length >= data.total}
                onClick=${() => setQuery({ offset: offset + PAGE })}
              >
                Next →
              </button>
            </div>`
    }`;
}

function Row({ a }) {
  const cls = [a.silent ? 'silent' : '', `row-${a.state}`].join(' ');
  return html`<tr class=${cls} data-agent=${a.agentId}>
    <td>
      <a href=${agentHref(a.tenant, a.agentId)} class="host">${a.host}</a>
      <div class="muted small mono">${a.agentId}</div>
    </td>
    <td>${a.tenant}</td>
    <td>
      <${Badge} state=${a.state} />${a.silent ? html` <${Badge} state="silent" />` : null}
      ${a.reasons.length ? html`<div class="small reasons">${a.reasons.join(', ')}</div>` : null}
    </td>
    <td title=${a.lastSeen}>${ago(a.lastSeen)}${a.connected ? '' : html`<div class="small muted">not connected</div>`}</td>
    <td>
      ${a.agentVersion}
      <div class="small muted">${a.os}</div>
    </td>
    <td>
      ${
        a.generation === null
          ? '—'
          : a.generationCurrent
            ? html`<span class="ok-text">current</span>`
            : html`<span class="warn-text">behind</span>`
      }
    </td>
    <td class="num">${a.detections}</td>
    <td data-test="policy">
      ${a.policy ? html`${a.policy.name} <span class="small muted mono">v${shortVersion(a.policy)}</span>` : LOCAL}
      ${
        a.policyExpected === undefined || (a.policyExpected === null && a.policyCurrent)
          ? null
          : a.policyCurrent
            ? html`<div class="small ok-text">current</div>`
            : html`<div
                class="small warn-text"
                title=${a.policyExpected ? `the tenant's: ${a.policyExpected.name} v${a.policyExpected.version}` : ''}
              >
                ${!a.policyExpected ? 'no policy expected' : a.policy ? 'not the current one' : 'not applied'}
              </div>`
      }
    </td>
    <td class="small" data-test="scan">${scanText(a.scan)}</td>
  </tr>`;
}

const LOCAL = html`<span class="muted">local</span>`;

/** The first 8 hex digits of a policy version: enough to tell two apart in a table. */
function shortVersion(p) {
  return p.version.slice(0, 8);
}
