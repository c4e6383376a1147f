/**
 * Kill exactly one process: pidfd_open(2) pins the process behind a pid (Linux 5.3), the start
 * time is checked through /proc after the pin, and pidfd_send_signal(2) (Linux 5.1) signals that
 * process and no other, even if the pid is reused in between. Without pidfds (older kernels,
 * ENOSYS) it falls back to kill(2) right after the start-time check, a window of microseconds.
 * Syscall numbers are from the unified table (<asm-generic/unistd.h>), the same on x86_64 and aarch64.
 */
import { tryLibc } from './libc.js';
import { readStat } from './procfs.js';

const NR_PIDFD_SEND_SIGNAL = 424;
const NR_PIDFD_OPEN = 434;
/** <asm-generic/signal.h> SIGKILL */
const SIGKILL = 9;

export type KillResult = 'killed' | 'gone' | 'reused' | 'failed';

/** SIGKILL the process `pid` if it still is the one that started at `startTicks`. */
export function killExact(pid: number, startTicks: number | undefined): KillResult {
  const l = tryLibc();
  let pidfd = -1;
  if (l) pidfd = Number(l.syscall(NR_PIDFD_OPEN, 'int', pid, 'unsigned int', 0));
  try {
    const st = readStat(pid);
    if (!st) return 'gone';
    if (startTicks !== undefined && st.startTicks !== startTicks) return 'reused';
    if (pidfd >= 0) {
      const r = Number(l!.syscall(NR_PIDFD_SEND_SIGNAL, 'int', pidfd, 'int', SIGKILL, 'void *', null, 'unsigned int', 0));
      return r === 0 ? 'killed' : 'failed';
    }
    try {
      process.kill(pid, 'SIGKILL');
      return 'killed';
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH' ? 'gone' : 'failed';
    }
  } finally {
    if (pidfd >= 0) l!.close(pidfd);
  }
}
