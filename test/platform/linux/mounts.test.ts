import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { localDiskMounts, parseMountinfo } from '../../../src/platform/linux/mounts.js';

const SAMPLE = [
  '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '23 22 0:21 / /proc rw,nosuid shared:5 - proc proc rw',
  '24 22 0:22 / /sys rw,nosuid shared:6 - sysfs sysfs rw',
  '25 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw',
  '26 22 0:24 / /run rw,nosuid shared:11 - tmpfs tmpfs rw',
  '27 22 254:2 / /home rw,relatime shared:20 - xfs /dev/vda2 rw',
  '28 22 0:40 / /mnt/nfs rw shared:30 - nfs4 srv:/export rw',
  '29 22 254:3 / /srv/my\\040data rw shared:31 - btrfs /dev/vda3 rw',
  '30 26 254:4 / /run/media/usb rw shared:32 - vfat /dev/sdb1 rw',
  '31 22 0:50 / /tmp rw shared:33 - tmpfs tmpfs rw',
  '32 22 254:1 /var/lib/x /var/lib/x rw shared:1 - ext4 /dev/vda1 rw',
  'garbage line without separator',
].join('\n');

describe('local disk mounts (default protect)', () => {
  it('parses mountinfo, including escaped spaces', () => {
    const m = parseMountinfo(SAMPLE);
    assert.equal(m.length, 11);
    assert.deepEqual(
      m.find((x) => x.fsType === 'btrfs'),
      { mountPoint: '/srv/my data', fsType: 'btrfs', source: '/dev/vda3' },
    );
  });

  it('keeps local disk filesystems, drops pseudo, network, memory ones and anything under /run /proc /sys /dev', () => {
    assert.deepEqual(localDiskMounts(SAMPLE), ['/', '/home', '/var/lib/x', '/srv/my data']);
  });

  it('reads this machine without failing', () => {
    assert.ok(Array.isArray(localDiskMounts()));
  });
});
