/**
 * The cache's part of the signature refresh (src/scan/signature-refresh.ts): stale clean entries
 * listed by hash, promoted only while they still hold that hash as a stale clean verdict under the
 * generation the SVM answered for, and looked at without counting (peekIdentity).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';

const id = (n: number): FileIdentity => ({ dev: 1n, ino: BigInt(n), size: BigInt(n * 7), mtimeNs: 1000n + BigInt(n), ctimeNs: 2000n });
const sha = (n: number) => crypto.createHash('sha256').update(`content ${n}`).digest('hex');

describe('VerdictCache: signature refresh', () => {
  it('lists stale clean entries by hash, in batches of distinct hashes, and skips infected and fresh ones', async () => {
    const c = await VerdictCache.open({ seed: 5n, capacity: 100, generation: 'g1' });
    for (let i = 0; i < 10; i++) c.record(id(i), BigInt(100 + (i % 5)), sha(i % 5), 'clean');
    c.record(id(50), 999n, sha(50), 'infected', 'Bad');
    assert.equal(c.countStaleClean(), 0);
    c.setGeneration('g2');
    c.record(id(60), 998n, sha(60), 'clean'); // judged under g2: fresh
    assert.equal(c.countStaleClean(), 10);
    const all = new Map<string, number[]>();
    let batches = 0;
    for (let from = 0; ; batches++) {
      const b = c.staleClean(from, 3);
      assert.ok(b.hashes.size <= 3, 'at most maxHashes distinct hashes per batch');
      for (const [h, es] of b.hashes) all.set(h, [...(all.get(h) ?? []), ...es]);
      if (b.done) break;
      from = b.next;
    }
    assert.ok(batches >= 1);
    assert.deepEqual([...all.keys()].sort(), [0, 1, 2, 3, 4].map(sha).sort());
    const entries = [...all.values()].flat();
    assert.equal(entries.length, 10);
    assert.equal(new Set(entries).size, 10, 'each stale clean entry once over the batches');
    assert.ok(!all.has(sha(50)) && !all.has(sha(60)));
  });

  it('promotes only an entry that still holds that hash, stale, under the generation answered for', async () => {
    const c = await VerdictCache.open({ seed: 5n, capacity: 100, generation: 'g1' });
    c.record(id(1), 11n, sha(1), 'clean');
    c.record(id(2), 12n, sha(2), 'clean');
    c.setGeneration('g2');
    const { hashes } = c.staleClean(0, 10);
    const e1 = hashes.get(sha(1))![0]!;
    const e2 = hashes.get(sha(2))![0]!;
    assert.equal(c.promote(e1, sha(2), 'g2', 'clean'), false, 'another hash than the entry holds');
    assert.equal(c.promote(e1, sha(1), 'g1', 'clean'), false, 'an answer for another generation');
    // Entry 2 is re-judged by an open meanwhile (content changed under the same identity key is
    // impossible; a re-record with the new verdict is what an open does).
    c.record(id(2), 13n, sha(3), 'clean');
    assert.equal(c.promote(e2, sha(2), 'g2', 'clean'), false, 'the entry no longer holds that hash');
    const before = { ...c.counters };
    assert.equal(c.peekIdentity(id(1))?.stale, true);
    assert.deepEqual(c.counters, before, 'peekIdentity counts nothing');
    assert.equal(c.promote(e1, sha(1), 'g2', 'clean'), true);
    assert.equal(c.promote(e1, sha(1), 'g2', 'clean'), false, 'no longer stale');
    const hit = c.lookupIdentity(id(1));
    assert.equal(hit?.verdict, 'clean');
    assert.equal(hit?.stale, false);
    assert.equal(c.countStaleClean(), 0);
    // Infected under the new generation: recorded with its threat, never stale again.
    c.record(id(4), 14n, sha(4), 'clean');
    c.setGeneration('g3');
    const e4 = c.staleClean(0, 10).hashes.get(sha(4))![0]!;
    assert.equal(c.promote(e4, sha(4), 'g3', 'infected', 'Test.New'), true);
    c.setGeneration('g4');
    const inf = c.lookupIdentity(id(4));
    assert.equal(inf?.verdict, 'infected');
    assert.equal(inf?.threat, 'Test.New');
    assert.equal(inf?.stale, false);
  });
});
