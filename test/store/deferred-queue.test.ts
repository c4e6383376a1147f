import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DeferredQueue, type DeferredInput } from '../../src/store/deferred-queue.js';
import { fillDisk, needRoot, scratchMount, tempDir } from '../helpers/procs.js';

const root = tempDir('la-deferred-');
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshFile = () => DeferredQueue.defaultFile(path.join(root, `s${n++}`));

const entry = (p: string, over: Partial<DeferredInput> = {}): DeferredInput => ({
  path: p,
  dev: '2049',
  ino: String(1000 + p.length),
  size: 10,
  mtimeNs: '1700000000000000000',
  reason: 'svm-unavailable',
  ...over,
});

describe('DeferredQueue', () => {
  it('persists every acknowledged add across a reopen, in order', async () => {
    const file = freshFile();
    const q = await DeferredQueue.open({ file });
    await Promise.all(['/a', '/b', '/c'].map((p) => q.add(entry(p))));
    await q.close();
    const q2 = await DeferredQueue.open({ file });
    assert.deepEqual(
      [...q2].map((e) => e.path),
      ['/a', '/b', '/c'],
    );
    assert.equal(q2.size, 3);
    const e = [...q2][0]!;
    assert.equal(e.reason, 'svm-unavailable');
    assert.equal(typeof e.time, 'number');
    await q2.close();
  });

  it('deduplicates by path: a re-add updates identity and reason and keeps its place', async () => {
    const q = await DeferredQueue.open({ file: freshFile() });
    await q.add(entry('/x', { time: 1 }));
    await q.add(entry('/y'));
    await q.add(entry('/x', { mtimeNs: '1800000000000000000', reason: 'deadline', time: 5 }));
    assert.equal(q.size, 2);
    const [x] = [...q];
    assert.equal(x!.path, '/x');
    assert.equal(x!.mtimeNs, '1800000000000000000');
    assert.equal(x!.reason, 'deadline');
    assert.equal(x!.time, 1, 'first queued time is kept');
    await q.close();
  });

  it('is bounded: the oldest entry is dropped and counted when full', async () => {
    const file = freshFile();
    const q = await DeferredQueue.open({ file, capacity: 3 });
    for (const p of ['/1', '/2', '/3', '/4', '/5']) await q.add(entry(p));
    assert.equal(q.size, 3);
    assert.equal(q.dropped, 2);
    assert.deepEqual(
      [...q].map((e) => e.path),
      ['/3', '/4', '/5'],
    );
    await q.add(entry('/4', { size: 99 })); // dedup: no drop
    assert.equal(q.dropped, 2);
    await q.close();
    const q2 = await DeferredQueue.open({ file, capacity: 2 }); // capacity lowered: trimmed at open
    assert.deepEqual(
      [...q2].map((e) => e.path),
      ['/4', '/5'],
    );
    assert.equal(q2.dropped, 1);
    await q2.close();
  });

  it('take/done/release for the re-scan worker', async () => {
    const file = freshFile();
    const q = await DeferredQueue.open({ file });
    for (const p of ['/a', '/b', '/c', '/d']) await q.add(entry(p));
    const first = q.take(2);
    assert.deepEqual(
      first.map((e) => e.path),
      ['/a', '/b'],
    );
    assert.deepEqual(
      q.take(10).map((e) => e.path),
      ['/c', '/d'],
      'leased entries are not handed out twice',
    );
    assert.equal(q.inFlight, 4);
    assert.equal(await q.done(first[0]!), true);
    q.release('/b');
    assert.deepEqual(
      q.take(10).map((e) => e.path),
      ['/b'],
    );
    // /c is rewritten while being scanned: done() for the old content keeps the new one queued.
    await q.add(entry('/c', { mtimeNs: '1900000000000000000' }));
    assert.equal(await q.done(first[1]!), true);
    assert.equal(await q.done({ ...entry('/c'), time: 0 }), false);
    assert.equal(q.has('/c'), true);
    assert.equal(await q.done('/d'), true);
    await q.close();
    const q2 = await DeferredQueue.open({ file });
    assert.deepEqual(
      [...q2].map((e) => e.path),
      ['/c'],
      'done is durable; leases are not',
    );
    await q2.close();
  });

  it('a full cap drops an entry nobody is scanning before a leased one', async () => {
    const q = await DeferredQueue.open({ file: freshFile(), capacity: 2 });
    await q.add(entry('/old'));
    await q.add(entry('/mid'));
    q.take(1); // /old is being scanned
    await q.add(entry('/new'));
    assert.deepEqual(
      [...q].map((e) => e.path),
      ['/old', '/new'],
    );
    await q.close();
  });

  it('a rewrite that restores size and mtime (utimensat) but moves ctime is new content: done() keeps it', async () => {
    const file = freshFile();
    const q = await DeferredQueue.open({ file });
    await q.add(entry('/t', { ctimeNs: '1700000000000000000' }));
    const [taken] = q.take(1);
    await q.add(entry('/t', { ctimeNs: '1700000000500000000' }));
    assert.equal(await q.done(taken!), false, 'the scan saw the old content');
    assert.equal(q.has('/t'), true);
    await q.close();
  });

  it('reads entries journaled without ctimeNs (older agents) as unknown ctime, and scans them', async () => {
    const file = freshFile();
    const { Journal } = await import('../../src/store/journal.js');
    const j = await Journal.open<Record<string, unknown>>(file);
    await j.write([
      { op: 'put', key: '/legacy', value: { path: '/legacy', dev: '1', ino: '2', size: 3, mtimeNs: '4', reason: 'deadline', time: 5 } },
    ]);
    await j.close();
    const q = await DeferredQueue.open({ file });
    const [e] = q.take(1);
    assert.equal(e?.path, '/legacy');
    assert.equal(e?.ctimeNs, '');
    assert.equal(await q.done(e!), true);
    await q.close();
  });

  it('emits "added" after the entry is durable, and an ignored failing add does not crash', async () => {
    const q = await DeferredQueue.open({ file: freshFile() });
    const seen: string[] = [];
    q.on('added', (e) => seen.push(e.path));
    await q.add(entry('/z'));
    assert.deepEqual(seen, ['/z']);
    await q.close();
    await assert.rejects(q.add(entry('/after-close')), /closed/);
    void q.add(entry('/ignored')); // must not become an unhandled rejection
    await new Promise((r) => setImmediate(r));
  });
});

