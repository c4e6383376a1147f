/**
 * The admin API (docs/console.md) on a real SVM (port 0) with real agents speaking state-report:
 * tokens and roles (401 / 403 / a viewer confined to its tenant), every endpoint's shape, query
 * validation (400 naming the parameter), hostile input (huge and odd query strings, path
 * traversal in ids, HTML in host names returned as data), HEAD / POST, TLS on the same port, the
 * state-report feature rule, and the inventory metric.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSvmConfig } from '../../src/svm/config.js';
import type { SvmEvent } from '../../src/svm/events.js';
import type { SvmServer } from '../../src/svm/server.js';
import { eventually, spawnNode, SVM_CLI, tempDir, waitFor } from '../helpers/procs.js';
import { makeTestPki } from './certs.js';
import { startTestSvm } from './helpers.js';
import { api, eventuallyAsync, stateAgent, type StateAgent } from './inventory-helpers.js';

const ADMIN = 'admin-token-0123456789';
const VIEWER_B = 'viewer-b-token-0123456789';
const TOKENS = [
  { tenant: 'a', token: 'tenant-a-token' },
  { tenant: 'b', token: 'tenant-b-token' },
];
const ADMINS = [
  { token: ADMIN, role: 'admin' as const },
  { token: VIEWER_B, role: 'viewer' as const, tenant: 'b' },
];

describe('admin API', () => {
  let s: SvmServer;
  const agents: StateAgent[] = [];
  const events: SvmEvent[] = [];
  const get = (path: string, token: string | null = ADMIN, o?: Parameters<typeof api>[3]) => api(s.httpUrl, path, token ?? undefined, o);

  before(async () => {
    s = await startTestSvm({ tokens: TOKENS, adminTokens: ADMINS });
    s.core.events.subscribe((e) => events.push(e));
    const a1 = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'a-1', host: 'alpha' });
    const a2 = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'a-2', host: '<img src=x onerror=alert(1)>' });
    const b1 = await stateAgent(s.url, { token: 'tenant-b-token', agentId: 'b-1', host: 'bravo' });
    agents.push(a1, a2, b1);
    a1.state();
    a2.state({ state: 'degraded', reasons: ['svm-unreachable', 'files-queued'], deferred: 7, generation: 'old' });
    b1.state({ cache: { entries: 0, hits: 0, misses: 0 } });
    a1.detection();
    a1.detection({ threat: 'Second', path: '/home/u/x.exe' });
    await eventuallyAsync(async () => (await get('/api/agents')).body?.total === 3 && (await get('/api/detections')).body?.total === 2);
  });
  after(async () => {
    for (const a of agents) a.ws.terminate();
    await s.close();
  });

  it('welcome lists state-report', () => {
    const w = agents[0]!.msgs.find((m) => m.t === 'welcome');
    assert.ok(w && w.t === 'welcome' && w.features?.includes('state-report'));
  });

  it('401 without a token or with an unknown one; 403 with an agent token', async () => {
    for (const [token, headers] of [
      [null, {}],
      ['nope-nope-nope-nope', {}],
      [null, { authorization: 'Basic YWRtaW46eA==' }],
      [null, { authorization: `Bearer ${ADMIN} extra` }],
      [null, { authorization: 'Bearer ' }],
      [null, { authorization: `bearer${ADMIN}` }],
    ] as const) {
      const r = await get('/api/agents', token, { headers: { ...headers } });
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.equal(r.body.error.code, 'LA_ERR_ADMIN_AUTH');
      assert.equal(r.headers['cache-control'], 'no-store');
    }
    for (const path of ['/api/agents', '/api/whoami', '/api/svm', '/api/nothing']) {
      const r = await get(path, 'tenant-a-token');
      assert.equal(r.status, 403, path);
      assert.equal(r.body.error.code, 'LA_ERR_ADMIN_FORBIDDEN');
      assert.doesNotMatch(r.text, /alpha|a-1/);
    }
    // Unauthenticated probing learns nothing about paths either.
    assert.equal((await get('/api/agents/a/a-1', null)).status, 401);
  });

  it('whoami, headers, HEAD, POST', async () => {
    const r = await get('/api/whoami');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { role: 'admin', tenant: null });
    assert.equal(r.headers['cache-control'], 'no-store');
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.deepEqual((await get('/api/whoami', VIEWER_B)).body, { role: 'viewer', tenant: 'b' });
    const h = await get('/api/agents', ADMIN, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(h.text, '');
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const p = await get('/api/agents', ADMIN, { method });
      assert.equal(p.status, 405, method);
      assert.equal(p.body.error.code, 'LA_ERR_ADMIN_METHOD');
    }
    assert.equal((await get('/api/nothing')).status, 404);
    assert.equal((await get('/api/nothing')).body.error.code, 'LA_ERR_ADMIN_NOT_FOUND');
  });

  it('GET /api/agents: rows with the contract fields, filters, sort, paging', async () => {
    const r = await get('/api/agents');
    assert.equal(r.body.total, 3);
    const a1 = r.body.agents.find((x: { agentId: string }) => x.agentId === 'a-1');
    assert.deepEqual(Object.keys(a1).sort(), [
      'agentId',
      'agentVersion',
      'cache',
      'connected',
      'deferred',
      'detections',
      'detectionsReported',
      'firstSeen',
      'generation',
      'generationCurrent',
      'host',
      'hypervisor',
      'lastSeen',
      'mode',
      'os',
      'osRelease',
      'policy',
      'policyCurrent',
      'policyExpected',
      'reasons',
      'scan',
      'silent',
      'since',
      'state',
      'svmId',
      'tenant',
    ]);
    assert.equal(a1.tenant, 'a');
    assert.equal(a1.host, 'alpha');
    assert.equal(a1.state, 'protected');
    assert.equal(a1.connected, true);
    assert.equal(a1.svmId, s.core.opts.svmId);
    assert.equal(a1.silent, false);
    assert.equal(a1.mode, 'fanotify');
    assert.equal(a1.generation, 'g1');
    assert.equal(a1.generationCurrent, false);
    assert.deepEqual(a1.cache, { entries: 10, hitRate: 0.75 });
    assert.equal(a1.detections, 2);
    assert.equal(a1.policy, null);
    assert.ok(Date.parse(a1.firstSeen) <= Date.parse(a1.lastSeen));
    const b1 = r.body.agents.find((x: { agentId: string }) => x.agentId === 'b-1');
    assert.equal(b1.cache.hitRate, null);

    const degraded = await get('/api/agents?state=degraded');
    assert.deepEqual(
      degraded.body.agents.map((x: { agentId: string; reasons: string[]; deferred: number }) => [x.agentId, x.reasons, x.deferred]),
      [['a-2', ['svm-unreachable', 'files-queued'], 7]],
    );
    assert.deepEqual(
      (await get('/api/agents?tenant=b')).body.agents.map((x: { agentId: string }) => x.agentId),
      ['b-1'],
    );
    assert.deepEqual(
      (await get('/api/agents?q=ALP')).body.agents.map((x: { agentId: string }) => x.agentId),
      ['a-1'],
    );
    assert.deepEqual(
      (await get('/api/agents?q=b-')).body.agents.map((x: { agentId: string }) => x.agentId),
      ['b-1'],
    );
    const byDet = await get('/api/agents?sort=detections&order=desc');
    assert.equal(byDet.body.agents[0].agentId, 'a-1');
    const page = await get('/api/agents?sort=host&limit=1&offset=1');
    assert.equal(page.body.total, 3);
    assert.equal(page.body.agents.length, 1);
    assert.equal(page.body.agents[0].agentId, 'a-1'); // '<img...' < 'alpha' < 'bravo'
    assert.deepEqual((await get('/api/agents?state=silent')).body, { total: 0, agents: [] });
  });

  it('400 for a bad query value, naming the parameter', async () => {
    for (const [q, param] of [
      ['state=fine', 'state'],
      ['sort=password', 'sort'],
      ['order=up', 'order'],
      ['limit=0', 'limit'],
      ['limit=501', 'limit'],
      ['limit=1e3', 'limit'],
      ['limit=-1', 'limit'],
      ['offset=x', 'offset'],
      ['tenant=../../etc', 'tenant'],
      ['tenant=a&tenant=b', 'tenant'],
      [`q=${'x'.repeat(300)}`, 'q'],
    ]) {
      const r = await get(`/api/agents?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.body.error.code, 'LA_ERR_ADMIN_BAD_REQUEST');
      assert.equal(r.body.error.parameter, param, q);
      assert.match(r.body.error.message, new RegExp(param));
    }
    for (const [path, param] of [
      ['/api/detections?limit=1001', 'limit'],
      ['/api/detections?since=yesterday', 'since'],
      ['/api/detections/timeline?hours=721', 'hours'],
      ['/api/detections/timeline?hours=0', 'hours'],
    ]) {
      const r = await get(path);
      assert.equal(r.status, 400, path);
      assert.equal(r.body.error.parameter, param);
    }
    const huge = await get(`/api/agents?q=${'%41'.repeat(3000)}`);
    assert.equal(huge.status, 400);
    assert.equal(huge.body.error.parameter, 'url');
    // Odd but harmless: unknown parameters are ignored, unicode and encoded NULs are just text.
    assert.equal((await get('/api/agents?zzz=1&q=%00%F0%9F%98%80')).body.total, 0);
    assert.equal((await get('/api/agents?q=%E0%A4%A')).status, 200);
  });

  it('GET /api/agents/<tenant>/<agentId>: the row, history newest first, detections; 404 otherwise', async () => {
    const r = await get('/api/agents/a/a-2');
    assert.equal(r.status, 200);
    assert.equal(r.body.agent.agentId, 'a-2');
    assert.equal(r.body.agent.state, 'degraded');
    assert.equal(r.body.history.length, 1);
    assert.equal(r.body.history[0].state, 'degraded');
    assert.deepEqual(r.body.history[0].reasons, ['svm-unreachable', 'files-queued']);
    assert.deepEqual(r.body.detections, []);
    const d = await get('/api/agents/a/a-1');
    assert.deepEqual(
      d.body.detections.map((x: { threat: string }) => x.threat),
      ['Second', 'Eicar-Test-Signature'],
    );
    assert.deepEqual(d.body.detections[1].process, { pid: 42, exe: '/usr/bin/cp', uid: 1000 });
    for (const path of [
      '/api/agents/a/nobody',
      '/api/agents/zz/a-1',
      '/api/agents/b/a-1',
      '/api/agents/a/a-1/extra',
      '/api/agents/a/..%2F..%2Fetc%2Fpasswd',
      '/api/agents/..%2Fa/a-1',
      '/api/agents/a/../../metrics',
      `/api/agents/a/${'x'.repeat(3000)}`,
    ]) {
      const x = await get(path);
      assert.ok(x.status === 404 || x.status === 400, `${path}: ${x.status}`);
      assert.doesNotMatch(x.text, /root:|lightagent_svm_/);
    }
    assert.equal((await get('/api/agents/a/%E0%A4%A')).status, 400);
  });

  it('HTML in a host name is data: escaped in the JSON text, the same string when parsed', async () => {
    const r = await get('/api/agents?tenant=a&q=img');
    assert.equal(r.body.agents[0].host, '<img src=x onerror=alert(1)>');
    assert.doesNotMatch(r.text, /<img/);
    assert.match(r.text, /\\u003cimg/);
  });

  it('a viewer sees its tenant only', async () => {
    const r = await get('/api/agents', VIEWER_B);
    assert.deepEqual(
      r.body.agents.map((x: { agentId: string }) => x.agentId),
      ['b-1'],
    );
    assert.deepEqual((await get('/api/agents?tenant=a', VIEWER_B)).body, { total: 0, agents: [] });
    assert.equal((await get('/api/agents/a/a-1', VIEWER_B)).status, 404);
    assert.equal((await get('/api/agents/b/b-1', VIEWER_B)).status, 200);
    assert.deepEqual((await get('/api/detections', VIEWER_B)).body, { total: 0, detections: [] });
    assert.deepEqual((await get('/api/detections?tenant=a', VIEWER_B)).body, { total: 0, detections: [] });
    const f = await get('/api/fleet', VIEWER_B);
    assert.deepEqual(f.body.totals, { agents: 1, protected: 1, degraded: 0, off: 0, silent: 0 });
    assert.deepEqual(
      f.body.tenants.map((t: { tenant: string }) => t.tenant),
      ['b'],
    );
    const tl = await get('/api/detections/timeline', VIEWER_B);
    assert.equal(
      tl.body.buckets.reduce((n: number, b: { count: number }) => n + b.count, 0),
      0,
    );
  });

  it('GET /api/fleet', async () => {
    const r = await get('/api/fleet');
    assert.equal(r.body.silentAfterSeconds, 900);
    assert.ok(Number.isFinite(Date.parse(r.body.generatedAt)));
    assert.deepEqual(r.body.totals, { agents: 3, protected: 2, degraded: 1, off: 0, silent: 0 });
    assert.deepEqual(r.body.tenants, [
      { tenant: 'a', agents: 2, protected: 1, degraded: 1, off: 0, silent: 0 },
      { tenant: 'b', agents: 1, protected: 1, degraded: 0, off: 0, silent: 0 },
    ]);
  });

  it('GET /api/detections and /api/detections/timeline', async () => {
    const r = await get('/api/detections');
    assert.equal(r.body.total, 2);
    const d = r.body.detections[0];
    assert.deepEqual(Object.keys(d).sort(), ['action', 'agentId', 'host', 'path', 'process', 'sha256', 'tenant', 'threat', 'time']);
    assert.equal(d.tenant, 'a');
    assert.equal(d.host, 'alpha');
    assert.equal((await get('/api/detections?limit=1')).body.detections.length, 1);
    assert.equal((await get('/api/detections?limit=1')).body.total, 2);
    assert.equal((await get('/api/detections?agent=a-2')).body.total, 0);
    assert.equal((await get(`/api/detections?since=${new Date(Date.now() + 3600_000).toISOString()}`)).body.total, 0);
    const tl = await get('/api/detections/timeline?hours=3');
    assert.equal(tl.body.bucketSeconds, 3600);
    assert.equal(tl.body.buckets.length, 3);
    assert.equal(tl.body.buckets[2].count, 2);
    assert.ok(Date.parse(tl.body.buckets[0].start) < Date.parse(tl.body.buckets[2].start));
    assert.equal((await get('/api/detections/timeline')).body.buckets.length, 24);
  });

  it('GET /api/svm', async () => {
    const r = await get('/api/svm');
    assert.deepEqual(Object.keys(r.body).sort(), [
      'agentsConnected',
      'cache',
      'engine',
      'engineHealthy',
      'generation',
      'load',
      'queue',
      'signatureAgeSeconds',
      'signaturesStale',
      'status',
      'svmId',
      'uptimeSeconds',
      'version',
    ]);
    assert.equal(r.body.agentsConnected, 3);
    assert.equal(r.body.engine, 'builtin');
    assert.equal(r.body.status, 'ok');
    assert.equal(r.body.signatureAgeSeconds, null);
    assert.equal(r.body.signaturesStale, false);
    assert.deepEqual(Object.keys(r.body.cache).sort(), ['entries', 'healthy', 'kind']);
  });

  it('publishes protection changes and serves the inventory metric', async () => {
    agents[1]!.state({ state: 'protected', reasons: [] });
    const first = events.find((x) => x.kind === 'protection' && x.agentId === 'a-2');
    assert.equal(first?.kind === 'protection' && `${first.previous}->${first.state}`, 'unknown->degraded');
    // A first report of `protected` is no change worth an event.
    assert.equal(events.filter((x) => x.kind === 'protection' && x.agentId === 'a-1').length, 0);
    const e = await eventually(() => events.find((x) => x.kind === 'protection' && x.agentId === 'a-2' && x.previous === 'degraded'));
    assert.equal(e.kind === 'protection' && `${e.previous}->${e.state}`, 'degraded->protected');
    await eventuallyAsync(async () => (await get('/api/agents/a/a-2')).body.history.length === 2);
    const text = await eventuallyAsync(async () => {
      const t = await (await fetch(`${s.httpUrl}/metrics`)).text();
      return /lightagent_svm_inventory_agents\{tenant="a",state="protected"\} 2/.test(t) ? t : undefined;
    });
    assert.match(text, /lightagent_svm_inventory_agents\{tenant="b",state="silent"\} 0/);
  });
});

describe('admin API: state-report rule, TLS, silences', () => {
  it('an SVM without an inventory does not list state-report; a state frame there is a protocol error', async () => {
    const s = await startTestSvm({ inventory: false, adminTokens: [{ token: ADMIN, role: 'admin' }] });
    try {
      const a = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'x' });
      const w = a.msgs.find((m) => m.t === 'welcome');
      assert.ok(w && w.t === 'welcome' && !w.features?.includes('state-report'));
      a.state();
      assert.equal(await a.closed, 4000);
      assert.equal((await api(s.httpUrl, '/api/agents', ADMIN)).status, 404);
    } finally {
      await s.close();
    }
  });

  it('a malformed state frame closes only that agent (4000 / 4003); the SVM goes on', async () => {
    const s = await startTestSvm({ adminTokens: [{ token: ADMIN, role: 'admin' }] });
    try {
      const good = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'good' });
      const bad = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'bad' });
      bad.state({ reasons: Array.from({ length: 40 }, () => 'x') });
      assert.equal(await bad.closed, 4003);
      const bad2 = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'bad2' });
      bad2.ws.send(JSON.stringify({ t: 'state', state: 'protected' }));
      assert.equal(await bad2.closed, 4000);
      good.state();
      await eventuallyAsync(async () => (await api(s.httpUrl, '/api/agents/a/good', ADMIN)).body?.agent?.state === 'protected');
      good.ws.terminate();
    } finally {
      await s.close();
    }
  });

  it('serves the API over the same TLS as the agents', async (t) => {
    const pki = makeTestPki();
    if (!pki) return t.skip('openssl missing');
    const s = await startTestSvm({
      tls: { cert: pki.read(pki.serverCert), key: pki.read(pki.serverKey) },
      adminTokens: [{ token: ADMIN, role: 'admin' }],
    });
    try {
      assert.match(s.httpUrl, /^https:/);
      const a = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'tls-1', ws: { ca: pki.read(pki.caCert) } });
      a.state();
      const r = await eventuallyAsync(async () => {
        const x = await api(s.httpUrl, '/api/agents', ADMIN, { ca: pki.read(pki.caCert) });
        return x.body?.total === 1 ? x : undefined;
      });
      assert.equal(r.body.agents[0].state, 'protected');
      assert.equal((await api(s.httpUrl, '/api/agents', undefined, { ca: pki.read(pki.caCert) })).status, 401);
      // Plain http to the TLS port gets no API.
      await assert.rejects(api(s.httpUrl.replace('https:', 'http:'), '/api/whoami', ADMIN));
      a.ws.terminate();
    } finally {
      await s.close();
    }
  });

  it('flags agents silent past silent_after, and back when heard again', async () => {
    const s = await startTestSvm({ adminTokens: [{ token: ADMIN, role: 'admin' }], inventory: { silentAfterMs: 600, sweepMs: 100 } });
    const events: SvmEvent[] = [];
    s.core.events.subscribe((e) => events.push(e));
    try {
      const a = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'quiet' });
      a.state();
      await a.close();
      const silent = await eventually(() => events.find((e) => e.kind === 'agent-silent'), 5000, 'agent-silent');
      assert.equal(silent.kind === 'agent-silent' && silent.agentId, 'quiet');
      const r = await api(s.httpUrl, '/api/agents?state=silent', ADMIN);
      assert.equal(r.body.total, 1);
      assert.equal(r.body.agents[0].connected, false);
      assert.equal(r.body.agents[0].silent, true);
      assert.equal((await api(s.httpUrl, '/api/fleet', ADMIN)).body.totals.silent, 1);
      const b = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'quiet' });
      await eventually(() => events.find((e) => e.kind === 'agent-back'), 5000, 'agent-back');
      assert.equal(events.filter((e) => e.kind === 'agent-silent').length, 1);
      b.ws.terminate();
    } finally {
      await s.close();
    }
  });
});

describe('admin tokens in the config', () => {
  const base = { tokens: ['agent-token-1234'] };
  it('admin_tokens, admin_token_file, --admin-token, viewer needs its tenant', () => {
    const dir = tempDir('la-admin-cfg-');
    fs.writeFileSync(
      path.join(dir, 'svm.yaml'),
      'tokens: [agent-token-1234]\nadmin_tokens: [{token: viewer-token-0123456789, role: viewer, tenant: acme}]\n' +
        `admin_token_file: ${path.join(dir, 'admins.yaml')}\n`,
    );
    fs.writeFileSync(path.join(dir, 'admins.yaml'), '- {token: file-admin-token-0123, role: admin}\n');
    const c = loadSvmConfig({ file: path.join(dir, 'svm.yaml'), env: {}, flags: { admin_token: ['flag-admin-token-0123'] } });
    assert.deepEqual(c.admin_tokens, [
      { token: 'viewer-token-0123456789', role: 'viewer', tenant: 'acme' },
      { token: 'file-admin-token-0123', role: 'admin' },
      { token: 'flag-admin-token-0123', role: 'admin' },
    ]);
    assert.equal(c.inventory.silent_after, 15 * 60_000);
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { ...base, admin_tokens: [{ token: 'viewer-token-0123456789', role: 'viewer' }] } }),
      /admin_tokens\.0\.tenant: a viewer token needs the tenant/,
    );
    assert.throws(() => loadSvmConfig({ env: {}, flags: { ...base, admin_token: ['short'] } }), /admin_tokens\.0\.token/);
  });

  it('refuses an admin token that is also an agent token, naming the key', () => {
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { tokens: ['same-token-0123456789'], admin_token: ['same-token-0123456789'] } }),
      /admin_tokens\.0: this admin token is also an agent token/,
    );
    assert.throws(
      () =>
        loadSvmConfig({
          env: { LIGHTAGENT_SVM_TOKEN: 'same-token-0123456789' },
          flags: { admin_tokens: [{ token: 'same-token-0123456789', role: 'viewer', tenant: 'x' }] },
        }),
      /admin_tokens\.0: this admin token is also an agent token/,
    );
  });
});

describe('lightagent-svm: --admin-token, --state-dir', () => {
  it('serves the API with a flag token, keeps the inventory across a restart, reloads admin tokens on SIGHUP', async () => {
    const dir = tempDir('la-svm-inv-');
    const state = path.join(dir, 'state');
    const cfg = path.join(dir, 'svm.yaml');
    fs.writeFileSync(
      cfg,
      'tokens: [{tenant: a, token: tenant-a-token}]\nadmin_tokens: [{token: viewer-a-token-0123456, role: viewer, tenant: a}]\n',
    );
    const start = async () => {
      const p = spawnNode(
        SVM_CLI,
        [
          '--config',
          cfg,
          '--listen',
          '127.0.0.1:0',
          '--admin-token',
          ADMIN,
          '--state-dir',
          state,
          '--json',
          '--log-file',
          path.join(dir, 'svm.log'),
        ],
        {
          watchdogMs: 60_000,
        },
      );
      const line = JSON.parse((await waitFor(p, /^\{"event":"listening".*\}$/m))[0]) as { url: string };
      return { p, url: line.url, http: line.url.replace(/^ws/, 'http') };
    };
    let s = await start();
    try {
      assert.deepEqual((await api(s.http, '/api/whoami', ADMIN)).body, { role: 'admin', tenant: null });
      assert.deepEqual((await api(s.http, '/api/whoami', 'viewer-a-token-0123456')).body, { role: 'viewer', tenant: 'a' });
      assert.equal((await api(s.http, '/api/whoami', 'tenant-a-token')).status, 403);
      assert.match((await api(s.http, '/api/svm', ADMIN)).body.version, /^\d+\.\d+\.\d+/);
      const a = await stateAgent(s.url, { token: 'tenant-a-token', agentId: 'kept' });
      a.state({ state: 'degraded', reasons: ['files-queued'] });
      await eventuallyAsync(async () => (await api(s.http, '/api/agents/a/kept', ADMIN)).body?.agent?.state === 'degraded');
      // SIGHUP: the viewer token is gone from the file.
      fs.writeFileSync(cfg, 'tokens: [{tenant: a, token: tenant-a-token}]\n');
      s.p.child.kill('SIGHUP');
      await waitFor(s.p, /"event":"reloaded"/);
      assert.equal((await api(s.http, '/api/whoami', 'viewer-a-token-0123456')).status, 401);
      a.ws.terminate();
      assert.equal(await s.p.stop('SIGTERM'), 0);
      assert.equal(fs.statSync(path.join(state, 'inventory.json')).mode & 0o777, 0o600);
      s = await start();
      const r = await api(s.http, '/api/agents/a/kept', ADMIN);
      assert.equal(r.body.agent.state, 'degraded');
      assert.equal(r.body.agent.connected, false);
      assert.doesNotMatch(fs.readFileSync(path.join(dir, 'svm.log'), 'utf8'), new RegExp(ADMIN), 'the admin token is never logged');
    } finally {
      await s.p.stop('SIGKILL');
    }
  });

  it('exits 2 naming the key when an admin token is an agent token', () => {
    const r = spawnSync(
      process.execPath,
      [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'same-token-0123456789', '--admin-token', 'same-token-0123456789'],
      {
        timeout: 15_000,
        env: { ...process.env, LIGHTAGENT_SVM_TOKEN: '' },
      },
    );
    assert.equal(r.status, 2);
    assert.match(r.stderr.toString(), /admin_tokens\.0: this admin token is also an agent token/);
    assert.doesNotMatch(r.stderr.toString(), /same-token-0123456789/);
  });
});
