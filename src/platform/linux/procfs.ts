/**
 * Bounded reads of /proc/PID/{stat,exe,cmdline,status} (proc(5)). Every read has a byte cap and
 * every failure (the process exited: ENOENT/ESRCH; a kernel thread has no exe: ENOENT; not ours:
 * EACCES) yields `undefined` for that field, never an exception: a process may vanish between any
 * two reads, and the caller judges with what it got.
 *
 * The start time (stat field 22, clock ticks since boot) is what tells two processes with the same
 * pid apart: the kernel never gives one pid to two live processes, and a reused pid gets a later
 * start time.
 *
 * readProcess() reads its four files through one open /proc/PID directory fd (libc: open,
 * openat, read, readlinkat, close). The fd stays bound to the process it was opened for: once that
 * process is gone, openat() under it fails even if the pid has been given to another one, so the
 * four files always describe one process. And it is cheaper than Node's fs on the hot path (the
 * process connector reads every exec): 46-50 us instead of 63-76 for a live process (this Node
 * process, whose status is long), 3-5 instead of 12-18 for one already gone (fs throws, and the
 * Error costs), measured on this machine. Where libc cannot be loaded, the fs path below does the
 * same with a start-time recheck.
 */
import fs from 'node:fs';
import { O_CLOEXEC, O_DIRECTORY, O_RDONLY, tryLibc, type Libc } from './libc.js';

/** Longest stat line read: 52 numeric fields plus a comm of at most 16 bytes fit easily. */
const STAT_MAX = 1024;
/** Longest cmdline kept; the rest is cut (a hostile process can make it up to ARG_MAX). */
export const CMDLINE_MAX = 1024;
/** /proc/PID/status is ~1.5 KiB; Uid: is in its first few hundred bytes. */
const STATUS_MAX = 2048;

export interface ProcStat {
  pid: number;
  /** comm, at most 15 bytes (TASK_COMM_LEN - 1); may hold spaces and ')'. */
  comm: string;
  state: string;
  ppid: number;
  /** Field 22: clock ticks after boot (sysconf(_SC_CLK_TCK), 100 on Linux). */
  startTicks: number;
}

export interface ProcInfo extends ProcStat {
  exe?: string | undefined;
  cmdline?: string | undefined;
  /** Real uid (status Uid: first field). */
  uid?: number | undefined;
  /** Effective uid (status Uid: second field). */
  euid?: number | undefined;
}

/** Longest exe path kept (PATH_MAX). */
const EXE_MAX = 4096;

const scratch = Buffer.alloc(Math.max(STAT_MAX, STATUS_MAX, CMDLINE_MAX + 1, EXE_MAX + 1));

/** Read at most `max` bytes of a /proc file into the shared scratch buffer; undefined if it is gone. */
function readSmall(file: string, max: number): number | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    // One read: /proc files of this size are produced whole by a single read.
    return fs.readSync(fd, scratch, 0, max, 0);
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Parse a /proc/PID/stat line. comm sits between the first '(' and the LAST ')' (comm itself may
 * contain ')' — proc(5)); the fields after it are space separated.
 */
export function parseStat(line: string): ProcStat | undefined {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 1 || close < open) return undefined;
  const pid = Number(line.slice(0, open).trim());
  const rest = line.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const ppid = Number(rest[1]);
  const startTicks = Number(rest[19]);
  if (
    !Number.isSafeInteger(pid) ||
    pid <= 0 ||
    !Number.isSafeInteger(ppid) ||
    ppid < 0 ||
    !Number.isSafeInteger(startTicks) ||
    startTicks < 0
  )
    return undefined;
  return { pid, comm: line.slice(open + 1, close), state: rest[0] ?? '?', ppid, startTicks };
}

export function readStat(pid: number): ProcStat | undefined {
  const n = readSmall(`/proc/${pid}/stat`, STAT_MAX);
  if (n === undefined) return undefined;
  return parseStat(scratch.toString('latin1', 0, n));
}

/** Path of the running image; " (deleted)" is kept: it says the file is gone or replaced. */
export function readExe(pid: number): string | undefined {
  try {
    const p = fs.readlinkSync(`/proc/${pid}/exe`);
    return p.length > 4096 ? p.slice(0, 4096) : p;
  } catch {
    return undefined;
  }
}

/** Arguments joined by spaces, cut at CMDLINE_MAX characters (with "…"). Empty for kernel threads and zombies. */
export function readCmdline(pid: number): string | undefined {
  const n = readSmall(`/proc/${pid}/cmdline`, CMDLINE_MAX + 1);
  if (n === undefined) return undefined;
  return cmdlineFromScratch(n);
}

