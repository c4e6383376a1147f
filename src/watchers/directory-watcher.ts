/**
 * Windows protection backend: directory change notifications on the configured `protect` paths,
 * scan after write. Windows lets a user-mode program see a file only after it was created or
 * written; refusing the open itself needs a signed kernel minifilter driver (docs/windows.md).
 *
 * Source of events (`source`, default fsWatchSource): Node's `fs.watch(root, { recursive: true })`.
 * On Windows libuv implements it with one ReadDirectoryChangesW (bWatchSubtree, FILE_NOTIFY_CHANGE_FILE_NAME | DIR_NAME |
 * LAST_WRITE | SIZE | ...) per root on an overlapped handle, completed on the libuv I/O
 * completion port: the same system call a koffi binding would make, without a thread blocked in
 * foreign code and with libuv's handling of buffer overflow (ERROR_NOTIFY_ENUM_DIR). The
 * measurement against a koffi ReadDirectoryChangesW loop is in docs/windows.md.
 *
 * Each event names a path relative to its root. A path is reported once it has been quiet for
 * `settleMs` (a file being written raises many events) and is still a regular file; reports go
 * through a WrittenQueue (bounded concurrency, one report per path at a time). Paths settling are
 * bounded (`maxPending`), the queue to that plus one rescan: beyond, new paths are dropped and
 * counted, and the root is rescanned once things are quiet again, so a burst can delay a scan
 * but not hide a file. A root whose watch fails (the directory was removed, the handle errored)
 * is re-armed every second.
 */
import fs from 'node:fs';
import path from 'node:path';
import { logger } from '../log.js';
import type { ProtectionBackend, ProtectionHandler } from './protection.js';
import { WrittenQueue } from './written-queue.js';

/**
 * One root's change notifications: `onChange(name)` with a path relative to the root for each
 * record, `onChange(null)` when the OS dropped records (buffer overflow), `onError` when the
 * watch itself failed (it is then closed and armed again). Throws if the root cannot be watched.
 */
export type ChangeSource = (
  root: string,
  onChange: (name: string | Buffer | null) => void,
  onError: (e: Error) => void,
) => { close(): void };

/** libuv's ReadDirectoryChangesW on Windows (see the file header); inotify elsewhere. */
export const fsWatchSource: ChangeSource = (root, onChange, onError) => {
  const w = fs.watch(root, { recursive: true, persistent: true }, (_type, name) => onChange(name));
  w.on('error', onError);
  return w;
};

export interface WindowsWatcherOptions {
  paths: readonly string[];
  exclude: readonly string[];
  handler: ProtectionHandler;
  settleMs?: number | undefined;
  /** Paths settling at most (default 10,000); beyond, the root is rescanned later. The scan queue holds this plus maxRescanFiles. */
  maxPending?: number | undefined;
  /** Files visited by one overflow rescan of a root, at most. */
  maxRescanFiles?: number | undefined;
  /** Compare paths case-insensitively (default: on Windows). */
  caseInsensitive?: boolean | undefined;
  /** Where the change records come from (default fsWatchSource; tests feed recorded records). */
  source?: ChangeSource | undefined;
}

const MAX_RESCAN_FILES = 200_000;

/** Paths compared the way the file system does: case-insensitively on Windows. */
function normalizer(caseInsensitive: boolean): (p: string) => string {
  return caseInsensitive ? (p) => path.resolve(p).toLowerCase() : (p) => path.resolve(p);
}

export class WindowsDirectoryWatcher implements ProtectionBackend {
  readonly mode = 'watcher' as const;
  private readonly log = logger('win-watcher');
  private readonly counts = { events: 0, handed: 0, dropped: 0, rescans: 0, errors: 0, rearms: 0 };
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private readonly watchers = new Map<string, { close(): void }>();
  private readonly rearmTimers = new Set<NodeJS.Timeout>();
  private readonly overflowed = new Set<string>();
  private readonly settleMs: number;
  private readonly maxPending: number;
  private readonly norm: (p: string) => string;
  private readonly excluded: string[];
  private readonly queue: WrittenQueue;
  private readonly source: ChangeSource;
  private stopped = false;

  private constructor(private readonly o: WindowsWatcherOptions) {
    this.settleMs = o.settleMs ?? 200;
    this.maxPending = o.maxPending ?? 10_000;
    this.norm = normalizer(o.caseInsensitive ?? process.platform === 'win32');
    this.excluded = o.exclude.map((e) => this.norm(e));
    // Room for one whole rescan on top of the live events: a rescan that the queue cut short
    // would walk the root from its start again and never reach the files past the cut.
    this.queue = new WrittenQueue(o.handler, this.log, 8, this.maxPending + (o.maxRescanFiles ?? MAX_RESCAN_FILES));
    this.source = o.source ?? fsWatchSource;
  }

