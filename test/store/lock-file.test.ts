/**
 * The pid lock (src/store/lock-file.ts): a live holder of this boot keeps it; a dead pid or a lock
 * from another boot (a VM cloned from a running template, or restored from a snapshot, where the
 * old pid may belong to any process now) is taken over.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { acquireLock, bootId, readHolder, readPid } from '../../src/store/lock-file.js';
import { tempDir } from '../helpers/procs.js';

const OTHER_BOOT = '00000000-1111-2222-3333-444444444444';

describe('lock file', { skip: process.platform === 'win32' ? 'symlink locks are Linux only' : false }, () => {
  // A live process that is not us: the lock's pid in the cases below.
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
  after(() => sleeper.kill('SIGKILL'));

  it('names this boot in the lock it takes', async () => {
    const lock = path.join(tempDir('la-lock-'), 'agent.lock');
    const release = await acquireLock(lock);
    const boot = bootId();
    assert.ok(boot, 'Linux has a boot id');
    assert.equal(fs.readlinkSync(lock), `${process.pid}@${boot}`);
    assert.deepEqual(await readHolder(lock), { pid: process.pid, boot });
    assert.equal(await readPid(lock), process.pid);
    await release();
    assert.ok(!fs.existsSync(lock));
  });

  it('a live holder of this boot keeps the lock, in either form', async () => {
    const dir = tempDir('la-lock-');
    for (const target of [`${sleeper.pid}@${bootId()}`, String(sleeper.pid)]) {
      const lock = path.join(dir, `${target.length}.lock`);
      fs.symlinkSync(target, lock);
      await assert.rejects(acquireLock(lock, 50), /held by process/);
      assert.equal(fs.readlinkSync(lock), target, 'left alone');
    }
  });

  it('a lock from another boot is taken over even though its pid is alive now', async () => {
    const lock = path.join(tempDir('la-lock-'), 'agent.lock');
    fs.symlinkSync(`${sleeper.pid}@${OTHER_BOOT}`, lock);
    const release = await acquireLock(lock, 0);
    assert.equal(await readPid(lock), process.pid);
    await release();
  });

  it('a dead pid is taken over; so is a target that names no holder', async () => {
    const dir = tempDir('la-lock-');
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    const lock = path.join(dir, 'dead.lock');
    fs.symlinkSync(`${dead.pid}@${bootId()}`, lock);
    await (
      await acquireLock(lock, 0)
    )();
    const junk = path.join(dir, 'junk.lock');
    fs.symlinkSync('../../etc/passwd', junk);
    await (
      await acquireLock(junk, 0)
    )();
  });
});
