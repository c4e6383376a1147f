/**
 * The portable fallback: where fanotify cannot run (no root or CAP_SYS_ADMIN, a container, an old
 * kernel, Windows) files are scanned after they are created or changed, not before they are
 * opened. It cannot block an open; it quarantines what it finds. chokidar costs about 7 KB of
 * RSS per watched file, so it watches only the configured `protect` paths, never whole disks.
 */
import { watch, type FSWatcher } from 'chokidar';
import path from 'node:path';
import { logger } from '../log.js';
import type { ProtectionBackend } from './protection.js';

export interface ChokidarWatcherOptions {
  paths: readonly string[];
  exclude: readonly string[];
  /** Called for every created or changed regular file, after writes settled. */
  onWritten: (file: string) => void;
  /** Also report files that exist at start (a first full scan). */
  scanExisting?: boolean;
  /** ms without size change before a written file is handed over. */
  settleMs?: number;
}

export class ChokidarWatcher implements ProtectionBackend {
  readonly mode = 'watcher' as const;
  private readonly counts = { created: 0, changed: 0, errors: 0 };
  private readonly log = logger('watcher');

  private constructor(private readonly w: FSWatcher) {}

  static async start(o: ChokidarWatcherOptions): Promise<ChokidarWatcher> {
    const excluded = (p: string) => o.exclude.some((e) => p === e || p.startsWith(e.endsWith(path.sep) ? e : e + path.sep));
    const w = watch([...o.paths], {
      ignoreInitial: !o.scanExisting,
      followSymlinks: false,
      ignored: (p: string) => excluded(p),
      awaitWriteFinish: { stabilityThreshold: o.settleMs ?? 150, pollInterval: 50 },
      persistent: true,
    });
    const self = new ChokidarWatcher(w);
    w.on('add', (p) => {
      self.counts.created++;
      o.onWritten(p);
    });
    w.on('change', (p) => {
      self.counts.changed++;
      o.onWritten(p);
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

  stats(): Record<string, number> {
    return { ...this.counts };
  }

  flushCleanMarks(): void {
    /* no kernel-side marks in this mode */
  }

  async stop(): Promise<void> {
    await this.w.close();
  }
}
