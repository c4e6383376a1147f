/**
 * fanotify(7) through koffi: the syscalls Node lacks (fanotify_init, fanotify_mark, poll, pipe2)
 * and the parser for struct fanotify_event_metadata. Everything else on the fds (read, write,
 * fstat, pread, readlink of /proc/self/fd/N, close) is plain node:fs: an event fd is an ordinary
 * fd of this process.
 *
 * Constants are from <linux/fanotify.h> (uapi) and <fcntl.h> for x86_64/aarch64.
 */
import koffi from 'koffi';
import { PlatformError } from '../../errors.js';

// fanotify_init flags
export const FAN_CLOEXEC = 0x1;
export const FAN_NONBLOCK = 0x2;
export const FAN_CLASS_CONTENT = 0x4; // permission events, decided before content is accessed
export const FAN_UNLIMITED_QUEUE = 0x10;
export const FAN_UNLIMITED_MARKS = 0x20;
// fanotify_mark flags
export const FAN_MARK_ADD = 0x1;
export const FAN_MARK_REMOVE = 0x2;
export const FAN_MARK_MOUNT = 0x10;
export const FAN_MARK_IGNORED_MASK = 0x20; // "ignore" mask: cleared by the kernel on modify unless SURV_MODIFY
export const FAN_MARK_FLUSH = 0x80;
export const FAN_MARK_FILESYSTEM = 0x100;
// event masks
export const FAN_MODIFY = 0x2;
export const FAN_CLOSE_WRITE = 0x8;
export const FAN_OPEN = 0x20;
export const FAN_Q_OVERFLOW = 0x4000;
export const FAN_OPEN_PERM = 0x10000;
export const FAN_OPEN_EXEC_PERM = 0x40000; // Linux 5.0
// responses
export const FAN_ALLOW = 0x1;
export const FAN_DENY = 0x2;
export const FAN_NOFD = -1;
export const FANOTIFY_METADATA_VERSION = 3;
export const EVENT_METADATA_LEN = 24; // u32 event_len, u8 vers, u8 reserved, u16 metadata_len, u64 mask, s32 fd, s32 pid
// fcntl
export const O_RDONLY = 0;
export const O_LARGEFILE = 0o100000;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const AT_FDCWD = -100;
export const POLLIN = 0x1;

const EPERM = 1;
const ENOSYS = 38;
const EINVAL = 22;

interface Libc {
  fanotify_init: (flags: number, eventFlags: number) => number;
  fanotify_mark: (fd: number, flags: number, mask: bigint | number, dirfd: number, path: string | null) => number;
  poll: (fds: Int32Array | Buffer, nfds: number, timeout: number) => number;
  pipe2: (fds: Int32Array, flags: number) => number;
  strerror: (errnum: number) => string;
  close: (fd: number) => number;
}

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  if (process.platform !== 'linux') throw new PlatformError('LA_ERR_FANOTIFY_UNSUPPORTED', 'fanotify exists only on Linux', 'use the watcher mode');
  const l = koffi.load('libc.so.6');
  libc = {
    fanotify_init: l.func('int fanotify_init(unsigned int flags, unsigned int event_f_flags)'),
    fanotify_mark: l.func('int fanotify_mark(int fanotify_fd, unsigned int flags, uint64_t mask, int dirfd, const char *pathname)'),
    // struct pollfd { int fd; short events; short revents; } is 8 bytes: passed as raw memory.
    poll: l.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)'),
    pipe2: l.func('int pipe2(_Out_ int *pipefd, int flags)'),
    strerror: l.func('const char *strerror(int errnum)'),
    close: l.func('int close(int fd)'),
  } as unknown as Libc;
  return libc;
}

function errno(): number {
  return koffi.errno();
}

