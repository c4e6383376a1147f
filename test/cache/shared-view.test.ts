/**
 * SharedCacheView: what another thread may answer from the shared verdict cache, and what it must
 * leave to the owner thread.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { loadXxhash, type FileIdentity } from '../../src/cache/fingerprint.js';
import { CTL_SEQ, SharedCacheView } from '../../src/cache/shared-view.js';
import { VerdictCache } from '../../src/cache/verdict-cache.js';

const id = (n: number): FileIdentity => ({ dev: 9n, ino: BigInt(n), size: 100n, mtimeNs: 5n, ctimeNs: 6n });
const sha = (n: number) => n.toString(16).padStart(64, '0');

async function setup() {
  const cache = await VerdictCache.open({ seed: 77n, capacity: 1000, generation: 'g1', shared: true });
  const spec = cache.sharedSpec()!;
  return { cache, spec, view: new SharedCacheView(spec, await loadXxhash()) };
}

describe('SharedCacheView', () => {
  it('is only offered by a cache opened shared', async () => {
    const plain = await VerdictCache.open({ seed: 1n, capacity: 100 });
    assert.equal(plain.sharedSpec(), undefined);
  });

  it('answers clean identities of the current generation, and nothing else', async () => {
    const { cache, view } = await setup();
    cache.record(id(1), 11n, sha(1), 'clean');
    cache.record(id(2), 22n, sha(2), 'infected', 'Eicar');
    assert.equal(view.isKnownClean(id(1)), true);
    assert.equal(view.isKnownClean(id(2)), false, 'infected: the owner denies and quarantines');
    assert.equal(view.isKnownClean(id(3)), false, 'unknown');
    assert.equal(view.isKnownClean({ ...id(1), mtimeNs: 99n }), false, 'a changed file is another identity');
    cache.setGeneration('g2');
    assert.equal(view.isKnownClean(id(1)), false, 'stale after a generation change');
    cache.refreshIdentity(id(1), 'clean');
    assert.equal(view.isKnownClean(id(1)), true, 'fresh again once the SVM confirmed it');
  });

  it('leaves shared content to the owner (a copy may carry a newer verdict)', async () => {
    const { cache, view } = await setup();
    cache.record(id(1), 11n, sha(1), 'clean');
    cache.recordIdentity(id(2), 11n);
    cache.record(id(3), 11n, sha(1), 'infected', 'Late');
    assert.equal(view.isKnownClean(id(1)), false);
    assert.equal(cache.lookupIdentity(id(1))?.verdict, 'infected', 'the owner follows the newest verdict');
  });

  it('keeps answering while the indexes grow from their first 4,096 slots to full capacity', async () => {
    const cache = await VerdictCache.open({ seed: 78n, capacity: 20_000, generation: 'g1', shared: true });
    const view = new SharedCacheView(cache.sharedSpec()!, await loadXxhash());
    const slots: number[] = [];
    for (let i = 1; i <= 20_000; i++) {
      cache.record(id(i), BigInt(i), sha(i), i % 7 === 0 ? 'infected' : 'clean', i % 7 === 0 ? 'T' : undefined);
      const s = cache.stats().indexSlots!;
      if (slots.at(-1) !== s) slots.push(s);
      if (i % 997 === 0)
        for (const j of [1, i >> 1, i]) assert.equal(view.isKnownClean(id(j)), j % 7 !== 0, `entry ${j} after ${i} records, ${s} slots`);
    }
    assert.deepEqual(slots, [4096, 8192, 16384, 25000], 'doubled, capped at capacity / 0.8');
    for (let i = 1; i <= 20_000; i++) assert.equal(view.isKnownClean(id(i)), i % 7 !== 0);
  });

  it('treats a read during a write (odd sequence) as a miss', async () => {
    const { cache, spec, view } = await setup();
    cache.record(id(1), 11n, sha(1), 'clean');
    const ctl = new Int32Array(spec.control);
    Atomics.add(ctl, CTL_SEQ, 1);
    assert.equal(view.isKnownClean(id(1)), false);
    Atomics.add(ctl, CTL_SEQ, 1);
    assert.equal(view.isKnownClean(id(1)), true);
  });

  it('never answers clean for an infected identity while another thread reads during churn', async () => {
    const { cache, spec } = await setup();
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      (async () => {
        const { SharedCacheView } = await import(workerData.viewUrl);
        const { loadXxhash } = await import(workerData.fpUrl);
        const view = new SharedCacheView(workerData.spec, await loadXxhash());
        let wrong = 0, reads = 0;
        const end = Date.now() + 1500;
        while (Date.now() < end) {
          for (let n = 1; n <= 50; n++) {
            reads++;
            if (view.isKnownClean({ dev: 9n, ino: BigInt(n), size: 100n, mtimeNs: 5n, ctimeNs: 6n }) && n % 2 === 0) wrong++;
          }
        }
        parentPort.postMessage({ wrong, reads });
      })();`;
    const w = new Worker(src, {
      eval: true,
      workerData: {
        spec,
        viewUrl: new URL('../../src/cache/shared-view.js', import.meta.url).href,
        fpUrl: new URL('../../src/cache/fingerprint.js', import.meta.url).href,
      },
    });
    const result = new Promise<{ wrong: number; reads: number }>((r) => w.once('message', r));
    // Churn: even identities are always infected, odd ones clean; evictions and rewrites galore.
    const end = Date.now() + 1500;
    let k = 1000;
    while (Date.now() < end) {
      for (let n = 1; n <= 50; n++) cache.record(id(n), BigInt(n * 7 + (k % 3)), sha(n), n % 2 === 0 ? 'infected' : 'clean', 'T');
      for (let j = 0; j < 200; j++) cache.record(id(k++), BigInt(k), sha(k), 'clean');
      await new Promise((r) => setImmediate(r));
    }
    const r = await result;
    await w.terminate();
    assert.ok(r.reads > 1000, `the reader ran (${r.reads} reads)`);
    assert.equal(r.wrong, 0, 'no infected identity was ever read as clean');
  });
});
