/**
 * Files allowed without a verdict (SVM unreachable, deadline passed, ...) waiting to be scanned
 * when an SVM is back, so an outage delays a detection but never loses it (DESIGN.md, step 8).
 *
 * Kept in a Journal: `add()` resolves only once the entry is on disk, so a SIGKILL or a power
 * cut loses nothing that was acknowledged. Deduplicated by path: adding a queued path again
 * updates its identity and reason and keeps its place in line (a file rewritten every second
 * must not starve at the back).
 *
 * Overload policy: bounded at `capacity` entries (default 100,000). Adding a new path to a full
 * queue drops the OLDEST entry: the newest writes are the likelier threats and the oldest have
 * had the longest exposure already. Drops are counted (`dropped`) and logged as a warning with
 * the running count (the first, then at most one line per 10 s), never silently.
 *
 * The re-scan worker `take(n)`s entries (leased in memory, not on disk), scans them, and calls
 * `done(entry)`, or `release(entry)` to retry later. Leases are not persisted: after a crash the
 * leased entries are offered again (at-least-once; a re-scan is harmless). `done(entry)` keeps
 * an entry that was re-added while it was being scanned, since that scan saw the old content.
 *
 * A full disk (or any journal write failure) does not lose a file either: the entry is kept in
 * memory (`memoryOnly`, within the same capacity), scanned like the others, and written to the
 * journal by the next add that succeeds (space freed). Only a crash while the disk is full loses
 * such entries; the log says so when it happens.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { sameIdentity, type IdentityFields } from '../cache/file-identity.js';
import { logger } from '../log.js';
import { Journal, type JournalOptions, type JournalOp } from './journal.js';

export type DeferReason = 'svm-unavailable' | 'deadline' | 'too-large' | 'error' | (string & {});

export interface DeferredEntry {
  path: string;
  /** st_dev, st_ino, st_mtime and st_ctime in ns as decimal strings: 64-bit values do not fit a JSON number. */
  dev: string;
  ino: string;
  size: number;
  mtimeNs: string;
  /** '' when unknown: entries journaled before ctime was recorded (they compare equal only to each other). */
  ctimeNs: string;
  reason: DeferReason;
  /** When the path was first queued (ms since the epoch). */
  time: number;
}

export type DeferredInput = Omit<DeferredEntry, 'time' | 'ctimeNs'> & { time?: number; ctimeNs?: string | undefined };

export interface DeferredQueueOptions {
  /** Journal file; `DeferredQueue.defaultFile(stateDir)` gives the standard place. */
  file: string;
  /** Most entries kept (default 100,000); the oldest is dropped to make room. */
  capacity?: number;
  journal?: Omit<JournalOptions<DeferredEntry>, 'validate' | 'readOnly'>;
}

function isEntry(key: string, v: unknown): v is DeferredEntry {
  const e = v as DeferredEntry;
  const ok =
    typeof v === 'object' &&
    v !== null &&
    e.path === key &&
    typeof e.dev === 'string' &&
    typeof e.ino === 'string' &&
    typeof e.mtimeNs === 'string' &&
    (e.ctimeNs === undefined || typeof e.ctimeNs === 'string') &&
    typeof e.size === 'number' &&
    typeof e.reason === 'string' &&
    typeof e.time === 'number';
  // Journals written before ctime was recorded: read as unknown, not dropped (the file must still be scanned).
  if (ok) e.ctimeNs ??= '';
  return ok;
}

function identityOf(e: DeferredInput): IdentityFields<string> {
  return { dev: e.dev, ino: e.ino, size: e.size, mtimeNs: e.mtimeNs, ctimeNs: e.ctimeNs ?? '' };
}

const DROP_LOG_INTERVAL_MS = 10_000;

export class DeferredQueue extends EventEmitter<{ added: [DeferredEntry] }> {
  private readonly leased = new Map<string, DeferredEntry>();
  /** Entries the journal refused (disk full): queued in memory until a write succeeds again. */
  private readonly memoryOnly = new Map<string, DeferredEntry>();
  private persisting = false;
  private closed = false;
  private lastPersistFailLog = 0;
  private droppedCount = 0;
  private lastDropLog = 0;
  private readonly log = logger('deferred-queue');

  private constructor(
    private readonly journal: Journal<DeferredEntry>,
    readonly capacity: number,
  ) {
    super();
  }

