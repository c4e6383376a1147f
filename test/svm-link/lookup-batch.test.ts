/**
 * Feature lookup-batch on the agent's side, against real SVMs: SvmLink sends a batch only to an
 * SVM that listed the feature (else it refuses before sending, and the connection stays), and
 * SvmPool sends it to its active SVM, failing over like a lookup.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, describe, it } from 'node:test';
import { LightagentError } from '../../src/errors.js';
import { FEATURES, type LookupBatchAnswer } from '../../src/protocol/index.js';
import type { SvmServer } from '../../src/svm/server.js';
import { SvmLink, SvmPool } from '../../src/svm-link/index.js';
import { noise } from '../helpers/fixtures.js';
import { startTestSvm, TOKEN } from '../svm/helpers.js';

const common = {
  token: TOKEN,
  agentId: 'agent-batch',
  host: 'h',
  os: 'linux' as const,
  agentVersion: '0',
  deadlineMs: 3000,
  backoffMinMs: 20,
  backoffMaxMs: 80,
  connectTimeoutMs: 2000,
  features: [FEATURES.lookupBatch],
};
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});
async function svm(): Promise<SvmServer> {
  const s = await startTestSvm();
  cleanups.push(() => s.close());
  return s;
}

describe('lookup batches from the agent (feature lookup-batch)', () => {
  it('SvmLink: answered by an SVM that lists the feature; refused unsent by one that does not, the link stays up', async () => {
    const s = await svm();
    const link = new SvmLink({ url: s.url, ...common });
    cleanups.push(() => link.close());
    await link.connect();
    const content = noise(3000, 4);
    const sha = crypto.createHash('sha256').update(content).digest('hex');
    assert.equal((await link.scan(content.length, (o, n) => content.subarray(o, o + n), 3000)).verdict, 'clean');
    const a = (await link.lookupBatch([
      { sha256: sha, size: 0 },
      { sha256: 'd'.repeat(64), size: 0 },
    ])) as LookupBatchAnswer;
    assert.equal(a.t, 'lookups');
    assert.equal(a.results, 'cu');
    assert.equal(a.generation, link.generation);
    await assert.rejects(link.lookupBatch([]), RangeError);

    const old = await svm();
    old.core.features.splice(old.core.features.indexOf(FEATURES.lookupBatch), 1);
    const l2 = new SvmLink({ url: old.url, ...common });
    cleanups.push(() => l2.close());
    await l2.connect();
    await assert.rejects(
      l2.lookupBatch([{ sha256: sha, size: 0 }]),
      (e: unknown) => e instanceof LightagentError && e.code === 'LA_ERR_PROTO_UNEXPECTED',
    );
    assert.equal(l2.state, 'connected');
    assert.equal((await l2.lookup(sha, 1)).verdict, 'unknown', 'the connection was not closed by a frame it never saw');
  });

  it('SvmPool: the active SVM answers; after it goes, the next one does', async () => {
    const a = await svm();
    const b = await svm();
    const pool = new SvmPool({
      ...common,
      svms: [
        { url: a.url, priority: 0 },
        { url: b.url, priority: 1 },
      ],
      holdDownMs: 200,
    });
    cleanups.push(() => pool.close());
    await pool.connect();
    await pool.waitConnected(3000);
    const content = noise(2000, 8);
    const sha = crypto.createHash('sha256').update(content).digest('hex');
    assert.equal((await pool.scan(content.length, (o, n) => content.subarray(o, o + n), 3000)).verdict, 'clean');
    assert.equal(((await pool.lookupBatch([{ sha256: sha, size: 0 }])) as LookupBatchAnswer).results, 'c', 'SVM a knows it');
    await a.close();
    const r = (await pool.lookupBatch([{ sha256: sha, size: 0 }], 3000)) as LookupBatchAnswer;
    assert.equal(r.results, 'u', 'SVM b never saw the content');
  });
});
