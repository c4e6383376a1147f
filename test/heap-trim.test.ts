/**
 * src/heap-trim.ts: when an isolate trims (a fake clock, heap and collector), and that the
 * collections it asks for are real: in a worker of its own, garbage left in the old generation is
 * gone after either kind, and `gc` never shows up on the program's global.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { HeapTrimmer, type HeapTrimOptions, type TrimKind } from '../src/heap-trim.js';
import { mallocTrim } from '../src/platform/linux/libc.js';

const POLICY: HeapTrimOptions = { firstIdleMs: 3_000, idleMs: 5_000, growthBytes: 8 << 20, minIntervalMs: 30_000 };
const MB = 1 << 20;

function fake(o: { rss?: boolean; collects?: boolean } = {}) {
  const world = { heap: 20 * MB, rss: 100 * MB, kinds: [] as TrimKind[], releases: 0 };
  const t = new HeapTrimmer({
    policy: POLICY,
    now: 0,
    heapUsed: () => world.heap,
    collect: (kind) => {
      if (o.collects === false) return false;
      world.kinds.push(kind);
      world.heap = 12 * MB;
      world.rss -= 10 * MB;
      return kind;
    },
    release: () => {
      world.releases++;
      world.rss -= 5 * MB;
    },
    ...(o.rss ? { rss: () => world.rss } : {}),
  });
  return { t, world };
}

describe('HeapTrimmer: when', () => {
  it('trims once after start-up quiet, last-resort when no work came; then only after quiet that follows growth', () => {
    const { t, world } = fake();
    assert.equal(t.tick(2_999), false, 'not quiet long enough yet');
    assert.equal(t.tick(3_000), true);
    assert.deepEqual(world.kinds, ['last-resort']);
    assert.equal(t.stats.trims, 1);
    assert.equal(t.stats.lastBefore, 20 * MB);
    assert.equal(t.stats.lastAfter, 12 * MB);
    // Quiet, but the heap did not grow: nothing, however long it stays so.
    assert.equal(t.tick(100_000), false);
    // A burst: the heap grows by 8 MiB; nothing while busy, nor before idleMs of quiet.
    world.heap = 20 * MB;
    t.busy(100_000);
    assert.equal(t.tick(104_999), false);
    assert.equal(t.tick(105_000), true);
    assert.deepEqual(world.kinds, ['last-resort', 'regular'], 'after work, a collection that keeps compiled code');
  });

  it('no second trim within minIntervalMs of the last, whatever grew', () => {
    const { t, world } = fake();
    assert.equal(t.tick(3_000), true);
    world.heap = 40 * MB;
    t.busy(4_000);
    assert.equal(t.tick(32_999), false, 'quiet and grown, but 29.999 s after the first trim');
    assert.equal(t.tick(33_000), true);
  });

  it('growth below growthBytes does not trim', () => {
    const { t, world } = fake();
    t.tick(3_000);
    world.heap = 12 * MB + 8 * MB - 1;
    assert.equal(t.tick(200_000), false);
    world.heap += 1;
    assert.equal(t.tick(200_000), true);
  });

  it('work before the first quiet spell makes the first trim a regular one, after idleMs as later ones', () => {
    const { t, world } = fake();
    t.busy(1_000);
    assert.equal(t.tick(5_999), false, 'firstIdleMs is for a start with no work only');
    assert.equal(t.tick(6_000), true, 'no growth needed for the first trim');
    assert.deepEqual(world.kinds, ['regular']);
  });

  it('busy but not warm (start-up chatter, the connector): the first trim stays a last-resort one, 3 s in', () => {
    const { t, world } = fake();
    t.busy(1_000, false);
    assert.equal(t.tick(3_999), false);
    assert.equal(t.tick(4_000), true);
    assert.deepEqual(world.kinds, ['last-resort']);
  });

  it('with rss watched, twice growthBytes of RSS alone is growth (malloc arenas after a burst)', () => {
    const { t, world } = fake({ rss: true });
    t.tick(3_000);
    assert.equal(world.releases, 1, 'release (malloc_trim) runs after the collection');
    assert.equal(t.stats.rssBefore, 100 * MB);
    assert.equal(t.stats.rssAfter, 85 * MB, 'measured after the release: growth counts from there');
    world.rss = 85 * MB + 16 * MB - 1;
    assert.equal(t.tick(100_000), false);
    world.rss += 1;
    assert.equal(t.tick(100_000), true);
  });

  it('a runtime that cannot collect turns trimming off', () => {
    const { t, world } = fake({ collects: false });
    assert.equal(t.tick(3_000), false);
    assert.equal(t.tick(1_000_000), false);
    assert.equal(t.stats.trims, 0);
    assert.equal(world.releases, 0);
  });
});

/** In a fresh isolate: fill the heap to `mb` MiB, drop it all (promoted garbage), collect with `kind`, report the heap. */
function collectInWorker(
  kind: TrimKind,
  mb: number,
): Promise<{ before: number; after: number; gcBefore: string; gcAfter: string; ran: TrimKind | false }> {
  const url = new URL('../src/heap-trim.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const v8 = require('node:v8');
    import(workerData.url).then(({ collectGarbage }) => {
      const gcBefore = typeof globalThis.gc;
      let keep = [];
      // Old-generation garbage: objects kept long enough to be promoted, then dropped at once.
      while (v8.getHeapStatistics().used_heap_size < workerData.mb * 1048576) {
        keep.push(Array.from({ length: 1024 }, (_, j) => ({ i: keep.length, j })));
      }
      keep = null;
      const before = v8.getHeapStatistics().used_heap_size;
      const ran = collectGarbage(workerData.kind);
      const after = v8.getHeapStatistics().used_heap_size;
      parentPort.postMessage({ before, after, gcBefore, gcAfter: typeof globalThis.gc, ran });
    });`;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { url, kind, mb } });
    w.once('message', (m) => {
      resolve(m as Awaited<ReturnType<typeof collectInWorker>>);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

describe('HeapTrimmer: the collections are real', () => {
  for (const kind of ['regular', 'last-resort'] as const) {
    it(`a ${kind} collection takes the garbage and leaves no gc on the global`, async () => {
      const r = await collectInWorker(kind, 32);
      // Node 20's V8 has no last-resort flavour: its full collection runs instead.
      assert.equal(r.ran, Number(process.versions.v8.split('.')[0]) >= 12 ? kind : 'regular');
      assert.ok(r.before - r.after > 4 * MB, `heap in use ${(r.before / MB).toFixed(1)} -> ${(r.after / MB).toFixed(1)} MiB`);
      assert.equal(r.gcAfter, r.gcBefore, 'gc() comes from a context of its own');
    });
  }

  it('malloc_trim is there on Linux (glibc)', { skip: process.platform !== 'linux' }, () => {
    assert.equal(mallocTrim(), true);
  });
});
