/**
 * killExact (pidfd_open + pidfd_send_signal through the libc binding) against real processes:
 * it kills the process that started at the given time, refuses one whose start time differs
 * (the pid was reused), and says when the pid is gone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { killExact } from '../../../src/platform/linux/pidfd.js';
import { readStat } from '../../../src/platform/linux/procfs.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';

describe('killExact', { skip: linux }, () => {
  const children: Array<ReturnType<typeof spawn>> = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('a start time that does not match is a reused pid: nothing is signalled', async () => {
    const c = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    await once(c, 'spawn');
    const st = readStat(c.pid!);
    assert.ok(st);
    assert.equal(killExact(c.pid!, st.startTicks + 1), 'reused');
    assert.equal(c.exitCode, null);
    assert.equal(c.signalCode, null);
    assert.ok(readStat(c.pid!), 'still running');
  });

  it('the matching process is killed with SIGKILL; afterwards its pid is gone', async () => {
    const c = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    await once(c, 'spawn');
    const st = readStat(c.pid!);
    assert.ok(st);
    const exited = once(c, 'exit');
    assert.equal(killExact(c.pid!, st.startTicks), 'killed');
    const [code, signal] = await exited;
    assert.equal(code, null);
    assert.equal(signal, 'SIGKILL');
    assert.equal(killExact(c.pid!, st.startTicks), 'gone', 'reaped: no /proc entry');
  });
});
