/**
 * The in-flight window's two classes: foreground waiters go first, background holds at most its
 * share, FIFO within a class, old background waiters are not starved, a raised background waiter
 * moves ahead, and timeouts and drain still fail waiters.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Priority, Window } from '../../src/svm-link/window.js';

const timeout = () => new Error('timeout');
const tick = () => new Promise((r) => setImmediate(r));

/** Acquire and record the order in which requests got their slot. */
function recorder(w: Window) {
  const order: string[] = [];
  const releases = new Map<string, () => void>();
  const take = (name: string, prio: 'foreground' | 'background' | Priority, ms = 5000) => {
    const p = w.acquire(ms, timeout, prio).then((rel) => {
      order.push(name);
      releases.set(name, rel);
      return rel;
    });
    p.catch(() => undefined); // waiters left at the end are drained
    return p;
  };
  const release = (name: string) => releases.get(name)!();
  return { order, take, release };
}

describe('Window', () => {
  it('admits waiting foreground requests before waiting background ones, FIFO within a class', async () => {
    const w = new Window(2, { backgroundShare: 1 });
    const r = recorder(w);
    await r.take('b0', 'background');
    await r.take('b1', 'background');
    void r.take('b2', 'background');
    void r.take('b3', 'background');
    void r.take('f0', 'foreground');
    void r.take('f1', 'foreground');
    await tick();
    assert.deepEqual(r.order, ['b0', 'b1']);
    r.release('b0');
    r.release('b1');
    await tick();
    assert.deepEqual(r.order, ['b0', 'b1', 'f0', 'f1']);
    r.release('f0');
    r.release('f1');
    await tick();
    assert.deepEqual(r.order, ['b0', 'b1', 'f0', 'f1', 'b2', 'b3']);
    assert.equal(w.stats.foreground.admitted, 2);
    assert.equal(w.stats.background.admitted, 4);
    assert.equal(w.stats.background.atOnce, 2);
  });

  it('keeps background to its share, so a foreground request finds a free slot at once', async () => {
    const w = new Window(8); // default share 0.75: background holds at most 6
    assert.equal(w.backgroundLimit, 6);
    const r = recorder(w);
    for (let i = 0; i < 20; i++) void r.take(`b${i}`, 'background');
    await tick();
    assert.equal(w.inUse, 6);
    assert.equal(w.backgroundInUse, 6);
    assert.equal(w.waitingBackground, 14);
    await r.take('f0', 'foreground');
    await r.take('f1', 'foreground');
    assert.equal(w.stats.foreground.atOnce, 2, 'both foreground requests found a slot without waiting');
    assert.equal(w.inUse, 8);
    // Full: the next foreground waits, and gets the first slot freed even though background waited longer.
    void r.take('f2', 'foreground');
    await tick();
    r.release('b0');
    await tick();
    assert.equal(r.order.at(-1), 'f2');
    // b0 left: background holds 5 of its 6, so the next freed slot goes to the oldest background waiter.
    r.release('f0');
    await tick();
    assert.equal(r.order.at(-1), 'b6');
    assert.equal(w.backgroundInUse, 6);
    // Background at its share: a freed slot stays free for foreground.
    r.release('f1');
    await tick();
    assert.equal(r.order.at(-1), 'b6');
    assert.equal(w.inUse, 7);
    assert.equal(w.waitingBackground, 13);
    await r.take('f3', 'foreground');
    assert.equal(w.stats.foreground.atOnce, 3);
    w.drain(new Error('end'));
  });

  it('never lets background take the last slots, but gives it at least one', () => {
    assert.equal(new Window(1).backgroundLimit, 1);
    assert.equal(new Window(4).backgroundLimit, 3);
    assert.equal(new Window(32).backgroundLimit, 24);
    assert.equal(new Window(32, { backgroundShare: 0.5 }).backgroundLimit, 16);
    const w = new Window(4);
    w.setLimit(2);
    assert.equal(w.backgroundLimit, 1);
  });

  it('does not starve background: a waiter older than backgroundMaxWaitMs goes ahead of foreground', async () => {
    const w = new Window(1, { backgroundMaxWaitMs: 40 });
    const r = recorder(w);
    await r.take('f0', 'foreground');
    void r.take('b0', 'background');
    void r.take('f1', 'foreground');
    await tick();
    r.release('f0'); // b0 is young: f1 first
    await tick();
    assert.deepEqual(r.order, ['f0', 'f1']);
    void r.take('f2', 'foreground');
    await new Promise((res) => setTimeout(res, 60));
    r.release('f1'); // b0 is now older than 40 ms: it goes before f2
    await tick();
    assert.deepEqual(r.order, ['f0', 'f1', 'b0']);
    r.release('b0');
    await tick();
    assert.deepEqual(r.order, ['f0', 'f1', 'b0', 'f2']);
  });

  it('moves a raised background waiter to the foreground queue', async () => {
    const w = new Window(1);
    const r = recorder(w);
    await r.take('f0', 'foreground');
    const p = new Priority('background');
    void r.take('b0', 'background');
    void r.take('b1', p);
    void r.take('f1', 'foreground');
    await tick();
    p.raise();
    assert.equal(w.waitingForeground, 2);
    r.release('f0');
    await tick();
    r.release('f1');
    await tick();
    r.release('b1');
    await tick();
    assert.deepEqual(r.order, ['f0', 'f1', 'b1', 'b0']);
    assert.equal(w.stats.foreground.admitted, 3);
  });

  it('still fails a waiter at its timeout, in either class, and frees nothing it did not hold', async () => {
    const w = new Window(1);
    const r = recorder(w);
    await r.take('f0', 'foreground');
    const late = [w.acquire(20, () => new Error('fg-timeout'), 'foreground'), w.acquire(20, () => new Error('bg-timeout'), 'background')];
    await assert.rejects(late[0]!, /fg-timeout/);
    await assert.rejects(late[1]!, /bg-timeout/);
    assert.equal(w.waiting, 0);
    assert.equal(w.stats.foreground.timedOut, 1);
    assert.equal(w.stats.background.timedOut, 1);
    r.release('f0');
    r.release('f0'); // a second release of the same slot is a no-op
    assert.equal(w.inUse, 0);
    await r.take('b', 'background');
    assert.equal(w.inUse, 1);
  });

  it('drain fails every waiter of both classes', async () => {
    const w = new Window(1);
    await w.acquire(1000, timeout, 'foreground');
    const p = Promise.allSettled([
      w.acquire(1000, timeout, 'foreground'),
      w.acquire(1000, timeout, 'background'),
      w.acquire(1000, timeout, new Priority('background')),
    ]);
    w.drain(new Error('closed'));
    const res = await p;
    assert.deepEqual(
      res.map((x) => x.status === 'rejected' && (x.reason as Error).message),
      ['closed', 'closed', 'closed'],
    );
    assert.equal(w.waiting, 0);
  });

  it('treats an unmarked request as foreground (the behaviour before classes)', async () => {
    const w = new Window(4);
    for (let i = 0; i < 4; i++) await w.acquire(1000, timeout);
    assert.equal(w.inUse, 4);
    assert.equal(w.backgroundInUse, 0);
  });
});
