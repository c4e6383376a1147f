/**
 * Bounded reads of /proc/PID/{stat,exe,cmdline,status} (proc(5)). Every read has a byte cap and
 * every failure (the process exited: ENOENT/ESRCH; a kernel thread has no exe: ENOENT; not ours:
 * EACCES) yields `undefined` for that field, never an exception: a process may vanish between any
 * two reads, and the caller judges with what it got.
 *
 * The start time (stat field 22, clock ticks since boot) is what tells two processes with the same
 * pid apart: the kernel never gives one pid to two live processes, and a reused pid gets a later
 * start time.
 */
import fs from 'node:fs';

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

const scratch = Buffer.alloc(Math.max(STAT_MAX, STATUS_MAX, CMDLINE_MAX + 1));

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
  if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isSafeInteger(ppid) || ppid < 0 || !Number.isSafeInteger(startTicks) || startTicks < 0) return undefined;
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
 * Everything about one process, read now. Undefined if it is gone (no stat). If the start time
 * read after the other files differs from the first, the pid was reused mid-read: undefined too
 * (the caller must not mix two processes' data). `recheck: false` skips that second read (the
 * connector's exec path: the exec event itself says the pid is that process right now).
 */
export function readProcess(pid: number, recheck = true): ProcInfo | undefined {
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
