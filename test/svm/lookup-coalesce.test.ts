/**
 * Clones that miss the same file at the same moment upload it once: a lookup that misses makes
 * later lookups of the same content (same tenant) wait, bounded, for the verdict its upload brings.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { encodeMessage } from '../../src/protocol/index.js';
import { MissTable } from '../../src/svm/core.js';
import { metric, rawAgent, startTestSvm, upload } from './helpers.js';

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

describe('lookup coalescing', () => {
  it('a second agent looking up content the first is uploading gets its verdict, and nothing is uploaded twice', async () => {
    const s = await startTestSvm({ coalesceMs: 5000 });
    try {
      const a = await rawAgent(s.url);
      const b = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      await b.next((m) => m.t === 'welcome');
      const content = crypto.randomBytes(50_000);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
      assert.equal((await a.verdict(1)).verdict, 'unknown', 'the first miss answers at once: that agent uploads');
      const t0 = Date.now();
      b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(!b.msgs.some((m) => m.t === 'verdict'), 'the second lookup waits for the upload');
      assert.equal((await upload(a, 2, content)).verdict, 'clean');
      const v = await b.verdict(1);
      assert.equal(v.verdict, 'clean');
      assert.equal(v.cached, true);
      assert.ok(Date.now() - t0 < 4000, 'answered by the upload, not by the end of the wait');
      assert.equal(await metric(s, 'lightagent_svm_uploads_total'), 1);
    } finally {
      await s.close();
    }
  });

  it('the wait is bounded: no upload comes, the later lookup answers unknown when the window ends', async () => {
    const s = await startTestSvm({ coalesceMs: 300 });
    try {
      const a = await rawAgent(s.url);
      const b = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      await b.next((m) => m.t === 'welcome');
      const h = 'c'.repeat(64);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      await a.verdict(1);
      const t0 = Date.now();
      b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      assert.equal((await b.verdict(1)).verdict, 'unknown');
      const waited = Date.now() - t0;
      assert.ok(waited >= 200 && waited < 3000, `waited ${waited} ms`);
    } finally {
      await s.close();
    }
  });

  it('never across tenants: another tenant looking up the same content is answered at once', async () => {
    const s = await startTestSvm({
      coalesceMs: 10_000,
      tokens: [
        { tenant: 'a', token: 'token-of-tenant-a' },
        { tenant: 'b', token: 'token-of-tenant-b' },
      ],
    });
    try {
      const a = await rawAgent(s.url, 'token-of-tenant-a');
      const b = await rawAgent(s.url, 'token-of-tenant-b');
      await a.next((m) => m.t === 'welcome');
      await b.next((m) => m.t === 'welcome');
      const h = 'd'.repeat(64);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      await a.verdict(1);
      const t0 = Date.now();
      b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      assert.equal((await b.verdict(1)).verdict, 'unknown');
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await s.close();
    }
  });

  it('MissTable is bounded and can be switched off', async () => {
    const t = new MissTable(1000, 2);
    assert.equal(await t.wait('k1', 0), undefined);
    assert.equal(await t.wait('k2', 0), undefined);
    assert.equal(await t.wait('k3', 0), undefined);
    assert.equal(t.size, 2, 'a full table remembers no more misses');
    assert.equal(await t.wait('k3', 10), undefined, 'not remembered, so not waited on');
    const off = new MissTable(0);
    assert.equal(await off.wait('k', 0), undefined);
    assert.equal(await off.wait('k', 1), undefined);
    assert.equal(off.size, 0);
  });
});
