/**
 * Tenants and tokens: per-tenant cache namespaces (an agent of tenant A never sees tenant B's
 * verdicts), expired and unknown tokens refused, token reload (API and SIGHUP with a token file)
 * without dropping connected agents, revoked tokens dropped, and agents may never send verdicts.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CloseCode, encodeMessage } from '../../src/protocol/index.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { spawnNode, SVM_CLI, tempDir, waitFor } from '../helpers/procs.js';
import { EICAR_BYTES as EICAR, noise } from '../helpers/fixtures.js';
import { rawAgent, startTestSvm, upload } from './helpers.js';

const A = 'tenant-a-token';
const B = 'tenant-b-token';
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

describe('SVM tenants', () => {
  it("an agent of tenant A looking up a hash tenant B's agent got scanned gets unknown, and its upload is scanned again", async () => {
    const s = await startTestSvm({
      tokens: [
        { tenant: 'a', token: A },
        { tenant: 'b', token: B },
      ],
    });
    try {
      const content = Buffer.concat([noise(50_000, 77), EICAR]);
      const b = await rawAgent(s.url, B);
      assert.equal((await upload(b, 1, content)).verdict, 'infected');
      b.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: sha(content), size: content.length }));
      assert.equal((await b.verdict(2)).cached, true, "B's own lookup hits");
      const a = await rawAgent(s.url, A);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
      const v = await a.verdict(1);
      assert.equal(v.verdict, 'unknown');
      assert.equal(v.threat, undefined);
      const scans = s.metrics.lightagent_svm_scans_total!;
      const up = await upload(a, 3, content);
      assert.equal(up.cached, undefined, "not answered from B's cache entry");
      assert.equal(s.metrics.lightagent_svm_scans_total, scans + 1);
      assert.equal(s.metrics['lightagent_svm_agents_by_tenant{tenant="a"}'], 1);
      assert.equal(s.metrics['lightagent_svm_agents_by_tenant{tenant="b"}'], 1);
      a.ws.close();
      b.ws.close();
    } finally {
      await s.close();
    }
  });

  it('refuses an expired token and an unknown one with LA_ERR_AUTH / 4001, without saying which', async () => {
    const s = await startTestSvm({
      tokens: [
        { tenant: 'a', token: A },
        { tenant: 'old', token: 'old-token-1', expiresAt: Date.now() - 1000 },
      ],
    });
    try {
      for (const t of ['old-token-1', 'never-issued-token']) {
        const x = await rawAgent(s.url, t);
        assert.equal(await x.closed, CloseCode.AUTH, t);
        assert.deepEqual(
          x.msgs.map((m) => (m.t === 'error' ? m.message : m.t)),
          ['missing or unknown tenant token'],
        );
      }
      assert.equal(s.metrics.lightagent_svm_auth_failures_total, 2);
    } finally {
      await s.close();
    }
  });

  it('config: expires is a date; a token file adds tokens', () => {
    const dir = tempDir('la-tok-');
    const f = path.join(dir, 'tokens.yaml');
    fs.writeFileSync(f, '- plain-token-1\n- {tenant: acme, token: acme-token-1, expires: 2030-01-02}\n');
    const c = loadSvmConfig({ env: {}, flags: { token_file: f } });
    assert.deepEqual(c.tokens, [
      { tenant: 'default', token: 'plain-token-1' },
      { tenant: 'acme', token: 'acme-token-1', expiresAt: Date.parse('2030-01-02') },
    ]);
    fs.writeFileSync(f, 'tokens: [x]\n');
    assert.throws(() => loadSvmConfig({ env: {}, flags: { token_file: f } }), /a token file is a list of tokens/);
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { tokens: [{ tenant: 'a', token: 'abcdefgh', expires: 'soon' }] } }),
      /tokens\.0\.expires: must be a date/,
    );
  });

  it('reloads tokens without dropping connected agents; a revoked token drops its agents; new tokens work at once', async () => {
    const s = await startTestSvm({
      tokens: [
        { tenant: 'a', token: A },
        { tenant: 'b', token: B },
      ],
    });
    try {
      const a = await rawAgent(s.url, A);
      const b = await rawAgent(s.url, B);
      await a.next((m) => m.t === 'welcome');
      await b.next((m) => m.t === 'welcome');
      const r = s.reloadTokens([
        { tenant: 'a', token: A },
        { tenant: 'c', token: 'tenant-c-token' },
      ]);
      assert.deepEqual(r, { tokens: 2, agentsDropped: 1 });
      assert.equal(await b.closed, CloseCode.AUTH, 'B was revoked');
      assert.equal((await upload(a, 1, EICAR)).verdict, 'infected', 'A kept its session');
      const c = await rawAgent(s.url, 'tenant-c-token');
      assert.equal((await c.next((m) => m.t === 'welcome')).t, 'welcome');
      const b2 = await rawAgent(s.url, B);
      assert.equal(await b2.closed, CloseCode.AUTH);
      a.ws.close();
      c.ws.close();
    } finally {
      await s.close();
    }
  });

  it('an agent sending a verdict is refused (4000) and writes nothing into the cache', async () => {
    const s = await startTestSvm();
    try {
      const content = Buffer.concat([Buffer.from('forged '), EICAR]);
      const bad = await rawAgent(s.url);
      await bad.next((m) => m.t === 'welcome');
      bad.ws.send(
        encodeMessage({ t: 'verdict', id: 1, verdict: 'clean', sha256: sha(content), engine: 'builtin', generation: s.core.generation() }),
      );
      assert.equal(await bad.closed, CloseCode.PROTOCOL);
      assert.ok(bad.msgs.some((m) => m.t === 'error' && m.code === 'LA_ERR_PROTO_UNEXPECTED'));
      const good = await rawAgent(s.url);
      good.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
      assert.equal((await good.verdict(1)).verdict, 'unknown');
      assert.equal((await upload(good, 2, content)).verdict, 'infected');
      good.ws.close();
    } finally {
      await s.close();
    }
  });

  it('lightagent-svm re-reads its token file on SIGHUP; the connected agent keeps scanning', async () => {
    const dir = tempDir('la-tokhup-');
    const f = path.join(dir, 'tokens.yaml');
    fs.writeFileSync(f, `- {tenant: a, token: ${A}}\n`);
    const p = spawnNode(SVM_CLI, ['--listen', '127.0.0.1:0', '--token-file', f, '--json', '--log-level', 'error'], {
      watchdogMs: 30_000,
      env: { LIGHTAGENT_SVM_TOKEN: '' },
    });
    try {
      const m = await waitFor(p, /^\{"event":"listening".*\}$/m);
      const url = (JSON.parse(m[0]) as { url: string }).url;
      const a = await rawAgent(url, A);
      await a.next((x) => x.t === 'welcome');
      const refused = await rawAgent(url, B);
      assert.equal(await refused.closed, CloseCode.AUTH);
      fs.writeFileSync(f, `- {tenant: a, token: ${A}}\n- {tenant: b, token: ${B}}\n`);
      p.child.kill('SIGHUP');
      const r = await waitFor(p, /^\{"event":"reloaded".*\}$/m);
      assert.equal((JSON.parse(r[0]) as { tokens: number; agentsDropped: number }).tokens, 2);
      assert.equal((await upload(a, 1, EICAR)).verdict, 'infected', 'not dropped by the reload');
      const b = await rawAgent(url, B);
      assert.equal((await b.next((x) => x.t === 'welcome')).t, 'welcome');
      a.ws.close();
      b.ws.close();
      assert.equal(await p.stop('SIGTERM'), 0);
    } finally {
      await p.stop('SIGKILL');
    }
  });
});
