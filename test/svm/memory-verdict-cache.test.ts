import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { runVerdictCacheConformance } from './verdict-cache-conformance.js';

runVerdictCacheConformance('memory', async (entries) => new MemoryVerdictCache(entries));

describe('memory verdict cache', () => {
  const key = (n: number) => ({ tenant: 't', generation: 'g', sha256: n.toString(16).padStart(64, '0') });

  it('evicts the least recently used entry (a get refreshes it)', async () => {
    const c = new MemoryVerdictCache(3);
    for (const n of [1, 2, 3]) await c.set(key(n), { verdict: 'clean', engine: 'e' });
    await c.get(key(1)); // 2 is now the oldest
    await c.set(key(4), { verdict: 'clean', engine: 'e' });
    assert.equal(await c.get(key(2)), undefined);
    assert.ok(await c.get(key(1)));
    assert.ok(await c.get(key(3)));
    assert.deepEqual(c.stats(), { entries: 3, evictions: 1 });
  });

  it('refuses a capacity under 1', () => {
    assert.throws(() => new MemoryVerdictCache(0), RangeError);
  });
});
