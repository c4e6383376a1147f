/**
 * libc.so.6 through koffi: the one place the agent loads it, declares the libc functions it calls
 * and names the errno, open and poll constants. Each caller keeps its own structure layouts and
 * the error codes it turns a failure into.
 *
 * Loaded on first use, once per thread: a worker thread (the fanotify gate, the process connector)
 * has its own instance of this module and so its own handle, and a process that never calls into
 * libc (the tray, the SVM, a Windows build) never loads it.
 */
import koffi from 'koffi';
import { PlatformError } from '../../errors.js';

// --- errno: <asm-generic/errno-base.h>, <asm-generic/errno.h> (x86_64 and aarch64 alike)
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EBADF = 9;
export const EAGAIN = 11;
export const EACCES = 13;
export const EINVAL = 22;
export const ENOSYS = 38;
export const EPROTONOSUPPORT = 93;
export const ENOBUFS = 105;

// --- open(2) flags: <asm-generic/fcntl.h>. arm and arm64 move four of them
// (arch/arm64/include/uapi/asm/fcntl.h): there 0o100000 is O_NOFOLLOW and 0o200000 O_DIRECT,
// which fanotify_init would refuse (EINVAL) and a /proc directory open would fail on.
const ARM = process.arch === 'arm64' || process.arch === 'arm';
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_NONBLOCK = 0o4000;
export const O_LARGEFILE = ARM ? 0o400000 : 0o100000;
export const O_DIRECTORY = ARM ? 0o40000 : 0o200000;
export const O_CLOEXEC = 0o2000000;
/** <fcntl.h> AT_FDCWD */
export const AT_FDCWD = -100;
/** <asm-generic/poll.h> POLLIN */
export const POLLIN = 0x1;

