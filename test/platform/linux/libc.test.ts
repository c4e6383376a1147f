/**
 * The one libc binding: its constants against Node's own (compiled from this platform's headers)
 * and the running kernel, its general syscalls on real fds, and that it loads only when called,
 * once per thread.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { describe, it } from 'node:test';
import * as c from '../../../src/platform/linux/libc.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';
const src = (rel: string) => JSON.stringify(new URL(`../../../src/${rel}`, import.meta.url).href);

/** Run an ES module in a fresh node and parse the JSON it prints. */
function runChild(script: string): unknown {
  const dir = fs.mkdtempSync(new URL('./', import.meta.url).pathname + '.libc-');
  try {
    fs.writeFileSync(`${dir}/main.mjs`, script);
    const r = spawnSync(process.execPath, [`${dir}/main.mjs`], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('libc binding', { skip: linux }, () => {
  it('errno constants are the ones Node was built with for this platform', () => {
    for (const name of [
      'EPERM',
      'ENOENT',
      'ESRCH',
      'EINTR',
      'EBADF',
      'EAGAIN',
      'EACCES',
      'EINVAL',
      'ENOSYS',
      'EPROTONOSUPPORT',
      'ENOBUFS',
    ] as const) {
      assert.equal(c[name], os.constants.errno[name], name);
    }
  });

  it('open flags are the ones Node was built with, and the kernel reports them back', () => {
    assert.equal(c.O_RDONLY, fs.constants.O_RDONLY);
    assert.equal(c.O_WRONLY, fs.constants.O_WRONLY);
    assert.equal(c.O_NONBLOCK, fs.constants.O_NONBLOCK);
    assert.equal(c.O_DIRECTORY, fs.constants.O_DIRECTORY);
    // O_CLOEXEC and O_LARGEFILE are not in fs.constants: /proc/self/fdinfo shows the file's flags
    // in octal, and a 64-bit kernel adds O_LARGEFILE to every open.
    const fd = c.openRaw('/proc/self', c.O_RDONLY | c.O_DIRECTORY);
    assert.ok(fd >= 0, c.describeErrno(c.errno()));
    try {
      const flags = parseInt(/^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))![1]!, 8);
      assert.equal(flags, c.O_RDONLY | c.O_DIRECTORY | c.O_CLOEXEC | c.O_LARGEFILE, flags.toString(8));
    } finally {
      c.closeFd(fd);
    }
  });

  it('a pipe, poll, close; a closed fd fails with EBADF and errno says so', () => {
    const [r, w] = c.openPipe((err) => new Error(`pipe2: ${err}`));
    const fdinfo = fs.readFileSync(`/proc/self/fdinfo/${r}`, 'latin1');
    const flags = parseInt(/^flags:\s+([0-7]+)$/m.exec(fdinfo)![1]!, 8);
    assert.equal(flags & (c.O_NONBLOCK | c.O_CLOEXEC), c.O_NONBLOCK | c.O_CLOEXEC, 'non-blocking, close-on-exec');
    assert.deepEqual(c.pollIn([r], 0), [], 'nothing to read yet');
    fs.writeSync(w, Buffer.from('x'));
    assert.deepEqual(c.pollIn([r, w], 0), [r], 'the read end is ready; the write end is not asked for POLLOUT');
    c.closeFd(r);
    c.closeFd(w);
    assert.equal(c.libc().close(r), -1);
    assert.equal(c.errno(), c.EBADF);
    assert.match(c.describeErrno(c.EBADF), /^Bad file descriptor \(errno 9\)$/);
    c.closeFd(-1); // a no-op, not a close(-1)
  });

  it('importing any module that binds it (and the tray) loads nothing; the first call does', () => {
    const o = runChild(`
      const { libcLoaded } = await import(${src('platform/linux/libc.js')});
      for (const m of ['platform/linux/fanotify.js', 'platform/linux/proc-connector.js', 'platform/linux/procfs.js', 'platform/linux/pidfd.js',
                       'platform/linux/rlimit.js', 'platform/linux/sd-notify.js', 'control/peer-cred.js', 'processes/process-watcher.js',
                       'tray/tray-app.js', 'cli/commands/tray.js']) {
        await import(new URL('../../../src/' + m, ${JSON.stringify(import.meta.url)}).href);
      }
      const before = libcLoaded();
      const { openFileLimit } = await import(${src('platform/linux/rlimit.js')});
      const limit = openFileLimit();
      process.stdout.write(JSON.stringify({ before, after: libcLoaded(), limit }));`) as {
      before: boolean;
      after: boolean;
      limit?: { soft: number };
    };
    assert.equal(o.before, false, 'imports alone must not load libc');
    assert.equal(o.after, true);
    assert.ok(o.limit && o.limit.soft > 0);
  });

  it('a worker thread loads its own handle and uses it', () => {
    const o = runChild(`
      import { Worker } from 'node:worker_threads';
      const { libc, libcLoaded } = await import(${src('platform/linux/libc.js')});
      libc();
      const w = new Worker(\`(async () => {
        const { parentPort } = require('node:worker_threads');
        const fs = require('node:fs');
        const c = await import(${src('platform/linux/libc.js')});
        const before = c.libcLoaded();
        const [r, w] = c.openPipe((e) => new Error(String(e)));
        fs.writeSync(w, Buffer.from('y'));
        const ready = c.pollIn([r], 1000);
        c.closeFd(r); c.closeFd(w);
        parentPort.postMessage({ before, ready: ready.length, after: c.libcLoaded() });
      })();\`, { eval: true });
      const m = await new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
      await w.terminate();
      process.stdout.write(JSON.stringify({ main: libcLoaded(), ...m }));`) as {
      main: boolean;
      before: boolean;
      ready: number;
      after: boolean;
    };
    assert.deepEqual(o, { main: true, before: false, ready: 1, after: true });
  });
});
