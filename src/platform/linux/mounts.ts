/**
 * Which mounts "all local disk filesystems" means: the default `protect` of `lightagent run`.
 * Read from /proc/self/mountinfo (proc(5)); pseudo, network and in-memory filesystems are left
 * out, and so is anything under /proc, /sys, /dev and /run.
 */
import fs from 'node:fs';

/** Filesystem types backed by a local block device. */
export const LOCAL_DISK_FS = new Set([
  'ext2',
  'ext3',
  'ext4',
  'xfs',
  'btrfs',
  'f2fs',
  'vfat',
  'exfat',
  'ntfs',
  'ntfs3',
  'fuseblk',
  'zfs',
  'jfs',
  'reiserfs',
  'bcachefs',
]);
const NEVER_UNDER = ['/proc', '/sys', '/dev', '/run'];

/** mountinfo escapes space, tab, newline and backslash as \\ooo octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 5 || right.length < 2) continue;
    out.push({ mountPoint: unescape(left[4]!), fsType: right[0]!, source: unescape(right[1]!) });
  }
  return out;
}

/** Mount points of local disk filesystems, outer first, without duplicates. */
export function localDiskMounts(mountinfo: string = fs.readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const seen = new Set<string>();
  for (const m of parseMountinfo(mountinfo)) {
    if (!LOCAL_DISK_FS.has(m.fsType)) continue;
    if (NEVER_UNDER.some((p) => m.mountPoint === p || m.mountPoint.startsWith(`${p}/`))) continue;
    seen.add(m.mountPoint);
  }
  return [...seen].sort((a, b) => a.length - b.length || a.localeCompare(b));
}
