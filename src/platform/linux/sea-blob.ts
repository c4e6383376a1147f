/**
 * Give back the pages of the single executable's embedded blob once start-up has read it.
 *
 * The blob (Node's NODE_SEA_BLOB note: the daemon's script and its code cache, koffi.node, the
 * worker's bundle, the other parts) is read once at start: V8 copies the script into its heap and
 * compiles from the copy, koffi.node is unpacked to the private directory, the worker's bundle is
 * copied out. The ~2.4 MB of its pages start-up touched then stay mapped for the daemon's life,
 * file-backed and never read again. madvise(MADV_PAGEOUT) on the blob's part of the mapping
 * unmaps them and lets the kernel drop them from the page cache too (where no other process, such
 * as a tray or a CLI call of the same binary, maps them): memory freed, not only moved out of
 * this process's RSS. Kernels before 5.4 lack MADV_PAGEOUT: MADV_DONTNEED unmaps them and leaves
 * them in the page cache. Either way a later read (a reload starts the gate's worker from its
 * bundle again) faults them back in from the file; the mapping is read-only, so nothing is lost.
 * Only the blob is touched, never the program's code or data.
 */
import fs from 'node:fs';
import { isSea } from '../private-dir.js';
import { errno, libc, EINVAL } from './libc.js';

const PT_NOTE = 4;
const MADV_DONTNEED = 4;
const MADV_PAGEOUT = 21;
const SEA_NOTE = 'NODE_SEA_BLOB';
const PAGE = 4096;

/** File offset and length of the executable's NODE_SEA_BLOB note contents, or undefined. */
export function seaBlobRange(exe: string): { offset: number; length: number } | undefined {
  const fd = fs.openSync(exe, 'r');
  try {
    const read = (pos: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      return b.subarray(0, fs.readSync(fd, b, 0, len, pos));
    };
    const eh = read(0, 64);
    // ELF64, little-endian only (x86_64, aarch64): anything else has no blob we know how to find.
    if (eh.length < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return undefined;
    const phoff = Number(eh.readBigUInt64LE(0x20));
    const phentsize = eh.readUInt16LE(0x36);
    const phnum = eh.readUInt16LE(0x38);
    if (phentsize < 56 || phentsize > 128 || phnum > 256) return undefined;
    const ph = read(phoff, phentsize * phnum);
    for (let i = 0; i < phnum && (i + 1) * phentsize <= ph.length; i++) {
      const p = i * phentsize;
      if (ph.readUInt32LE(p) !== PT_NOTE) continue;
      const start = Number(ph.readBigUInt64LE(p + 8));
      const end = start + Number(ph.readBigUInt64LE(p + 32));
      // Notes: namesz, descsz, type, name (padded to 4), desc (padded to 4).
      for (let off = start; off + 12 <= end;) {
        const h = read(off, 12 + 16);
        if (h.length < 12) break;
        const namesz = h.readUInt32LE(0);
        const descsz = h.readUInt32LE(4);
        const descAt = off + 12 + ((namesz + 3) & ~3);
        if (namesz === SEA_NOTE.length + 1 && h.toString('latin1', 12, 12 + SEA_NOTE.length) === SEA_NOTE)
          return descAt + descsz <= end ? { offset: descAt, length: descsz } : undefined;
        off = descAt + ((descsz + 3) & ~3);
      }
    }
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Page out the executable's blob where /proc/self/maps shows it mapped read-only. Returns the
 * bytes advised and the advice used, or undefined when there is nothing to do (not the single
 * executable, no blob found). Never throws: this only saves memory.
 */
export function releaseSeaBlobPages(): { bytes: number; advice: 'pageout' | 'dontneed' } | undefined {
  try {
    if (process.platform !== 'linux' || !isSea()) return undefined;
    const exe = fs.readlinkSync('/proc/self/exe');
    const blob = seaBlobRange(exe);
    if (!blob) return undefined;
    const n = libc();
    let bytes = 0;
    let advice: 'pageout' | 'dontneed' = 'pageout';
    for (const line of fs.readFileSync('/proc/self/maps', 'latin1').split('\n')) {
      // start-end perms offset dev inode path
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
      if (!m || m[5] !== exe || m[3] !== 'r--p') continue;
      const start = parseInt(m[1]!, 16);
      const end = parseInt(m[2]!, 16);
      const fileOff = parseInt(m[4]!, 16);
      // The blob's part of this mapping, whole pages only.
      const from = Math.max(fileOff, blob.offset);
      const to = Math.min(fileOff + (end - start), blob.offset + blob.length);
      const a = Math.ceil((start + (from - fileOff)) / PAGE) * PAGE;
      const b = Math.floor((start + (to - fileOff)) / PAGE) * PAGE;
      if (b <= a) continue;
      let r = advice === 'pageout' ? n.madvise(a, b - a, MADV_PAGEOUT) : -1;
      if (r < 0 && (advice === 'dontneed' || errno() === EINVAL)) {
        advice = 'dontneed';
        r = n.madvise(a, b - a, MADV_DONTNEED);
      }
      if (r === 0) bytes += b - a;
    }
    return bytes > 0 ? { bytes, advice } : undefined;
  } catch {
    return undefined;
  }
}