  static start(o: WindowsWatcherOptions): WindowsDirectoryWatcher {
    const self = new WindowsDirectoryWatcher(o);
    for (const root of o.paths) self.arm(root);
    self.log.info('watching (directory change notifications)', { paths: o.paths });
    return self;
  }

  private isExcluded(file: string): boolean {
    const n = this.norm(file);
    return this.excluded.some((e) => n === e || n.startsWith(e.endsWith(path.sep) ? e : e + path.sep));
  }

  private arm(root: string): void {
    if (this.stopped) return;
    let w: { close(): void } | undefined;
    const onError = (e: Error) => {
      if (this.watchers.get(root) !== w || w === undefined) return;
      this.counts.errors++;
      this.log.warn('watch failed; re-arming', { root, code: (e as NodeJS.ErrnoException).code, message: e.message });
      w.close();
      this.watchers.delete(root);
      this.rearmLater(root);
    };
    try {
      w = this.source(root, (name) => this.onEvent(root, name), onError);
    } catch (e) {
      this.counts.errors++;
      this.log.warn('cannot watch; retrying every second', {
        root,
        code: (e as NodeJS.ErrnoException).code,
        message: (e as Error).message,
      });
      this.rearmLater(root);
      return;
    }
    this.watchers.set(root, w);
  }

  private rearmLater(root: string): void {
    const t = setTimeout(() => {
      this.rearmTimers.delete(t);
      this.counts.rearms++;
      this.arm(root);
      // anything written while the watch was down is found by a rescan
      if (this.watchers.has(root)) this.rescan(root);
    }, 1000);
    this.rearmTimers.add(t);
  }

  private onEvent(root: string, name: string | Buffer | null): void {
    if (this.stopped) return;
    this.counts.events++;
    if (name === null || name === undefined) {
      // the OS dropped events (buffer overflow): look at the whole root
      this.overflowed.add(root);
      this.scheduleRescan(root);
      return;
    }
    const rel = typeof name === 'string' ? name : name.toString('utf8');
    if (rel.length === 0 || rel.length > 32_767) return;
    const file = path.join(root, rel);
    if (this.isExcluded(file)) return;
    const key = this.norm(file);
    const old = this.pending.get(key);
    if (old) clearTimeout(old);
    else if (this.pending.size >= this.maxPending) {
      this.counts.dropped++;
      if (!this.overflowed.has(root)) {
        this.overflowed.add(root);
        this.log.warn('too many files changing at once; the rest are found by a rescan', { root, pending: this.pending.size });
      }
      this.scheduleRescan(root);
      return;
    }
    this.pending.set(
      key,
      setTimeout(() => this.settled(root, key, file), this.settleMs),
    );
  }

  private settled(root: string, key: string, file: string): void {
    this.pending.delete(key);
    if (this.stopped) return;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(file);
    } catch {
      return; // gone (deleted, or renamed away: the new name has its own event)
    }
    if (!st.isFile()) return;
    this.hand(root, file);
  }

  /** Queue a report; a full queue leaves the file to the root's next rescan. */
  private hand(root: string, file: string): boolean {
    if (this.queue.push(file)) {
      this.counts.handed++;
      return true;
    }
    this.counts.dropped++;
    this.overflowed.add(root);
    return false;
  }

  private rescanTimer: NodeJS.Timeout | undefined;
  private scheduleRescan(root: string): void {
    this.overflowed.add(root);
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    this.rescanTimer = setTimeout(() => {
      this.rescanTimer = undefined;
      if (this.pending.size + this.queue.size > this.maxPending / 2) return this.scheduleRescan(root);
      for (const r of [...this.overflowed]) this.rescan(r);
      this.overflowed.clear();
    }, this.settleMs * 2);
  }

  /** Hand over every regular file under root (bounded), for a watch that lost events. */
  private rescan(root: string): void {
    this.counts.rescans++;
    const limit = this.o.maxRescanFiles ?? MAX_RESCAN_FILES;
    let seen = 0;
    const stack = [root];
    while (stack.length > 0 && seen < limit && !this.stopped) {
      const dir = stack.pop()!;
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        const p = path.join(dir, e.name);
        if (this.isExcluded(p)) continue;
        if (e.isDirectory()) stack.push(p);
        else if (e.isFile()) {
          seen++;
          if (!this.hand(root, p)) {
            // the queue is full: the rest of this root waits for the next rescan
            this.scheduleRescan(root);
            return;
          }
        }
      }
    }
    if (seen >= limit) this.log.warn('rescan stopped at its file limit', { root, limit });
  }

  stats(): Record<string, number> {
    return {
      ...this.counts,
      pending: this.pending.size,
      queued: this.queue.size,
      reported: this.queue.reported,
      failed: this.queue.failed,
      roots: this.watchers.size,
    };
  }

  flushCleanMarks(): void {
    /* no kernel-side marks in this mode */
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
    for (const t of this.rearmTimers) clearTimeout(t);
    this.rearmTimers.clear();
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    await this.queue.close();
  }
}
