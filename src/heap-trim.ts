/**
 * Hand an idle isolate's spare heap back to the system.
 *
 * Two things V8 does not do on its own at idle (measured on the agent, Node 24; docs/architecture.md
 * "Memory", Idle trims):
 * - After a burst of work the old generation is mostly garbage that no collection takes, because
 *   nothing allocates any more: 3,000 files written and read left the main thread's heap at
 *   67-72 MB in use (18 MB live) and the single executable at 171-189 MB RSS for as long as it
 *   stayed idle. One regular major collection (~20 ms) frees it; with malloc_trim after it, the
 *   executable was at 102-103 MB a minute later.
 * - After start-up the pages of the program's one-off code (config parsing, schemas, the CLI, the
 *   SVM handshake) and a pool of freed pages stay. A last-resort collection (what V8 runs before
 *   it gives up on an allocation) compacts, drops the pool and flushes compiled code no frame is
 *   running. With malloc_trim (and the trim the process connector's worker thread then ran on
 *   its own; that worker is gone since), the idle executable went from 105.6-106.7 to 96.1-96.9 MB.
 *
 * So: once start-up is done and the isolate has been quiet for `firstIdleMs`, one last-resort
 * collection if no work came since start (its hot paths have not run, so nothing warm is lost; a
 * flushed function compiles again at its next call); if work came first, a regular one after
 * `idleMs` of quiet instead; then a regular major
 * collection (compiled code stays) each time the isolate has been quiet for `idleMs` after its
 * heap grew by `growthBytes` since the last trim, at most once per `minIntervalMs`. Either blocks
 * the thread for the collection (30-80 ms for the last-resort one on the main thread here, 15-25
 * ms for a regular one), only after that quiet. The gate's worker does not trim: its hit path is
 * warmed up on purpose before it marks anything (fanotify-worker.ts, warmUp), and a pause there
 * would hold an open.
 *
 * `gc` comes from a context created after `--expose-gc` is set, so it never appears on the
 * program's own global. Where that fails (a runtime without the extension), trimming is off.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

export type TrimKind = 'last-resort' | 'regular';
type GcOptions = { type: 'major'; execution: 'sync'; flavor: TrimKind };
type Gc = (o?: GcOptions) => void;

let gc: Gc | null | undefined;

function gcFunction(): Gc | null {
  if (gc === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      const fn: unknown = vm.runInNewContext('typeof gc === "function" ? gc : undefined');
      gc = typeof fn === 'function' ? (fn as Gc) : null;
    } catch {
      gc = null;
    }
  }
  return gc;
}

/**
 * V8 before 12 (Node 20) takes `gc()` with an options object and collects nothing (measured: 32 MB
 * of garbage stayed); plain `gc()` is its full collection, and it has no last-resort flavour.
 */
const GC_OPTIONS = Number(process.versions.v8.split('.')[0]) >= 12;

/** One major collection of this thread's isolate: the kind that ran, or false when this runtime cannot. */
export function collectGarbage(kind: TrimKind): TrimKind | false {
  const fn = gcFunction();
  if (!fn) return false;
  if (!GC_OPTIONS) {
    fn();
    return 'regular';
  }
  fn({ type: 'major', execution: 'sync', flavor: kind });
  return kind;
}

export interface HeapTrimOptions {
  /** Quiet this long (ms) before the first trim after start. */
  firstIdleMs: number;
  /** Later trims: quiet this long (ms)... */
  idleMs: number;
  /** ...the heap in use grew by this many bytes since the last trim, or the process's RSS by twice as many (when `rss` is given)... */
  growthBytes: number;
  /** ...and this long (ms) since the last trim. */
  minIntervalMs: number;
}

export const HEAP_TRIM_DEFAULTS: HeapTrimOptions = {
  firstIdleMs: 3_000,
  // Not the pause between two builds: a trim costs ~20 ms of CPU and the heap grows back at the
  // next burst (5 s put a trim inside the bench's 5 s idle-CPU window after its workloads).
  idleMs: 15_000,
  growthBytes: 8 << 20,
  minIntervalMs: 30_000,
};