  static defaultFile(stateDir: string): string {
    return path.join(stateDir, 'deferred', 'queue.journal');
  }

  static async open(o: DeferredQueueOptions): Promise<DeferredQueue> {
    const capacity = o.capacity ?? 100_000;
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    const journal = await Journal.open<DeferredEntry>(o.file, { ...o.journal, validate: isEntry });
    const q = new DeferredQueue(journal, capacity);
    // A capacity lowered since the last run: trim the oldest now rather than on the next add.
    const excess = journal.size - capacity;
    if (excess > 0) {
      const ops: JournalOp<DeferredEntry>[] = [];
      for (const k of journal.keys()) {
        if (ops.length >= excess) break;
        ops.push({ op: 'delete', key: k });
      }
      q.countDrops(ops.length);
      await journal.write(ops);
    }
    return q;
  }

  /** Entries waiting, leased ones included. */
  get size(): number {
    return this.journal.size + this.memoryOnly.size;
  }
  /** Entries queued in memory only, because the journal could not be written. */
  get unpersisted(): number {
    return this.memoryOnly.size;
  }
  /** Entries dropped because the queue was full, since open. */
  get dropped(): number {
    return this.droppedCount;
  }
  /** Entries handed out by take() and not yet done or released. */
  get inFlight(): number {
    return this.leased.size;
  }

  /**
   * Queue a file; resolves once it is on disk. Never throws synchronously, and a caller that
   * ignores the promise does not get an unhandled rejection: failures are logged here too.
   */
  add(input: DeferredInput): Promise<void> {
    const existing = this.journal.get(input.path) ?? this.memoryOnly.get(input.path);
    const entry: DeferredEntry = {
      path: input.path,
      dev: input.dev,
      ino: input.ino,
      size: input.size,
      mtimeNs: input.mtimeNs,
      ctimeNs: input.ctimeNs ?? '',
      reason: input.reason,
      time: existing?.time ?? input.time ?? Date.now(),
    };
    const ops: JournalOp<DeferredEntry>[] = [];
    if (!existing && this.size >= this.capacity) {
      const oldest = this.oldestDroppable();
      if (oldest !== undefined) {
        if (!this.memoryOnly.delete(oldest)) ops.push({ op: 'delete', key: oldest });
        this.leased.delete(oldest);
        this.countDrops(1);
      }
    }
    ops.push({ op: 'put', key: entry.path, value: entry });
    const result = this.journal.write(ops).then(
      () => {
        this.memoryOnly.delete(entry.path);
        this.emit('added', entry);
        if (this.memoryOnly.size > 0) void this.persistMemoryOnly();
      },
      (e: unknown) => {
        if (this.closed) throw e;
        // Keep it anyway: a file allowed unscanned must be scanned when an SVM is back.
        if (!this.journal.has(entry.path)) this.memoryOnly.set(entry.path, entry);
        const now = Date.now();
        if (now - this.lastPersistFailLog >= DROP_LOG_INTERVAL_MS) {
          this.lastPersistFailLog = now;
          this.log.error(
            'could not persist a deferred-scan entry: kept in memory (lost only if the agent stops before the disk has room again)',
            {
              path: entry.path,
              error: (e as Error).message,
              inMemoryOnly: this.memoryOnly.size,
            },
          );
        }
        this.emit('added', entry);
      },
    );
    // A caller that ignores the promise (the hot path does) must not get an unhandled rejection.
    result.catch((e: unknown) =>
      this.log.error('could not queue a deferred-scan entry', { path: entry.path, error: (e as Error).message }),
    );
    return result;
  }

  /** Write the memory-only entries to the journal (one record) now that a write worked. */
  private async persistMemoryOnly(): Promise<void> {
    if (this.persisting) return;
    this.persisting = true;
    try {
      const batch = [...this.memoryOnly.values()].filter((e) => !this.journal.has(e.path));
      if (batch.length === 0) return;
      await this.journal.write(batch.map((e) => ({ op: 'put', key: e.path, value: e })));
      for (const e of batch) if (this.memoryOnly.get(e.path) === e) this.memoryOnly.delete(e.path);
      this.log.info('deferred-scan entries kept in memory are on disk again', { entries: batch.length });
    } catch {
      // still full: they stay in memory, the next successful add tries again
    } finally {
      this.persisting = false;
    }
  }

