/**
 * Where the single executable unpacks koffi.node: never on a noexec mount (Debian's initramfs
 * mounts /run noexec, so the daemon under systemd could not map it: exit 2 at start, seen in the
 * QEMU guest of test/e2e), and systemd's $STATE_DIRECTORY is a candidate before the temp directory.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import { describe, it } from 'node:test';
import { candidateBases, onNoexecMount } from '../../src/sea/unpack.js';

// A Debian guest booted through initramfs-tools under systemd (fields trimmed after the options).
const MOUNTINFO = [
  '21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '22 21 0:20 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=100k,mode=755',
  '23 22 0:25 / /run/user/0 rw,nosuid,nodev,relatime shared:9 - tmpfs tmpfs rw,mode=700',
  '24 21 0:26 / /tmp rw,nosuid,nodev shared:10 - tmpfs tmpfs rw',
  '25 21 0:27 / /mnt/with\\040space rw,noexec shared:11 - tmpfs tmpfs rw',
  '26 24 0:28 / /tmp rw,noexec shared:12 - tmpfs tmpfs rw',
].join('\n');

describe('single executable: where native assets are unpacked', () => {
  it('a directory on a noexec mount is known as such (innermost and latest mount wins)', () => {
    assert.equal(onNoexecMount('/run', MOUNTINFO), true);
    assert.equal(onNoexecMount('/run/lightagent', MOUNTINFO), true);
    assert.equal(onNoexecMount('/run/user/0', MOUNTINFO), false);
    assert.equal(onNoexecMount('/var/lib/lightagent', MOUNTINFO), false);
    assert.equal(onNoexecMount('/runner', MOUNTINFO), false);
    assert.equal(onNoexecMount('/mnt/with space/x', MOUNTINFO), true);
    assert.equal(onNoexecMount('/tmp', MOUNTINFO), true, 'the later mount on /tmp hides the earlier one');
    assert.equal(onNoexecMount('/anything', ''), false, 'nothing known (no /proc): nothing skipped');
  });

  it('root tries /run, $XDG_RUNTIME_DIR, $STATE_DIRECTORY (systemd), then the temp directory', () => {
    assert.deepEqual(candidateBases({ XDG_RUNTIME_DIR: '/run/user/0', STATE_DIRECTORY: '/var/lib/lightagent:/var/lib/other' }, 0), [
      '/run',
      '/run/user/0',
      '/var/lib/lightagent',
      os.tmpdir(),
    ]);
    assert.deepEqual(candidateBases({ STATE_DIRECTORY: 'relative' }, 1000), [os.tmpdir()]);
  });
});
