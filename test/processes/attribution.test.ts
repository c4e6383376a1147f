/**
 * Attribution: /proc now, checked against the table by start time; the table for exited
 * processes; parent chain up to 3. Plus real processes: a live child with its parents, and a
 * kill aimed at a reused pid (wrong start time) that must not land.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { Attributor } from '../../src/processes/attribution.js';
import { ProcessTable } from '../../src/processes/process-table.js';
import type { ProcInfo } from '../../src/platform/linux/procfs.js';
import { killExact } from '../../src/platform/linux/pidfd.js';
import { readStat } from '../../src/platform/linux/procfs.js';

function fakeProc(procs: ProcInfo[]): (pid: number) => ProcInfo | undefined {
  return (pid) => procs.find((p) => p.pid === pid);
}
const p = (pid: number, ppid: number, startTicks: number, exe: string, extra: Partial<ProcInfo> = {}): ProcInfo => ({
  pid,
  ppid,
  startTicks,
  comm: exe.split('/').pop()!,
  state: 'S',
  exe,
  cmdline: exe,
  uid: 0,
  euid: 0,
  ...extra,
});

describe('Attributor', () => {
  it('names the live process and up to 3 parents, nearest first', () => {
    const a = new Attributor(
      undefined,
      fakeProc([
        p(50, 40, 5, '/bin/sh'),
        p(40, 30, 4, '/usr/sbin/sshd'),
        p(30, 20, 3, '/usr/sbin/sshd'),
        p(20, 1, 2, '/lib/systemd/systemd'),
        p(1, 0, 1, '/sbin/init'),
      ]),
    );
    const r = a.attribute(50);
    assert.equal(r.exe, '/bin/sh');
    assert.equal(r.source, 'proc');
    assert.equal(r.user, 'root');
    assert.deepEqual(
      r.parents.map((x) => x.pid),
      [40, 30, 20],
    );
  });

  it('a reused pid: the live process is named, not the older one the table remembers', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 77, ppid: 1, startTicks: 100, exe: '/tmp/malware', cmdline: 'malware' });
    t.exit(77);
    const a = new Attributor(t, fakeProc([p(77, 1, 999, '/usr/bin/vim', { cmdline: 'vim notes' })]));
    const r = a.attribute(77);
    assert.equal(r.exe, '/usr/bin/vim');
    assert.equal(r.cmdline, 'vim notes');
    assert.equal(r.startTicks, 999);
  });

  it('the same process as a zombie: exe and cmdline come from its table entry', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 88, ppid: 1, startTicks: 100, exe: '/usr/bin/writer', cmdline: 'writer -x' });
    const a = new Attributor(t, fakeProc([p(88, 1, 100, '', { exe: undefined, cmdline: '' })]));
    const r = a.attribute(88);
    assert.equal(r.exe, '/usr/bin/writer');
    assert.equal(r.cmdline, 'writer -x');
  });

  it('an exited process is named from the table, with its chain, marked exited', () => {
    const t = new ProcessTable(64);
    t.upsert({ pid: 60, ppid: 59, startTicks: 7, exe: '/usr/bin/curl', uid: 1000 });
    t.upsert({ pid: 59, ppid: 1, startTicks: 6, exe: '/bin/bash' });
    t.exit(60);
    const a = new Attributor(t, fakeProc([p(1, 0, 1, '/sbin/init')]));
    const r = a.attribute(60);
    assert.equal(r.source, 'table');
    assert.equal(r.exited, true);
    assert.equal(r.exe, '/usr/bin/curl');
    assert.deepEqual(
      r.parents.map((x) => [x.pid, x.exe]),
      [
        [59, '/bin/bash'],
        [1, '/sbin/init'],
      ],
    );
  });

  it('an unknown pid yields source none, and a parent loop ends', () => {
    assert.deepEqual(new Attributor(undefined, () => undefined).attribute(5), { pid: 5, parents: [], source: 'none' });
    const r = new Attributor(undefined, fakeProc([p(10, 11, 1, '/a'), p(11, 10, 1, '/b')])).attribute(10);
    assert.deepEqual(
      r.parents.map((x) => x.pid),
      [11],
    );
  });

  it('real: a child of this process is named with this process as its parent', async () => {
    const child = spawn('/bin/sleep', ['5'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      // spawn resolves after the fork; wait for the exec to show.
      for (let i = 0; i < 100 && new Attributor().attribute(child.pid!).exe !== '/usr/bin/sleep'; i++)
        await new Promise((r) => setTimeout(r, 10));
      const r = new Attributor().attribute(child.pid!);
      assert.equal(r.exe, '/usr/bin/sleep');
      assert.equal(r.cmdline, '/bin/sleep 5');
      assert.equal(r.uid, process.getuid!());
      assert.equal(r.parents[0]?.pid, process.pid);
      assert.equal(r.parents[0]?.exe, process.execPath);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('real: a kill aimed at a pid whose start time differs (a reused pid) does not land', async () => {
    const child = spawn('/bin/sleep', ['5'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const st = readStat(child.pid!)!;
      assert.equal(killExact(child.pid!, st.startTicks - 1), 'reused');
      assert.equal(child.exitCode, null);
      assert.equal(child.signalCode, null);
      assert.ok(readStat(child.pid!), 'still alive');
      const exited = new Promise((r) => child.once('exit', (_c, sig) => r(sig)));
      assert.equal(killExact(child.pid!, st.startTicks), 'killed');
      assert.equal(await exited, 'SIGKILL');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