export interface HeapTrimStats {
  trims: number;
  lastKind: TrimKind | undefined;
  /** Duration of the last trim, ms. */
  lastMs: number;
  /** V8's heap in use before and after the last trim, bytes. */
  lastBefore: number;
  lastAfter: number;
  /** Duration of `release` in the last trim, ms. */
  releaseMs: number;
  /** The process's RSS before and right after the last trim (its collection and `release`), bytes; 0 when not watched. */
  rssBefore: number;
  rssAfter: number;
}

/**
 * Decides when this thread trims. The owner calls `busy()` when it works (`warm` false: activity
 * that did not run its hot paths, such as start-up chatter; it only delays) and `tick()` from a
 * timer or its loop (at least once a second); `tick` trims when due and says so.
 */
export class HeapTrimmer {
  private lastBusy: number;
  private lastTrim = Number.NEGATIVE_INFINITY;
  private disabled = false;
  /** Hot-path work came since start: compiled code may be warm, so no collection flushes it. */
  private worked = false;
  readonly stats: HeapTrimStats = {
    trims: 0,
    lastKind: undefined,
    lastMs: 0,
    lastBefore: 0,
    lastAfter: 0,
    releaseMs: 0,
    rssBefore: 0,
    rssAfter: 0,
  };

  private readonly o: HeapTrimOptions;
  private readonly heapUsed: () => number;
  private readonly collect: (kind: TrimKind) => TrimKind | false;
  private readonly rss: (() => number) | undefined;
  private readonly release: () => void;

  constructor(
    deps: {
      policy?: HeapTrimOptions;
      now?: number;
      heapUsed?: () => number;
      collect?: (kind: TrimKind) => TrimKind | false;
      /** The process's RSS (the main thread watches it: malloc's arenas grow in a burst too); none: the heap alone. */
      rss?: () => number;
      /** What else goes back after each collection (mallocTrim on Linux). */
      release?: () => void;
    } = {},
  ) {
    this.o = deps.policy ?? HEAP_TRIM_DEFAULTS;
    this.lastBusy = deps.now ?? performance.now();
    this.heapUsed = deps.heapUsed ?? (() => v8.getHeapStatistics().used_heap_size);
    this.collect = deps.collect ?? collectGarbage;
    this.rss = deps.rss;
    this.release = deps.release ?? (() => {});
  }

  busy(now: number, warm = true): void {
    this.lastBusy = now;
    if (warm) this.worked = true;
  }

  /** True when it trimmed now. */
  tick(now: number): boolean {
    if (this.disabled) return false;
    const quiet = now - this.lastBusy;
    if (this.stats.trims === 0) {
      // Hot-path work came since start: this first trim is one after work, so it waits as they do.
      if (quiet < (this.worked ? this.o.idleMs : this.o.firstIdleMs)) return false;
    } else if (quiet < this.o.idleMs || now - this.lastTrim < this.o.minIntervalMs || !this.grew()) {
      return false;
    }
    const before = this.heapUsed();
    const rssBefore = this.rss?.() ?? 0;
    const t0 = performance.now();
    const kind = this.collect(this.stats.trims === 0 && !this.worked ? 'last-resort' : 'regular');
    if (!kind) {
      this.disabled = true;
      return false;
    }
    const t1 = performance.now();
    this.release();
    this.stats.releaseMs = performance.now() - t1;
    this.stats.lastMs = t1 - t0;
    this.stats.lastKind = kind;
    this.stats.lastBefore = before;
    this.stats.lastAfter = this.heapUsed();
    // Growth is measured from here, after the release.
    this.stats.rssBefore = rssBefore;
    this.stats.rssAfter = this.rss?.() ?? 0;
    this.stats.trims++;
    this.lastTrim = now;
    return true;
  }

  private grew(): boolean {
    if (this.heapUsed() - this.stats.lastAfter >= this.o.growthBytes) return true;
    return this.rss !== undefined && this.rss() - this.stats.rssAfter >= 2 * this.o.growthBytes;
  }
}