function fail(what: string, err: number, path?: string): never {
  const detail = `${what}${path ? ` ${path}` : ''} failed: ${lib().strerror(err)} (errno ${err})`;
  if (err === EPERM) throw new PlatformError('LA_ERR_FANOTIFY_PERM', detail, 'on-access protection needs root (CAP_SYS_ADMIN); run the agent as root, or use --mode watcher');
  if (err === ENOSYS || err === EINVAL) throw new PlatformError('LA_ERR_FANOTIFY_UNSUPPORTED', detail, 'this kernel lacks fanotify permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS); the agent falls back to the watcher');
  throw new PlatformError('LA_ERR_FANOTIFY', detail, 'see the kernel log; the agent falls back to the watcher');
}

/** A content-class, non-blocking fanotify group. */
export function fanotifyInit(): number {
  const fd = lib().fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fd < 0) fail('fanotify_init', errno());
  return fd;
}

export function fanotifyMark(fanFd: number, flags: number, mask: number, dirfd: number, path: string | null): void {
  if (lib().fanotify_mark(fanFd, flags, BigInt(mask), dirfd, path) < 0) fail('fanotify_mark', errno(), path ?? `fd ${dirfd}`);
}

/** Ignore mark on the inode behind an event fd: later opens of it raise no event until it is modified. */
export function addIgnoreMark(fanFd: number, eventFd: number, mask: number): boolean {
  return lib().fanotify_mark(fanFd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, BigInt(mask), eventFd, null) === 0;
}

/** Drop every inode mark of the group (ignore marks included); mount and filesystem marks stay. */
export function flushInodeMarks(fanFd: number): void {
  if (lib().fanotify_mark(fanFd, FAN_MARK_FLUSH, 0n, AT_FDCWD, null) < 0) fail('fanotify_mark(FLUSH)', errno());
}

/** poll() on up to a few fds for POLLIN; returns the readable ones. Blocks at most `timeoutMs`. */
export function pollIn(fds: readonly number[], timeoutMs: number): number[] {
  const buf = Buffer.alloc(8 * fds.length);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, i * 8);
    buf.writeInt16LE(POLLIN, i * 8 + 4);
  });
  const n = lib().poll(buf, fds.length, timeoutMs);
  if (n <= 0) return [];
  const ready: number[] = [];
  fds.forEach((fd, i) => {
    if (buf.readInt16LE(i * 8 + 6) !== 0) ready.push(fd);
  });
  return ready;
}

export function makePipe(): [number, number] {
  const out = new Int32Array(2);
  if (lib().pipe2(out, O_CLOEXEC | O_NONBLOCK) < 0) fail('pipe2', errno());
  return [out[0]!, out[1]!];
}

/**
 * close(2) for fds the kernel handed us (event fds, the group, the pipe). Node's fs.closeSync
 * warns about fds it did not open ("closed but not opened in unmanaged mode").
 */
export function closeFd(fd: number): void {
  if (fd >= 0) lib().close(fd);
}

export interface FanEvent {
  mask: number;
  fd: number;
  pid: number;
}

/** Parse the records in `buf[0..len)`. Stops at the first malformed record (never reads past len). */
export function parseEvents(buf: Buffer, len: number): FanEvent[] {
  const out: FanEvent[] = [];
  let off = 0;
  while (off + EVENT_METADATA_LEN <= len) {
    const eventLen = buf.readUInt32LE(off);
    const vers = buf[off + 4]!;
    if (vers !== FANOTIFY_METADATA_VERSION) throw new PlatformError('LA_ERR_FANOTIFY', `fanotify metadata version ${vers}, expected ${FANOTIFY_METADATA_VERSION}`);
    if (eventLen < EVENT_METADATA_LEN || off + eventLen > len) break;
    out.push({ mask: Number(buf.readBigUInt64LE(off + 8) & 0xffff_ffffn), fd: buf.readInt32LE(off + 16), pid: buf.readInt32LE(off + 20) });
    off += eventLen;
  }
  return out;
}

/** The response record: struct fanotify_response { __s32 fd; __u32 response; }. */
export function responseRecord(fd: number, allow: boolean): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32LE(fd, 0);
  b.writeUInt32LE(allow ? FAN_ALLOW : FAN_DENY, 4);
  return b;
}
