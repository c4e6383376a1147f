import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import type { CachedVerdict } from '../../src/svm/verdict-cache.js';
import { MapLru } from './map-lru.js';
import { runVerdictCacheConformance } from './verdict-cache-conformance.js';

runVerdictCacheConformance('memory', async (entries) => new MemoryVerdictCache(entries));

const key = (n: number, tenant = 't', generation = 'g') => ({ tenant, generation, sha256: n.toString(16).padStart(64, '0') });

/** A small deterministic PRNG (xorshift32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('memory verdict cache', () => {
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

  it('refuses a capacity under 1 or not a whole number', () => {
    assert.throws(() => new MemoryVerdictCache(0), RangeError);
    assert.throws(() => new MemoryVerdictCache(2.5), RangeError);
  });

  it('answers exactly as the JS Map LRU it replaced, over 200,000 random gets and sets', () => {
    for (const seed of [1, 7, 42]) {
      const r = rng(seed);
      const capacity = 1 + Math.floor(r() * 300);
      const c = new MemoryVerdictCache(capacity);
      const ref = new MapLru(capacity);
      const tenants = ['a', 'b', 'a\u0000b'];
      const gens = ['g1', 'g2', ''];
      const engines = ['builtin', 'clamav'];
      for (let op = 0; op < 200_000 / 3; op++) {
        const k = key(Math.floor(r() * capacity * 3), tenants[Math.floor(r() * 3)], gens[Math.floor(r() * 3)]);
        if (r() < 0.5) {
          assert.deepEqual(c.getNow(k), ref.get(k), `seed ${seed}, op ${op}: get ${JSON.stringify(k)}`);
        } else {
          const v: CachedVerdict =
            r() < 0.2
              ? { verdict: 'infected', engine: engines[Math.floor(r() * 2)]!, threat: `Threat.${Math.floor(r() * 50)}` }
              : { verdict: 'clean', engine: engines[Math.floor(r() * 2)]! };
          c.setNow(k, v);
          ref.set(k, v);
        }
        assert.equal(c.stats().entries, ref.map.size, `seed ${seed}, op ${op}: entries`);
      }
      assert.equal(c.stats().evictions, ref.evictions, `seed ${seed}: evictions`);
      // Every entry of the reference is there, with its verdict.
      for (const [k, v] of [...ref.map]) {
        const [tenant, generation, sha256] = k.split('\u0000').length === 3 ? k.split('\u0000') : [];
        if (tenant !== undefined) assert.deepEqual(c.getNow({ tenant, generation: generation!, sha256: sha256! }), v);
      }
    }
  });

  it('stores nothing for a key that is not a lowercase SHA-256, and says so', async () => {
    const c = new MemoryVerdictCache(10);
    for (const sha256 of ['', 'abc', 'A'.repeat(64), `${'0'.repeat(63)}g`, '0'.repeat(65)]) {
      await c.set({ tenant: 't', generation: 'g', sha256 }, { verdict: 'clean', engine: 'e' });
      assert.equal(await c.get({ tenant: 't', generation: 'g', sha256 }), undefined);
    }
    assert.deepEqual(c.stats(), { entries: 0, evictions: 0, uncached: 5 });
  });

  it('holds a bounded number of names: a verdict with one more is not stored, and the old verdict of its key goes', async () => {
    const c = new MemoryVerdictCache(100, { maxNames: 3 });
    await c.set(key(1), { verdict: 'infected', engine: 'e', threat: 'A' });
    await c.set(key(2), { verdict: 'infected', engine: 'e', threat: 'B' });
    await c.set(key(3), { verdict: 'infected', engine: 'e', threat: 'C' }); // e, A, B held: C is one too many
    assert.equal(await c.get(key(3)), undefined);
    await c.set(key(1), { verdict: 'infected', engine: 'e', threat: 'C' }); // the key's old verdict must not stay
    assert.equal(await c.get(key(1)), undefined);
    // Freed with its last entry: A went with key 1, so C now fits.
    await c.set(key(3), { verdict: 'infected', engine: 'e', threat: 'C' });
    assert.deepEqual(await c.get(key(3)), { verdict: 'infected', engine: 'e', threat: 'C' });
    assert.deepEqual(await c.get(key(2)), { verdict: 'infected', engine: 'e', threat: 'B' });
    assert.equal(c.stats().uncached, 2);
  });

  it('reuses the slot of a removed entry before evicting anyone', async () => {
    const c = new MemoryVerdictCache(3, { maxNames: 2 });
    await c.set(key(1), { verdict: 'clean', engine: 'e' });
    await c.set(key(2), { verdict: 'infected', engine: 'e', threat: 'T' });
    await c.set(key(2), { verdict: 'infected', engine: 'e', threat: 'U' }); // U is a third name: key 2 goes
    await c.set(key(3), { verdict: 'clean', engine: 'e' });
    await c.set(key(4), { verdict: 'clean', engine: 'e' });
    assert.deepEqual(c.stats(), { entries: 3, evictions: 0, uncached: 1 });
    for (const n of [1, 3, 4]) assert.ok(await c.get(key(n)), `key ${n}`);
  });

  it('keeps a million entries off the V8 heap', async () => {
    const before = process.memoryUsage().heapUsed;
    const c = new MemoryVerdictCache(1_000_000);
    for (let i = 0; i < 1_000_000; i++) c.setNow(key(i * 2654435761), { verdict: 'clean', engine: 'builtin' });
    const heapMiB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
    assert.equal(c.stats().entries, 1_000_000);
    assert.deepEqual(await c.get(key(999_999 * 2654435761)), { verdict: 'clean', engine: 'builtin' });
    // The JS Map it replaced held ~248 MiB of heap for as many (docs/svm.md, "Shared verdict
    // cache"). The bound leaves room for the keys' garbage a collection has not taken yet.
    assert.ok(heapMiB < 64, `${heapMiB.toFixed(1)} MiB of heap for 1M entries`);
    // What the entries cost instead: ~61 bytes each in typed arrays (docs/svm.md, "Sizing").
    const perEntry = c.arrayBytes() / 1_000_000;
    assert.ok(perEntry > 50 && perEntry < 70, `${perEntry} bytes of typed arrays per entry`);
  });
});