describe('DeferredQueue.drain', () => {
  it('removes what scanned, keeps what failed or threw, tries each entry once', async () => {
    const q = await DeferredQueue.open({ file: freshFile() });
    for (const p of ['/ok1', '/fail', '/throw', '/ok2']) await q.add(entry(p));
    const calls: string[] = [];
    const removed = await q.drain(async (p) => {
      calls.push(p);
      if (p === '/throw') throw new Error('boom');
      return p.startsWith('/ok');
    }, 2);
    assert.equal(removed, 2);
    assert.deepEqual(calls.sort(), ['/fail', '/ok1', '/ok2', '/throw']);
    assert.deepEqual(
      [...q].map((e) => e.path),
      ['/fail', '/throw'],
    );
    assert.equal(q.inFlight, 0, 'kept entries are released after the drain');
    await q.close();
  });
});

describe('DeferredQueue on a full disk (a 1 MiB tmpfs)', { skip: needRoot() }, () => {
  it('keeps refused entries in memory, scans them like the others, and writes them to disk once space is freed', async () => {
    const m = scratchMount('la-deferred-full-', '1m');
    try {
      const file = DeferredQueue.defaultFile(m.dir);
      const q = await DeferredQueue.open({ file });
      await q.add(entry('/on-disk'));
      fillDisk(path.join(m.dir, 'filler'));
      const big = 'd'.repeat(3000); // a path long enough that a few need a new page
      const full = Array.from({ length: 6 }, (_, i) => `/full-${i}/${big}`);
      for (const p of full) await q.add(entry(p)); // resolves: queued, in memory
      assert.ok(q.unpersisted > 0, 'some entries could not be written');
      assert.equal(q.size, 1 + full.length);
      assert.ok(full.every((p) => q.has(p)));
      // One is scanned while the disk is still full: it leaves the queue.
      const [first] = q.take(10).filter((e) => e.path === full[0]);
      assert.ok(first);
      assert.equal(await q.done(first), true);
      q.release(full[1]!);
      for (const e of [...q]) q.release(e);
      fs.rmSync(path.join(m.dir, 'filler'));
      await q.add(entry('/after'));
      await new Promise((r) => setTimeout(r, 200)); // the memory-only entries are written behind it
      assert.equal(q.unpersisted, 0, 'written to disk once there is room');
      await q.close();
      const again = await DeferredQueue.open({ file });
      assert.deepEqual(
        [...again].map((e) => e.path).sort(),
        ['/on-disk', '/after', ...full.slice(1)].sort(),
        'everything not scanned is on disk',
      );
      await again.close();
    } finally {
      m.unmount();
    }
  });
});
