/**
 * A process's executable and those of its ancestors, for exclusions by process
 * (src/scan/exclusions.ts). Read from /proc at the time of the access: the opener is blocked in
 * open() while it is asked, so its own pid is its own. An ancestor is only believed while the
 * process below it still names it as its parent after its exe was read: a parent that exits makes
 * the kernel reparent its children at once, so an unchanged ppid means the pid was not given to
 * another process meanwhile. Any doubt ends the walk (the access is then judged as usual).
 */
import { readExe, readStat } from '../platform/linux/procfs.js';

/** Ancestors looked at, at most: a shell started by a build started by a service is 3 or 4 deep. */
export const LINEAGE_MAX_DEPTH = 16;

export interface LineageReader {
  exe(pid: number): string | undefined;
  /** ppid and start time (clock ticks), or undefined if gone. */
  stat(pid: number): { ppid: number; startTicks: number } | undefined;
}

const procReader: LineageReader = { exe: readExe, stat: readStat };

/** The executable of `pid` (undefined if it cannot be read). */
export function processExe(pid: number, read: LineageReader = procReader): string | undefined {
  return read.exe(pid);
}

/** The start time of `pid` (clock ticks after boot): with the pid, who it is. */
export function processStart(pid: number, read: LineageReader = procReader): number | undefined {
  return read.stat(pid)?.startTicks;
}

/**
 * Calls `visit(exe)` for each ancestor of `pid` (parent first), at most `maxDepth`, until it
 * returns true (then this returns true). Stops at pid 1's parent, at a cycle, at anything it
 * cannot read or verify.
 */
export function someAncestor(pid: number, visit: (exe: string) => boolean, maxDepth = LINEAGE_MAX_DEPTH, read = procReader): boolean {
  let child = pid;
  let childStat = read.stat(child);
  const seen = new Set<number>([pid]);
  for (let depth = 0; depth < maxDepth && childStat; depth++) {
    const parent = childStat.ppid;
    if (!(parent > 0) || seen.has(parent)) return false;
    seen.add(parent);
    const exe = read.exe(parent);
    const parentStat = read.stat(parent);
    // Still the child's parent now: then `exe` and `parentStat` were read from that very process.
    const again = read.stat(child);
    if (!again || again.ppid !== parent || again.startTicks !== childStat.startTicks) return false;
    if (exe !== undefined && visit(exe)) return true;
    child = parent;
    childStat = parentStat;
  }
  return false;
}
