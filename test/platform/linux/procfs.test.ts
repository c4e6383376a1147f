/**
 * /proc readers against real processes: readProcess (one /proc/PID directory fd, koffi) gives what
 * the file-by-file fs reader gives, for this process, init, a zombie and a process with an
 * over-long command line; a process that is gone reads as undefined on both.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { CMDLINE_MAX, readProcess, readProcessFs } from '../../../src/platform/linux/procfs.js';
import { eventually } from '../../helpers/procs.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';

/**
 * The two readers read a live process at two moments: its scheduler state (R, S, D) may change in
 * between (a shell in D while its child pages in), so it is compared apart; everything else must
 * be equal.
 */
function assertSameProcess(a: ReturnType<typeof readProcess>, b: ReturnType<typeof readProcessFs>): void {
  assert.ok(a && b, 'both readers see the process');
  assert.deepEqual({ ...a, state: '' }, { ...b, state: '' });
  assert.match(a.state, /^[RSDTtWXZIKP]$/);
  assert.match(b.state, /^[RSDTtWXZIKP]$/);
}

describe('procfs: readProcess', { skip: linux }, () => {
  const children: Array<ReturnType<typeof spawn>> = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('this process: pid, parent, exe, command line and uids, the same as the fs reader', () => {
    const p = readProcess(process.pid);
    assert.ok(p);
    assert.equal(p.pid, process.pid);
    assert.equal(p.ppid, process.ppid);
    assert.equal(p.exe, fs.readlinkSync('/proc/self/exe'));
    const raw = fs.readFileSync('/proc/self/cmdline', 'utf8');
    if (raw.length <= CMDLINE_MAX) assert.equal(p.cmdline, raw.replace(/\0+$/, '').replaceAll('\0', ' '));
    else assert.ok(p.cmdline?.endsWith('…'));
    assert.equal(p.uid, process.getuid!());
    assert.equal(p.euid, process.geteuid!());
    assert.ok(p.startTicks > 0);
    assertSameProcess(p, readProcessFs(process.pid));
  });

  it('init (pid 1) reads the same both ways', () => {
    const p = readProcess(1);
    assert.ok(p);
    assert.equal(p.pid, 1);
    assert.equal(p.ppid, 0);
    assertSameProcess(p, readProcessFs(1));
  });

  it('a command line over CMDLINE_MAX is cut, with "…"', async () => {
    const long = 'x'.repeat(3 * CMDLINE_MAX);
    // sh waits for its sleep, keeping its own command line: /bin/sh -c 'sleep 30' xxx...
    const c = spawn('/bin/sh', ['-c', '/bin/sleep 30', long], { stdio: 'ignore' });
    children.push(c);
    const p = await eventually(
      () => {
        const x = readProcess(c.pid!);
        return x?.cmdline?.startsWith('/bin/sh -c') ? x : undefined;
      },
      5000,
      'the shell to run',
    );
    assert.ok(p.cmdline!.startsWith('/bin/sh -c /bin/sleep 30 xxx'));
    assert.ok(p.cmdline!.endsWith('…'));
    assert.equal(p.cmdline!.length, CMDLINE_MAX + 1);
    assert.equal(p.exe, fs.readlinkSync(`/proc/${c.pid}/exe`));
    assertSameProcess(readProcess(c.pid!), readProcessFs(c.pid!));
  });

  it('a zombie: stat (state Z) and uids, no exe, an empty command line', async () => {
    // The background sleep's parent execs into a long sleep that never waits: it stays a zombie.
    const c = spawn('/bin/sh', ['-c', '/bin/sleep 0.05 & echo $!; exec /bin/sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(c);
    const zpid = await new Promise<number>((resolve) => c.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    const z = await eventually(
      () => {
        const p = readProcess(zpid);
        return p?.state === 'Z' ? p : undefined;
      },
      5000,
      'the background sleep to become a zombie',
    );
    assert.equal(z.ppid, c.pid);
    assert.equal(z.exe, undefined);
    assert.equal(z.cmdline, '');
    assert.equal(z.uid, process.getuid!());
    assert.deepEqual(z, readProcessFs(zpid));
  });

  it('a process that is gone reads as undefined', () => {
    const r = spawnSync('/bin/sh', ['-c', 'echo $$'], { encoding: 'utf8' });
    const pid = Number(r.stdout.trim());
    assert.ok(pid > 0);
    // Reaped by spawnSync; its pid is free (a reuse this soon would need the whole pid space to wrap).
    assert.equal(readProcess(pid), undefined);
    assert.equal(readProcessFs(pid), undefined);
    assert.equal(readProcess(-1), undefined);
    assert.equal(readProcess(0), undefined);
  });
});