/** Every libc function the agent calls, as koffi declares it. */
export interface Libc {
  close: (fd: number) => number;
  open: (path: string, flags: number) => number;
  openat: (dirfd: number, path: string, flags: number) => number;
  read: (fd: number, buf: Buffer, n: number) => number;
  readlinkat: (dirfd: number, path: string, buf: Buffer, n: number) => number;
  pipe2: (fds: Int32Array, flags: number) => number;
  /** fcntl(2), variadic: the third argument is preceded by its koffi type name ('int'). */
  fcntl: (...args: unknown[]) => number;
  /** struct pollfd { int fd; short events; short revents; } is 8 bytes: passed as raw memory. */
  poll: (fds: Buffer, nfds: number, timeout: number) => number;
  socket: (domain: number, type: number, protocol: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  send: (fd: number, buf: Buffer, len: number, flags: number) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => number;
  setsockopt: (fd: number, level: number, name: number, val: Buffer, len: number) => number;
  getsockopt: (fd: number, level: number, name: number, val: Buffer, len: Uint32Array) => number;
  getrlimit: (resource: number, out: BigUint64Array) => number;
  setrlimit: (resource: number, lim: BigUint64Array) => number;
  /** syscall(2), variadic: each argument is preceded by its koffi type name ('int', 'void *'). */
  syscall: (...args: unknown[]) => number;
  /** The address is a plain number: a mapping's start read from /proc/self/maps. */
  madvise: (addr: number, len: number, advice: number) => number;
  fanotify_init: (flags: number, eventFlags: number) => number;
  fanotify_mark: (fd: number, flags: number, mask: bigint, dirfd: number, path: string | null) => number;
  strerror: (errnum: number) => string;
}

const PROTOTYPES: Record<keyof Libc, string> = {
  close: 'int close(int fd)',
  open: 'int open(const char *path, int flags)',
  openat: 'int openat(int dirfd, const char *path, int flags)',
  read: 'long read(int fd, _Out_ uint8_t *buf, size_t n)',
  readlinkat: 'long readlinkat(int dirfd, const char *path, _Out_ uint8_t *buf, size_t n)',
  pipe2: 'int pipe2(_Out_ int *pipefd, int flags)',
  fcntl: 'int fcntl(int fd, int cmd, ...)',
  poll: 'int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)',
  socket: 'int socket(int domain, int type, int protocol)',
  bind: 'int bind(int fd, const uint8_t *addr, uint32_t len)',
  send: 'long send(int fd, const uint8_t *buf, size_t len, int flags)',
  sendto: 'long sendto(int fd, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t addrlen)',
  recv: 'long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)',
  setsockopt: 'int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)',
  getsockopt: 'int getsockopt(int fd, int level, int optname, _Inout_ uint8_t *optval, _Inout_ uint32_t *optlen)',
  getrlimit: 'int getrlimit(int resource, _Out_ uint64_t *rlim)',
  setrlimit: 'int setrlimit(int resource, const uint64_t *rlim)',
  syscall: 'long syscall(long number, ...)',
  madvise: 'int madvise(uintptr_t addr, size_t len, int advice)',
  fanotify_init: 'int fanotify_init(unsigned int flags, unsigned int event_f_flags)',
  fanotify_mark: 'int fanotify_mark(int fanotify_fd, unsigned int flags, uint64_t mask, int dirfd, const char *pathname)',
  strerror: 'const char *strerror(int errnum)',
};

/** The bound functions, or the reason they cannot be had (kept: a failed load is not retried). */
let bound: Libc | PlatformError | undefined;

function bind(): Libc | PlatformError {
  if (process.platform !== 'linux') {
    return new PlatformError(
      'LA_ERR_PLATFORM',
      `libc.so.6 is loaded only on Linux, not on ${process.platform}`,
      'this call has no meaning on this OS; use the command or mode for this OS',
    );
  }
  try {
    const l = koffi.load('libc.so.6');
    const out: Record<string, unknown> = {};
    for (const [name, proto] of Object.entries(PROTOTYPES)) out[name] = l.func(proto);
    return out as unknown as Libc;
  } catch (e) {
    return new PlatformError(
      'LA_ERR_PLATFORM',
      `loading libc.so.6 through koffi failed: ${(e as Error).message}`,
      'the agent needs glibc 2.28 or later; see the agent log',
      { cause: e },
    );
  }
}

/** libc on this thread, loaded on the first call. Throws a PlatformError off Linux or if it cannot load. */
export function libc(): Libc {
  bound ??= bind();
  if (bound instanceof PlatformError) throw bound;
  return bound;
}

/** libc on this thread, or null where it cannot be had (for callers with a fallback). */
export function tryLibc(): Libc | null {
  bound ??= bind();
  return bound instanceof PlatformError ? null : bound;
}

/** Whether this thread has loaded libc yet (tests check that the tray and imports alone do not). */
export function libcLoaded(): boolean {
  return bound !== undefined && !(bound instanceof PlatformError);
}

let trim: ((pad: number) => number) | null | undefined;

/**
 * glibc's malloc_trim(0): give the free pages of every malloc arena back to the kernel. After a
 * burst the main thread's arena (Buffers, koffi, libuv) keeps what it grew to; this returns what
 * is free in it (src/heap-trim.ts calls it after a collection). False where it cannot (no glibc,
 * not Linux): nothing else depends on it, so it is bound apart from the other functions.
 */
export function mallocTrim(): boolean {
  if (trim === undefined) {
    try {
      trim = process.platform === 'linux' ? koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') : null;
    } catch {
      trim = null;
    }
  }
  if (!trim) return false;
  trim(0);
  return true;
}

/** errno of the last koffi call on this thread (koffi saves it right after each call). */
export function errno(): number {
  return koffi.errno();
}

/** "No such file or directory (errno 2)". */
export function describeErrno(err: number): string {
  const l = tryLibc();
  return `${l ? l.strerror(err) : 'error'} (errno ${err})`;
}

/**
 * close(2) for fds the kernel handed us (event fds, fanotify groups, pipes, sockets). Node's
 * fs.closeSync on an fd it did not open works, but warns ("closed but not opened in unmanaged mode").
 */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/**
 * open(path, flags|O_CLOEXEC) outside Node's fs (whose fd bookkeeping warns when another caller
 * closes the fd): for an fd that closeFd() will close. -1 on failure, errno() says why.
 */
export function openRaw(path: string, flags: number): number {
  return libc().open(path, flags | O_CLOEXEC);
}

/** A non-blocking, close-on-exec pipe: [read end, write end]; `fail` turns errno into the caller's error. */
export function openPipe(fail: (err: number) => Error): [number, number] {
  const out = new Int32Array(2);
  if (libc().pipe2(out, O_CLOEXEC | O_NONBLOCK) < 0) throw fail(errno());
  return [out[0]!, out[1]!];
}

/** <fcntl.h> F_DUPFD_CLOEXEC */
const F_DUPFD_CLOEXEC = 1030;

/** A close-on-exec duplicate of `fd` (the same open file or socket); `fail` turns errno into the caller's error. */
export function dupFd(fd: number, fail: (err: number) => Error): number {
  const d = libc().fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0);
  if (d < 0) throw fail(errno());
  return d;
}

/**
 * poll(2) for POLLIN on a few fds; returns the ones with any revents (POLLIN, POLLERR, POLLHUP).
 * Blocks this thread at most `timeoutMs`: call it only off the main thread.
 */
export function pollIn(fds: readonly number[], timeoutMs: number, scratch?: Buffer): number[] {
  const buf = scratch && scratch.length >= 8 * fds.length ? scratch : Buffer.alloc(8 * fds.length);
  for (let i = 0; i < fds.length; i++) {
    buf.writeInt32LE(fds[i]!, i * 8);
    buf.writeInt16LE(POLLIN, i * 8 + 4);
    buf.writeInt16LE(0, i * 8 + 6);
  }
  const n = libc().poll(buf, fds.length, timeoutMs);
  if (n <= 0) return []; // timeout, or EINTR: the caller loops anyway
  const ready: number[] = [];
  for (let i = 0; i < fds.length; i++) if (buf.readInt16LE(i * 8 + 6) !== 0) ready.push(fds[i]!);
  return ready;
}
