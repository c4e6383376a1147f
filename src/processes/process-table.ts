/**
 * The process table: what the agent knows about recent processes, for attribution. Bounded.
 *
 * Identity is pid + start time (clock ticks after boot, /proc/PID/stat field 22): the kernel reuses
 * pids, and a detection must never be pinned on the process that got the pid of the real culprit.
 * A lookup names the start time it expects (read from /proc at the time of the event); an entry
 * with another start time is a different process and does not answer.
 *
 * Exited processes stay (marked exited) so a detection that is judged after its writer exited
 * still names it; they are the first to go when the table is full (oldest exit first), then the
 * least recently seen live ones. A storm of short processes therefore cycles through the exited
 * part and never grows the table past `capacity`. Exited entries have a cap of their own
 * (`exitedCapacity`, default 2,048): a busy guest starts tens of thousands of short processes an
 * hour, and keeping every one of them up to the full cap held ~1 KB each for nothing (the soak saw
 * the agent's RSS climb ~40 MB in 10 minutes that way). Detections are judged seconds after
 * the write, so the last 2,048 exits are plenty.
 */

export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** Start time in clock ticks after boot; undefined when the process was gone before it could be read. */
  startTicks: number | undefined;
  exe?: string | undefined;
  cmdline?: string | undefined;
  comm?: string | undefined;
  uid?: number | undefined;
  euid?: number | undefined;
  /** Exit code (wait status) when exited. */
  exitCode?: number | undefined;
  exited: boolean;
  /** Monotonic insertion/update counter (recency). */
  seen: number;
}

export interface ProcessTableStats {
  size: number;
  capacity: number;
  exitedCapacity: number;
  live: number;
  exited: number;
  evictedExited: number;
  evictedLive: number;
  reused: number;
}

export class ProcessTable {
  /** Latest entry per pid (a reused pid replaces the older, exited process). */
  private readonly byPid = new Map<number, ProcessEntry>();
  /** Exited entries in exit order (Map keeps insertion order): the eviction queue. */
  private readonly exitedOrder = new Map<number, ProcessEntry>();
  private clock = 0;
  private liveCount = 0;
  private evictedExited = 0;
  private evictedLive = 0;
  private reused = 0;

  constructor(
    readonly capacity = 32_768,
    readonly exitedCapacity = Math.min(2048, Math.max(1, Math.floor(capacity / 4))),
  ) {
    if (!Number.isInteger(capacity) || capacity < 16) throw new RangeError('process table capacity must be an integer >= 16');
    if (!Number.isInteger(exitedCapacity) || exitedCapacity < 1 || exitedCapacity > capacity)
      throw new RangeError('exited capacity must be an integer in 1..capacity');
  }

  get size(): number {
    return this.byPid.size;
  }

  /**
   * A process started (fork), ran an image (exec) or was found (scan). Merges into the entry of
   * the same process; a different start time on the same pid is pid reuse: the old entry goes.
   */
  upsert(e: Omit<ProcessEntry, 'exited' | 'seen'> & { exited?: boolean }): ProcessEntry {
    const old = this.byPid.get(e.pid);
    if (old && !samePid(old, e.startTicks)) {
      this.reused++;
      this.remove(old);
    } else if (old) {
      // Same process: newer facts win, missing ones keep what we knew.
      if (e.startTicks !== undefined) old.startTicks = e.startTicks;
      if (e.ppid > 0) old.ppid = e.ppid;
      if (e.exe !== undefined) old.exe = e.exe;
      if (e.cmdline !== undefined) old.cmdline = e.cmdline;
      if (e.comm !== undefined) old.comm = e.comm;
      if (e.uid !== undefined) old.uid = e.uid;
      if (e.euid !== undefined) old.euid = e.euid;
      old.seen = ++this.clock;
      if (e.exited && !old.exited) this.markExited(old, e.exitCode);
      return old;
    }
    this.makeRoom();
    const entry: ProcessEntry = { ...e, exited: false, seen: ++this.clock };
    this.byPid.set(e.pid, entry);
    this.liveCount++;
    if (e.exited) this.markExited(entry, e.exitCode);
    return entry;
  }

  /** The process exited. Unknown pids are ignored (it started before we watched, or was evicted). */
  exit(pid: number, exitCode?: number): void {
    const e = this.byPid.get(pid);
    if (e && !e.exited) this.markExited(e, exitCode);
  }

  /** A uid change (setuid): the kernel's id event. */
  setUid(pid: number, uid: number, euid: number): void {
    const e = this.byPid.get(pid);
    if (!e) return;
    e.uid = uid;
    e.euid = euid;
  }

  /**
   * The entry for pid, but only if it is the same process: `startTicks` (when known) must match.
   * Without an expected start time, only a live entry answers (an exited one may be a pid reuse).
   */
  get(pid: number, startTicks?: number): ProcessEntry | undefined {
    const e = this.byPid.get(pid);
    if (!e) return undefined;
    if (startTicks !== undefined) return e.startTicks === startTicks ? e : undefined;
    return e.exited ? undefined : e;
  }

  /** The latest entry for pid, exited or not (a writer that is gone by the time its file was judged). */
  latest(pid: number): ProcessEntry | undefined {
    return this.byPid.get(pid);
  }

  stats(): ProcessTableStats {
    return {
      size: this.byPid.size,
      capacity: this.capacity,
      exitedCapacity: this.exitedCapacity,
      live: this.liveCount,
      exited: this.exitedOrder.size,
      evictedExited: this.evictedExited,
      evictedLive: this.evictedLive,
      reused: this.reused,
    };
  }

  private markExited(e: ProcessEntry, exitCode: number | undefined): void {
    e.exited = true;
    e.exitCode = exitCode;
    this.liveCount--;
    this.exitedOrder.set(e.pid, e);
    if (this.exitedOrder.size > this.exitedCapacity) {
      const oldest = this.exitedOrder.values().next().value!;
      this.remove(oldest);
      this.evictedExited++;
    }
  }

  private remove(e: ProcessEntry): void {
    this.byPid.delete(e.pid);
    if (e.exited) this.exitedOrder.delete(e.pid);
    else this.liveCount--;
  }

  private makeRoom(): void {
    if (this.byPid.size < this.capacity) return;
    // Exited first, oldest exit first.
    const first = this.exitedOrder.values().next();
    if (!first.done) {
      this.remove(first.value);
      this.evictedExited++;
      return;
    }
    // All live (a fork bomb, or a capacity below the host's process count): drop the least
    // recently seen; an O(n) scan, but only when the whole table is live processes.
    let victim: ProcessEntry | undefined;
    for (const e of this.byPid.values()) if (!victim || e.seen < victim.seen) victim = e;
    if (victim) {
      this.remove(victim);
      this.evictedLive++;
    }
  }
}

function samePid(old: ProcessEntry, startTicks: number | undefined): boolean {
  if (startTicks === undefined || old.startTicks === undefined) return !old.exited;
  return old.startTicks === startTicks;
}