  /** Up to `n` of the oldest entries not already leased; they stay queued until done(). */
  take(n: number): DeferredEntry[] {
    const out: DeferredEntry[] = [];
    if (n <= 0) return out;
    for (const [k, e] of this.allEntries()) {
      if (this.leased.has(k)) continue;
      this.leased.set(k, e);
      out.push(e);
      if (out.length >= n) break;
    }
    return out;
  }

  /**
   * The entry was scanned: remove it, unless the path was re-added with another identity since
   * take() (then it stays queued for the new content). Resolves true if it was removed.
   */
  async done(entry: DeferredInput | string): Promise<boolean> {
    const key = typeof entry === 'string' ? entry : entry.path;
    const taken = typeof entry === 'string' ? this.leased.get(key) : entry;
    this.leased.delete(key);
    const inMemory = this.memoryOnly.get(key);
    if (inMemory) {
      if (taken && !sameIdentity(identityOf(taken), inMemory)) return false;
      this.memoryOnly.delete(key);
      return true;
    }
    const current = this.journal.get(key);
    if (!current) return false;
    if (taken && !sameIdentity(identityOf(taken), current)) return false;
    return this.journal.delete(key);
  }

  /** Give a taken entry back (its scan failed); it is offered again by a later take(). */
  release(entry: DeferredEntry | string): void {
    this.leased.delete(typeof entry === 'string' ? entry : entry.path);
  }

  /**
   * Scan everything queued (and anything added meanwhile) with `concurrency` parallel calls of
   * `scan`: resolving true removes the entry (`done`), false or a throw keeps it for a later
   * drain. Each entry is tried at most once per drain. Resolves with the number removed.
   */
  async drain(scan: (path: string, entry: DeferredEntry) => Promise<boolean>, concurrency = 4): Promise<number> {
    const kept: DeferredEntry[] = [];
    let removed = 0;
    const worker = async () => {
      for (let [e] = this.take(1); e; [e] = this.take(1)) {
        let ok = false;
        try {
          ok = await scan(e.path, e);
        } catch (err) {
          this.log.warn('deferred re-scan of a file failed; kept for later', { path: e.path, error: (err as Error).message });
        }
        if (!ok)
          kept.push(e); // stays leased until the drain ends, so this drain does not retry it
        else if (await this.done(e)) removed++;
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
    } finally {
      for (const e of kept) this.release(e);
    }
    return removed;
  }

  has(p: string): boolean {
    return this.journal.has(p) || this.memoryOnly.has(p);
  }

  /** All queued entries, oldest first (a live view: do not add or remove while iterating). */
  *[Symbol.iterator](): IterableIterator<DeferredEntry> {
    for (const [, e] of this.allEntries()) yield e;
  }

  stats(): { size: number; inFlight: number; dropped: number; capacity: number; fileBytes: number; unpersisted: number } {
    return {
      size: this.size,
      inFlight: this.inFlight,
      dropped: this.dropped,
      capacity: this.capacity,
      fileBytes: this.journal.stats().fileBytes,
      unpersisted: this.memoryOnly.size,
    };
  }

  /** Journal entries first (oldest first), then the memory-only ones. */
  private *allEntries(): IterableIterator<[string, DeferredEntry]> {
    yield* this.journal.entries();
    for (const [k, e] of this.memoryOnly) if (!this.journal.has(k)) yield [k, e];
  }

  /** Wait for pending writes and close the journal. */
  close(): Promise<void> {
    this.closed = true;
    if (this.memoryOnly.size > 0)
      this.log.error('stopping with deferred-scan entries that never reached the disk: they are lost', { entries: this.memoryOnly.size });
    return this.journal.close();
  }

  private oldestDroppable(): string | undefined {
    // Prefer an entry nobody is scanning; if every entry is leased, drop the oldest anyway.
    let first: string | undefined;
    for (const [k] of this.allEntries()) {
      first ??= k;
      if (!this.leased.has(k)) return k;
    }
    return first;
  }

  private countDrops(n: number): void {
    this.droppedCount += n;
    const now = Date.now();
    if (this.droppedCount === n || now - this.lastDropLog >= DROP_LOG_INTERVAL_MS) {
      this.lastDropLog = now;
      this.log.warn('deferred-scan queue full: dropped the oldest entries, they will not be re-scanned', {
        capacity: this.capacity,
        droppedTotal: this.droppedCount,
      });
    }
  }
}
