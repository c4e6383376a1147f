/**
 * Feature lookup-batch on a real SVM: one `lookups` frame answered from the shared cache only
 * (no engine run, no bytes), a letter per hash under the SVM's generation, counted hash by hash
 * against the agent's rate, and refused as a protocol error by an SVM that does not list it.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  CloseCode,
  encodeMessage,
  FEATURES,
  LOOKUP_BATCH_LIMITS,
  type LookupBatchAnswer,
  type SvmMessage,
} from '../../src/protocol/index.js';
import type { SvmServer } from '../../src/svm/server.js';
import { EICAR_BYTES, noise } from '../helpers/fixtures.js';
import { metric, rawAgent, startTestSvm, upload } from './helpers.js';

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
const isAnswer = (id: number) => (m: SvmMessage) => m.t === 'lookups' && m.id === id;

describe('SVM: lookup batches (feature lookup-batch)', () => {
  let s: SvmServer;
  before(async () => {
    s = await startTestSvm();
  });
  after(() => s.close());

  it('lists the feature in welcome and answers a batch from its cache: c, i, u in order, no engine run, no bytes', async () => {
    const a = await rawAgent(s.url);
    const welcome = await a.next((m) => m.t === 'welcome');
    assert.ok(welcome.t === 'welcome' && welcome.features?.includes(FEATURES.lookupBatch));
    const clean = noise(5000, 3);
    const infected = Buffer.concat([Buffer.from('x'), EICAR_BYTES]);
    assert.equal((await upload(a, 1, clean)).verdict, 'clean');
    assert.equal((await upload(a, 2, infected)).verdict, 'infected');
    const scans = await metric(s, 'lightagent_svm_scans_total');
    const bytes = await metric(s, 'lightagent_svm_bytes_received_total');
    const lookups = await metric(s, 'lightagent_svm_lookups_total');
    const batches = await metric(s, 'lightagent_svm_lookup_batches_total');
    const entries = [
      { sha256: sha(clean), size: clean.length },
      { sha256: 'e'.repeat(64), size: 1 },
      { sha256: sha(infected), size: infected.length },
      { sha256: sha(clean), size: clean.length },
    ];
    a.ws.send(encodeMessage({ t: 'lookups', id: 3, entries }));
    const r = (await a.next(isAnswer(3))) as LookupBatchAnswer;
    assert.equal(r.results, 'cuic');
    assert.equal(r.generation, s.core.generation());
    assert.equal(await metric(s, 'lightagent_svm_scans_total'), scans, 'no engine run for a lookup');
    assert.equal(await metric(s, 'lightagent_svm_bytes_received_total'), bytes);
    assert.equal(await metric(s, 'lightagent_svm_lookups_total'), lookups + 4, 'each hash counts as a lookup');
    assert.equal(await metric(s, 'lightagent_svm_lookup_batches_total'), batches + 1);
    // A full batch in one frame.
    const full = Array.from({ length: LOOKUP_BATCH_LIMITS.maxEntries }, (_, i) => ({
      sha256: i % 2 ? sha(clean) : 'f'.repeat(64),
      size: i,
    }));
    a.ws.send(encodeMessage({ t: 'lookups', id: 4, entries: full }));
    assert.equal(((await a.next(isAnswer(4))) as LookupBatchAnswer).results, 'uc'.repeat(256));
    a.ws.close();
  });

  it('a batch over 512 hashes closes that connection with 4003; others are untouched', async () => {
    const a = await rawAgent(s.url);
    const b = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    const over = Array.from({ length: LOOKUP_BATCH_LIMITS.maxEntries + 1 }, () => ({ sha256: 'a'.repeat(64), size: 1 }));
    a.ws.send(JSON.stringify({ t: 'lookups', id: 1, entries: over }));
    assert.equal(await a.closed, CloseCode.OVERSIZED);
    b.ws.send(encodeMessage({ t: 'lookups', id: 1, entries: [{ sha256: 'a'.repeat(64), size: 1 }] }));
    assert.equal(((await b.next(isAnswer(1))) as LookupBatchAnswer).results, 'u');
    b.ws.close();
  });
});

describe('SVM: a lookup batch against the rate limit and the version rule', () => {
  it("counts one token of the agent's rate per hash: after a batch of the burst, the next lookup is refused", async () => {
    const s = await startTestSvm({ rateLimit: { perSecond: 1, burst: 20 } });
    try {
      const a = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      const entries = Array.from({ length: 20 }, (_, i) => ({ sha256: 'b'.repeat(64), size: i }));
      a.ws.send(encodeMessage({ t: 'lookups', id: 1, entries }));
      assert.equal(((await a.next(isAnswer(1))) as LookupBatchAnswer).results, 'u'.repeat(20));
      a.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: 'b'.repeat(64), size: 1 }));
      assert.equal((await a.verdict(2)).code, 'LA_ERR_RATE_LIMITED');
      // A batch larger than the burst is admitted when the bucket is full, and leaves a debt.
      const b = await rawAgent(s.url);
      await b.next((m) => m.t === 'welcome');
      const big = Array.from({ length: 100 }, (_, i) => ({ sha256: 'c'.repeat(64), size: i }));
      b.ws.send(encodeMessage({ t: 'lookups', id: 1, entries: big }));
      assert.equal(((await b.next(isAnswer(1))) as LookupBatchAnswer).results.length, 100);
      b.ws.send(encodeMessage({ t: 'lookups', id: 2, entries: big.slice(0, 1) }));
      const refused = await b.verdict(2);
      assert.equal(refused.verdict, 'error');
      assert.equal(refused.code, 'LA_ERR_RATE_LIMITED');
      a.ws.close();
      b.ws.close();
    } finally {
      await s.close();
    }
  });

  it('an SVM that does not list lookup-batch treats it as an unknown message: close 4000', async () => {
    const s = await startTestSvm();
    try {
      s.core.features.splice(s.core.features.indexOf(FEATURES.lookupBatch), 1);
      const a = await rawAgent(s.url);
      const w = await a.next((m) => m.t === 'welcome');
      assert.ok(w.t === 'welcome' && !w.features?.includes(FEATURES.lookupBatch));
      a.ws.send(encodeMessage({ t: 'lookups', id: 1, entries: [{ sha256: 'a'.repeat(64), size: 1 }] }));
      assert.equal(await a.closed, CloseCode.PROTOCOL);
    } finally {
      await s.close();
    }
  });
});
