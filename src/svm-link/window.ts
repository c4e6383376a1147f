/**
 * The bounded in-flight window: a counting semaphore with two classes of waiters and a per-waiter
 * timeout. Backpressure is explicit: a caller past the window waits (up to its deadline), it is
 * never dropped.
 *
 * - `foreground`: a decision a process is blocked on (an open held by the gate). Admitted before
 *   any waiting background request.
 * - `background`: close-write scans, deferred rescans, refreshes, on-demand tree scans. They hold at
 *   most `backgroundShare` of the slots, so a foreground request usually finds one free at once.
 * - FIFO within a class. A background waiter waiting longer than `backgroundMaxWaitMs` goes ahead
 *   of foreground waiters at the next free slot (within its share): background is slowed by a
 *   stream of decisions, never starved.
 * - A waiting background request can be raised to foreground (a blocked open now waits on it).
 */
export type PriorityClass = 'foreground' | 'background';

/**
 * A request's class, shared by everything that carries it (scanner, pool, link, window), so it can
 * be raised while the request waits or uploads: an open that joins the close-write scan of the
 * same file makes that scan foreground.
 */
export class Priority {
  /** Made by the first onRaise (a background waiter): a foreground request never needs one. */
  private listeners: Set<() => void> | undefined;
  /** Measurement, summed over the requests made with it: ms waited for a window slot. */
  windowWaitMs = 0;
  /** ms from a slot to the SVM's answer (sending, the SVM's work, the answer back). */
  svmMs = 0;
  /** Requests admitted with it. */
  requests = 0;
  constructor(private cls: PriorityClass = 'background') {}

  get class(): PriorityClass {
    return this.cls;
  }
  get foreground(): boolean {
    return this.cls === 'foreground';
  }
  /** Make it foreground (idempotent); a waiter in a window moves to the foreground queue. */
  raise(): void {
    if (this.cls === 'foreground') return;
    this.cls = 'foreground';
    for (const l of [...(this.listeners ?? [])]) l();
  }
  /** Called once when raised; returns the unsubscribe. */
  onRaise(fn: () => void): () => void {
    const ls = (this.listeners ??= new Set());
    ls.add(fn);
    return () => ls.delete(fn);
  }
}

/** A class, or a Priority that may still be raised. Undefined is foreground (the behaviour before classes). */
export type PriorityLike = PriorityClass | Priority | undefined;

export function priorityOf(p: PriorityLike): Priority {
  return p instanceof Priority ? p : new Priority(p ?? 'foreground');
}

export interface WindowOptions {
  /** Share of the slots background requests may hold at once (0..1; at least 1 slot). Default 0.75. */
  backgroundShare?: number | undefined;
  /** A background waiter older than this goes ahead of foreground waiters, ms. Default 5000. */
  backgroundMaxWaitMs?: number;
}

/** Counters per class: how often a request waited, and how long. */
export interface WindowClassStats {
  admitted: number;
  /** Admitted without waiting. */
  atOnce: number;
  waitedMsTotal: number;
  waitedMsMax: number;
  timedOut: number;
}

interface Waiter {
  prio: Priority;
  /** The class of the queue it is in. */
  cls: PriorityClass;
  since: number;
  /** When it entered its current queue (raised: the moment it was raised); the class's wait counts from here. */
  queuedAt: number;
  resolve: (release: () => void) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  unsubscribe: () => void;
}

export const DEFAULT_BACKGROUND_SHARE = 0.75;
export const DEFAULT_BACKGROUND_MAX_WAIT_MS = 5000;

export class Window {
  private used = 0;
  private usedBackground = 0;
  private readonly fg: Waiter[] = [];
  private readonly bg: Waiter[] = [];
  private readonly share: number;
  private readonly maxBgWaitMs: number;
  /** Admission order, for tests and status: incremented at each admission. */
  private admissions = 0;
  readonly stats: Record<PriorityClass, WindowClassStats> = { foreground: emptyStats(), background: emptyStats() };

  constructor(
    private limit: number,
    options: WindowOptions = {},
  ) {
    this.limit = Math.max(1, limit);
    this.share = Math.min(1, Math.max(0, options.backgroundShare ?? DEFAULT_BACKGROUND_SHARE));
    this.maxBgWaitMs = options.backgroundMaxWaitMs ?? DEFAULT_BACKGROUND_MAX_WAIT_MS;
  }

