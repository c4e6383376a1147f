/**
 * The quarantine store: infected files moved out of users' reach, recorded, restorable.
 *
 *   <state_dir>/quarantine/            0700 root
 *     index.journal                    0600, the index (a Journal: id -> QuarantineRecord)
 *     data/<id>                        0400 root, the content XORed with 0xA5 (quarantine-files.ts)
 *
 * Moving a file in, crash-safe in this order:
 *   1. index record {state: 'moving'} with the original's path, owner, mode and identity;
 *   2. rename(original, data/<id>.incoming) when on the same filesystem: the file leaves the
 *      user's view at once and atomically (else, EXDEV, it is read in place);
 *   3. the content is copied XORed into data/<id>.tmp (0400), fsynced, renamed to data/<id>,
 *      and the directory fsynced; then .incoming (or, across filesystems, the original) is
 *      unlinked;
 *   4. index record {state: 'stored', sha256}.
 * Every mutation holds the index lock, and first finishes what a crash interrupted (`recover`):
 * a 'moving' record whose data/<id> exists is completed (and a copied original still there is
 * unlinked); one with only .incoming is stored from it; one with neither never moved anything
 * and is dropped. data/<id> without a record is what an interrupted delete left: removed.
 * Restore (see quarantine-files.ts for its symlink safety) and delete remove the record first
 * or last so that a crash never leaves a record pointing at nothing the user cannot clean up.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QuarantineError } from '../errors.js';
import { logger } from '../log.js';
import { Journal } from './journal.js';
import {
  STORE_ENCODING,
  copyXor,
  createRestoreTemp,
  existsRefusal,
  fdPath,
  fsyncDir,
  placeRestored,
  xorInPlace,
} from './quarantine-files.js';

export interface QuarantineRecord {
  id: string;
  originalPath: string;
  uid: number;
  gid: number;
  /** Permission bits of the original (st_mode & 0o7777). */
  mode: number;
  size: number;
  /** SHA-256 of the plaintext content ('' while state is 'moving'). */
  sha256: string;
  threat: string;
  /** When it was quarantined, ISO 8601. */
  time: string;
  state: 'moving' | 'stored';
  encoding: typeof STORE_ENCODING;
  /** Identity of the original (decimal strings), to recognise it after a crash. */
  dev: string;
  ino: string;
  /** How the file left its place: renamed, copied and unlinked, or copied from an fd whose path was gone. */
  method?: 'rename' | 'copy' | 'fd';
}

export interface QuarantineMeta {
  threat: string;
  /** The scanner's hash; recorded only as a cross-check (the store hashes what it moved). */
  sha256?: string | undefined;
  /** With an fd source: the path to remove (default: what /proc/self/fd says). */
  originalPath?: string;
}

export interface RestoreOptions {
  /** Replace an existing file at the target. */
  force?: boolean;
  /** Restore here instead of the original path. */
  to?: string;
}

export interface QuarantineStoreOptions {
  /** The agent's state directory; the store is <stateDir>/quarantine. */
  stateDir: string;
  /** How long to wait for another process holding the index (default 10 s). */
  lockWaitMs?: number;
}

const ID_RE = /^[0-9a-z]{8}$/;
const ID_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

function newId(): string {
  const b = crypto.randomBytes(8);
  let s = '';
  for (let i = 0; i < 8; i++) s += ID_ALPHABET[b[i]! & 31];
  return s;
}

function isRecord(key: string, v: unknown): v is QuarantineRecord {
  const r = v as QuarantineRecord;
  return (
    typeof v === 'object' &&
    v !== null &&
    r.id === key &&
    typeof r.originalPath === 'string' &&
    typeof r.threat === 'string' &&
    typeof r.time === 'string' &&
    typeof r.sha256 === 'string' &&
    typeof r.dev === 'string' &&
    typeof r.ino === 'string' &&
    Number.isSafeInteger(r.size) &&
    Number.isInteger(r.uid) &&
    Number.isInteger(r.gid) &&
    Number.isInteger(r.mode) &&
    (r.state === 'moving' || r.state === 'stored')
  );
}

const isRoot = () => process.getuid?.() === 0;
const exists = (p: string) =>
  fsp.lstat(p).then(
    () => true,
    () => false,
  );

