/**
 * The portable fallback: where fanotify cannot run (no root or CAP_SYS_ADMIN, a container, an old
 * kernel) files are scanned after they are created or changed, not before they are opened. It
 * cannot block an open; it quarantines what it finds. chokidar costs about 7 KB of RSS per
 * watched file, so it watches only the configured `protect` paths, never whole disks.
 */
import { watch, type FSWatcher } from 'chokidar';
import path from 'node:path';
import { logger } from '../log.js';
import type { ProtectionBackend, ProtectionHandler } from './protection.js';
import { WrittenQueue } from './written-queue.js';

export interface ChokidarWatcherOptions {
  paths: readonly string[];
  exclude: readonly string[];
  handler: ProtectionHandler;
  /** ms without size change before a written file is reported (default 150). */
  settleMs?: number | undefined;
  /** Paths waiting to be reported, at most (default 100,000); beyond, new ones are dropped and counted. */
  maxPending?: number | undefined;
}

export class ChokidarWatcher implements ProtectionBackend {
  readonly mode = 'watcher' as const;
  private readonly counts = { created: 0, changed: 0, dropped: 0, errors: 0 };
  private readonly log = logger('watcher');
  private readonly queue: WrittenQueue;

  private constructor(
    private readonly w: FSWatcher,
    o: ChokidarWatcherOptions,
  ) {
    this.queue = new WrittenQueue(o.handler, this.log, 8, o.maxPending ?? 100_000);
  }

  static async start(o: ChokidarWatcherOptions): Promise<ChokidarWatcher> {
    const excluded = (p: string) => o.exclude.some((e) => p === e || p.startsWith(e.endsWith(path.sep) ? e : e + path.sep));
    const w = watch([...o.paths], {
      ignoreInitial: true,
      followSymlinks: false,
      ignored: (p: string) => excluded(p),
      awaitWriteFinish: { stabilityThreshold: o.settleMs ?? 150, pollInterval: 50 },
      persistent: true,
    });
    const self = new ChokidarWatcher(w, o);
    w.on('add', (p) => {
      self.counts.created++;
      self.report(p);
    });
    w.on('change', (p) => {
      self.counts.changed++;
      self.report(p);
    });
    w.on('error', (e) => {
      // ENOENT/ENOTDIR during a watch is churn (a file went away), not a failure.
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      self.counts.errors++;
      self.log.warn('watcher error', { code, message: (e as Error).message });
    });
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
    self.log.info('watching', { paths: o.paths });
    return self;
  }

  private report(file: string): void {
    if (this.queue.push(file)) return;
    if (this.counts.dropped++ === 0)
      this.log.warn('too many written files waiting for a scan; dropping the newest (counted in status as dropped)', {
        pending: this.queue.size,
      });
  }

  stats(): Record<string, number> {
    return { ...this.counts, pending: this.queue.size, reported: this.queue.reported, failed: this.queue.failed };
  }

  flushCleanMarks(): void {
    /* no kernel-side marks in this mode */
  }

  async stop(): Promise<void> {
    await this.w.close();
    await this.queue.close();
  }
}
