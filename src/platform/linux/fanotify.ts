/**
 * fanotify(7) through the libc module: fanotify_init, fanotify_mark and the parser for struct
 * fanotify_event_metadata. Reading events, writing responses, fstat, pread and readlink of
 * /proc/self/fd/N stay plain node:fs: an event fd is an ordinary fd of this process, and node:fs
 * is as fast as a koffi call for these.
 *
 * Constant values are the uapi ones of <linux/fanotify.h> (Linux 6.x), identical on x86_64 and
 * aarch64.
 */
import { PlatformError } from '../../errors.js';
import {
  AT_FDCWD,
  EINVAL,
  ENOSYS,
  EPERM,
  O_CLOEXEC,
  O_LARGEFILE,
  O_RDONLY,
  describeErrno,
  errno,
  libc,
  openPipe,
  type Libc,
} from './libc.js';

// --- fanotify_init(2) flags: <linux/fanotify.h> "flags used for fanotify_init()"
/** <linux/fanotify.h> FAN_CLOEXEC */
export const FAN_CLOEXEC = 0x0000_0001;
/** <linux/fanotify.h> FAN_NONBLOCK: read() returns EAGAIN instead of blocking. */
export const FAN_NONBLOCK = 0x0000_0002;
/** <linux/fanotify.h> FAN_CLASS_CONTENT: permission events, asked before the content is accessed. */
export const FAN_CLASS_CONTENT = 0x0000_0004;
/** <linux/fanotify.h> FAN_UNLIMITED_QUEUE: no 16384-event queue limit (so no FAN_Q_OVERFLOW). */
export const FAN_UNLIMITED_QUEUE = 0x0000_0010;
/** <linux/fanotify.h> FAN_UNLIMITED_MARKS: no 8192-mark limit (every clean inode holds one ignore mark). */
export const FAN_UNLIMITED_MARKS = 0x0000_0020;

// --- fanotify_mark(2) flags: <linux/fanotify.h> "flags for fanotify_mark()"
/** <linux/fanotify.h> FAN_MARK_ADD */
export const FAN_MARK_ADD = 0x0000_0001;
/** <linux/fanotify.h> FAN_MARK_REMOVE */
export const FAN_MARK_REMOVE = 0x0000_0002;
/** <linux/fanotify.h> FAN_MARK_INODE (the default mark type: the inode behind dirfd/path) */
export const FAN_MARK_INODE = 0x0000_0000;
/** <linux/fanotify.h> FAN_MARK_MOUNT */
export const FAN_MARK_MOUNT = 0x0000_0010;
/** <linux/fanotify.h> FAN_MARK_IGNORED_MASK: the mask is an ignore mask; the kernel clears it on the first modify. */
export const FAN_MARK_IGNORED_MASK = 0x0000_0020;
/** <linux/fanotify.h> FAN_MARK_IGNORED_SURV_MODIFY: keep the ignore mask across modifies (never used here). */
export const FAN_MARK_IGNORED_SURV_MODIFY = 0x0000_0040;
/** <linux/fanotify.h> FAN_MARK_FLUSH: with no type flag, drops every inode mark of the group. */
export const FAN_MARK_FLUSH = 0x0000_0080;
/** <linux/fanotify.h> FAN_MARK_FILESYSTEM (Linux 4.20): every mount of the filesystem. */
export const FAN_MARK_FILESYSTEM = 0x0000_0100;

// --- event mask bits: <linux/fanotify.h> "the following are legal, implemented events"
/** <linux/fanotify.h> FAN_MODIFY */
export const FAN_MODIFY = 0x0000_0002;
/** <linux/fanotify.h> FAN_CLOSE_WRITE: a file opened for writing was closed (notification). */
export const FAN_CLOSE_WRITE = 0x0000_0008;
/** <linux/fanotify.h> FAN_OPEN */
export const FAN_OPEN = 0x0000_0020;
/** <linux/fanotify.h> FAN_Q_OVERFLOW: the queue overflowed (fd is FAN_NOFD). */
export const FAN_Q_OVERFLOW = 0x0000_4000;
/** <linux/fanotify.h> FAN_OPEN_PERM: permission to open, needs a response. */
export const FAN_OPEN_PERM = 0x0001_0000;
/** <linux/fanotify.h> FAN_OPEN_EXEC_PERM (Linux 5.0): permission to open for execution (execve, uselib, mmap-exec loaders). */
export const FAN_OPEN_EXEC_PERM = 0x0004_0000;

