/**
 * Scan commands (feature scan-command) end to end: a real SVM (port 0) with its admin API, a real
 * `lightagent run` (watcher backend on a temp dir, so the EICAR file placed before it started is
 * found only by a scan), POST /api/agents/<tenant>/<id>/scan -> `scan-now` -> the agent's scan job
 * -> its state report -> the inventory row. Viewer tokens cannot start scans; one pending scan
 * per agent; an agent that did not list the feature is sent nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SvmLink, SvmPool } from '../../src/svm-link/index.js';
import type { SvmServer } from '../../src/svm/server.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { EICAR } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/procs.js';
import { request } from '../../src/control/client.js';
import { CONTROL_SOCKET } from '../../src/control/local-sockets.js';
import { startTestSvm, testAgentOptions, TOKEN } from './helpers.js';
import { api, baseState, eventuallyAsync } from './inventory-helpers.js';
import { MemoryInventoryStore } from '../../src/svm/inventory/memory-store.js';

const ADMIN = 'admin-token-scan-0123456789';
const VIEWER = 'viewer-token-scan-0123456789';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test reads whatever the API sent
function post(base: string, p: string, token: string, body: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const u = new URL(base);
    const text = JSON.stringify(body);
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: p,
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
        timeout: 10_000,
      },
      (res) => {
        let t = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (t += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: t ? JSON.parse(t) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

describe('scan commands from the SVM', () => {
  let svm: SvmServer;
  let agent: Agent;
  let tree: string;
  let eicar: string;
  let agentId: string;
  before(async () => {
    svm = await startTestSvm({
      adminTokens: [
        { token: ADMIN, role: 'admin' },
        { token: VIEWER, role: 'viewer', tenant: 'a' },
      ],
    });
    tree = tempDir('la-scancmd-');
    fs.mkdirSync(path.join(tree, 'x/y'), { recursive: true });
    for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(tree, `x/f${i}.txt`), `file ${i}\n`);
    eicar = path.join(tree, 'x/y/eicar.com');
    fs.writeFileSync(eicar, EICAR);
    agent = await startAgent({ svm: svm.url, token: TOKEN, protect: tree, mode: 'watcher' });
    const row = await eventuallyAsync(async () => {
      const r = await api(svm.httpUrl, '/api/agents', ADMIN);
      return r.body?.agents?.find((a: { state: string }) => a.state === 'protected');
    }, 15_000);
    agentId = row.agentId;
  });
  after(async () => {
    await agent?.stop();
    await svm?.close();
  });

  it('a viewer token cannot start a scan (403), on one agent or a tenant', async () => {
    const one = await post(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}/scan`, VIEWER, {});
    assert.equal(one.status, 403);
    assert.equal(one.body.error.code, 'LA_ERR_ADMIN_FORBIDDEN');
    const many = await post(svm.httpUrl, '/api/scans', VIEWER, { tenant: 'a' });
    assert.equal(many.status, 403);
    const s = await agent.status();
    assert.equal(s.scan, undefined, 'the agent ran nothing');
  });

  it('an admin asks one agent; it scans, quarantines the EICAR file, and the inventory shows the job', async () => {
    const r = await post(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}/scan`, ADMIN, {});
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const id = r.body.scan.id as string;
    // A second click while the first is pending is refused: one pending scan per agent.
    const again = await post(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}/scan`, ADMIN, {});
    assert.equal(again.status, 429);
    assert.equal(again.body.error.code, 'LA_ERR_SCAN_PENDING');
    const row = await eventuallyAsync(
      async () => {
        const x = await api(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}`, ADMIN);
        return x.body?.agent?.scan?.id === id && x.body.agent.scan.state === 'done' ? x.body.agent : undefined;
      },
      20_000,
      'the finished job in the inventory',
    );
    assert.equal(row.scan.trigger, 'svm');
    assert.equal(row.scan.seen, 11);
    assert.equal(row.scan.infected, 1);
    assert.ok(!fs.existsSync(eicar), 'quarantined');
    const local = await agent.status();
    assert.equal(local.scan?.id, id);
    // Finished: the next one is accepted again.
    const third = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: 'a' });
    assert.equal(third.status, 202);
    assert.deepEqual(
      third.body.requested.map((x: { agentId: string }) => x.agentId),
      [agentId],
    );
  });

  it('refuses bad bodies and paths outside the agent protected trees come back refused', async () => {
    const bad = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: '../x' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.parameter, 'tenant');
    await eventuallyAsync(async () => {
      const x = await api(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}`, ADMIN);
      return x.body?.agent?.scan?.state === 'done' ? true : undefined;
    }, 20_000);
    const r = await eventuallyAsync(async () => {
      const p = await post(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}/scan`, ADMIN, { paths: ['/etc'] });
      return p.status === 202 ? p : undefined;
    }, 10_000);
    const refused = await eventuallyAsync(
      async () => {
        const x = await api(svm.httpUrl, `/api/agents/a/${encodeURIComponent(agentId)}`, ADMIN);
        return x.body?.agent?.scan?.id === r.body.scan.id ? x.body.agent.scan : undefined;
      },
      20_000,
      'the refusal in the inventory',
    );
    assert.equal(refused.state, 'refused');
    assert.equal(refused.code, 'LA_ERR_SCAN_PATH');
  });

  it('an agent that did not list scan-command is sent nothing (409)', async () => {
    const old = new SvmLink({
      url: svm.url,
      ...testAgentOptions('old-agent-1', 'old-host', ['state-report']),
      agentVersion: '0.0.9',
    });
    let got = 0;
    old.on('scan-now', () => got++);
    try {
      await old.connect();
      await eventuallyAsync(async () => ((await api(svm.httpUrl, '/api/agents/a/old-agent-1', ADMIN)).status === 200 ? true : undefined));
      const r = await post(svm.httpUrl, '/api/agents/a/old-agent-1/scan', ADMIN, {});
      assert.equal(r.status, 409);
      assert.equal(r.body.error.code, 'LA_ERR_SCAN_UNSUPPORTED');
      const t = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: 'a', agents: ['old-agent-1'] });
      assert.equal(t.status, 202);
      assert.deepEqual(t.body.requested, []);
      assert.equal(t.body.skipped[0].code, 'LA_ERR_SCAN_UNSUPPORTED');
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(got, 0);
      assert.equal(old.state, 'connected', 'no protocol error either');
    } finally {
      old.close();
    }
  });
});

describe('scans of one policy group (POST /api/scans {tenant, group})', () => {
  it('asks only the connected agents that run the group policy; unknown groups 404, group with agents 400', async () => {
    const svm = await startTestSvm({
      adminTokens: [{ token: ADMIN, role: 'admin' }],
      policies: { a: { name: 'fleet', deadline: '3s', groups: [{ name: 'build', hosts: ['build-*'] }] } },
    });
    const link = (agentId: string, host: string) =>
      new SvmLink({ url: svm.url, ...testAgentOptions(agentId, host, ['state-report', 'scan-command', 'policy']) });
    const build = link('agent-build-1', 'build-01');
    const desk = link('agent-desk-1', 'desk-01');
    const got: Record<string, number> = { build: 0, desk: 0 };
    build.on('scan-now', () => got.build!++);
    desk.on('scan-now', () => got.desk!++);
    try {
      await build.connect();
      await desk.connect();
      for (const id of ['agent-build-1', 'agent-desk-1'])
        await eventuallyAsync(async () => ((await api(svm.httpUrl, `/api/agents/a/${id}`, ADMIN)).status === 200 ? true : undefined));
      const r = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: 'a', group: 'build' });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.group, 'build');
      assert.deepEqual(
        r.body.requested.map((x: { agentId: string }) => x.agentId),
        ['agent-build-1'],
      );
      await eventuallyAsync(async () => (got.build === 1 ? true : undefined), 5_000, 'scan-now at the build agent');
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(got.desk, 0, 'the agent outside the group was not asked');
      const unknown = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: 'a', group: 'nope' });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.error.parameter, 'group');
      const both = await post(svm.httpUrl, '/api/scans', ADMIN, { tenant: 'a', group: 'build', agents: ['agent-desk-1'] });
      assert.equal(both.status, 400);
      assert.equal(got.desk, 0);
    } finally {
      build.close();
      desk.close();
      await svm.close();
    }
  });
});

describe('scan reports to an SVM that did not list scan-command', () => {
  it('the agent runs local jobs but its state reports carry no scan field', async () => {
    const svm = await startTestSvm();
    // An SVM of the release before scan-command: state-report, not scan-command.
    svm.core.features.splice(svm.core.features.indexOf('scan-command'), 1);
    const reports: Array<Record<string, unknown>> = [];
    svm.core.observers.add({ connected() {}, disconnected() {}, state: (_a, r) => reports.push(r as unknown as Record<string, unknown>) });
    const tree = tempDir('la-scan-old-svm-');
    fs.writeFileSync(path.join(tree, 'a.txt'), 'a\n');
    const agent = await startAgent({ svm: svm.url, token: TOKEN, protect: tree, mode: 'watcher' });
    try {
      await eventuallyAsync(async () => ((await agent.status()).svm.state === 'connected' ? true : undefined), 15_000, 'the link');
      // Through the control socket, asynchronously: this process also runs the SVM (no spawnSync here).
      await request(path.join(agent.socketDir, CONTROL_SOCKET), { cmd: 'scan-start' });
      await eventuallyAsync(async () => ((await agent.status()).scan?.state === 'done' ? true : undefined), 20_000, 'the job');
      const n = reports.length;
      // A finished job asks for a report (debounced 2 s): wait for one sent after it.
      await eventuallyAsync(async () => (reports.length > n ? true : undefined), 10_000, 'a report after the job');
      const job = (await agent.status()).scan!;
      assert.equal(job.state, 'done');
      assert.equal(job.counters.scanned, 1);
      assert.ok(reports.length > 0);
      assert.ok(
        reports.every((x) => !('scan' in x)),
        JSON.stringify(reports.at(-1)),
      );
    } finally {
      await agent.stop();
      await svm.close();
    }
  });
});

describe('scan commands through an SvmPool', () => {
  it('a command from a pool member that is not the active SVM reaches the agent; a shared inventory ends it', async () => {
    // Two SVMs sharing one inventory store, as SVMs sharing a Redis do.
    const store = new MemoryInventoryStore();
    const active = await startTestSvm({ adminTokens: [{ token: ADMIN, role: 'admin' }], inventory: { store } });
    const other = await startTestSvm({ adminTokens: [{ token: ADMIN, role: 'admin' }], inventory: { store } });
    const pool = new SvmPool({
      svms: [
        { url: active.url, priority: 0 },
        { url: other.url, priority: 1 },
      ],
      ...testAgentOptions('pool-agent-1', 'pool-host', ['state-report', 'scan-command']),
    });
    const got: Array<{ id: string; reason?: string }> = [];
    pool.on('scan-now', (c) => got.push(c));
    try {
      await pool.connect();
      await eventuallyAsync(async () =>
        (await api(other.httpUrl, '/api/agents/a/pool-agent-1', ADMIN)).status === 200 ? true : undefined,
      );
      const r = await post(other.httpUrl, '/api/agents/a/pool-agent-1/scan', ADMIN, {});
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await eventuallyAsync(async () => (got.length === 1 ? true : undefined), 5000, 'the command through the pool');
      assert.equal(got[0]!.id, r.body.scan.id);
      assert.equal(got[0]!.reason, 'console: admin');
      // Still pending on the SVM that sent it...
      assert.equal((await post(other.httpUrl, '/api/agents/a/pool-agent-1/scan', ADMIN, {})).status, 429);
      // ...until the shared inventory shows the job ended: the report went to the active SVM only.
      const now = new Date().toISOString();
      assert.ok(
        pool.reportState({
          ...baseState(),
          scan: {
            id: got[0]!.id,
            trigger: 'svm',
            state: 'done',
            startedAt: now,
            finishedAt: now,
            seen: 1,
            scanned: 1,
            skipped: 0,
            infected: 0,
            errors: 0,
          },
        }),
      );
      await eventuallyAsync(async () => {
        const x = await api(other.httpUrl, '/api/agents/a/pool-agent-1', ADMIN);
        return x.body?.agent?.scan?.state === 'done' ? true : undefined;
      });
      assert.equal((await post(other.httpUrl, '/api/agents/a/pool-agent-1/scan', ADMIN, {})).status, 202);
    } finally {
      pool.close();
      await active.close();
      await other.close();
    }
  });
});
