/**
 * The agent's side of feature policy in the link: a link that lists the feature hears its SVM's
 * policy (`policy` event, `link.policy`, cleared at the next welcome); a link that did not list
 * it treats a policy frame as a protocol error and never hands it on; a pool forwards the active
 * SVM's policy only, and after a failover `policy` is the new SVM's.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { PolicyMsg } from '../../src/protocol/index.js';
import { SvmLink, SvmPool } from '../../src/svm-link/index.js';
import { eventually } from '../helpers/procs.js';
import { startTestSvm, TOKEN } from '../svm/helpers.js';

const common = {
  token: TOKEN,
  agentId: 'agent-link-1',
  host: 'web-01',
  os: 'linux' as const,
  agentVersion: '0',
  deadlineMs: 2000,
  backoffMinMs: 20,
  backoffMaxMs: 80,
  connectTimeoutMs: 2000,
};

describe('svm-link: feature policy', () => {
  it('a link that lists the feature gets its policy after welcome', async () => {
    const s = await startTestSvm({ policies: { a: { name: 'fleet', deadline: '3s' } } });
    const link = new SvmLink({ url: s.url, ...common, features: ['policy'] });
    const got: PolicyMsg[] = [];
    link.on('policy', (p) => got.push(p));
    try {
      await link.connect();
      await eventually(() => got.length === 1, 5000, 'the policy');
      assert.equal(link.policy?.name, 'fleet');
      assert.deepEqual(link.policy?.settings, { deadline: '3s' });
    } finally {
      link.close();
      await s.close();
    }
  });

  it('a policy frame to a link that did not list the feature is a protocol error, never applied', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => wss.once('listening', r));
    let hellos = 0;
    wss.on('connection', (ws) =>
      ws.on('message', () => {
        hellos++;
        const limits = { maxFileSize: 1 << 20, maxChunk: 1 << 20, maxInFlight: 8 };
        ws.send(JSON.stringify({ t: 'welcome', v: 1, svmId: 'rogue', generation: 'g', load: 0, limits, features: ['policy'] }));
        ws.send(JSON.stringify({ t: 'policy', name: 'evil', version: '0123456789abcdef', settings: { exclude: ['/'] } }));
      }),
    );
    const port = (wss.address() as { port: number }).port;
    const link = new SvmLink({ url: `ws://127.0.0.1:${port}`, ...common, features: ['state-report'] });
    const got: PolicyMsg[] = [];
    const drops: string[] = [];
    link.on('policy', (p) => got.push(p));
    link.on('disconnected', (why) => drops.push(why));
    try {
      await link.connect();
      await eventually(() => drops.length >= 1, 5000, 'the link drops the connection');
      assert.equal(got.length, 0);
      assert.equal(link.policy, undefined);
      assert.ok(hellos >= 1);
    } finally {
      link.close();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });

  it("a pool hands on the active SVM's policy; after a failover, the new SVM's", async () => {
    const one = await startTestSvm({ policies: { a: { name: 'from-one', deadline: '3s' } } });
    const two = await startTestSvm({ policies: { a: { name: 'from-two', deadline: '4s' } } });
    const pool = new SvmPool({
      ...common,
      features: ['policy'],
      holdDownMs: 200,
      svms: [
        { url: one.url, priority: 0 },
        { url: two.url, priority: 1 },
      ],
    });
    const heard: string[] = [];
    pool.on('policy', (p) => heard.push(p.name));
    try {
      await pool.connect();
      await eventually(() => pool.policy?.name === 'from-one', 5000, "the first SVM's policy");
      await eventually(() => two.core.agents.size === 1, 5000, 'the second SVM connected too');
      assert.ok(!heard.includes('from-two'), 'not the standby SVM');
      await one.close();
      await eventually(() => pool.policy?.name === 'from-two', 10_000, "the second SVM's policy after the failover");
    } finally {
      pool.close();
      await two.close();
    }
  });
});