export class Quarantine {
  readonly dir: string;
  readonly dataDir: string;
  readonly indexFile: string;
  private readonly log = logger('quarantine');
  private lastRecovery = { completed: 0, dropped: 0, orphans: 0 };

  constructor(private readonly o: QuarantineStoreOptions) {
    this.dir = path.join(path.resolve(o.stateDir), 'quarantine');
    this.dataDir = path.join(this.dir, 'data');
    this.indexFile = path.join(this.dir, 'index.journal');
  }

  /**
   * Nothing to release: the index is opened, locked and closed by each operation, so the CLI
   * can restore while the daemon runs. Here for the daemon's teardown symmetry.
   */
  async close(): Promise<void> {}

  /** Path of a stored item's (obfuscated) content. */
  dataPath(id: string): string {
    return path.join(this.dataDir, id);
  }

  /** QuarantineSink for the on-access handler: resolves with the id. */
  async put(file: string, info: { threat: string; sha256?: string | undefined }): Promise<string> {
    return (await this.quarantine(file, info)).id;
  }

  /**
   * Move an infected file into the store. `source` is its path, or an open fd on it (the
   * fanotify event fd): then the content is read through the fd, and the path is removed only
   * if it still names that same inode.
   */
  async quarantine(source: string | number, meta: QuarantineMeta): Promise<QuarantineRecord> {
    return this.withIndex(async (index) => {
      const ownFd = typeof source === 'string';
      const fd = ownFd ? await this.openSource(path.resolve(source)) : source;
      try {
        const st = fs.fstatSync(fd, { bigint: true });
        if (!st.isFile())
          throw new QuarantineError(
            'LA_ERR_QUARANTINE',
            `cannot quarantine ${String(source)}: not a regular file`,
            'only regular files are quarantined',
          );
        let originalPath = ownFd ? path.resolve(source) : (meta.originalPath ?? (await fdPath(fd)));
        const detachedName = originalPath.endsWith(' (deleted)');
        if (detachedName) originalPath = originalPath.slice(0, -' (deleted)'.length);
        const there = detachedName ? undefined : await fsp.lstat(originalPath, { bigint: true }).catch(() => undefined);
        const attached = there !== undefined && there.dev === st.dev && there.ino === st.ino;
        if (st.nlink > (attached ? 1n : 0n))
          this.log.warn('quarantined file has other hard links that stay in place', { path: originalPath, nlink: Number(st.nlink) });

        let id = newId();
        while (index.has(id)) id = newId();
        const rec: QuarantineRecord = {
          id,
          originalPath,
          uid: Number(st.uid),
          gid: Number(st.gid),
          mode: Number(st.mode & 0o7777n),
          size: Number(st.size),
          sha256: '',
          threat: meta.threat,
          time: new Date().toISOString(),
          state: 'moving',
          encoding: STORE_ENCODING,
          dev: String(st.dev),
          ino: String(st.ino),
        };
        await index.put(id, rec);

        const incoming = `${this.dataPath(id)}.incoming`;
        let method: QuarantineRecord['method'] = attached ? 'copy' : 'fd';
        if (attached) {
          try {
            await fsp.rename(originalPath, incoming);
            method = 'rename';
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EXDEV') {
              await index.delete(id);
              throw new QuarantineError(
                'LA_ERR_QUARANTINE',
                `cannot move ${originalPath} into quarantine: ${(e as Error).message}`,
                'check that the agent runs as root',
                { cause: e },
              );
            }
          }
        }
        if (method === 'rename') {
          await Promise.all([fsyncDir(path.dirname(originalPath)), fsyncDir(this.dataDir)]);
          const moved = await fsp.lstat(incoming, { bigint: true });
          if (moved.dev !== st.dev || moved.ino !== st.ino) {
            // The path was swapped between the check and the rename: put back what is not ours.
            await fsp
              .link(incoming, originalPath)
              .then(() => fsp.unlink(incoming))
              .catch(() => undefined);
            await index.delete(id);
            throw new QuarantineError('LA_ERR_QUARANTINE', `${originalPath} changed while it was being quarantined`, 'scan it again');
          }
        }
        const stored = await this.storeContent(id, fd);
        if (method !== 'rename' && attached) await this.unlinkIfSame(originalPath, rec);
        await fsp.rm(incoming, { force: true });
        if (meta.sha256 && meta.sha256 !== stored.sha256)
          this.log.warn('file changed between scan and quarantine', { path: originalPath, scanned: meta.sha256, stored: stored.sha256 });
        const done: QuarantineRecord = { ...rec, sha256: stored.sha256, size: stored.size, state: 'stored', method };
        await index.put(id, done);
        this.log.warn('file quarantined', { id, path: originalPath, threat: meta.threat, sha256: stored.sha256, method });
        return done;
      } finally {
        if (ownFd) fs.closeSync(fd);
      }
    });
  }

  /** Every item, oldest first. Reads the index without the lock, so it works beside the daemon. */
  async list(): Promise<QuarantineRecord[]> {
    const index = await Journal.open<QuarantineRecord>(this.indexFile, { readOnly: true, validate: isRecord });
    try {
      return [...index.entries()].map(([, r]) => r).sort((a, b) => a.time.localeCompare(b.time));
    } finally {
      await index.close();
    }
  }

  async get(id: string): Promise<QuarantineRecord | undefined> {
    return (await this.list()).find((r) => r.id === id);
  }

  /**
   * Put a stored file back (at its original path, or `to`) with its owner and mode, then remove
   * it from the store. Refuses symlinks anywhere on the way, and an existing file without force.
   */
  async restore(id: string, opts: RestoreOptions = {}): Promise<{ path: string; record: QuarantineRecord }> {
    return this.withIndex(async (index) => {
      const rec = this.lookup(index, id);
      const target = path.resolve(opts.to ?? rec.originalPath);
      const existing = await fsp.lstat(target).catch(() => undefined);
      if (existing && !opts.force) throw existsRefusal(target);
      if (existing?.isDirectory())
        throw new QuarantineError('LA_ERR_RESTORE_EXISTS', `refusing to restore: ${target} is a directory`, 'restore elsewhere with --to');
      const src = await fsp.open(this.dataPath(id), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      const { fh, tmp } = await createRestoreTemp(target);
      try {
        const copied = await copyXor(src.fd, fh, 'output');
        if (copied.sha256 !== rec.sha256) {
          throw new QuarantineError(
            'LA_ERR_QUARANTINE',
            `stored content of ${id} does not match its SHA-256 (store damaged)`,
            'nothing was restored; delete the item',
          );
        }
        if (isRoot()) await fh.chown(rec.uid, rec.gid);
        await fh.chmod(rec.mode); // after chown, which clears set-id bits
        await fh.sync();
        await placeRestored(fh, tmp, target, opts.force ?? false);
      } catch (e) {
        await fsp.unlink(tmp).catch(() => undefined);
        throw e;
      } finally {
        await fh.close();
        await src.close();
      }
      await index.delete(id);
      await fsp.rm(this.dataPath(id), { force: true });
      await fsyncDir(this.dataDir);
      this.log.warn('quarantined file restored', { id, path: target, threat: rec.threat });
      return { path: target, record: rec };
    });
  }

  /** Remove an item and its content for good. */
  async delete(id: string): Promise<QuarantineRecord> {
    return this.withIndex(async (index) => {
      const rec = this.lookup(index, id, true);
      await index.delete(id);
      await fsp.rm(this.dataPath(id), { force: true });
      await fsp.rm(`${this.dataPath(id)}.incoming`, { force: true });
      await fsyncDir(this.dataDir);
      this.log.info('quarantined file deleted', { id, path: rec.originalPath });
      return rec;
    });
  }

  /** Finish or undo what a crash interrupted (run before every mutation; callable on its own). */
  async recover(): Promise<{ completed: number; dropped: number; orphans: number }> {
    return this.withIndex(async () => ({ ...this.lastRecovery }));
  }

  private lookup(index: Journal<QuarantineRecord>, id: string, anyState = false): QuarantineRecord {
    const rec = ID_RE.test(id) ? index.get(id) : undefined;
    if (!rec || (!anyState && rec.state !== 'stored')) {
      throw new QuarantineError(
        'LA_ERR_QUARANTINE_NOT_FOUND',
        `no quarantined file with id "${id}"`,
        '`lightagent quarantine list` shows the ids',
      );
    }
    return rec;
  }

  private async openSource(p: string): Promise<number> {
    try {
      return fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      const hint = (e as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symbolic link; quarantine its target' : 'check the path';
      throw new QuarantineError('LA_ERR_QUARANTINE', `cannot quarantine ${p}: ${(e as Error).message}`, hint, { cause: e });
    }
  }

  /** data/<id>.tmp (0400 root) <- XOR(content of fd), fsync, rename to data/<id>, fsync dir. */
  private async storeContent(id: string, fd: number): Promise<{ sha256: string; size: number }> {
    const tmp = `${this.dataPath(id)}.tmp`;
    await fsp.rm(tmp, { force: true });
    const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o400);
    try {
      if (isRoot()) await fh.chown(0, 0);
      await fh.chmod(0o400);
      const r = await copyXor(fd, fh, 'input');
      await fsp.rename(tmp, this.dataPath(id));
      await fsyncDir(this.dataDir);
      return r;
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    } finally {
      await fh.close();
    }
  }

  private async unlinkIfSame(p: string, rec: QuarantineRecord): Promise<void> {
    const st = await fsp.lstat(p, { bigint: true }).catch(() => undefined);
    if (st && String(st.dev) === rec.dev && String(st.ino) === rec.ino) {
      await fsp.unlink(p);
      await fsyncDir(path.dirname(p));
    }
  }

  private async ensureDirs(): Promise<void> {
    for (const d of [this.dir, this.dataDir]) {
      await fsp.mkdir(d, { recursive: true, mode: 0o700 });
      await fsp.chmod(d, 0o700);
    }
  }

  /** This process's index operations, one at a time in order: the lock file cannot tell them apart. */
  private indexQueue: Promise<unknown> = Promise.resolve();

  private withIndex<T>(fn: (index: Journal<QuarantineRecord>) => Promise<T>): Promise<T> {
    const run = this.indexQueue.then(() => this.withIndexNow(fn));
    this.indexQueue = run.catch(() => undefined);
    return run;
  }

  private async withIndexNow<T>(fn: (index: Journal<QuarantineRecord>) => Promise<T>): Promise<T> {
    await this.ensureDirs();
    const index = await Journal.open<QuarantineRecord>(this.indexFile, { lockWaitMs: this.o.lockWaitMs ?? 10_000, validate: isRecord });
    try {
      this.lastRecovery = await this.reconcile(index);
      return await fn(index);
    } finally {
      await index.close();
    }
  }

  private async reconcile(index: Journal<QuarantineRecord>): Promise<{ completed: number; dropped: number; orphans: number }> {
    const r = { completed: 0, dropped: 0, orphans: 0 };
    for (const [id, rec] of [...index.entries()]) {
      if (rec.state !== 'moving') continue;
      const data = this.dataPath(id);
      const incoming = `${data}.incoming`;
      await fsp.rm(`${data}.tmp`, { force: true });
      try {
        if (!(await exists(data)) && (await exists(incoming))) {
          const fh = await fsp.open(incoming, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
          try {
            await this.storeContent(id, fh.fd);
          } finally {
            await fh.close();
          }
        }
        if (await exists(data)) {
          const fh = await fsp.open(data, fs.constants.O_RDONLY);
          let sha256: string;
          try {
            sha256 = await hashXored(fh.fd);
          } finally {
            await fh.close();
          }
          await this.unlinkIfSame(rec.originalPath, rec);
          await fsp.rm(incoming, { force: true });
          await index.put(id, { ...rec, sha256, state: 'stored' });
          r.completed++;
        } else {
          await index.delete(id); // nothing was moved: the original is still in place
          r.dropped++;
        }
      } catch (e) {
        this.log.error('could not finish an interrupted quarantine; will retry', {
          id,
          path: rec.originalPath,
          error: (e as Error).message,
        });
      }
    }
    for (const name of await fsp.readdir(this.dataDir)) {
      const id = name.split('.')[0]!;
      if (index.has(id)) continue;
      if (name.endsWith('.incoming')) {
        this.log.error('quarantine holds a file with no index record; left in place', { file: path.join(this.dataDir, name) });
        continue;
      }
      await fsp.rm(path.join(this.dataDir, name), { force: true }); // an interrupted delete or store
      r.orphans++;
    }
    if (r.completed || r.dropped || r.orphans) this.log.warn('finished quarantine work interrupted by a crash', r);
    return r;
  }
}

async function hashXored(fd: number): Promise<string> {
  const hash = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let pos = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    xorInPlace(buf, n);
    hash.update(buf.subarray(0, n));
    pos += n;
  }
  return hash.digest('hex');
}
