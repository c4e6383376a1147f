/**
 * ProcessTable: identity is pid + start time (a reused pid never answers for the old process),
 * the cap holds, exited entries go first.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProcessTable } from '../../src/processes/process-table.js';

describe('ProcessTable', () => {
  it('keeps pid reuse apart by start time', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 500, ppid: 1, startTicks: 1000, exe: '/usr/bin/evil' });
    t.exit(500, 0);
    // The same pid, a later process.
    t.upsert({ pid: 500, ppid: 42, startTicks: 2000, exe: '/usr/bin/innocent' });
    assert.equal(t.get(500, 1000), undefined, 'the old process must not answer for the new start time');
    assert.equal(t.get(500, 2000)?.exe, '/usr/bin/innocent');
    assert.equal(t.get(500, 2000)?.exited, false);
    assert.equal(t.stats().reused, 1);
    assert.equal(t.size, 1);
  });

  it('merges exec facts into the forked entry of the same process', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 7, ppid: 3, startTicks: 10 });
    t.upsert({ pid: 7, ppid: 3, startTicks: 10, exe: '/bin/sh', cmdline: 'sh x', uid: 1000 });
    const e = t.get(7, 10)!;
    assert.equal(e.exe, '/bin/sh');
    assert.equal(e.uid, 1000);
    assert.equal(e.ppid, 3);
    t.setUid(7, 0, 0);
    assert.equal(t.get(7)!.uid, 0);
  });

  it('without an expected start time, only a live entry answers; latest() still names an exited one', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 9, ppid: 1, startTicks: 5, exe: '/bin/a' });
    t.exit(9, 256);
    assert.equal(t.get(9), undefined);
    assert.equal(t.latest(9)?.exe, '/bin/a');
    assert.equal(t.latest(9)?.exitCode, 256);
  });

  it('an unknown start time on an exited pid is treated as a new process', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 9, ppid: 1, startTicks: 5, exe: '/bin/a' });
    t.exit(9);
    t.upsert({ pid: 9, ppid: 2, startTicks: undefined, exe: '/bin/b' });
    assert.equal(t.latest(9)?.exe, '/bin/b');
    assert.equal(t.latest(9)?.exited, false);
  });

  it('evicts exited entries first, oldest exit first, and never passes the cap', () => {
    const t = new ProcessTable(16);
    for (let pid = 100; pid < 108; pid++) t.upsert({ pid, ppid: 1, startTicks: pid });
    for (let pid = 200; pid < 208; pid++) t.upsert({ pid, ppid: 1, startTicks: pid });
    t.exit(203);
    t.exit(201);
    t.upsert({ pid: 300, ppid: 1, startTicks: 1 });
    assert.equal(t.latest(203), undefined, 'the first to exit goes first');
    assert.ok(t.latest(201));
    t.upsert({ pid: 301, ppid: 1, startTicks: 1 });
    assert.equal(t.latest(201), undefined);
    // No exited entries left: the least recently seen live one goes.
    t.upsert({ pid: 100, ppid: 1, startTicks: 100, exe: '/touched' });
    t.upsert({ pid: 302, ppid: 1, startTicks: 1 });
    assert.equal(t.latest(101), undefined, '101 was the least recently seen');
    assert.ok(t.latest(100));
    assert.equal(t.size, 16);
    const s = t.stats();
    assert.equal(s.evictedExited, 2);
    assert.equal(s.evictedLive, 1);
    assert.equal(s.live + s.exited, s.size);
  });

  it('a storm of 10,000 short processes stays within the cap with exact accounting', () => {
    const t = new ProcessTable(1024);
    for (let pid = 1; pid < 300; pid++) t.upsert({ pid, ppid: 1, startTicks: 1 }); // long-lived
    let pid = 1000;
    for (let i = 0; i < 10_000; i++) {
      pid = pid >= 30_000 ? 1000 : pid + 1; // pids wrap: reuse on the way
      t.upsert({ pid, ppid: 1, startTicks: 10_000 + i });
      t.upsert({ pid, ppid: 1, startTicks: 10_000 + i, exe: '/bin/true' });
      t.exit(pid, 0);
      assert.ok(t.size <= 1024);
    }
    const s = t.stats();
    assert.equal(s.exitedCapacity, 256, 'a quarter of a small cap');
    assert.equal(s.exited, 256, 'exited entries stop at their own cap');
    assert.equal(s.size, 299 + 256);
    assert.equal(s.live, 299, 'every long-lived process is still known');
    assert.ok(t.latest(pid), 'the latest exit is still there for a late detection');
    for (let p = 1; p < 300; p++) assert.ok(t.get(p, 1), `pid ${p}`);
    assert.equal(s.evictedLive, 0);
  });

  it('keeps at most 2,048 exited processes at the default cap, the newest exits', () => {
    const t = new ProcessTable();
    for (let pid = 1; pid <= 5000; pid++) {
      t.upsert({ pid, ppid: 1, startTicks: pid, exe: '/usr/bin/cat', cmdline: `cat /data/f${pid}.txt` });
      t.exit(pid, 0);
    }
    const s = t.stats();
    assert.equal(s.exited, 2048);
    assert.equal(s.size, 2048);
    assert.equal(s.evictedExited, 5000 - 2048);
    assert.equal(t.latest(5000 - 2048), undefined, 'the oldest exits went');
    assert.equal(t.latest(5000 - 2047)?.cmdline, `cat /data/f${5000 - 2047}.txt`);
  });

  it('refuses a silly capacity', () => {
    assert.throws(() => new ProcessTable(3), RangeError);
    assert.throws(() => new ProcessTable(1024, 0), RangeError);
    assert.throws(() => new ProcessTable(1024, 2000), RangeError);
  });
});