// --- responses and metadata: <linux/fanotify.h>
/** <linux/fanotify.h> FAN_ALLOW */
export const FAN_ALLOW = 0x01;
/** <linux/fanotify.h> FAN_DENY: the open fails with EPERM. */
export const FAN_DENY = 0x02;
/** <linux/fanotify.h> FAN_NOFD: event without an fd (queue overflow). */
export const FAN_NOFD = -1;
/** <linux/fanotify.h> FANOTIFY_METADATA_VERSION */
export const FANOTIFY_METADATA_VERSION = 3;
/**
 * <linux/fanotify.h> FAN_EVENT_METADATA_LEN = sizeof(struct fanotify_event_metadata):
 * __u32 event_len; __u8 vers; __u8 reserved; __u16 metadata_len; __aligned_u64 mask; __s32 fd; __s32 pid.
 */
export const FAN_EVENT_METADATA_LEN = 24;
/** Kept for older callers; same as FAN_EVENT_METADATA_LEN. */
export const EVENT_METADATA_LEN = FAN_EVENT_METADATA_LEN;
/** sizeof(struct fanotify_response) in <linux/fanotify.h>: __s32 fd; __u32 response. */
export const FAN_RESPONSE_LEN = 8;

// open and poll flags, and the general syscalls, come from the libc module; the gate and its
// worker take them from here with the fanotify calls they go with.
export { AT_FDCWD, O_CLOEXEC, O_LARGEFILE, O_NONBLOCK, O_RDONLY, O_WRONLY, POLLIN, closeFd, openRaw, pollIn } from './libc.js';

/** libc on this thread; off Linux the error says fanotify is what is missing. */
function lib(): Libc {
  if (process.platform !== 'linux')
    throw new PlatformError('LA_ERR_FANOTIFY_UNSUPPORTED', 'fanotify exists only on Linux', 'use the watcher mode');
  return libc();
}

/** A PlatformError for a failed fanotify call, with the code the daemon uses to pick a fallback. */
export function fanotifyError(what: string, err: number, target?: string): PlatformError {
  const detail = `${what}${target ? ` on ${target}` : ''} failed: ${describeErrno(err)}`;
  if (err === EPERM) {
    return new PlatformError(
      'LA_ERR_FANOTIFY_PERM',
      detail,
      'on-access protection needs root (CAP_SYS_ADMIN): run the agent as root, or use the watcher fallback (--mode watcher)',
    );
  }
  if (err === ENOSYS || err === EINVAL) {
    return new PlatformError(
      'LA_ERR_FANOTIFY_UNSUPPORTED',
      detail,
      'this kernel or filesystem lacks fanotify permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS, FAN_OPEN_EXEC_PERM ' +
        'needs Linux 5.0, FAN_MARK_FILESYSTEM 4.20): use the watcher fallback (--mode watcher)',
    );
  }
  return new PlatformError('LA_ERR_FANOTIFY', detail, 'check the path and the kernel log; or use the watcher fallback (--mode watcher)');
}

/** A content-class, non-blocking, close-on-exec fanotify group; event fds are O_RDONLY|O_LARGEFILE|O_CLOEXEC. */
export function fanotifyInit(extraFlags = 0): number {
  const fd = lib().fanotify_init(
    FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS | extraFlags,
    O_RDONLY | O_LARGEFILE | O_CLOEXEC,
  );
  if (fd < 0) throw fanotifyError('fanotify_init', errno());
  return fd;
}