  get inUse(): number {
    return this.used;
  }
  get backgroundInUse(): number {
    return this.usedBackground;
  }
  get waiting(): number {
    return this.fg.length + this.bg.length;
  }
  get waitingForeground(): number {
    return this.fg.length;
  }
  get waitingBackground(): number {
    return this.bg.length;
  }
  get capacity(): number {
    return this.limit;
  }
  /** Slots background requests may hold at once. */
  get backgroundLimit(): number {
    return Math.max(1, Math.floor(this.limit * this.share));
  }
  /** Admissions so far (a sequence number: which request got a slot first). */
  get admitted(): number {
    return this.admissions;
  }

  setLimit(limit: number): void {
    this.limit = Math.max(1, limit);
    this.wake();
  }

  /**
   * Wait for a slot; resolves with its release (call once; later calls do nothing). Rejects with
   * `onTimeout()` after `timeoutMs`, or with the drain's error.
   */
  acquire(timeoutMs: number, onTimeout: () => Error, priority?: PriorityLike): Promise<() => void> {
    const prio = priorityOf(priority);
    const cls = prio.class;
    if (this.fg.length === 0 && (cls === 'foreground' ? this.used < this.limit : this.bg.length === 0 && this.bgFree())) {
      this.stats[cls].atOnce++;
      prio.requests++;
      return Promise.resolve(this.take(cls, 0));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        prio,
        cls,
        since: performance.now(),
        queuedAt: performance.now(),
        resolve,
        reject,
        unsubscribe: () => {},
        timer: setTimeout(() => {
          this.remove(w);
          w.unsubscribe();
          this.stats[w.cls].timedOut++;
          reject(onTimeout());
          // A background waiter at the head may now be admissible (share unchanged, but FIFO moved).
          this.wake();
        }, timeoutMs),
      };
      if (cls === 'background') {
        w.unsubscribe = prio.onRaise(() => {
          const i = this.bg.indexOf(w);
          if (i < 0) return;
          this.bg.splice(i, 1);
          w.cls = 'foreground';
          w.queuedAt = performance.now();
          this.fg.push(w);
          this.wake();
        });
      }
      (cls === 'foreground' ? this.fg : this.bg).push(w);
    });
  }

  /** Fail every waiter (link closed or refused). */
  drain(err: Error): void {
    for (const w of [...this.fg.splice(0), ...this.bg.splice(0)]) {
      clearTimeout(w.timer);
      w.unsubscribe();
      w.reject(err);
    }
  }

  private bgFree(): boolean {
    return this.used < this.limit && this.usedBackground < this.backgroundLimit;
  }

  private take(cls: PriorityClass, waitedMs: number): () => void {
    this.used++;
    if (cls === 'background') this.usedBackground++;
    this.admissions++;
    const s = this.stats[cls];
    s.admitted++;
    s.waitedMsTotal += waitedMs;
    if (waitedMs > s.waitedMsMax) s.waitedMsMax = waitedMs;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.used = Math.max(0, this.used - 1);
      if (cls === 'background') this.usedBackground = Math.max(0, this.usedBackground - 1);
      this.wake();
    };
  }

  private remove(w: Waiter): void {
    const q = w.cls === 'foreground' ? this.fg : this.bg;
    const i = q.indexOf(w);
    if (i >= 0) q.splice(i, 1);
  }

  private wake(): void {
    while (this.used < this.limit) {
      const now = performance.now();
      const oldBg = this.bg.length > 0 && now - this.bg[0]!.since >= this.maxBgWaitMs && this.bgFree();
      let w: Waiter | undefined;
      if (!oldBg && this.fg.length > 0) w = this.fg.shift();
      else if (this.bg.length > 0 && this.bgFree()) w = this.bg.shift();
      if (!w) return;
      clearTimeout(w.timer);
      w.unsubscribe();
      w.prio.requests++;
      w.prio.windowWaitMs += now - w.since;
      w.resolve(this.take(w.cls, now - w.queuedAt));
    }
  }
}

function emptyStats(): WindowClassStats {
  return { admitted: 0, atOnce: 0, waitedMsTotal: 0, waitedMsMax: 0, timedOut: 0 };
}
