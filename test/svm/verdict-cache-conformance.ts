/**
 * The one suite every SharedVerdictCache must pass (memory now, redis later).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { SharedVerdictCache } from '../../src/svm/verdict-cache.js';

const sha = (n: number) => n.toString(16).padStart(64, '0');

export function runVerdictCacheConformance(
  name: string,
  makeCache: (entries: number) => Promise<SharedVerdictCache>,
  opts: { skip?: string | undefined } = {},
): void {
  describe(`verdict cache conformance: ${name}`, { skip: opts.skip }, () => {
    let cache: SharedVerdictCache;
    before(async () => {
      cache = await makeCache(1000);
    });
    after(() => cache?.close());

    it('stores and returns verdicts by tenant, generation and SHA-256', async () => {
      const key = { tenant: 't1', generation: 'g1', sha256: sha(1) };
      assert.equal(await cache.get(key), undefined);
      await cache.set(key, { verdict: 'infected', threat: 'Eicar-Test-Signature', engine: 'builtin' });
      assert.deepEqual(await cache.get(key), { verdict: 'infected', threat: 'Eicar-Test-Signature', engine: 'builtin' });
      await cache.set({ ...key, sha256: sha(2) }, { verdict: 'clean', engine: 'builtin' });
      assert.deepEqual(await cache.get({ ...key, sha256: sha(2) }), { verdict: 'clean', engine: 'builtin' });
    });

    it('keeps tenants and generations apart', async () => {
      const key = { tenant: 't1', generation: 'g1', sha256: sha(3) };
      await cache.set(key, { verdict: 'clean', engine: 'builtin' });
      assert.equal(await cache.get({ ...key, tenant: 't2' }), undefined);
      assert.equal(await cache.get({ ...key, generation: 'g2' }), undefined);
      // no separator confusion between the parts of the key
      assert.equal(await cache.get({ tenant: 't1g1', generation: '', sha256: sha(3) }), undefined);
    });

    it('overwrites a verdict for the same key', async () => {
      const key = { tenant: 't1', generation: 'g1', sha256: sha(4) };
      await cache.set(key, { verdict: 'clean', engine: 'builtin' });
      await cache.set(key, { verdict: 'infected', threat: 'X', engine: 'builtin' });
      assert.equal((await cache.get(key))?.verdict, 'infected');
    });

    it('stays within its entry bound and counts evictions', async () => {
      const small = await makeCache(10);
      for (let i = 0; i < 25; i++) await small.set({ tenant: 't', generation: 'g', sha256: sha(i) }, { verdict: 'clean', engine: 'e' });
      const st = small.stats();
      assert.ok(st.entries <= 10, `${st.entries} entries`);
      assert.equal(st.entries + st.evictions, 25);
      assert.equal(small.healthy(), true);
      await small.close();
    });

    it('answers 200 concurrent gets and sets', async () => {
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          cache.set({ tenant: 'c', generation: 'g', sha256: sha(1000 + i) }, { verdict: 'clean', engine: 'e' }),
        ),
      );
      const got = await Promise.all(
        Array.from({ length: 200 }, (_, i) => cache.get({ tenant: 'c', generation: 'g', sha256: sha(1000 + i) })),
      );
      assert.ok(got.every((v) => v?.verdict === 'clean'));
    });
  });
}