/** fanotify_mark(2); throws a PlatformError naming the path (or fd) on failure. */
export function fanotifyMark(fanFd: number, flags: number, mask: number, dirfd: number, path: string | null): void {
  if (lib().fanotify_mark(fanFd, flags, BigInt(mask), dirfd, path) < 0)
    throw fanotifyError('fanotify_mark', errno(), path ?? `fd ${dirfd}`);
}

/**
 * Ignore mark on the inode behind an open fd (an event fd): later events in `mask` for that inode
 * are not generated until the file is modified (the kernel then clears the ignore mask, because
 * FAN_MARK_IGNORED_SURV_MODIFY is not set). Returns false if the kernel refused it.
 */
export function addIgnoreMark(fanFd: number, eventFd: number, mask: number): boolean {
  return lib().fanotify_mark(fanFd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, BigInt(mask), eventFd, null) === 0;
}

/** Remove the ignore mask bits again (the file changed while it was judged). */
export function removeIgnoreMark(fanFd: number, eventFd: number, mask: number): boolean {
  return lib().fanotify_mark(fanFd, FAN_MARK_REMOVE | FAN_MARK_IGNORED_MASK, BigInt(mask), eventFd, null) === 0;
}

/** Drop every inode mark of the group (all ignore marks); mount and filesystem marks stay. */
export function flushInodeMarks(fanFd: number): void {
  if (lib().fanotify_mark(fanFd, FAN_MARK_FLUSH, 0n, AT_FDCWD, null) < 0) throw fanotifyError('fanotify_mark(FAN_MARK_FLUSH)', errno());
}

/** A non-blocking, close-on-exec pipe: [read end, write end]; a failure is an LA_ERR_FANOTIFY. */
export function makePipe(): [number, number] {
  return openPipe((err) => fanotifyError('pipe2', err));
}

/** One struct fanotify_event_metadata. `pid` is the thread group id (no FAN_REPORT_TID). */
export interface FanEvent {
  mask: number;
  fd: number;
  pid: number;
}

/**
 * Parse the records in `buf[0..len)` (FAN_EVENT_OK / FAN_EVENT_NEXT of <linux/fanotify.h>).
 * A record of another metadata version throws: its layout is unknown, so nothing after it can
 * be trusted. A record whose event_len is shorter than the metadata or runs past `len` ends the
 * parse (never reads past len). Only the low 32 bits of the mask are kept: every event bit used
 * here is below 2^32.
 */
export function parseEvents(buf: Buffer, len: number): FanEvent[] {
  const out: FanEvent[] = [];
  let off = 0;
  while (off + FAN_EVENT_METADATA_LEN <= len) {
    const eventLen = buf.readUInt32LE(off);
    const vers = buf[off + 4]!;
    if (vers !== FANOTIFY_METADATA_VERSION) {
      throw new PlatformError(
        'LA_ERR_FANOTIFY',
        `fanotify metadata version ${vers}, expected ${FANOTIFY_METADATA_VERSION}`,
        'this kernel speaks a fanotify ABI this agent does not know; use the watcher fallback',
      );
    }
    const metadataLen = buf.readUInt16LE(off + 6);
    if (eventLen < FAN_EVENT_METADATA_LEN || metadataLen < FAN_EVENT_METADATA_LEN || metadataLen > eventLen || off + eventLen > len) break;
    out.push({ mask: buf.readUInt32LE(off + 8), fd: buf.readInt32LE(off + 16), pid: buf.readInt32LE(off + 20) });
    off += eventLen;
  }
  return out;
}

/** struct fanotify_response { __s32 fd; __u32 response; } of <linux/fanotify.h>. */
export function responseRecord(fd: number, allow: boolean, into?: Buffer): Buffer {
  const b = into ?? Buffer.alloc(FAN_RESPONSE_LEN);
  b.writeInt32LE(fd, 0);
  b.writeUInt32LE(allow ? FAN_ALLOW : FAN_DENY, 4);
  return b;
}
