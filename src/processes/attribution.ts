/**
 * Attribution: which process did it. Called only when the agent denies an access or finds a
 * threat (never on the allow path of a clean open), so it may read /proc synchronously: a few
 * small reads, tens of microseconds.
 *
 * Sources, in order: /proc now (the process usually still lives: a denied exec or open returns
 * EPERM to it), checked against the process table by start time; then the table alone (the
 * writer of a file judged after it exited). A pid whose /proc start time differs from the
 * table's is a reused pid: the live process is named, never the table's older one.
 */
import { readProcess, userName, type ProcInfo } from '../platform/linux/procfs.js';
import type { Attribution, ProcessIdentity } from '../store/events-file.js';
import type { ProcessEntry, ProcessTable } from './process-table.js';

export const PARENT_CHAIN = 3;

export class Attributor {
  constructor(
    private readonly table?: ProcessTable,
    private readonly read: (pid: number) => ProcInfo | undefined = readProcess,
  ) {}

  /** Who is `pid`, with its parent chain. Never throws. */
  attribute(pid: number): Attribution {
    const self = this.one(pid);
    if (!self) return { pid, parents: [], source: 'none' };
    const parents: ProcessIdentity[] = [];
    let ppid = self.ppid;
    const seen = new Set<number>([pid]);
    while (parents.length < PARENT_CHAIN && ppid !== undefined && ppid > 0 && !seen.has(ppid)) {
      seen.add(ppid);
      const p = this.one(ppid);
      if (!p) {
        parents.push({ pid: ppid });
        break;
      }
      parents.push(identity(p.info));
      ppid = p.ppid;
    }
    const a: Attribution = { ...identity(self.info), ppid: self.ppid, parents, source: self.source };
    if (self.exited) a.exited = true;
    return a;
  }

  private one(
    pid: number,
  ): { info: ProcessEntry | ProcInfo; ppid: number | undefined; source: 'proc' | 'table'; exited: boolean } | undefined {
    const live = this.read(pid);
    if (live) {
      // Fill what /proc no longer shows (a zombie has no exe or cmdline) from the same process's entry.
      const known = this.table?.get(pid, live.startTicks);
      const info: ProcInfo = { ...live, exe: live.exe ?? known?.exe, cmdline: live.cmdline || known?.cmdline, uid: live.uid ?? known?.uid };
      return { info, ppid: live.ppid, source: 'proc', exited: false };
    }
    const gone = this.table?.latest(pid);
    if (gone) return { info: gone, ppid: gone.ppid, source: 'table', exited: gone.exited };
    return undefined;
  }
}

function identity(p: ProcessEntry | ProcInfo): ProcessIdentity {
  const id: ProcessIdentity = { pid: p.pid };
  if (p.exe !== undefined) id.exe = p.exe;
  if (p.cmdline) id.cmdline = p.cmdline;
  if (p.uid !== undefined) {
    id.uid = p.uid;
    const u = userName(p.uid);
    if (u !== undefined) id.user = u;
  }
  if (p.startTicks !== undefined) id.startTicks = p.startTicks;
  return id;
}
