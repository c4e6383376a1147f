/**
 * File-level pieces of the quarantine: the obfuscating copy, fsync of directories, and the
 * symlink-proof creation of a restore target.
 *
 * Restore safety. Node has no openat(2), so we cannot walk the target path with O_NOFOLLOW
 * directory fds. Instead, for a target DIR/NAME:
 *   1. every component of DIR is lstat()ed from / down: any symlink refuses the restore (this
 *      includes merged-/usr links such as /bin -> usr/bin: restore to the real path with --to),
 *      and realpath(DIR) must equal DIR;
 *   2. the content goes into a fresh DIR/.NAME.la-restore-RANDOM created O_CREAT|O_EXCL|
 *      O_NOFOLLOW, and /proc/self/fd/N must name exactly that path: a directory swapped for a
 *      symlink between 1 and 2 is caught here, before one byte is written;
 *   3. the temp file is link()ed (no overwrite) or, with force, rename()d to NAME, both paths in
 *      the same DIR: if DIR were swapped again, the temp name would not resolve there and the
 *      call fails. Neither call follows a symlink at NAME (rename replaces the link itself).
 * A user who can swap directories can only move our file within directories they can write
 * anyway, never into /etc.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QuarantineError } from '../errors.js';

/**
 * Stored content is XORed with this byte. Not secrecy (the store is root-only already): it keeps
 * other scanners, indexers and backup tools that read as root from matching the threat's bytes
 * in our store, and makes the stored file useless if copied out by mistake.
 */
export const OBFUSCATION_BYTE = 0xa5;
export const STORE_ENCODING = 'xor-a5';

const CHUNK = 1024 * 1024;

function readAt(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

export function xorInPlace(buf: Buffer, n: number): void {
  for (let i = 0; i < n; i++) buf[i] = buf[i]! ^ OBFUSCATION_BYTE;
}

/**
 * Copy all of `srcFd` (from offset 0, by pread: the caller's file position is left alone) into
 * `dst`, XORing every byte, then fsync `dst`. The SHA-256 is over the plaintext side:
 * the input when storing, the output when restoring.
 */
export async function copyXor(
  srcFd: number,
  dst: fsp.FileHandle,
  plaintext: 'input' | 'output',
): Promise<{ sha256: string; size: number }> {
  const hash = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  for (;;) {
    const n = await readAt(srcFd, buf, pos);
    if (n === 0) break;
    if (plaintext === 'input') hash.update(buf.subarray(0, n));
    xorInPlace(buf, n);
    if (plaintext === 'output') hash.update(buf.subarray(0, n));
    let off = 0;
    while (off < n) off += (await dst.write(buf, off, n - off, pos + off)).bytesWritten;
    pos += n;
  }
  await dst.sync();
  return { sha256: hash.digest('hex'), size: pos };
}

export async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // a directory cannot be opened for fsync there; NTFS journals renames itself
  const fh = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function symlinkRefusal(where: string, target: string): QuarantineError {
  return new QuarantineError(
    'LA_ERR_RESTORE_SYMLINK',
    `refusing to restore to ${target}: ${where} is a symbolic link`,
    'restore never follows symbolic links; pass the real path with --to',
  );
}

/** Throws unless every component of absolute `dir` is a real directory (no symlink anywhere). */
export async function assertNoSymlinks(dir: string, target: string): Promise<void> {
  let cur = path.parse(dir).root;
  for (const part of dir.slice(cur.length).split(path.sep).filter(Boolean)) {
    cur = path.join(cur, part);
    let st: fs.Stats;
    try {
      st = await fsp.lstat(cur);
    } catch (e) {
      throw new QuarantineError(
        'LA_ERR_QUARANTINE',
        `cannot restore to ${target}: ${cur}: ${(e as Error).message}`,
        'create the directory first, or restore elsewhere with --to',
        { cause: e },
      );
    }
    if (st.isSymbolicLink()) throw symlinkRefusal(cur, target);
    if (!st.isDirectory())
      throw new QuarantineError(
        'LA_ERR_QUARANTINE',
        `cannot restore to ${target}: ${cur} is not a directory`,
        'restore elsewhere with --to',
      );
  }
  if ((await fsp.realpath(dir)) !== dir) throw symlinkRefusal(dir, target);
}

/** Where /proc says an open fd lives ("" if /proc is not mounted). */
export async function fdPath(fd: number): Promise<string> {
  try {
    return await fsp.readlink(`/proc/self/fd/${fd}`);
  } catch {
    return '';
  }
}

/**
 * Create DIR/.NAME.la-restore-RANDOM (0600) after the checks above; resolves with its handle and
 * path. The caller writes it, then calls `placeRestored`.
 */
export async function createRestoreTemp(target: string): Promise<{ fh: fsp.FileHandle; tmp: string }> {
  const dir = path.dirname(target);
  await assertNoSymlinks(dir, target);
  const tmp = path.join(dir, `.${path.basename(target)}.la-restore-${crypto.randomBytes(6).toString('hex')}`);
  const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  const where = await fdPath(fh.fd);
  if (where !== '' && where !== tmp) {
    // A directory on the way was swapped for a symlink after the check: we created an empty
    // file elsewhere. Remove it if it is still ours, and refuse.
    const st = await fh.stat();
    await fh.close();
    const there = await fsp.lstat(where).catch(() => undefined);
    if (there && there.ino === st.ino && there.dev === st.dev) await fsp.unlink(where).catch(() => undefined);
    throw symlinkRefusal(`a directory on the way to ${dir} (now resolving to ${path.dirname(where)})`, target);
  }
  return { fh, tmp };
}

/** Move the written temp file to `target`: link() (never overwrites) or, with force, rename(). */
export async function placeRestored(fh: fsp.FileHandle, tmp: string, target: string, force: boolean): Promise<void> {
  if (force) {
    await fsp.rename(tmp, target);
  } else {
    try {
      await fsp.link(tmp, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw existsRefusal(target);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
      // A filesystem without hard links (vfat): check, then rename; the window is tiny.
      if (
        await fsp.lstat(target).then(
          () => true,
          () => false,
        )
      )
        throw existsRefusal(target);
      await fsp.rename(tmp, target);
    }
    await fsp.unlink(tmp).catch(() => undefined);
  }
  const [mine, there] = await Promise.all([fh.stat(), fsp.lstat(target)]);
  if (mine.ino !== there.ino || mine.dev !== there.dev) {
    throw new QuarantineError(
      'LA_ERR_QUARANTINE',
      `restore to ${target} raced with another change of that directory`,
      'check the directory and try again',
    );
  }
  await fsyncDir(path.dirname(target));
}

export function existsRefusal(target: string): QuarantineError {
  return new QuarantineError(
    'LA_ERR_RESTORE_EXISTS',
    `refusing to restore: ${target} already exists`,
    'pass --force to replace it, or --to PATH to restore elsewhere',
  );
}
