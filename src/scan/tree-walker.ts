/**
 * Walks directory trees for on-demand scans. Never follows symlinks unless asked; with
 * `followSymlinks`, directories already visited (by dev:ino) are reported as loops and skipped.
 * Everything it cannot or should not scan (sockets, FIFOs, devices, unreadable directories,
 * entries that vanish mid-walk) is reported through `onSkip`, never thrown.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface WalkEntry {
  path: string;
  size: number;
  /** lstat of the entry (bigint): lets a cache answer by identity without opening the file. */
  stat: fs.BigIntStats;
}

export interface WalkSkip {
  path: string;
  code: string;
  message: string;
}

export interface WalkOptions {
  followSymlinks?: boolean;
  /** Absolute path prefixes not to descend into or scan. */
  exclude?: readonly string[];
  /** Regular files not to yield (globs and extensions: src/scan/exclusions.ts); reported as skipped, LA_SKIP_EXCLUDED. */
  excludeFile?: (path: string) => boolean;
  onSkip?: (skip: WalkSkip) => void;
  /**
   * Stay on each root's file system (`find -xdev`): a directory on another device is not entered
   * (reported as LA_SKIP_OTHER_FS). What a fanotify mount mark on the root covers, and never /proc
   * or /sys under a root of `/`.
   */
  oneFileSystem?: boolean;
}

function kindOf(st: fs.BigIntStats): string {
  if (st.isSocket()) return 'a socket';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** Yields regular files under each root (a root may itself be a file). */
export async function* walkTree(roots: readonly string[], opts: WalkOptions = {}): AsyncGenerator<WalkEntry> {
  const seenDirs = new Set<string>();
  const excluded = (p: string) => (opts.exclude ?? []).some((e) => p === e || p.startsWith(e.endsWith('/') ? e : `${e}/`));
  const skip = (p: string, code: string, message: string) => opts.onSkip?.({ path: p, code, message });

  const stack: string[] = [...roots].map((r) => path.resolve(r)).reverse();
  /** With oneFileSystem: the device of the root each stacked path came from (undefined: a root). */
  const rootDev: Array<bigint | undefined> = stack.map(() => undefined);
  while (stack.length > 0) {
    const p = stack.pop()!;
    const dev = rootDev.pop();
    if (excluded(p)) continue;
    let st: fs.BigIntStats;
    try {
      // Synchronous lstat: ~2 us from the dentry cache, far cheaper than a promise round trip.
      st = fs.lstatSync(p, { bigint: true });
      if (st.isSymbolicLink()) {
        if (!opts.followSymlinks) {
          skip(p, 'LA_SKIP_SYMLINK', 'symbolic link not followed (use --follow-symlinks)');
          continue;
        }
        st = fs.statSync(p, { bigint: true });
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'ERR';
      skip(
        p,
        code,
        code === 'ENOENT' ? 'vanished before it could be scanned' : code === 'ELOOP' ? 'symbolic link loop' : (err as Error).message,
      );
      continue;
    }
    if (st.isDirectory()) {
      if (opts.oneFileSystem && dev !== undefined && st.dev !== dev) {
        skip(p, 'LA_SKIP_OTHER_FS', 'another file system (not entered)');
        continue;
      }
      const key = `${st.dev}:${st.ino}`;
      if (seenDirs.has(key)) {
        skip(p, 'LA_SKIP_LOOP', 'directory already visited (symbolic link loop)');
        continue;
      }
      if (opts.followSymlinks) seenDirs.add(key);
      let names: string[];
      try {
        names = await fs.promises.readdir(p);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'ERR';
        skip(p, code, `cannot list the directory: ${(err as Error).message}`);
        continue;
      }
      names.sort();
      for (let i = names.length - 1; i >= 0; i--) {
        stack.push(path.join(p, names[i]!));
        rootDev.push(dev ?? st.dev);
      }
    } else if (st.isFile()) {
      if (opts.excludeFile?.(p)) {
        skip(p, 'LA_SKIP_EXCLUDED', 'excluded by `exclude`');
        continue;
      }
      yield { path: p, size: Number(st.size), stat: st };
    } else {
      skip(p, 'LA_SKIP_NOT_REGULAR', `${kindOf(st)}, not scanned`);
    }
  }
}
