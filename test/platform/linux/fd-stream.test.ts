/**
 * A raw fd read on the event loop (src/platform/linux/fd-stream.ts): what is written to it arrives
 * as 'data' without blocking the loop, destroy() closes the fd it was given, and an fd the loop
 * cannot take is a PlatformError naming it. The netlink socket it exists for (a read error,
 * ENOBUFS, and reading on from a dup) is covered by test/processes/process-watcher.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { PlatformError } from '../../../src/errors.js';
import { readableFdStream } from '../../../src/platform/linux/fd-stream.js';
import { openPipe } from '../../../src/platform/linux/libc.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';

describe('readable fd stream', { skip: linux }, () => {
  it('delivers what is written to a non-blocking fd, each write as it comes, and closes the fd on destroy', async () => {
    const [r, w] = openPipe((err) => new Error(`pipe2: ${err}`));
    try {
      const s = readableFdStream(r);
      const chunks: string[] = [];
      const got = (n: number) =>
        new Promise<void>((resolve) => {
          const check = () => (chunks.length >= n ? resolve() : setTimeout(check, 5));
          check();
        });
      s.on('data', (b: Buffer) => chunks.push(b.toString()));
      fs.writeSync(w, 'first');
      await got(1);
      fs.writeSync(w, 'second');
      await got(2);
      assert.deepEqual(chunks, ['first', 'second']);
      const closed = new Promise((resolve) => s.once('close', resolve));
      s.destroy();
      await closed;
      assert.throws(() => fs.fstatSync(r), { code: 'EBADF' }, 'the stream closed the fd it was given');
    } finally {
      fs.closeSync(w);
    }
  });

  it('an fd the event loop cannot take is a PlatformError that names it', () => {
    assert.throws(
      () => readableFdStream(987_654),
      (e: unknown) => e instanceof PlatformError && e.code === 'LA_ERR_FD_STREAM' && /fd 987654/.test(e.message),
    );
  });
});
