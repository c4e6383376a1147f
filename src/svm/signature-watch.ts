/**
 * Builtin signature files and YARA rules picked up when they change, without SIGHUP.
 *
 * fs.watch on the directories that hold them (a file replaced by rename, as package managers and
 * `install` do, is still seen) wakes the check early; polling every `pollMs` is the fallback for
 * file systems where fs.watch says nothing (NFS, some overlays) or fails. A change is loaded only
 * once the files stay the same (names, sizes, mtimes) for `settleMs`, so a half-copied file is not
 * loaded; then `onChange` runs (the server's reloadSignatures, the path SIGHUP takes). What is
 * watched is bounded: at most MAX_WATCHED_FILES files are looked at per check.
 */
import fs from 'node:fs';
import path from 'node:path';
import { logger } from '../log.js';
import { BuiltinEngine } from './engines/builtin.js';
import type { ScanEngine } from './engines/engine.js';
import { YARA_LIMITS, YaraEngine } from './engines/yara.js';

export const MAX_WATCHED_FILES = YARA_LIMITS.maxRuleFiles;

/** What to watch: single files, and directories whose files matching `pattern` count. */
export interface WatchedPaths {
  files: string[];
  dirs: Array<{ dir: string; pattern: RegExp }>;
}

/** The paths whose changes mean new signatures for `engine`; undefined when there is nothing to watch (clamav: freshclam tells clamd). */
export function watchedSignaturePaths(engine: ScanEngine): WatchedPaths | undefined {
  if (engine instanceof BuiltinEngine) {
    const files = engine.signatureFiles.map((f) => path.resolve(f));
    return files.length ? { files, dirs: [] } : undefined;
  }
  if (engine instanceof YaraEngine) {
    const p = path.resolve(engine.rulesPath);
    try {
      if (fs.statSync(p).isDirectory()) return { files: [], dirs: [{ dir: p, pattern: /^[^.].*\.(yar|yara)$/i }] };
    } catch {
      // gone now: watched as a file, picked up when it comes back
    }
    return { files: [p], dirs: [] };
  }
  return undefined;
}

/** names, sizes and mtimes of the watched files, as one comparable string. */
export function snapshot(w: WatchedPaths): string {
  const parts: string[] = [];
  const stat = (f: string) => {
    try {
      const st = fs.statSync(f);
      parts.push(`${f}\0${st.isFile() ? 'f' : 'o'}\0${st.size}\0${st.mtimeMs}`);
    } catch (e) {
      parts.push(`${f}\0${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  for (const f of w.files.slice(0, MAX_WATCHED_FILES)) stat(f);
  for (const { dir, pattern } of w.dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((n) => pattern.test(n));
    } catch (e) {
      parts.push(`${dir}\0${(e as NodeJS.ErrnoException).code ?? 'error'}`);
      continue;
    }
    names.sort();
    parts.push(`${dir}\0${names.length}`);
    for (const n of names.slice(0, MAX_WATCHED_FILES)) stat(path.join(dir, n));
  }
  return parts.join('\n');
}

export interface SignatureWatchOptions {
  /** Poll the files this often whatever fs.watch says (default 5 s). */
  pollMs?: number;
  /** A change is loaded once nothing changed for this long (default 1 s). */
  settleMs?: number;
}

export class SignatureWatcher {
  private readonly log = logger('svm');
  private readonly watchers: fs.FSWatcher[] = [];
  private readonly poll: NodeJS.Timeout;
  private settle: NodeJS.Timeout | undefined;
  private loaded: string;
  private pending: string | undefined;
  private closed = false;
  private readonly pollMs: number;
  private readonly settleMs: number;

  constructor(
    private readonly w: WatchedPaths,
    private readonly onChange: () => void,
    o: SignatureWatchOptions = {},
  ) {
    this.pollMs = Math.max(50, o.pollMs ?? 5000);
    this.settleMs = Math.max(10, o.settleMs ?? 1000);
    this.loaded = snapshot(w);
    const dirs = new Set([...w.files.map((f) => path.dirname(f)), ...w.dirs.map((d) => d.dir)]);
    for (const dir of dirs) {
      try {
        const fw = fs.watch(dir, { persistent: false }, () => this.kick());
        fw.on('error', (e) => this.log.warn('cannot watch a signature directory; polling only', { dir, message: e.message }));
        this.watchers.push(fw);
      } catch (e) {
        this.log.warn('cannot watch a signature directory; polling only', { dir, message: (e as Error).message });
      }
    }
    this.poll = setInterval(() => this.kick(), this.pollMs);
    this.poll.unref();
    this.log.info('watching signature files', {
      files: w.files,
      dirs: w.dirs.map((d) => d.dir),
      pollMs: this.pollMs,
      settleMs: this.settleMs,
    });
  }

  /** Something may have changed: look, and load once it holds still. */
  private kick(): void {
    if (this.closed || this.settle) return;
    const now = snapshot(this.w);
    if (now === this.loaded) return;
    this.pending = now;
    this.arm();
  }

  private arm(): void {
    this.settle = setTimeout(() => {
      this.settle = undefined;
      if (this.closed) return;
      const now = snapshot(this.w);
      if (now !== this.pending) {
        // Still being written: wait until it holds still.
        this.pending = now;
        this.arm();
        return;
      }
      if (now === this.loaded) return;
      this.loaded = now;
      this.log.info('signature files changed; reloading');
      try {
        this.onChange();
      } catch (e) {
        this.log.error('signature reload after a change failed', { message: (e as Error).message });
      }
    }, this.settleMs);
    this.settle.unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.poll);
    clearTimeout(this.settle);
    for (const fw of this.watchers) fw.close();
  }
}