/** The cmdline in scratch[0..n): NULs to spaces, cut at CMDLINE_MAX characters with "…". */
function cmdlineFromScratch(n: number): string {
  let end = n;
  while (end > 0 && scratch[end - 1] === 0) end--;
  const cut = n > CMDLINE_MAX;
  let s = scratch.toString('utf8', 0, Math.min(end, CMDLINE_MAX)).replaceAll('\0', ' ');
  if (cut) s += '…';
  return s;
}

/** Real and effective uid from /proc/PID/status. */
export function readUids(pid: number): { uid: number; euid: number } | undefined {
  const n = readSmall(`/proc/${pid}/status`, STATUS_MAX);
  if (n === undefined) return undefined;
  return parseStatusUids(scratch.toString('latin1', 0, n));
}

export function parseStatusUids(text: string): { uid: number; euid: number } | undefined {
  const m = /^Uid:\s+(\d+)\s+(\d+)/m.exec(text);
  if (!m) return undefined;
  return { uid: Number(m[1]), euid: Number(m[2]) };
}

/**
 * Everything about one process, read now. Undefined if it is gone (no stat). Never mixes two
 * processes' data: through the directory fd every file is of one process (a file the process no
 * longer has, because it exited mid-read, is undefined); on the fs fallback, a start time read
 * after the other files that differs from the first means the pid was reused mid-read, and the
 * result is undefined too. `recheck: false` skips that second read there (the connector's exec
 * path: the exec event itself says the pid is that process right now).
 */
export function readProcess(pid: number, recheck = true): ProcInfo | undefined {
  const l = tryLibc(); // null off Linux or where libc cannot load: then the fs path
  return l ? readProcessAt(l, pid) : readProcessFs(pid, recheck);
}

/** Read at most `max` bytes of `name` under the directory fd into scratch; -1 if it cannot be read. */
function readAt(l: Libc, dfd: number, name: string, max: number): number {
  const fd = l.openat(dfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  try {
    return l.read(fd, scratch, max); // one read: these files are produced whole by one read
  } finally {
    l.close(fd);
  }
}

/** readProcess through one /proc/PID directory fd: every file is of the process the fd was opened for. */
function readProcessAt(l: Libc, pid: number): ProcInfo | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  const dfd = l.open(`/proc/${pid}`, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return undefined;
  try {
    const n = readAt(l, dfd, 'stat', STAT_MAX);
    if (n <= 0) return undefined;
    const st = parseStat(scratch.toString('latin1', 0, n));
    if (!st) return undefined;
    // readlinkat does not NUL-terminate; a result that fills the buffer was cut.
    const e = l.readlinkat(dfd, 'exe', scratch, EXE_MAX + 1);
    const exe = e >= 0 ? scratch.toString('utf8', 0, Math.min(e, EXE_MAX)) : undefined;
    const c = readAt(l, dfd, 'cmdline', CMDLINE_MAX + 1);
    const cmdline = c >= 0 ? cmdlineFromScratch(c) : undefined;
    const u = readAt(l, dfd, 'status', STATUS_MAX);
    const ids = u > 0 ? parseStatusUids(scratch.toString('latin1', 0, u)) : undefined;
    return { ...st, exe, cmdline, uid: ids?.uid, euid: ids?.euid };
  } finally {
    l.close(dfd);
  }
}

/** readProcess with Node's fs, file by file; `recheck` reads stat again to catch a reused pid. Exported for tests. */
export function readProcessFs(pid: number, recheck = true): ProcInfo | undefined {
  const st = readStat(pid);
  if (!st) return undefined;
  const exe = readExe(pid);
  const cmdline = readCmdline(pid);
  const ids = readUids(pid);
  if (recheck) {
    const again = readStat(pid);
    if (again && again.startTicks !== st.startTicks) return undefined;
  }
  return { ...st, exe, cmdline, uid: ids?.uid, euid: ids?.euid };
}

/** Every numeric entry of /proc (thread group leaders only: threads live under /proc/PID/task). */
export function listPids(): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(name);
    if (Number.isSafeInteger(pid)) out.push(pid);
  }
  return out;
}

/** uid -> user name from /etc/passwd, read once and cached (bounded: first 1 MiB). */
let users: Map<number, string> | undefined;
export function userName(uid: number | undefined): string | undefined {
  if (uid === undefined) return undefined;
  if (!users) {
    users = new Map();
    try {
      const fd = fs.openSync('/etc/passwd', 'r');
      try {
        const b = Buffer.alloc(1024 * 1024);
        const n = fs.readSync(fd, b, 0, b.length, 0);
        for (const line of b.toString('utf8', 0, n).split('\n')) {
          const f = line.split(':');
          if (f.length >= 3 && /^\d+$/.test(f[2]!)) users.set(Number(f[2]), f[0]!);
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      // no passwd: numeric uids only
    }
  }
  return users.get(uid);
}
