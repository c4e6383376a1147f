/**
 * WrittenQueue, the watchers' half of the backpressure contract (src/watchers/protection.ts):
 * bounded concurrency, one report per path while queued, a rewrite during a scan reported again
 * after it, a refusal past the bound, a failing handler logged and survived, a bounded close.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { logger } from '../../src/log.js';
import type { ProtectionHandler, WrittenFile, WrittenResult } from '../../src/watchers/protection.js';
import { WrittenQueue } from '../../src/watchers/written-queue.js';

/** A handler whose calls stay open until released by path. */
function gated(): { handler: ProtectionHandler; calls: string[]; running: () => number; release: (p: string) => void } {
  const calls: string[] = [];
  const open = new Map<string, Array<() => void>>();
  let running = 0;
  return {
    calls,
    running: () => running,
    release: (p) => {
      const rs = open.get(p) ?? [];
      open.delete(p);
      for (const r of rs) r();
    },
    handler: {
      decide: () => Promise.reject(new Error('watchers never decide')),
      written: (ev: WrittenFile) => {
        calls.push(ev.path);
        running++;
        return new Promise<WrittenResult>((resolve) => {
          const list = open.get(ev.path) ?? [];
          list.push(() => {
            running--;
            resolve({ clean: true });
          });
          open.set(ev.path, list);
        });
      },
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('WrittenQueue', () => {
  it('runs at most `concurrency` reports at once and each queued path once', async () => {
    const h = gated();
    const q = new WrittenQueue(h.handler, logger('test'), 2, 100);
    for (const p of ['/a', '/b', '/c', '/c', '/d', '/c']) assert.equal(q.push(p), true);
    await tick();
    assert.deepEqual(h.calls, ['/a', '/b']);
    assert.equal(q.size, 2, '/c once, /d');
    h.release('/a');
    await tick();
    h.release('/b');
    await tick();
    assert.deepEqual(h.calls, ['/a', '/b', '/c', '/d']);
    h.release('/c');
    h.release('/d');
    await tick();
    assert.equal(q.reported, 4);
    assert.equal(h.running(), 0);
  });

  it('reports a path written again during its report once more, after it, never in parallel', async () => {
    const h = gated();
    const q = new WrittenQueue(h.handler, logger('test'), 4, 100);
    q.push('/x');
    await tick();
    q.push('/x');
    q.push('/x');
    await tick();
    assert.deepEqual(h.calls, ['/x'], 'not while its report runs');
    h.release('/x');
    await tick();
    await tick();
    assert.deepEqual(h.calls, ['/x', '/x'], 'once more for both rewrites');
    h.release('/x');
    await tick();
    assert.equal(q.size, 0);
  });

  it('refuses new paths past maxQueued and takes them again once there is room', async () => {
    const h = gated();
    const q = new WrittenQueue(h.handler, logger('test'), 1, 2);
    q.push('/1');
    await tick();
    assert.equal(q.push('/2'), true);
    assert.equal(q.push('/3'), true);
    assert.equal(q.push('/4'), false);
    assert.equal(q.push('/2'), true, 'a queued path is not new');
    h.release('/1');
    await tick();
    assert.equal(q.push('/4'), true);
  });

  it('survives a handler that throws or rejects, counting the failures', async () => {
    let n = 0;
    const q = new WrittenQueue(
      {
        decide: () => Promise.reject(new Error('no')),
        written: () => {
          if (n++ % 2) throw new Error('sync failure');
          return Promise.reject(new Error('async failure'));
        },
      },
      logger('test'),
    );
    for (let i = 0; i < 6; i++) q.push(`/f${i}`);
    for (let i = 0; i < 5; i++) await tick();
    assert.equal(q.reported, 6);
    assert.equal(q.failed, 6);
  });

  it('close() drops what waits and returns within its bound even if a report never settles', async () => {
    const h = gated();
    const q = new WrittenQueue(h.handler, logger('test'), 1, 100);
    q.push('/hang');
    q.push('/waiting');
    await tick();
    const t0 = Date.now();
    await q.close(200);
    assert.ok(Date.now() - t0 < 1000);
    assert.deepEqual(h.calls, ['/hang']);
    assert.equal(q.size, 0);
    assert.equal(q.push('/after'), true);
    await tick();
    assert.deepEqual(h.calls, ['/hang'], 'nothing runs after close');
  });
});
