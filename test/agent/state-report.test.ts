/**
 * State reports from the agent (feature state-report) to a real SVM (port 0): sent after the
 * welcome, debounced on change (never chatty), only to an SVM that speaks the feature, a
 * heartbeat never under 30 s; and a real daemon (`lightagent run`, the watcher backend on a temp
 * dir: no fanotify mark) that appears in GET /api/agents as protected.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StateReport } from '../../src/protocol/index.js';
import { StateReporter, boundFigures, type StateFigures } from '../../src/agent/state-reporter.js';
import { SvmLink, SvmPool } from '../../src/svm-link/index.js';
import { startAgent } from '../helpers/agent.js';
import { eventually, tempDir } from '../helpers/procs.js';
import { startTestSvm, testAgentOptions, TOKEN } from '../svm/helpers.js';
import { api, eventuallyAsync } from '../svm/inventory-helpers.js';

const ADMIN = 'admin-token-0123456789';

function link(url: string, agentId: string, features = ['state-report']) {
  return new SvmLink({ url, ...testAgentOptions(agentId, `host-${agentId}`, features) });
}

const figures = (over: Partial<StateFigures> = {}): StateFigures => ({
  mode: 'watcher',
  state: 'protected',
  reasons: [],
  since: new Date().toISOString(),
  agentVersion: '0.1.0',
  os: 'linux',
  cache: { entries: 1, hits: 1, misses: 1 },
  deferred: 0,
  detections: 0,
  ...over,
});

describe('agent state reports', () => {
  it('one report after welcome, then at most one per 2 s however often things change', async () => {
    const s = await startTestSvm({ adminTokens: [{ token: ADMIN, role: 'admin' }] });
    const got: Array<Omit<StateReport, 't'>> = [];
    s.core.observers.add({ connected() {}, disconnected() {}, state: (_a, r) => got.push(r) });
    const l = link(s.url, 'rep-1');
    let current = figures();
    const r = new StateReporter({ link: l, figures: () => current, heartbeatMs: 60_000 });
    try {
      r.start();
      await l.connect();
      await eventually(() => got.length === 1, 5000, 'the first report');
      const t0 = Date.now();
      current = figures({ state: 'degraded', reasons: ['svm-unreachable'] });
      for (let i = 0; i < 50; i++) {
        r.changed();
        await new Promise((res) => setTimeout(res, 20));
      }
      // ~1 s of changes: the first report was just sent, so the next waits for its 2 s slot.
      await eventually(() => got.length >= 2, 5000, 'the debounced report');
      assert.ok(Date.now() - t0 >= 1500, 'not before the 2 s slot');
      await new Promise((res) => setTimeout(res, 500));
      assert.equal(got.length, 2, 'one report for fifty changes');
      assert.equal(got[1]!.state, 'degraded');
      const row = await eventuallyAsync(async () => {
        const x = await api(s.httpUrl, '/api/agents/a/rep-1', ADMIN);
        return x.body?.agent?.state === 'degraded' ? x : undefined;
      });
      assert.deepEqual(row.body.agent.reasons, ['svm-unreachable']);
    } finally {
      r.stop();
      l.close();
      await s.close();
    }
  });

  it('says nothing to an SVM that does not speak state-report (no protocol error)', async () => {
    const s = await startTestSvm({ inventory: false });
    const l = link(s.url, 'rep-old');
    const r = new StateReporter({ link: l, figures: () => figures() });
    try {
      r.start();
      await l.connect();
      r.changed();
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(l.speaks('state-report'), false);
      assert.equal(l.reportState(figures()), false);
      assert.equal(r.sent, 0);
      assert.equal(l.state, 'connected');
    } finally {
      r.stop();
      l.close();
      await s.close();
    }
  });

  it('after a failover the new SVM hears the state at once (SvmPool)', async () => {
    const a = await startTestSvm({ svmId: 'svm-a', adminTokens: [{ token: ADMIN, role: 'admin' }] });
    const b = await startTestSvm({ svmId: 'svm-b', adminTokens: [{ token: ADMIN, role: 'admin' }] });
    const p = new SvmPool({
      svms: [
        { url: a.url, priority: 0 },
        { url: b.url, priority: 1 },
      ],
      token: TOKEN,
      agentId: 'pooled',
      host: 'pooled-host',
      os: 'linux',
      agentVersion: '0.1.0',
      deadlineMs: 1000,
      backoffMinMs: 20,
      backoffMaxMs: 100,
      connectTimeoutMs: 2000,
      holdDownMs: 60_000,
      features: ['state-report'],
    });
    const r = new StateReporter({ link: p, figures: () => figures({ state: 'degraded', reasons: ['files-queued'] }) });
    try {
      r.start();
      await p.connect();
      await eventuallyAsync(async () => (await api(a.httpUrl, '/api/agents/a/pooled', ADMIN)).body?.agent?.state === 'degraded');
      assert.equal(p.speaks('state-report'), true);
      await a.close();
      const x = await eventuallyAsync(
        async () => {
          const y = await api(b.httpUrl, '/api/agents/a/pooled', ADMIN);
          return y.body?.agent?.state === 'degraded' ? y : undefined;
        },
        15_000,
        'the state on svm-b',
      );
      assert.equal(x.body.agent.svmId, 'svm-b');
      assert.ok(r.sent >= 2);
    } finally {
      r.stop();
      p.close();
      await a.close();
      await b.close();
    }
  });

  it('a heartbeat is never under 30 s; figures are bounded to what the codec takes', () => {
    const l = link('ws://127.0.0.1:9', 'x');
    assert.equal(new StateReporter({ link: l, figures: () => figures(), heartbeatMs: 10 }).heartbeatMs, 30_000);
    assert.equal(new StateReporter({ link: l, figures: () => figures() }).heartbeatMs, 300_000);
    const b = boundFigures(figures({ mode: 'm'.repeat(500), reasons: ['ok', 'Not OK', ...Array.from({ length: 30 }, (_, i) => `r${i}`)] }));
    assert.equal(b.mode.length, 128);
    assert.equal(b.reasons.length, 16);
    assert.ok(!b.reasons.includes('Not OK'));
    l.close();
  });

  it('a real daemon appears in GET /api/agents as protected', async () => {
    const s = await startTestSvm({ tokens: [{ tenant: 'a', token: 'test-token' }], adminTokens: [{ token: ADMIN, role: 'admin' }] });
    const a = await startAgent({ svm: s.url, protect: tempDir('la-inv-protect-'), mode: 'watcher', watchdogMs: 90_000 });
    try {
      const r = await eventuallyAsync(
        async () => {
          const x = await api(s.httpUrl, '/api/agents', ADMIN);
          return x.body?.agents?.[0]?.state === 'protected' ? x : undefined;
        },
        30_000,
        'the daemon in /api/agents',
      );
      const row = r.body.agents[0];
      assert.equal(r.body.total, 1);
      assert.equal(row.tenant, 'a');
      assert.equal(row.connected, true);
      assert.equal(row.mode, 'watcher');
      assert.equal(row.generationCurrent, true);
      assert.equal(row.agentVersion, (await a.status()).version);
      assert.ok(row.osRelease);
    } finally {
      await a.stop();
      await s.close();
    }
  });
});
